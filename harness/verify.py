"""Store verification: re-read every cell, checkpoint and retrieval run of a result store and say what is wrong.

A cell is *whole* when its files read back (:meth:`Store.load`: spec matches key, n rows, predictions digest),
its rows are the examples its spec names (ids, questions and golds hash to ``examples_hash``), every row
re-scores to the metric values it stores with this harness's scorer, and ``metrics.json`` is the summary of those
rows. Findings come in two grades: problems (exit code 1; ``--repair`` sets the bad ones aside as
``.damaged-<name>`` so the next run recomputes them, never deleting anything) and notes (informational).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

from filelock import FileLock, Timeout
from safetensors import SafetensorError, safe_open

from harness.checkpoints import TENSOR_NAME, tensor_hash
from harness.errors import HarnessError
from harness.metrics import METRICS, SCORER_VERSION
from harness.spec import examples_hash
from harness.store import DamagedCell, Store, summarize_metrics

PROBLEMS = ("corrupt", "incomplete", "orphaned", "outdated")  # each makes `verify` exit 1
NOTES = ("in progress", "set aside", "no digest", "no record")

SET_ASIDE = ".damaged-"


@dataclass(frozen=True)
class Finding:
    """One thing wrong (or worth saying) about one path of the store."""

    kind: str  # one of PROBLEMS or NOTES
    path: Path
    detail: str
    repairable: bool = False  # --repair sets it aside

    @property
    def is_problem(self) -> bool:
        return self.kind in PROBLEMS


@dataclass
class Report:
    """What :func:`verify_store` found: counts of what was checked and the findings, in path order."""

    root: Path
    checked: dict[str, int] = field(default_factory=lambda: {"cells": 0, "checkpoints": 0, "retrieval runs": 0})
    findings: list[Finding] = field(default_factory=list)

    @property
    def problems(self) -> list[Finding]:
        return [finding for finding in self.findings if finding.is_problem]


def verify_store(root: str | os.PathLike) -> Report:
    """Check every file of the store at ``root`` (read only)."""
    root = Path(root)
    if not root.is_dir():
        raise HarnessError(f"--results {root} is not a result store folder; pass the folder `harness run` wrote")
    report = Report(root)
    store = Store(root, warn=lambda message: None)  # damage is reported as findings here, not as warnings
    runs = root / "runs"
    for folder in _entries(runs.iterdir() if runs.is_dir() else ()):
        report.findings.extend(_check_run_entry(store, folder, report))
    for path in _entries((root / "checkpoints").iterdir() if (root / "checkpoints").is_dir() else ()):
        report.findings.extend(_check_checkpoint_entry(path, report))
    for path in _entries((root / "retrieval").rglob("*") if (root / "retrieval").is_dir() else ()):
        report.findings.extend(_check_retrieval_entry(path, report))
    for folder in sorted(p for p in runs.glob("*/") if p.is_dir() and not p.name.startswith(".")) if runs.is_dir() else ():
        report.findings.extend(_leftovers(folder))
    report.findings.sort(key=lambda finding: str(finding.path))
    return report


def _entries(paths: Iterable[Path]) -> list[Path]:
    """``paths`` in order, without lock files (an empty lock file is how a finished writer leaves it)."""
    return sorted(path for path in paths if not path.name.endswith(".lock"))


def repair(report: Report) -> list[tuple[Path, Path]]:
    """Set every repairable problem aside as ``.damaged-<name>`` beside it; returns the (from, to) moves."""
    moves = []
    for finding in report.problems:
        if finding.repairable and finding.path.exists():
            target = finding.path.with_name(SET_ASIDE + finding.path.name)
            suffix = 1
            while target.exists():  # an earlier set-aside copy is kept, never overwritten
                target = finding.path.with_name(f"{SET_ASIDE}{finding.path.name}.{suffix}")
                suffix += 1
            os.replace(finding.path, target)
            moves.append((finding.path, target))
    return moves


def _check_run_entry(store: Store, folder: Path, report: Report) -> Iterator[Finding]:
    name = folder.name
    if name.startswith(SET_ASIDE):
        yield Finding("set aside", folder, "set aside by an earlier run or repair; delete it when you no longer need it")
        return
    if name.startswith(".partial-"):
        yield from _check_partial(store, folder)
        return
    if name.startswith("."):
        yield Finding("orphaned", folder, "a temporary file left by an interrupted write; not a result", repairable=True)
        return
    if not (folder / "metrics.json").is_file():
        yield Finding(
            "incomplete",
            folder,
            "a folder without metrics.json is not a finished cell; the next run recomputes it",
            repairable=True,
        )
        return
    report.checked["cells"] += 1
    try:
        record = store.load(name)
    except DamagedCell as damage:
        kind = "outdated" if "written by another harness version" in str(damage) else "corrupt"
        yield Finding(kind, folder, str(damage).removeprefix(f"{folder}: ").removeprefix(f"{folder}/"), repairable=True)
        return
    rows = record.predictions()
    spec = record.spec
    lm_eval = spec.scorer_version.startswith("lm-eval/")
    if not lm_eval and spec.scorer_version != SCORER_VERSION:
        yield Finding(
            "outdated", folder, f"scored by {spec.scorer_version}; this harness scores with {SCORER_VERSION}", repairable=True
        )
        return
    if not lm_eval:
        asked = [SimpleNamespace(id=row["id"], question=row.get("question"), golds=row.get("golds") or ()) for row in rows]
        if examples_hash(asked) != spec.examples_hash:
            yield Finding(
                "corrupt", folder, "its rows' ids, questions and golds are not the examples its spec names", repairable=True
            )
            return
        for line, row in enumerate(rows, start=1):
            wrong = _rescoring_problem(row, spec.metrics)
            if wrong:
                yield Finding("corrupt", folder, f"predictions.jsonl line {line} ({row['id']}): {wrong}", repairable=True)
                return
    if not all(isinstance(row.get("metrics"), dict) and set(spec.metrics) <= set(row["metrics"]) for row in rows):
        yield Finding("corrupt", folder, "a prediction row lacks its metric values", repairable=True)
        return
    summary = summarize_metrics(rows, spec.metrics)
    stored = {key: record.metrics.get(key) for key in summary}
    if stored != summary:
        yield Finding("corrupt", folder, "metrics.json: its n, means or CIs are not those of predictions.jsonl", repairable=True)
        return
    if "predictions_sha256" not in record.metrics:
        yield Finding("no digest", folder, "finished before predictions digests were recorded; re-scored and whole")


def _rescoring_problem(row: dict, metrics: tuple[str, ...]) -> str | None:
    """How a prediction row's stored scores differ from re-scoring it with this harness, or ``None``."""
    if not isinstance(row.get("prediction"), str) or not isinstance(row.get("metrics"), dict):
        return "not a scored prediction row (prediction text and metrics)"
    for metric in metrics:
        again = METRICS[metric](row["prediction"], list(row["golds"]))
        if row["metrics"].get(metric) != again:
            return f"{metric} stored {row['metrics'].get(metric)!r}, re-scored {again!r}"
    return None


