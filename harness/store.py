"""The content-addressed result store: one folder per cell key, resumable, safe under concurrent runs.

Layout under the store root (``results/`` by default)::

    runs/<key>/spec.json             the cell spec (keyed fields) + provenance (code version, time, batch size)
    runs/<key>/predictions.jsonl     one line per example, in evaluation order
    runs/<key>/metrics.json          means and bootstrap 95% CIs; its presence means "complete"
    runs/.partial-<key>/...          a cell being written; renamed to runs/<key> atomically when finished
    locks/<key>.lock                 held while a process writes the cell

Predictions are appended and flushed per batch. A crash leaves the partial folder; the next run resumes after
the last complete line (a torn last line is cut off), so the final file equals an uninterrupted run's.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from harness.errors import HarnessError
from harness.metrics import bootstrap_ci
from harness.spec import CellSpec


@dataclass(frozen=True)
class CellRecord:
    """A finished cell as read back from the store."""

    key: str
    path: Path
    spec: CellSpec
    provenance: dict[str, Any]
    metrics: dict[str, Any]

    def predictions(self) -> list[dict[str, Any]]:
        return list(_read_predictions(self.path / "predictions.jsonl"))


def _read_predictions(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            yield json.loads(line)


def _write_json_atomic(path: Path, value: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def summarize_metrics(rows: Sequence[Mapping[str, Any]], metric_names: Sequence[str]) -> dict[str, Any]:
    """Mean and bootstrap 95% CI of each per-example metric."""
    summary: dict[str, Any] = {"n": len(rows), "metrics": {}}
    for name in metric_names:
        mean, low, high = bootstrap_ci([row["metrics"][name] for row in rows])
        summary["metrics"][name] = {"mean": mean, "ci_low": low, "ci_high": high}
    return summary


class CellWriter:
    """Appends predictions of one cell; ``done_ids`` are the examples a previous, interrupted run finished."""

    def __init__(self, partial: Path, done_ids: list[str]) -> None:
        self._partial = partial
        self.done_ids = done_ids
        self._handle = open(partial / "predictions.jsonl", "a", encoding="utf-8")

    def append(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Write one batch of prediction rows and push them to disk before returning."""
        for row in rows:
            self._handle.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self.done_ids.extend(row["id"] for row in rows)

    def close(self) -> None:
        self._handle.close()


class Store:
    """A result store rooted at ``root``."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.runs = self.root / "runs"

    def cell_path(self, key: str) -> Path:
        return self.runs / key

    def is_complete(self, key: str) -> bool:
        return (self.cell_path(key) / "metrics.json").is_file()

    def load(self, key: str) -> CellRecord:
        path = self.cell_path(key)
        if not (path / "metrics.json").is_file():
            raise HarnessError(f"cell {key} is not complete in {self.root}")
        stored = json.loads((path / "spec.json").read_text(encoding="utf-8"))
        return CellRecord(
            key=key,
            path=path,
            spec=CellSpec.from_dict(stored["spec"]),
            provenance=stored.get("provenance", {}),
            metrics=json.loads((path / "metrics.json").read_text(encoding="utf-8")),
        )

    def cells(self) -> list[CellRecord]:
        """Every complete cell, in key order."""
        if not self.runs.is_dir():
            return []
        return [self.load(p.name) for p in sorted(self.runs.iterdir()) if not p.name.startswith(".") and (p / "metrics.json").is_file()]

    @contextmanager
    def writing(self, spec: CellSpec, provenance: Mapping[str, Any], force: bool = False) -> Iterator[CellWriter | None]:
        """Lock the cell and yield a writer, or ``None`` when it is already complete (and not ``force``).

        The caller appends every remaining example, then calls :meth:`finish`. On an exception the partial
        folder stays for the next run to resume.
        """
        key = spec.key()
        (self.root / "locks").mkdir(parents=True, exist_ok=True)
        self.runs.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.root / "locks" / f"{key}.lock")):
            final = self.cell_path(key)
            partial = self.runs / f".partial-{key}"
            if force:
                shutil.rmtree(final, ignore_errors=True)
                shutil.rmtree(partial, ignore_errors=True)
            if self.is_complete(key):
                yield None
                return
            done_ids = self._prepare_partial(partial, spec, provenance)
            writer = CellWriter(partial, done_ids)
            try:
                yield writer
            finally:
                writer.close()

    def _prepare_partial(self, partial: Path, spec: CellSpec, provenance: Mapping[str, Any]) -> list[str]:
        partial.mkdir(parents=True, exist_ok=True)
        spec_file = partial / "spec.json"
        if spec_file.is_file():
            stored = json.loads(spec_file.read_text(encoding="utf-8"))
            if stored["spec"] != json.loads(spec.canonical()):
                raise HarnessError(f"{partial} holds a different spec than its key says; delete that folder")
        else:
            _write_json_atomic(spec_file, {"key": spec.key(), "spec": spec.to_dict(), "provenance": dict(provenance)})
        predictions = partial / "predictions.jsonl"
        if not predictions.exists():
            predictions.touch()
            return []
        # Cut a torn last line (the process died mid-write): resume after the last complete example.
        data = predictions.read_bytes()
        complete = data[: data.rfind(b"\n") + 1]
        if len(complete) != len(data):
            with open(predictions, "r+b") as handle:
                handle.truncate(len(complete))
        return [json.loads(line)["id"] for line in complete.decode("utf-8").splitlines()]

    def finish(self, spec: CellSpec, expected_ids: Sequence[str]) -> CellRecord:
        """Check the partial cell holds exactly ``expected_ids`` in order, write metrics, publish atomically.

        Must be called inside :meth:`writing` (the lock is held).
        """
        key = spec.key()
        partial = self.runs / f".partial-{key}"
        rows = list(_read_predictions(partial / "predictions.jsonl"))
        ids = [row["id"] for row in rows]
        if ids != list(expected_ids):
            raise RuntimeError(f"cell {key}: predictions hold {len(ids)} examples, expected {len(expected_ids)} in order")
        _write_json_atomic(partial / "metrics.json", {"key": key, **summarize_metrics(rows, spec.metrics)})
        os.replace(partial, self.cell_path(key))
        return self.load(key)
