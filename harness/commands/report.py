"""`harness report`: one self-contained HTML page of the result store (reads nothing else but the corpora)."""

from __future__ import annotations

from pathlib import Path

import typer

from harness.errors import HarnessError


def _pairs(values: list[str]) -> list[tuple[str, str]]:
    from harness.commands.leaderboard import _labels

    pairs = []
    for value in values:
        parts = _labels(value)
        if len(parts) != 2:
            raise HarnessError(f"--compare {value!r}: takes two method labels, A,B (B's fixed and broken questions vs A)")
        pairs.append((parts[0], parts[1]))
    return pairs


def report_command(
    suite: str | None = typer.Option(
        None, "--suite", help="suite(s) or dataset(s) of the leaderboard, comma-separated (default: what the store covers)"
    ),
    model: str | None = typer.Option(None, "--model", help="only this backbone (default: a section per backbone)"),
    compare: list[str] = typer.Option(
        [],
        "--compare",
        help="A,B: questions B fixed and broke vs A, per dataset (repeatable; default: each trained method vs its verdict reference)",
    ),
    max_rows: int = typer.Option(100, "--max-rows", help="differing questions listed per pair and dataset (0: all)"),
    out: Path | None = typer.Option(None, "--out", help="the HTML file to write (default: <results>/report.html)"),
    results: Path = typer.Option(Path("results"), "--results", help="result store folder"),
) -> None:
    """Write one self-contained HTML page of the store: leaderboard with CIs and verdicts, every figure the store
    can feed (SVG), questions fixed and broken between methods with the passages read, and provenance."""
    from harness.cache import atomic_write
    from harness.paths import store_folder, writable_folder
    from harness.report import build_report, render_html

    store_folder(results)
    target = out if out is not None else Path(results) / "report.html"
    if target.is_dir():
        raise HarnessError(f"--out {target} is a folder; pass the path of the HTML file to write (e.g. {target / 'report.html'})")
    writable_folder(target.parent, "--out")
    if max_rows < 0:
        raise HarnessError(f"--max-rows {max_rows}: pass a number of questions >= 0 (0 lists all)")
    page = render_html(build_report(results, suite=suite, pairs=_pairs(compare), max_rows=max_rows, model=model))
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(target, page)  # a reader never sees half a page
    print(target)


def register(app: typer.Typer) -> None:
    app.command("report")(report_command)
