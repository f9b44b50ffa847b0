"""`harness export`: the store's QA cells in lm-eval's, FlashRAG's or a flat JSONL shape (reads the store)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer


def export_command(
    fmt: str = typer.Option(
        "lm-eval",
        "--format",
        metavar="[lm-eval|flashrag|jsonl]",
        help="lm-eval (results.json + samples), flashrag (intermediate_data.json) or jsonl",
    ),
    out: Path | None = typer.Option(None, "--out", help="output folder (default: <results>/export/<format>/)"),
    suite: str | None = typer.Option(
        None, "--suite", help="suite(s) or dataset(s), comma-separated (default: what the store's cells cover)"
    ),
    model: str | None = typer.Option(None, "--model", help="only this backbone"),
    method: str | None = typer.Option(None, "--method", help="only these methods (labels), comma-separated"),
    retriever: str | None = typer.Option(None, "--retriever", help="only cells of this retriever"),
    results: Path = typer.Option(Path("results"), "--results", help="result store folder"),
) -> None:
    """Write the finished QA cells in the shape another tool reads; prints the files written."""
    from harness.commands.leaderboard import _labels
    from harness.export import FORMATS, export
    from harness.leaderboard import select, stored_qa_cells
    from harness.paths import store_folder, writable_folder
    from harness.registry import unknown_name
    from harness.store import Store

    if fmt not in FORMATS:
        raise unknown_name("format", fmt, FORMATS)
    store_folder(results)
    folder = writable_folder(out if out is not None else Path(results) / "export" / fmt, "--out")
    store = Store(results)
    qa, datasets = stored_qa_cells(store, suite)
    picked = select(qa, datasets, model=model, retriever=retriever, methods=_labels(method) if method else None, all_models=True)
    written, notes = export(store, picked, fmt, folder)
    for path in written:
        print(path)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)


def register(app: typer.Typer) -> None:
    app.command("export")(export_command)
