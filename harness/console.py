"""The rich console every command prints through."""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import ProgressColumn
from rich.table import Table
from rich.text import Text


def console() -> Console:
    """Stdout console; when stdout is not a terminal (pipes, files, CI logs) tables get 160 columns instead of
    rich's 80, so they are not wrapped into unreadable cells."""
    return Console() if sys.stdout.isatty() else Console(width=160)


def frame_table(frame: Any, title: str, value_format: str = "{:.1f}") -> Table:
    """A pandas frame as a rich table; rows whose label starts with avg/average are bold, NaN shows as '-'."""
    # Labels such as "spring[tokens=5]" are text, not rich markup: escape them.
    table = Table(title=escape(title), title_justify="left")
    table.add_column(frame.index.name or "dataset")
    for column in frame.columns:
        table.add_column(escape(" ".join(map(str, column)) if isinstance(column, tuple) else str(column)), justify="right")
    for index, row in frame.iterrows():
        style = "bold" if str(index).startswith("avg") or str(index).startswith("average") else None
        cells = ["-" if v != v else (value_format.format(v) if isinstance(v, float) else str(v)) for v in row]
        table.add_row(escape(str(index)), *cells, style=style)
    return table


class SpeedColumn(ProgressColumn):
    """Examples per second of a progress task (blank until measurable)."""

    def render(self, task: Any) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.2f} ex/s" if speed else "", style="progress.data.speed")
