"""`harness report`: one self-contained HTML page of a result store.

The page holds, per backbone, the leaderboard (n, means, CIs of the averages, held-out marked) and the verdict
lines; every figure the store can feed, as inline SVG (and, for each it cannot, the `harness run` line that would
feed it); for each compared pair of methods the questions one got right and the other wrong, with the passages
each read; and the provenance of every cell shown. It reads the store only, plus the prepared corpus (found by
the fingerprint a cell records) for the titles and text of the passages read.

Public API::

    page = build_report("results", suite=None, pairs=(), max_rows=100)   # a Report: what the page shows
    html = render_html(page)                                               # the page: one HTML string
"""

from __future__ import annotations

import datetime as _dt
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd

from harness.diff import OUTCOMES, Pair, PassageBook, compare_cells, pairs_to_compare
from harness.errors import HarnessError
from harness.leaderboard import display_table, headline_variants, leaderboard, select, verdict_lines
from harness.metrics import METRIC_LABELS
from harness.store import Store

DEFAULT_MAX_ROWS = 100  # differing questions listed per pair and dataset (the counts always cover them all)
QA_METRICS = ("exact_match", "f1")


@dataclass(frozen=True)
class Cell:
    """One value of a leaderboard table: ``column`` is its key in `harness leaderboard --format json`."""

    column: str
    text: str
    value: float | None


@dataclass(frozen=True)
class Row:
    dataset: str
    n: str
    cells: tuple[Cell, ...]
    held_out: bool
    average: bool


@dataclass(frozen=True)
class Table:
    metric: str
    methods: tuple[str, ...]
    rows: tuple[Row, ...]


@dataclass(frozen=True)
class Figure:
    """A figure of the store (``svg``), or why it is not drawn (``missing``: the error naming the run to do)."""

    name: str
    description: str
    svg: str | None
    missing: str | None


@dataclass(frozen=True)
class Backbone:
    model: str
    header: str
    tables: tuple[Table, ...]
    verdicts: tuple[str, ...]
    note: str
    figures: tuple[Figure, ...]
    pairs: tuple[tuple[str, Pair], ...]  # (anchor, pair)
    cells: tuple[dict[str, Any], ...]  # provenance rows


@dataclass(frozen=True)
class TrainingRun:
    """A checkpoint's training record: what it trained on and the answer recall of its passages beside the
    evaluation sample's (``recall``: dataset -> (training, evaluation or None))."""

    checkpoint: str
    method: str
    backbone: str
    passages: str
    steps: str
    recall: dict[str, tuple[float, float | None]]


@dataclass(frozen=True)
class Report:
    store: str
    created: str
    version: str
    suite: str
    backbones: tuple[Backbone, ...]
    commands: tuple[str, ...]
    notes: tuple[str, ...] = field(default=())
    trainings: tuple[TrainingRun, ...] = field(default=())


def _tables(board: Any, metrics: Sequence[str]) -> tuple[Table, ...]:
    shown = display_table(board)
    tables = []
    for metric in metrics:
        label = METRIC_LABELS[metric]
        methods = tuple(method for method, column_metric in board.table.columns if column_metric == label)
        rows = []
        for position, dataset in enumerate(board.table.index):
            cells = []
            for method in methods:
                value = board.table.loc[dataset, (method, label)]
                text = shown.loc[dataset, f"{method} {label}"]
                cells.append(Cell(f"{method} {label}", text, None if pd.isna(value) else float(value)))
            average = dataset.startswith("avg ")
            rows.append(Row(dataset, shown["n"].iloc[position], tuple(cells), dataset.endswith(" *"), average))
        tables.append(Table(label, methods, tuple(rows)))
    return tuple(tables)


def _svg(figure: Any) -> str:
    """The figure as an inline ``<svg>`` element (text kept as text, so the page can be searched)."""
    from matplotlib import rc_context

    buffer = io.StringIO()
    with rc_context({"svg.fonttype": "none"}):  # scoped: no global style change
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def _figures(frame: pd.DataFrame, results: Path, suite: str, model: str) -> tuple[Figure, ...]:
    from plots import PLOT_DESCRIPTIONS, PLOTS, TRAINING, render, training_curves, training_frame

    figures = []
    for name in PLOTS:
        try:
            figures.append(Figure(name, PLOT_DESCRIPTIONS[name], _svg(render(name, frame, suite=suite, model=model)), None))
        except HarnessError as error:
            figures.append(Figure(name, PLOT_DESCRIPTIONS[name], None, str(error)))
    try:
        training = training_frame(results)
        if training.empty:
            raise HarnessError("no training record in the store; `harness run --method spring` trains and records one")
        figures.append(Figure(TRAINING, PLOT_DESCRIPTIONS[TRAINING], _svg(training_curves(training, model=model)), None))
    except HarnessError as error:
        figures.append(Figure(TRAINING, PLOT_DESCRIPTIONS[TRAINING], None, str(error)))
    return tuple(figures)


def _pairs(
    store: Store, picked: pd.DataFrame, compare: Sequence[tuple[str, str]], max_rows: int, book: PassageBook, start: int
) -> list[tuple[str, Pair]]:
    """(anchor, pair) of the pairs asked for (``compare``), or of each trained method against its verdict reference."""
    return [
        (f"pair-{start + i + 1}", compare_cells(store, wanted, max_rows, book))
        for i, wanted in enumerate(pairs_to_compare(picked, compare))
    ]


