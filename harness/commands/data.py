"""`harness data check`: load every dataset from local files and report counts and what is missing."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from harness.commands._common import DATA_DIR
from harness.console import console


def check(
    data_dir: Path | None = DATA_DIR,
) -> None:
    """Load every dataset; print counts per split and what is missing. Exit 1 if a local dataset fails."""
    from harness.datasets import summarize
    from harness.paths import data_dir as resolve_data_dir
    from harness.plugins import DATASETS

    root = resolve_data_dir(data_dir)
    out = console()
    table = Table(title=f"Datasets under {root}")
    for column in ("dataset", "status", "eval", "train pool", "detail"):
        table.add_column(column, justify="right" if column in ("eval", "train pool") else "left")
    failed = []
    for name in DATASETS.names():
        s = summarize(name, root)
        hub_only = not DATASETS.get(name).eval_files
        if s.problem is None:
            status = f"[green]ok ({s.source})[/green]"
        elif hub_only:
            status = "[yellow]hub only[/yellow]"
        else:
            status = "[red]missing[/red]"
            failed.append(name)
        table.add_row(
            name,
            status,
            f"{s.n_eval:,}" if s.n_eval is not None else "-",
            f"{s.n_train:,}" if s.n_train is not None else ("held out" if s.held_out else "-"),
            s.problem or "",
        )
    out.print(table)
    if failed:
        out.print(f"[red]{len(failed)} dataset(s) cannot be loaded from {root}: {', '.join(failed)}[/red]")
        raise typer.Exit(1)
    out.print("All datasets with local files load.")


def register(app: typer.Typer) -> None:
    data_app = typer.Typer(help="Inspect the raw datasets.", no_args_is_help=True, rich_markup_mode=None)
    app.add_typer(data_app, name="data")
    data_app.command("check")(check)
