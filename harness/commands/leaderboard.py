"""`harness leaderboard`: dataset x method tables from the result store (reads nothing else)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import typer
from rich.markup import escape

from harness.console import console, frame_table, print_leaderboard
from harness.errors import HarnessError
from harness.registry import unknown_name

FORMATS = ("table", "md", "csv", "json")


def _labels(value: str) -> list[str]:
    """Comma-separated method labels; commas inside brackets belong to a label (``prefix[tokens=50,placement=trq]``)."""
    return [part.strip() for part in re.split(r",(?![^\[]*\])", value) if part.strip()]


def _check_stored(flag: str, column: str, values: list[str], frame) -> None:
    """Each ``values`` entry names something the store has finished cells of, or a did-you-mean error."""
    from harness.registry import did_you_mean

    present = sorted(set(frame[column].astype(str)))
    for value in values:
        if value not in present:
            raise HarnessError(
                f"{flag} {value!r}: the store has no finished cell of that {column}.{did_you_mean(value, present)} "
                f"In the store: {', '.join(present)}"
            )


def leaderboard_command(
    suite: str | None = typer.Option(
        None, "--suite", help="suite(s) or dataset(s), comma-separated (default: what the store's cells cover)"
    ),
    model: str | None = typer.Option(None, "--model", help="backbone id to show"),
    retriever: str | None = typer.Option(None, "--retriever", help="only cells of this retriever"),
    method: str | None = typer.Option(None, "--method", help="only these methods (labels), comma-separated"),
    metrics: str = typer.Option("exact_match,f1", "--metrics", help="comma-separated metric names"),
    fmt: str = typer.Option("table", "--format", metavar="[table|md|csv|json]", help="table, md, csv or json"),
    compare: str | None = typer.Option(None, "--compare", help="A,B: paired bootstrap CI of B - A"),
    all_models: bool = typer.Option(False, "--all-models", help="allow several backbones in one table"),
    all_variants: bool = typer.Option(
        False, "--all-variants", help="every value of a sweep (spring[tokens=1], ...), not only the headline one"
    ),
    preserve: bool = typer.Option(False, "--preserve", help="the preservation table (task x method, vs base)"),
    results: Path = typer.Option(Path("results"), "--results", help="result store folder"),
) -> None:
    """Print the leaderboard of finished cells: EM/F1 per dataset and method, with averages."""
    from harness.leaderboard import (
        cells_frame,
        comparison_display,
        headline_variants,
        leaderboard,
        render,
        select,
        verdict_lines,
    )
    from harness.leaderboard import (
        compare as compare_methods,
    )
    from harness.metrics import METRICS
    from harness.paths import store_folder
    from harness.store import Store
    from harness.suites import covering_suite, resolve_suite

    if fmt not in FORMATS:
        raise unknown_name("format", fmt, FORMATS)
    store_folder(results)
    if preserve:
        from harness.commands.preserve import print_preservation

        print_preservation(results, model, fmt)
        return
    metric_names = [m.strip() for m in metrics.split(",") if m.strip()]
    for name in metric_names:
        if name not in METRICS:
            raise unknown_name("metric", name, METRICS)
    store = Store(results)
    frame = cells_frame(store)
    # The QA datasets the store holds (--dataset-file ones are known by it); preservation cells have --preserve.
    stored = set(frame.loc[frame["harness"] == "qa", "dataset"]) if not frame.empty else set()
    datasets = resolve_suite(suite or (covering_suite(stored) if stored else "qa12"), also=stored)
    if not frame.empty:  # an empty store is select's error; a filter naming nothing stored is said here
        for flag, column, values in (
            ("--model", "model", [model] if model else []),
            ("--retriever", "retriever", [retriever] if retriever else []),
            ("--method", "method", _labels(method) if method else []),
        ):
            _check_stored(flag, column, values, frame)
    picked = select(
        frame,
        datasets,
        model=model,
        retriever=retriever,
        methods=_labels(method) if method else None,
        all_models=all_models,
    )
    variants_note = ""
    if not all_variants and not method and not compare:  # labels named with --method or --compare are used as asked
        picked, variants_note = headline_variants(picked)
    out = console()
    if compare:
        parts = _labels(compare)
        if len(parts) != 2:
            raise HarnessError("--compare takes two method labels: A,B (prints B - A)")
        for metric in metric_names:
            result = compare_methods(store, picked, parts[0], parts[1], metric)
            if fmt == "table":
                out.print(escape(result.header), soft_wrap=True)  # a title would wrap at the narrow table's width
                out.print(frame_table(comparison_display(result), ""))
            elif fmt == "json":  # machine-readable: one object per metric, one record per dataset row
                rows = result.table.round(3).reset_index().to_dict(orient="records")
                print(json.dumps({"metric": metric, "header": result.header, "rows": rows}))
            else:
                print(result.header)
                print(result.table.round(3).to_csv() if fmt == "csv" else result.table.round(3).to_markdown())
        return
    if fmt == "table":
        print_leaderboard(out, picked, datasets, metric_names, store)
        if variants_note:
            out.print(variants_note, markup=False, highlight=False, soft_wrap=True, style="dim")
        return
    board = leaderboard(picked, datasets, metric_names, store=store)
    print(render(board, fmt), end="")
    if fmt == "md":  # csv and json stay machine-readable
        # Each trained method against the strongest cheap reference (none without both kinds of column).
        verdicts = verdict_lines(store, picked, metric="exact_match" if "exact_match" in metric_names else metric_names[0])
        if verdicts:
            print("".join(f"\n{line}" for line in verdicts))
        if variants_note:
            print(f"\n{variants_note}")
    elif variants_note:  # csv and json stay machine-readable; the left-out variants are still said
        print(variants_note, file=sys.stderr)


def register(app: typer.Typer) -> None:
    app.command("leaderboard")(leaderboard_command)