def _trainings(results: Path) -> tuple[TrainingRun, ...]:
    """The store's checkpoint records (unreadable ones are left to `harness plot training`, which names them)."""
    from plots.training import _checkpoint_name, _read, record_paths

    runs = []
    for path in record_paths(results):
        record, _ = _read(path)
        if record is None:
            continue
        spec, log = record["spec"], record["log"]
        recall = {
            name: (float(values["train"]), None if values.get("eval") is None else float(values["eval"]))
            for name, values in (log.get("answer_recall") or {}).items()
        }
        steps = f"{log.get('steps', '?')} steps, kept step {log.get('best_step', '?')}"
        steps += ", stopped early" if log.get("stopped_early") else ""
        runs.append(
            TrainingRun(
                checkpoint=_checkpoint_name(path),
                method=str(spec.get("method", "?")),
                backbone=str(dict(spec.get("backbone") or {}).get("model", "?")),
                passages=str(dict(spec.get("training") or {}).get("train_passages", "retrieved")),
                steps=steps,
                recall=recall,
            )
        )
    return tuple(runs)


def _short(value: Any, length: int = 16) -> str:
    text = str(value or "")
    return text.removeprefix("sha256:")[:length] if text else "-"


def _provenance(store: Store, picked: pd.DataFrame) -> list[dict[str, Any]]:
    rows = []
    for key in picked.sort_values(["dataset", "method"])["key"]:
        cell = store.load(key)
        spec, model, retriever = cell.spec, dict(cell.spec.model), dict(cell.spec.retriever)
        rows.append(
            {
                "key": key,
                "dataset": spec.dataset,
                "method": picked.loc[picked["key"] == key, "method"].iloc[0],
                "retriever": retriever.get("name") or retriever.get("retriever", "?"),
                "passages": spec.passages,
                "n": spec.n_examples,
                "model": model.get("model") or model.get("id", "?"),
                "weights": _short(model.get("weights_hash")),
                "corpus": _short(retriever.get("corpus_fingerprint") or retriever.get("corpus")),
                "template": spec.template_hash,
                "decoding": json.dumps(dict(spec.decoding), sort_keys=True),
                "version": cell.provenance.get("harness_version", "-"),
                "created": cell.provenance.get("created", "-"),
                "command": cell.provenance.get("command") or "not recorded (a cell written before harness recorded it)",
            }
        )
    return rows


def build_report(
    results: str | Path,
    suite: str | None = None,
    pairs: Sequence[tuple[str, str]] = (),
    max_rows: int = DEFAULT_MAX_ROWS,
    model: str | None = None,
) -> Report:
    """What the page of the store at ``results`` shows (see the module docstring); ``pairs`` are (A, B) method
    labels to compare (default: each trained method against its verdict reference)."""
    from harness import __version__
    from harness.suites import covering_suite, resolve_suite
    from plots import plot_frame

    store = Store(results)
    frame = plot_frame(store)
    if frame.empty:
        raise HarnessError(f"the result store {results} holds no finished cell; run `harness run` first")
    qa = frame[frame["harness"] == "qa"]
    if qa.empty:
        raise HarnessError(
            f"the result store {results} holds no QA cell; run `harness run --suite qa12 --method spring,lora` first"
        )
    suite = suite or covering_suite(set(qa["dataset"]))
    datasets = resolve_suite(suite, also=set(qa["dataset"]))
    models = [model] if model else sorted(qa["model"].unique())
    book = PassageBook()
    backbones: list[Backbone] = []
    commands: list[str] = []
    for name in models:
        every = select(qa, datasets, model=name)
        picked, note = headline_variants(every)  # the leaderboard's headline values; --compare may name any
        board = leaderboard(picked, datasets, QA_METRICS, store=store)
        found = _pairs(store, every if pairs else picked, pairs, max_rows, book, start=sum(len(b.pairs) for b in backbones))
        cells = _provenance(store, every)
        commands += [row["command"] for row in cells if row["command"].startswith("harness ")]
        backbones.append(
            Backbone(
                name,
                board.header,
                _tables(board, QA_METRICS),
                tuple(verdict_lines(store, picked)),
                note,
                _figures(frame, Path(results), suite, name),
                tuple(found),
                tuple(cells),
            )
        )
    return Report(
        store=str(Path(results).resolve()),
        created=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        version=__version__,
        suite=suite,
        backbones=tuple(backbones),
        commands=tuple(dict.fromkeys(commands)),
        notes=tuple(book.notes()),
        trainings=_trainings(Path(results)),
    )


def render_html(report: Report) -> str:
    """The page of ``report``: one HTML document with inline CSS, script and SVG (nothing fetched when viewed)."""
    import jinja2
    from markupsafe import Markup

    source = resources.files("harness").joinpath("report.html.j2").read_text(encoding="utf-8")
    environment = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    environment.filters["svg"] = Markup  # the figures are matplotlib's own SVG, not user text
    return environment.from_string(source).render(report=report, outcomes=OUTCOMES)
