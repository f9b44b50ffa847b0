"""`harness diff A,B`: the questions whose prediction or score changed between two methods (reads the store)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from harness.errors import HarnessError
from harness.registry import unknown_name

FORMATS = ("table", "jsonl")
TABLE_ROWS = 20  # questions per dataset in the terminal table unless --max-rows says otherwise


def _passages(passages) -> str:
    """Titles (ids where the corpus is not prepared here), ``*`` after the answer-bearing ones."""
    return "; ".join(f"{p.title if p.title is not None else p.id}{' *' if p.answer_bearing else ''}" for p in passages) or "-"


def _record(pair, difference) -> dict:
    def side(label, prediction, scores, passages) -> dict:
        read = [{"id": p.id, "title": p.title, "answer_bearing": p.answer_bearing} for p in passages]
        return {"method": label, "prediction": prediction, "scores": scores, "passages": read}

    d = difference
    return {
        "dataset": d.dataset,
        "id": d.id,
        "setting": pair.setting,
        "outcome": d.outcome,
        "question": d.question,
        "golds": list(d.golds),
        "a": side(pair.a, d.prediction_a, d.scores_a, d.passages_a),
        "b": side(pair.b, d.prediction_b, d.scores_b, d.passages_b),
    }


def diff_command(
    methods: str = typer.Argument(..., help="A,B: the two method labels (a bare name stands for its one variant)"),
    suite: str | None = typer.Option(
        None, "--suite", help="suite(s) or dataset(s), comma-separated (default: what the store's cells cover)"
    ),
    model: str | None = typer.Option(None, "--model", help="backbone id (needed when the store holds several)"),
    retriever: str | None = typer.Option(None, "--retriever", help="only cells of this retriever"),
    fmt: str = typer.Option("table", "--format", metavar="[table|jsonl]", help="table or jsonl (one object per question)"),
    max_rows: int | None = typer.Option(
        None, "--max-rows", help=f"questions listed per dataset (0: all; default {TABLE_ROWS} for table, all for jsonl)"
    ),
    results: Path = typer.Option(Path("results"), "--results", help="result store folder"),
) -> None:
    """List the questions whose prediction or score differs between methods A and B, per dataset: question, golds,
    both predictions, the passages each read (answer-bearing ones marked *), after the counts of questions B fixed
    (right where A was wrong; right = exact match), broke, and both got right or wrong."""
    from rich.markup import escape
    from rich.table import Table

    from harness.commands.leaderboard import _labels
    from harness.console import console
    from harness.diff import OUTCOMES, PassageBook, compare_cells, pairs_to_compare
    from harness.leaderboard import select, stored_qa_cells
    from harness.paths import store_folder
    from harness.store import Store

    if fmt not in FORMATS:
        raise unknown_name("format", fmt, FORMATS)
    labels = _labels(methods)
    if len(labels) != 2:
        raise HarnessError(f"harness diff {methods!r}: takes two method labels, A,B (lists B's changes against A)")
    if max_rows is not None and max_rows < 0:
        raise HarnessError(f"--max-rows {max_rows}: pass a number of questions >= 0 (0 lists all)")
    rows = max_rows if max_rows is not None else (TABLE_ROWS if fmt == "table" else 0)
    store_folder(results)
    store = Store(results)
    qa, datasets = stored_qa_cells(store, suite)
    picked = select(qa, datasets, model=model, retriever=retriever)
    book = PassageBook()
    out = console()
    for wanted in pairs_to_compare(picked, [(labels[0], labels[1])]):
        pair = compare_cells(store, wanted, rows, book, changed=True)
        if fmt == "jsonl":
            for difference in pair.differences:
                print(json.dumps(_record(pair, difference), ensure_ascii=False))
            continue
        counts = Table(title=escape(f"{pair.b} vs {pair.a} ({pair.setting}; right = exact match)"), title_justify="left")
        for column in ("dataset", *OUTCOMES):
            counts.add_column(column, justify="left" if column == "dataset" else "right")
        for dataset, tally in pair.counts.items():
            counts.add_row(escape(dataset), *(str(tally[name]) for name in OUTCOMES))
        out.print(counts)
        listed = Table(show_lines=True)
        for column in ("dataset", "outcome", "question", "golds", pair.a, pair.b, "passages read (* answer-bearing)"):
            listed.add_column(escape(column), overflow="fold")
        for d in pair.differences:
            same = d.passages_a == d.passages_b
            read = _passages(d.passages_a) if same else f"A: {_passages(d.passages_a)} | B: {_passages(d.passages_b)}"
            cells = (d.dataset, d.outcome, d.question, " | ".join(d.golds), d.prediction_a, d.prediction_b, read)
            listed.add_row(*(escape(cell) for cell in cells))
        if pair.differences:
            out.print(listed)
        for note in pair.notes:
            out.print(note, markup=False, highlight=False, soft_wrap=True, style="dim")
    for note in book.notes():
        print(f"note: {note}", file=sys.stderr)


def register(app: typer.Typer) -> None:
    app.command("diff")(diff_command)