def _check_partial(store: Store, folder: Path) -> Iterator[Finding]:
    key = folder.name.removeprefix(".partial-")
    lock = FileLock(str(store.root / "locks" / f"{key}.lock"), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        yield Finding("in progress", folder, "a running harness process is writing this cell")
        return
    try:
        lines = (folder / "predictions.jsonl").read_bytes().count(b"\n") if (folder / "predictions.jsonl").is_file() else 0
    finally:
        lock.release()
    yield Finding("incomplete", folder, f"an interrupted cell ({lines} rows written); the next `harness run` of it resumes it")


def _check_checkpoint_entry(path: Path, report: Report) -> Iterator[Finding]:
    name = path.name
    if name.startswith(SET_ASIDE):
        yield Finding("set aside", path, "set aside by an earlier run or repair; delete it when you no longer need it")
    elif name.startswith("."):
        yield Finding(
            "orphaned",
            path,
            "a temporary file or staging folder left by an interrupted training; not a checkpoint",
            repairable=True,
        )
    elif name.endswith(".safetensors"):
        report.checked["checkpoints"] += 1
        problem = _tensor_problem(path)
        if problem:
            yield Finding("corrupt", path, problem, repairable=True)
        elif not path.with_suffix(".json").is_file():
            yield Finding(
                "no record", path, "no training record (.json) beside it: its loss curve is unknown; the tensor is whole"
            )
    elif name.endswith(".json") and not path.with_suffix(".safetensors").exists():
        yield Finding(
            "incomplete", path, "a training record without its tensor: that training did not finish; the next run trains it"
        )
    elif path.is_dir():
        report.checked["checkpoints"] += 1
        weights = path / "adapter_model.safetensors"
        if not weights.is_file():
            yield Finding("corrupt", path, "an adapter folder without adapter_model.safetensors", repairable=True)
        else:
            problem = _tensor_problem(weights, hashed=False)
            if problem:
                yield Finding("corrupt", path, f"adapter_model.safetensors: {problem}", repairable=True)


def _tensor_problem(path: Path, hashed: bool = True) -> str | None:
    """Why the safetensors file at ``path`` is not whole, or ``None`` (its recorded tensor hash is checked too)."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118 - no __contains__
            metadata = dict(handle.metadata() or {})
    except SafetensorError as error:
        return f"unreadable ({error})"
    if (
        hashed
        and "tensor_hash" in metadata
        and TENSOR_NAME in tensors
        and tensor_hash(tensors[TENSOR_NAME]) != metadata["tensor_hash"]
    ):
        return "its tensor does not hash to the tensor_hash it records"
    return None


def _check_retrieval_entry(path: Path, report: Report) -> Iterator[Finding]:
    from harness.retrieval import _read_hits

    name = path.name
    if any(part.startswith(SET_ASIDE) for part in path.parts):
        if name.startswith(SET_ASIDE):
            yield Finding("set aside", path, "set aside by an earlier repair; delete it when you no longer need it")
    elif name.startswith(".") and path.is_file():
        yield Finding("orphaned", path, "a temporary file left by an interrupted write; not a retrieval run", repairable=True)
    elif name.endswith(".jsonl") and name.startswith("q"):
        report.checked["retrieval runs"] += 1
        try:
            _read_hits(path, k=1)
        except HarnessError as error:
            yield Finding("corrupt", path, "line " + str(error).removeprefix(f"{path}:").split("; delete")[0], repairable=True)
        except UnicodeDecodeError:
            yield Finding("corrupt", path, "not UTF-8 text", repairable=True)


def _leftovers(folder: Path) -> Iterator[Finding]:
    for path in sorted(folder.iterdir()):
        if path.name.startswith(SET_ASIDE):
            yield Finding("set aside", path, "set aside by an earlier repair; delete it when you no longer need it")
        elif path.name.startswith("."):
            yield Finding(
                "orphaned", path, "a temporary file left by an interrupted write inside a finished cell", repairable=True
            )


__all__ = ["NOTES", "PROBLEMS", "Finding", "Report", "repair", "verify_store"]
