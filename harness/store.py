"""The content-addressed result store: one folder per cell key, resumable, safe under concurrent runs.

Layout under the store root (``results/`` by default)::

    runs/<key>/spec.json             the cell spec (keyed fields) + provenance (code version, time, batch size, command)
    runs/<key>/predictions.jsonl     one line per example, in evaluation order
    runs/<key>/metrics.json          means, bootstrap 95% CIs and the predictions' sha256; present = complete
    runs/.partial-<key>/...          a cell being written; renamed to runs/<key> atomically when finished
    locks/<key>.lock                 held while a process writes the cell

Predictions are appended and flushed per batch. A crash leaves the partial folder; the next run resumes after
the last complete line (a torn last line is cut off), so the final file equals an uninterrupted run's.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from harness.cache import atomic_write_json, file_hash
from harness.errors import HarnessError
from harness.metrics import bootstrap_ci
from harness.spec import RESULT_SCHEMA_VERSION, CellSpec

DEFAULT_LOCK_TIMEOUT_S = 4 * 3600.0  # a cell another run is writing can legitimately take hours on a large split


def lock_timeout() -> float:
    """Seconds a run waits for a cell another process holds (``HARNESS_LOCK_TIMEOUT``, default 4 h)."""
    value = os.environ.get("HARNESS_LOCK_TIMEOUT", "")
    if not value:
        return DEFAULT_LOCK_TIMEOUT_S
    try:
        seconds = float(value)
    except ValueError:
        raise HarnessError(
            f"HARNESS_LOCK_TIMEOUT={value!r} is not a number of seconds; set e.g. HARNESS_LOCK_TIMEOUT=600"
        ) from None
    if seconds <= 0:
        raise HarnessError(f"HARNESS_LOCK_TIMEOUT={value!r} must be a positive number of seconds")
    return seconds


class DamagedCell(HarnessError):
    """A cell folder whose files cannot be read as what they should be; the message names the folder."""


@dataclass(frozen=True)
class CellRecord:
    """A finished cell as read back from the store."""

    key: str
    path: Path
    spec: CellSpec
    provenance: dict[str, Any]
    metrics: dict[str, Any]

    def predictions(self) -> list[dict[str, Any]]:
        return _read_predictions(self.path / "predictions.jsonl")


def _read_predictions(path: Path) -> list[dict[str, Any]]:
    """Every prediction row of ``path``; a line that is not a JSON object with an ``id`` is damage."""
    rows = []
    try:
        data = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise DamagedCell(f"{path}: unreadable ({type(error).__name__})") from None
    # Split on "\n" only: rows are written with ensure_ascii=False, so U+2028 and friends may sit inside strings.
    lines = data.split("\n")
    if lines[-1] == "":
        lines.pop()
    for line_number, line in enumerate(lines, start=1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise DamagedCell(f"{path}:{line_number}: not a JSON prediction row") from None
        if not isinstance(row, dict) or "id" not in row:
            raise DamagedCell(f"{path}:{line_number}: not a prediction row (no 'id')")
        rows.append(row)
    return rows


def file_sha256(path: Path) -> str:
    """sha256 (hex) of a file's bytes: the digest a finished cell records of its predictions."""
    return file_hash(path)


