"""The real `harness` command, killed with SIGKILL at random points or run twice at once, ends in the same store.

Each test drives `python -m harness.cli` in subprocesses over the tiny world (5 NQ questions, BM25 over a
5-passage corpus, the tiny random model, SPRING trained on 4 questions), as a user's shell would.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load as load_bytes
from tiny_model import tiny_model_dir
from tiny_world import make_world

from harness.checkpoints import TENSOR_NAME, tensor_hash

SPRING = ("spring.n=3", "spring.examples=4", "spring.batch_size=2", "spring.dev_examples=0")


def _argv(world, results: Path, command: str = "run") -> list[str]:
    common = [
        "--model",
        str(tiny_model_dir()),
        "--data-dir",
        str(world["data"]),
        "--corpus",
        str(world["corpus"]),
        "--results",
        str(results),
        *(flag for option in SPRING for flag in ("--option", option)),
    ]
    if command == "train":
        return [sys.executable, "-m", "harness.cli", "train", "--method", "spring", "--tokens", "3", *common]
    return [
        sys.executable,
        "-m",
        "harness.cli",
        "run",
        "--suite",
        "nq",
        "--method",
        "prompt,spring",
        "--tokens",
        "1,3",
        "--reference",
        "",
        "--dtype",
        "fp32",
        "--passages",
        "2",
        "--batch-size",
        "2",
        "--max-new-tokens",
        "6",
        *common,
    ]


def _env(cache: Path) -> dict[str, str]:
    return {**os.environ, "HARNESS_CACHE_DIR": str(cache)}  # a fresh cache: index builds get killed too


def _finish(argv, env) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _killed_at(argv, env, delay: float) -> None:
    """Start ``argv`` and SIGKILL it (its whole process group) after ``delay`` s, if it is still running."""
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        process.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _state(results: Path) -> str:
    """How far a killed run had come: retrieval run, checkpoint, finished and partial cells."""
    runs = results / "runs"
    finished = [p for p in runs.iterdir() if not p.name.startswith(".")] if runs.is_dir() else []
    partial = [p for p in runs.glob(".partial-*")] if runs.is_dir() else []
    rows = sum((p / "predictions.jsonl").read_bytes().count(b"\n") for p in partial if (p / "predictions.jsonl").is_file())
    retrieved = any((results / "retrieval").rglob("*.jsonl")) if (results / "retrieval").is_dir() else False
    trained = any((results / "checkpoints").glob("*.safetensors")) if (results / "checkpoints").is_dir() else False
    return f"retrieval run {'yes' if retrieved else 'no'}, checkpoint {'yes' if trained else 'no'}, cells {len(finished)}/3 finished, {len(partial)} partial ({rows} rows)"


def _store_contents(results: Path) -> dict[str, object]:
    """What a store holds, without what legitimately differs between runs (creation times, timings)."""
    contents: dict[str, object] = {}
    for cell in sorted((results / "runs").glob("*")):
        assert not cell.name.startswith("."), f"leftover {cell.name}"
        assert sorted(p.name for p in cell.iterdir()) == ["metrics.json", "predictions.jsonl", "spec.json"]
        rows = (cell / "predictions.jsonl").read_bytes()
        ids = [json.loads(line)["id"] for line in rows.splitlines()]
        assert len(ids) == len(set(ids)), f"duplicate ids in {cell.name}"
        contents[cell.name] = (rows, (cell / "metrics.json").read_bytes(), json.loads((cell / "spec.json").read_text())["spec"])
    for path in sorted((results / "checkpoints").glob("*")):
        if path.suffix == ".lock":
            continue
        assert not path.name.startswith("."), f"leftover {path.name}"
        if path.suffix == ".safetensors":
            contents[path.name] = tensor_hash(load_bytes(path.read_bytes())[TENSOR_NAME])
            assert path.with_suffix(".json").is_file()
    for path in sorted((results / "retrieval").rglob("*")):
        if path.is_file() and not path.name.endswith(".lock"):
            assert not path.name.startswith("."), f"leftover {path}"
            data = path.read_bytes()
            if path.name.endswith(".meta.json"):  # when and how fast it was searched is provenance, not the run
                data = {k: v for k, v in json.loads(data).items() if k not in ("created", "search_seconds")}
            contents[str(path.relative_to(results))] = data
    return contents


def _verified(results: Path, env) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "harness.cli", "store", "verify", "--results", str(results)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0 and "every one whole" in done.stdout, done.stdout


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory.mktemp("world"))


@pytest.fixture(scope="module")
def uninterrupted(world, tmp_path_factory):
    """The store of one uninterrupted `harness run` (fresh cache), and how long that run took."""
    root = tmp_path_factory.mktemp("uninterrupted")
    started = time.monotonic()
    _finish(_argv(world, root / "results"), _env(root / "cache"))
    return root / "results", time.monotonic() - started


def _listing(folder: Path) -> object:
    """What lies under ``folder`` (paths and sizes); os.walk, unlike glob, skips folders renamed mid-walk."""
    entries = []
    for parent, _, files in os.walk(folder):
        for name in files:
            try:
                entries.append((os.path.join(parent, name), os.stat(os.path.join(parent, name)).st_size))
            except FileNotFoundError:  # renamed or removed by the run between listing and stat
                continue
    return sorted(entries)


def _killed_after_changes(argv, env, watched: list[Path], changes: int) -> str:
    """Start ``argv``; SIGKILL it right after the ``changes``-th change on disk under ``watched`` (a file created,
    grown or renamed: an index build, a retrieval run, a training record or tensor, a partial cell, rows, a publish)."""

    def listing() -> object:
        return [_listing(folder) for folder in watched]

    seen, count = listing(), 0
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    while process.poll() is None:
        now = listing()
        if now != seen:
            seen, count = now, count + 1
            if count == changes:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                return f"killed at change {changes}"
        time.sleep(0.002)
    return "finished first"


def test_runs_killed_ten_times_at_random_points_end_in_the_uninterrupted_store(world, uninterrupted, tmp_path):
    reference, _ = uninterrupted
    expected = _store_contents(reference)
    assert (
        sum(name.endswith(".safetensors") for name in expected) == 1
        and sum(len(v) == 3 for v in expected.values() if isinstance(v, tuple)) == 3
    )

    rng = random.Random(16)
    kills, series = 0, 0
    while kills < 10:  # a store that a run finishes is checked, and the next kills go to a fresh one
        killed, cache = tmp_path / f"killed-{series}", tmp_path / f"cache-{series}"
        env = _env(cache)
        while kills < 10:
            outcome = _killed_after_changes(_argv(world, killed), env, [killed, cache], rng.randint(1, 4))
            print(f"store {series}, {outcome}: then {_state(killed)}")  # shown with -s: where each kill landed
            if outcome == "finished first":
                break
            kills += 1
        done = _finish(_argv(world, killed), env)
        assert _store_contents(killed) == expected, f"store {series}"
        _verified(killed, env)
        assert "cells: " in done.stdout
        series += 1
        assert series <= 4, "runs finished before they could be killed ten times"


def test_train_killed_at_random_points_never_leaves_a_checkpoint_that_looks_finished(world, tmp_path):
    reference, env = tmp_path / "reference", _env(tmp_path / "cache")
    started = time.monotonic()
    _finish(_argv(world, reference, "train"), env)
    duration = time.monotonic() - started
    (expected,) = [v for k, v in _store_contents(reference).items() if k.endswith(".safetensors")]
    killed = tmp_path / "killed"
    rng = random.Random(7)
    for _attempt in range(5):
        _killed_at(_argv(world, killed, "train"), env, rng.uniform(1.0, duration))
        for tensor in (killed / "checkpoints").glob("spring-*.safetensors") if (killed / "checkpoints").is_dir() else ():
            # A tensor is only ever published whole, after its record: anything there is a finished training.
            assert tensor.with_suffix(".json").is_file()
            assert tensor_hash(load_bytes(tensor.read_bytes())[TENSOR_NAME]) == expected
    _finish(_argv(world, killed, "train"), env)
    tensors = list((killed / "checkpoints").glob("spring-*.safetensors"))
    assert len(tensors) == 1 and tensor_hash(load_bytes(tensors[0].read_bytes())[TENSOR_NAME]) == expected


def test_two_runs_at_once_on_one_store_compute_each_cell_once(world, uninterrupted, tmp_path):
    reference, _ = uninterrupted
    shared, env = tmp_path / "shared", _env(tmp_path / "cache-shared")
    processes = [
        subprocess.Popen(_argv(world, shared), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [process.communicate(timeout=300) for process in processes]
    assert [process.returncode for process in processes] == [0, 0], [err[-2000:] for _, err in outputs]
    assert _store_contents(shared) == _store_contents(reference)
    counts = []
    for out, _ in outputs:
        line = next(line for line in out.splitlines() if line.startswith("cells: "))
        counts.append(int(line.split()[1]))
    assert sum(counts) == 3, counts  # every cell computed by exactly one of the two processes
    _verified(shared, env)


def test_the_same_command_gives_byte_identical_stores_across_batch_sizes(world, uninterrupted, tmp_path):
    reference, _ = uninterrupted  # batch size 2
    env = _env(tmp_path / "cache")
    for batch_size in ("1", "3"):
        argv = _argv(world, tmp_path / batch_size)
        argv[argv.index("--batch-size") + 1] = batch_size
        _finish(argv, env)
        assert _store_contents(tmp_path / batch_size) == _store_contents(reference), f"batch size {batch_size}"
