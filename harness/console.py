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
    table = Table(title=escape(title) if title else None, title_justify="left")
    table.add_column(frame.index.name or "dataset")
    for column in frame.columns:
        table.add_column(escape(" ".join(map(str, column)) if isinstance(column, tuple) else str(column)), justify="right")
    for index, row in frame.iterrows():
        style = "bold" if str(index).startswith("avg") or str(index).startswith("average") else None
        cells = ["-" if v != v else (value_format.format(v) if isinstance(v, float) else str(v)) for v in row]
        table.add_row(escape(str(index)), *cells, style=style)
    return table


def column_parts(frame: Any, width: int) -> list[list[str]]:
    """``frame``'s text columns in groups that each fit ``width`` terminal columns beside the row labels (and
    ``n``, repeated in every group), so a wide leaderboard is split into tables instead of truncating a number."""

    def needed(values: Any, header: str) -> int:
        return max([len(header), *(len(str(v)) for v in values)]) + 3  # one space of padding each side, one rule

    fixed = [c for c in frame.columns if c == "n"]
    used = needed(frame.index, frame.index.name or "dataset") + 1 + sum(needed(frame[c], c) for c in fixed)
    parts: list[list[str]] = [[]]
    room = used
    for column in (c for c in frame.columns if c not in fixed):
        size = needed(frame[column], column)
        if parts[-1] and room + size > width:
            parts.append([])
            room = used
        parts[-1].append(column)
        room += size
    return [fixed + part for part in parts]


def print_leaderboard(out: Console, picked: Any, datasets: Any, metrics: Any, store: Any, note: str = "") -> None:
    """The leaderboard as one rich table per metric (n, per-dataset means, averages with their 95% CIs), after
    one header line; then each trained method's verdict against the strongest cheap reference."""
    from harness.leaderboard import display_table, leaderboard, verdict_lines
    from harness.metrics import METRIC_LABELS

    board = leaderboard(picked, datasets, metrics, store=store)  # one bootstrap for all
    out.print(escape(board.header + (f" | {note}" if note else "")), soft_wrap=True)
    shown = display_table(board)
    for metric in metrics:
        suffix = f" {METRIC_LABELS[metric]}"
        columns = [c for c in shown.columns if c == "n" or c.endswith(suffix)]
        table = shown[columns].rename(columns=lambda c, suffix=suffix: c.removesuffix(suffix))
        parts = column_parts(table, out.width)
        for i, part in enumerate(parts, 1):
            title = f"{METRIC_LABELS[metric]} x100" + (f" ({i}/{len(parts)})" if len(parts) > 1 else "")
            out.print(frame_table(table[part], title))
    metric = "exact_match" if "exact_match" in metrics else metrics[0]
    for line in verdict_lines(store, picked, metric=metric):
        out.print(line, markup=False, highlight=False, soft_wrap=True)


class SpeedColumn(ProgressColumn):
    """Examples per second of a progress task (blank until measurable); a task added with ``unit=None`` shows none,
    another unit (``unit="q"``) is named as given."""

    def render(self, task: Any) -> Text:
        unit = task.fields.get("unit", "ex")
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.2f} {unit}/s" if speed and unit else "", style="progress.data.speed")


def progress_columns() -> tuple[ProgressColumn, ...]:
    """The columns of a harness progress bar: label, bar, done/total, rate, elapsed, ETA."""
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        SpeedColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )


def rich_reporter(out: Console, progress: Any = None) -> Any:
    """An :mod:`harness.activity` reporter drawing each step as a rich bar (count, rate, elapsed, ETA): a task of
    ``progress`` when the command already shows one (rich allows one live display), else its own transient bar.
    A step that took 2 s or more leaves one dim line saying what it did and how fast."""
    import contextlib
    import time

    from rich.progress import Progress

    live: dict[str, Any] = {"progress": progress}  # an own bar is shared by nested steps (an index built mid-search)

    @contextlib.contextmanager
    def report(description: str, total: int | None, unit: str) -> Any:
        owned = live["progress"] is None
        if owned:
            live["progress"] = Progress(*progress_columns(), console=out, transient=True)
            live["progress"].start()
        shown = live["progress"]
        task = shown.add_task(escape(description), total=total, unit=unit)  # a label is never read as markup
        done = [0]
        started = time.perf_counter()

        def advance(count: int = 1) -> None:
            done[0] += count
            shown.advance(task, count)

        try:
            yield advance
        finally:
            shown.remove_task(task)
            if owned:
                shown.stop()
                live["progress"] = None
        seconds = time.perf_counter() - started
        if seconds >= 2:
            rate = f" ({done[0] / seconds:,.0f} {unit}/s)" if done[0] else ""
            out.print(f"{description}: {done[0]:,} {unit} in {seconds:.1f} s{rate}", style="dim", markup=False, highlight=False)

    return report