def _read_json_file(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DamagedCell(f"{path}: unreadable ({type(error).__name__})") from None
    if not isinstance(value, dict):
        raise DamagedCell(f"{path}: not a JSON object")
    return value


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def _write_json_atomic(path: Path, value: Any) -> None:
    # The store's JSON format (sorted keys, UTF-8, final newline): cell files stay byte-identical to older ones.
    atomic_write_json(path, value, indent=2, sort_keys=True, ensure_ascii=False, newline=True)


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
        self._handle = open(partial / "predictions.jsonl", "a", encoding="utf-8")  # noqa: SIM115 - closed by close()

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
    """A result store rooted at ``root``. Damaged cells are reported through ``warn`` (once each) and skipped."""

    def __init__(self, root: str | os.PathLike, warn: Callable[[str], None] = _warn) -> None:
        self.root = Path(root)
        self.runs = self.root / "runs"
        self._warn = warn
        self._warned: set[str] = set()
        self._checked: dict[str, CellRecord] = {}  # cells read and found whole by this instance

    def warn(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            self._warn(message)

    def cell_path(self, key: str) -> Path:
        return self.runs / key

    def is_complete(self, key: str) -> bool:
        """Whether the cell is published and whole (a damaged one is reported and counts as missing)."""
        if not (self.cell_path(key) / "metrics.json").is_file():
            return False
        try:
            self.load(key)
        except DamagedCell as damage:
            self.warn(f"{damage}; that cell is recomputed")
            return False
        return True

    def load(self, key: str) -> CellRecord:
        """The complete cell ``key``, every file checked: its spec hashes to its key and it holds n predictions."""
        if key in self._checked:
            return self._checked[key]
        path = self.cell_path(key)
        if not (path / "metrics.json").is_file():
            raise HarnessError(f"cell {key} is not complete in {self.root}")
        stored = _read_json_file(path / "spec.json")
        version = stored.get("spec", {}).get("schema_version") if isinstance(stored.get("spec"), dict) else None
        if version != RESULT_SCHEMA_VERSION:
            raise DamagedCell(
                f"{path}: written by another harness version (result schema {version}, this one reads {RESULT_SCHEMA_VERSION})"
            )
        try:
            spec = CellSpec.from_dict(stored["spec"])
        except (KeyError, TypeError) as error:
            raise DamagedCell(f"{path / 'spec.json'}: not a cell spec ({error})") from None
        if spec.key() != key:
            raise DamagedCell(f"{path / 'spec.json'}: its spec hashes to {spec.key()}, not to its folder's key")
        metrics = _read_json_file(path / "metrics.json")
        rows = _read_predictions(path / "predictions.jsonl") if (path / "predictions.jsonl").is_file() else None
        if rows is None or len(rows) != metrics.get("n") or len(rows) != spec.n_examples:
            found = "no predictions.jsonl" if rows is None else f"{len(rows)} prediction rows"
            raise DamagedCell(f"{path}: {found} for {spec.n_examples} examples (metrics say {metrics.get('n')})")
        recorded = metrics.get("predictions_sha256")  # absent in cells finished before digests were recorded
        if recorded is not None and recorded != file_sha256(path / "predictions.jsonl"):
            raise DamagedCell(
                f"{path / 'predictions.jsonl'}: its sha256 differs from the one metrics.json recorded (changed after the cell finished)"
            )
        record = CellRecord(key=key, path=path, spec=spec, provenance=stored.get("provenance", {}), metrics=metrics)
        self._checked[key] = record
        return record

    def cells(self) -> list[CellRecord]:
        """Every complete, whole cell, in key order; damaged ones are reported and left out."""
        if not self.runs.is_dir():
            return []
        records, stale = [], []
        for folder in sorted(self.runs.iterdir()):
            if folder.name.startswith(".") or not (folder / "metrics.json").is_file():
                continue
            try:
                records.append(self.load(folder.name))
            except DamagedCell as damage:
                if "written by another harness version" in str(damage):
                    stale.append(folder)
                else:
                    self.warn(f"{damage}; skipped (delete that folder, or run again to recompute it)")
        if stale:
            self.warn(
                f"{len(stale)} cell(s) under {self.runs} were written by another harness version and are "
                f"skipped; `harness run` recomputes what you ask for (delete them to silence this)"
            )
        return records

    def _lock(self, key: str) -> FileLock:
        """The cell's lock, acquired; a run that cannot get it within ``HARNESS_LOCK_TIMEOUT`` seconds stops."""
        (self.root / "locks").mkdir(parents=True, exist_ok=True)
        timeout = lock_timeout()
        lock = FileLock(str(self.root / "locks" / f"{key}.lock"), timeout=timeout)
        try:
            lock.acquire()
        except Timeout:
            raise HarnessError(
                f"cell {key} stayed locked by another process for {timeout:g} s ({lock.lock_file}); let that run finish, "
                "or delete the lock file if no harness process is running (HARNESS_LOCK_TIMEOUT sets the wait)"
            ) from None
        return lock

    @contextmanager
    def writing(
        self, spec: CellSpec, provenance: Mapping[str, Any], force: bool = False, expected_ids: Sequence[str] | None = None
    ) -> Iterator[CellWriter | None]:
        """Lock the cell and yield a writer, or ``None`` when it is already complete (and not ``force``).

        The caller appends every remaining example, then calls :meth:`finish`. On an exception the partial
        folder stays for the next run to resume. A complete cell's lock is released before yielding ``None``:
        a run that held it while writing other cells would make lock order matter between runs. A damaged
        published folder is set aside (``runs/.damaged-<key>``) and a damaged partial one started again, each
        with a warning; ``expected_ids`` (the cell's example order) lets a partial folder be checked against it.
        """
        key = spec.key()
        self.runs.mkdir(parents=True, exist_ok=True)
        lock = self._lock(key)
        held = True
        try:
            final = self.cell_path(key)
            partial = self.runs / f".partial-{key}"
            if force:
                self._checked.pop(key, None)
                shutil.rmtree(final, ignore_errors=True)
                shutil.rmtree(partial, ignore_errors=True)
            if self.is_complete(key):
                lock.release()
                held = False
                yield None
                return
            if final.exists():
                # Damaged, or a folder without metrics.json: it would block publishing, so it is kept aside.
                aside = self.runs / f".damaged-{key}"
                shutil.rmtree(aside, ignore_errors=True)
                os.replace(final, aside)
                self.warn(f"{final} was not a whole cell; moved to {aside.name} and recomputed")
            done_ids = self._prepare_partial(partial, spec, provenance, expected_ids)
            writer = CellWriter(partial, done_ids)
            try:
                yield writer
            finally:
                writer.close()
        finally:
            if held:
                lock.release()

    @contextmanager
    def writing_many(
        self,
        specs: Sequence[CellSpec],
        provenance: Mapping[str, Any],
        force: bool = False,
        expected_ids: Sequence[Sequence[str]] | None = None,
    ) -> Iterator[list[CellWriter | None]]:
        """:meth:`writing` for several cells at once: one writer (or ``None``) per spec, in the order given.

        The locks are taken in key order, whatever order the caller lists the cells in, so two runs that share
        cells cannot each hold one the other waits for. A cell listed twice gets ``None`` the second time.
        """
        per_spec: Sequence[Sequence[str] | None] = expected_ids or [None] * len(specs)
        expected = {spec.key(): ids for spec, ids in zip(specs, per_spec, strict=True)}
        with ExitStack() as stack:
            writers: dict[str, CellWriter | None] = {}
            for spec in sorted(specs, key=lambda s: s.key()):
                if spec.key() not in writers:
                    writers[spec.key()] = stack.enter_context(self.writing(spec, provenance, force, expected[spec.key()]))
            # A cell listed twice gets its writer once (a second writer on the same file would duplicate rows).
            firsts = {spec.key(): index for index, spec in reversed(list(enumerate(specs)))}
            yield [writers[spec.key()] if firsts[spec.key()] == index else None for index, spec in enumerate(specs)]

    def _prepare_partial(
        self, partial: Path, spec: CellSpec, provenance: Mapping[str, Any], expected_ids: Sequence[str] | None
    ) -> list[str]:
        """The ids a partial folder already holds (after checking it), or a fresh partial folder's ``[]``."""
        if (partial / "spec.json").is_file():
            try:
                return self._resume(partial, spec, expected_ids)
            except DamagedCell as damage:
                self.warn(f"{damage}; that partial cell is started again")
        # A partial folder without spec.json died before its first write: nothing in it to keep.
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        try:
            _write_json_atomic(partial / "spec.json", {"key": spec.key(), "spec": spec.to_dict(), "provenance": dict(provenance)})
            (partial / "predictions.jsonl").touch()
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        return []

    def _resume(self, partial: Path, spec: CellSpec, expected_ids: Sequence[str] | None) -> list[str]:
        stored = _read_json_file(partial / "spec.json")
        if stored.get("spec") != json.loads(spec.canonical()):
            raise DamagedCell(f"{partial / 'spec.json'}: holds a different spec than its key says")
        predictions = partial / "predictions.jsonl"
        if not predictions.is_file():
            predictions.touch()
            return []
        # Cut a torn last line (the process died mid-write): resume after the last complete example.
        data = predictions.read_bytes()
        complete = data[: data.rfind(b"\n") + 1]
        if len(complete) != len(data):
            with open(predictions, "r+b") as handle:
                handle.truncate(len(complete))
        ids = [row["id"] for row in _read_predictions(predictions)]
        if expected_ids is not None and ids != list(expected_ids)[: len(ids)]:
            raise DamagedCell(f"{predictions}: its {len(ids)} rows are not the cell's first examples in order")
        return ids

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
        summary = summarize_metrics(rows, spec.metrics)
        digest = file_sha256(partial / "predictions.jsonl")
        _write_json_atomic(partial / "metrics.json", {"key": key, **summary, "predictions_sha256": digest})
        # Not cache.publish/build_once: a cell's staging folder (.partial-<key>) is written across runs and resumed
        # after a crash, so it must outlive a failed write, which publish would remove; only the rename is shared.
        os.replace(partial, self.cell_path(key))
        self._checked.pop(key, None)
        return self.load(key)
