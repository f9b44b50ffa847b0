"""`harness store verify`: check every file of a result store; `--repair` sets bad ones aside."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from harness.console import console


def verify_command(
    results: Path = typer.Option(Path("results"), "--results", help="result store folder"),
    repair: bool = typer.Option(False, "--repair", help="move corrupt, outdated and orphaned entries aside (never deletes)"),
) -> None:
    """Re-read every cell (digest, rows, re-scored metrics), checkpoint and retrieval run; exit 1 on a problem."""
    from harness.paths import store_folder
    from harness.verify import repair as repair_store
    from harness.verify import verify_store

    report = verify_store(store_folder(results))
    out = console()
    if report.findings:
        table = Table(title=f"store {escape(str(report.root))}", title_justify="left")
        for column in ("finding", "path", "detail"):
            table.add_column(column)
        for finding in report.findings:
            style = "red" if finding.is_problem else "dim"
            where = finding.path.relative_to(report.root) if finding.path.is_relative_to(report.root) else finding.path
            table.add_row(finding.kind, escape(str(where)), escape(finding.detail), style=style)
        out.print(table)
    checked = ", ".join(f"{count} {what}" for what, count in report.checked.items())
    problems = report.problems
    if repair:
        moves = repair_store(report)
        for source, target in moves:
            out.print(f"moved {escape(str(source))} -> {escape(target.name)}")
        left = len(problems) - len(moves)
        out.print(
            f"checked {checked}: {len(problems)} problem(s), {len(moves)} set aside"
            + (f", {left} left (interrupted cells resume on the next run)" if left else "")
        )
    else:
        fix = "; `harness store verify --repair` sets the bad ones aside" if any(f.repairable for f in problems) else ""
        out.print(f"checked {checked}: {len(problems)} problem(s){fix}" if problems else f"checked {checked}: every one whole")
    if problems:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    store_app = typer.Typer(help="Inspect the result store.", no_args_is_help=True, rich_markup_mode=None)
    app.add_typer(store_app, name="store")
    store_app.command("verify")(verify_command)
