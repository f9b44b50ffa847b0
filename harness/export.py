"""The store's QA cells written in the shapes other tools read: lm-eval's results + samples, FlashRAG's
intermediate data + metric scores, or one JSONL row per question.

``lm-eval``: one folder per run setting (backbone, method, retriever, m), as lm-eval's ``--output_path`` holds one
per model: ``results.json`` with, per dataset, ``"exact_match,none"`` and ``"exact_match_stderr,none"`` (the
standard error of the mean over questions, as lm-eval reports it), ``n-samples``, ``configs``, ``versions``,
``higher_is_better`` and a top-level ``config``; and ``samples_<dataset>.jsonl`` with one line per question
(``doc_id``, ``doc``, ``target``, ``resps``, ``filtered_resps``, the per-question metrics) plus the passages read,
with their text. ``flashrag``: one folder per cell, ``<dataset>_<method>_<retriever>-m<m>/``, with
``intermediate_data.json`` (FlashRAG's ``Dataset.save`` items: ``id``, ``question``, ``golden_answers``,
``output.retrieval_result`` as ``{"id", "contents"}`` passages, ``raw_pred``, ``pred``, ``metric_score`` with
FlashRAG's metric names em / f1 / acc) and ``metric_score.txt`` (``em: 0.15`` lines). ``jsonl``: every prediction
row of every cell with the cell's identity. Passage texts come from the corpus prepared on this machine
(:class:`harness.diff.PassageBook`); each row's rendered input (``prompt``, stored by the runner) is lm-eval's
``arguments`` and FlashRAG's ``output.prompt``. :func:`export_preservation` writes the preservation cells
(`harness preserve --output-path`) in lm-eval's shape too: one folder per (method, shots), ``acc,none`` and
``acc_stderr,none`` per task, and the per-document rows as samples.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from harness.diff import PassageBook
from harness.errors import HarnessError
from harness.metrics import standard_error
from harness.store import CellRecord, Store

FORMATS = ("lm-eval", "flashrag", "jsonl")
FLASHRAG_METRICS = {"exact_match": "em", "f1": "f1", "accuracy": "acc"}  # FlashRAG's names for ours


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+=-]+", "_", text).strip("_") or "_"


def _passages(book: PassageBook, cell: CellRecord, row: dict[str, Any]) -> list[dict[str, Any]]:
    read = book.read(cell, row.get("passage_ids", []), row.get("golds", []))
    return [{"id": p.id, "title": p.title, "text": p.text, "answer_bearing": p.answer_bearing} for p in read]


def _write_json(path: Path, value: Any) -> None:
    from harness.cache import atomic_write_json

    atomic_write_json(path, value, indent=2, ensure_ascii=False, newline=True)


def _write_lines(path: Path, rows: Iterator[dict[str, Any]]) -> int:
    from harness.cache import atomic_write

    count = 0

    def write(handle: Any) -> None:
        nonlocal count
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1

    atomic_write(path, write)
    return count


def _lm_eval(store: Store, cells: pd.DataFrame, out: Path, book: PassageBook) -> list[Path]:
    written = []
    for (model, method, retriever, m), group in cells.groupby(["model", "method", "retriever", "passages"], sort=True):
        folder = out / _safe(f"{model}__{method}__{retriever}-m{m}")
        folder.mkdir(parents=True, exist_ok=True)
        results: dict[str, Any] = {}
        configs, versions, n_samples, higher = {}, {}, {}, {}
        created = ""
        for key, dataset in zip(group["key"], group["dataset"]):
            cell = store.load(key)
            rows = cell.predictions()
            entry: dict[str, Any] = {"alias": dataset}
            for metric in cell.spec.metrics:
                values = [float(r["metrics"][metric]) for r in rows if metric in r["metrics"]]
                entry[f"{metric},none"] = sum(values) / len(values) if values else None
                entry[f"{metric}_stderr,none"] = standard_error(values)
            results[dataset] = entry
            configs[dataset] = {
                "task": dataset,
                "output_type": "generate_until",
                "generation_kwargs": dict(cell.spec.decoding),
                "metric_list": [{"metric": name, "aggregation": "mean", "higher_is_better": True} for name in cell.spec.metrics],
                "metadata": {"harness_cell": key, "split": cell.spec.split, "example_ids_hash": cell.spec.example_ids_hash},
            }
            versions[dataset] = cell.spec.scorer_version
            n_samples[dataset] = {"original": cell.spec.n_examples, "effective": len(rows)}
            higher[dataset] = dict.fromkeys(cell.spec.metrics, True)
            created = max(created, str(cell.provenance.get("created", "")))

            def samples(rows: list[dict[str, Any]] = rows, cell: CellRecord = cell) -> Iterator[dict[str, Any]]:
                for doc_id, row in enumerate(rows):
                    yield {
                        "doc_id": doc_id,
                        "doc": {"id": row["id"], "question": row.get("question"), "golds": row.get("golds")},
                        "target": row.get("golds"),
                        "arguments": [[row.get("prompt"), dict(cell.spec.decoding)]],  # lm-eval's (context, gen kwargs)
                        "resps": [[row.get("raw")]],
                        "filtered_resps": [row.get("prediction")],
                        **row["metrics"],
                        "passages": _passages(book, cell, row),
                        "input_tokens": row.get("input_tokens"),
                    }

            written.append(folder / f"samples_{_safe(dataset)}.jsonl")
            _write_lines(written[-1], samples())
        first = store.load(group["key"].iloc[0])
        config = {
            "model": "harness",
            "model_args": f"model={model},method={method},retriever={retriever},passages={m}",
            "harness_model": dict(first.spec.model),
            "method": dict(first.spec.method),
            "retriever": dict(first.spec.retriever),
            "passages": int(m),
            "limit": first.provenance.get("limit"),
            "batch_size": first.provenance.get("batch_size"),
            "seed": first.provenance.get("seed"),
            "command": first.provenance.get("command"),
        }
        document = {
            "results": results,
            "configs": configs,
            "versions": versions,
            "n-shot": dict.fromkeys(results, 0),
            "higher_is_better": higher,
            "n-samples": n_samples,
            "config": config,
            "git_hash": None,
            "date": created,
            "harness_version": first.provenance.get("harness_version"),
        }
        written.append(folder / "results.json")
        _write_json(written[-1], document)
    return written


def _flashrag(store: Store, cells: pd.DataFrame, out: Path, book: PassageBook) -> list[Path]:
    written = []
    for key, dataset, method, retriever, m in cells[["key", "dataset", "method", "retriever", "passages"]].itertuples(
        index=False
    ):
        cell = store.load(key)
        folder = out / _safe(f"{dataset}_{method}_{retriever}-m{m}")
        folder.mkdir(parents=True, exist_ok=True)
        items = []
        for row in cell.predictions():
            passages = _passages(book, cell, row)
            items.append(
                {
                    "id": row["id"],
                    "question": row.get("question"),
                    "golden_answers": row.get("golds"),
                    "output": {
                        # FlashRAG's corpus "contents": the quoted title, a newline, the text.
                        "retrieval_result": [
                            {"id": p["id"], "contents": f'"{p["title"]}"\n{p["text"]}' if p["text"] is not None else None}
                            for p in passages
                        ],
                        "prompt": row.get("prompt"),
                        "raw_pred": row.get("raw"),
                        "pred": row.get("prediction"),
                        "metric_score": {FLASHRAG_METRICS.get(k, k): v for k, v in row["metrics"].items()},
                    },
                }
            )
        written.append(folder / "intermediate_data.json")
        _write_json(written[-1], items)
        means = cell.metrics["metrics"]
        lines = "".join(f"{FLASHRAG_METRICS.get(name, name)}: {value['mean']}\n" for name, value in means.items())
        from harness.cache import atomic_write

        written.append(folder / "metric_score.txt")
        atomic_write(written[-1], lines)
    return written


def _jsonl(store: Store, cells: pd.DataFrame, out: Path, book: PassageBook) -> list[Path]:
    def rows() -> Iterator[dict[str, Any]]:
        for key, method in zip(cells["key"], cells["method"]):
            cell = store.load(key)
            identity = {
                "cell": key,
                "dataset": cell.spec.dataset,
                "method": method,
                "retriever": dict(cell.spec.retriever).get("name"),
                "passages": cell.spec.passages,
                "model": dict(cell.spec.model).get("model") or dict(cell.spec.model).get("id"),
            }
            for row in cell.predictions():
                yield {**identity, **row, "passages_read": _passages(book, cell, row)}

    out.mkdir(parents=True, exist_ok=True)
    path = out / "predictions.jsonl"
    _write_lines(path, rows())
    return [path]


def export(store: Store, cells: pd.DataFrame, fmt: str, out: Path) -> tuple[list[Path], list[str]]:
    """Write ``cells`` (rows of :func:`harness.leaderboard.cells_frame`) under ``out`` in ``fmt``; returns the
    files written and notes (passages shown without text, and why)."""
    writers = {"lm-eval": _lm_eval, "flashrag": _flashrag, "jsonl": _jsonl}
    if fmt not in writers:
        from harness.registry import unknown_name

        raise unknown_name("format", fmt, FORMATS)
    if cells.empty:
        raise HarnessError("no finished QA cell matches; `harness leaderboard` lists what the store holds")
    book = PassageBook()
    written = writers[fmt](store, cells, out, book)
    return written, book.notes()


def export_preservation(cells: list[CellRecord], out: Path) -> list[Path]:
    """The preservation cells in lm-eval's ``--output_path`` shape: one folder per (backbone, method, shots), as one
    lm-eval invocation has one ``num_fewshot``, with ``results.json`` (``<metric>,none`` and
    ``<metric>_stderr,none`` per task) and ``samples_<task>.jsonl`` (the stored per-document rows)."""
    from harness.preserve.table import preservation_label

    groups: dict[tuple[str, str, int], list[CellRecord]] = {}
    for cell in cells:
        label = preservation_label(cell.spec.method)
        model = str(dict(cell.spec.model).get("id") or dict(cell.spec.model).get("model", ""))
        groups.setdefault((model, label, int(cell.spec.decoding.get("num_fewshot", 0))), []).append(cell)
    written = []
    for (model, label, shots), group in sorted(groups.items()):
        folder = out / _safe(f"{Path(model).name}_{label}_{shots}-shot")
        folder.mkdir(parents=True, exist_ok=True)
        results: dict[str, Any] = {}
        n_samples: dict[str, Any] = {}
        for cell in group:
            rows = cell.predictions()
            entry: dict[str, Any] = {"alias": cell.spec.dataset}
            for metric in cell.spec.metrics:
                values = [float(r["metrics"][metric]) for r in rows if metric in r["metrics"]]
                entry[f"{metric},none"] = sum(values) / len(values) if values else None
                entry[f"{metric}_stderr,none"] = standard_error(values)
            results[cell.spec.dataset] = entry
            n_samples[cell.spec.dataset] = {"original": cell.spec.n_examples, "effective": len(rows)}
            written.append(folder / f"samples_{_safe(cell.spec.dataset)}.jsonl")
            _write_lines(written[-1], iter(rows))
        first = group[0]
        document = {
            "results": results,
            "n-shot": dict.fromkeys(results, shots),
            "n-samples": n_samples,
            "config": {"model": "harness", "harness_model": dict(first.spec.model), "method": dict(first.spec.method)},
            "git_hash": None,
            "date": max(str(c.provenance.get("created", "")) for c in group),
            "harness_version": first.provenance.get("harness_version"),
        }
        written.append(folder / "results.json")
        _write_json(written[-1], document)
    return written
