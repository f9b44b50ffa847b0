"""`harness run --executor ray`: the grid as Ray tasks on a local cluster (ray.init(num_cpus=2)) writes the same
store as a local run, byte for byte in predictions, metrics and checkpoints."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from tiny_model import tiny_model_dir
from tiny_world import run_config

from harness.cli import main
from harness.executors import DatasetFile, RayOptions, run_on_ray, trainings
from harness.runner import RunContext, run

try:
    import ray  # noqa: F401
except ImportError:
    HAVE_RAY = False
else:
    HAVE_RAY = True
needs_ray = pytest.mark.skipif(
    not HAVE_RAY, reason="Ray is an optional extra (pip install -e '.[ray]'); the dev extra installs it"
)

SPRING = (("spring.n", "3"), ("spring.examples", "4"), ("spring.batch_size", "2"), ("spring.dev_examples", "0"))


def _store_bytes(results: Path) -> dict[str, object]:
    """Every cell's predictions and metrics (bytes) and every checkpoint's tensor bytes and metadata, by path.

    A safetensors header's metadata order differs between processes (a hash map), so checkpoints compare by
    content, not by file bytes."""
    from safetensors import safe_open

    content: dict[str, object] = {
        str(path.relative_to(results)): path.read_bytes()
        for pattern in ("runs/*/predictions.jsonl", "runs/*/metrics.json")
        for path in results.glob(pattern)
    }
    for path in results.glob("checkpoints/*.safetensors"):
        with safe_open(str(path), framework="pt") as handle:
            tensors = {name: handle.get_tensor(name).numpy().tobytes() for name in handle.keys()}  # noqa: SIM118
            content[str(path.relative_to(results))] = (tensors, handle.metadata())
    return content


@pytest.fixture
def one_thread():
    """Ray tasks run with 1 CPU, so 1 torch thread; the local reference run does too (sums in the same order)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@needs_ray
def test_ray_tasks_write_the_store_a_local_run_writes(world, tmp_path, one_thread):
    local = run_config(world, methods=("prompt", "spring"), tokens=(1, 3), method_options=SPRING, results=tmp_path / "local")
    run(local, RunContext(local, log=lambda line: None))
    on_ray = dataclasses.replace(local, results=tmp_path / "ray")
    assert trainings(on_ray) == [("spring", "bm25")]
    lines: list[str] = []
    run_on_ray(on_ray, RayOptions(cpus_per_task=1), DatasetFile(), log=lines.append)
    assert any(line.startswith("ray: done spring on bm25 passages: checkpoint ") for line in lines)
    assert any(line.startswith("ray: done nq: cells: 3 computed, 0 read from the store") for line in lines)
    stored = _store_bytes(tmp_path / "ray")
    assert len(stored) == 3 * 2 + 1 and stored == _store_bytes(tmp_path / "local")
    # The driver's own pass then finds every cell.
    logged: list[str] = []
    run(on_ray, RunContext(on_ray, log=logged.append))
    assert logged[-1] == "cells: 0 computed, 3 read from the store"


@needs_ray
def test_the_run_command_on_ray_prints_the_leaderboard(world, capsys):
    common = ["--model", str(tiny_model_dir()), "--dtype", "fp32", "--data-dir", str(world["data"]), "--limit", "2"]
    args = ["run", "--suite", "nq", "--method", "prompt", "--corpus", str(world["corpus"]), "--results", str(world["results"])]
    assert main([*args, *common, "--max-new-tokens", "3", "--executor", "ray"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "ray: 1 datasets task(s)" in out and "ray: done nq: cells: 1 computed" in out
    assert "cells: 0 computed, 1 read from the store" in out and "EM x100" in out


def test_ray_flags_without_the_ray_executor_and_a_missing_ray_are_one_line(world, capsys, monkeypatch):
    args = ["run", "--suite", "nq", "--method", "prompt", "--results", str(world["results"])]
    assert main([*args, "--address", "auto"]) == 2
    assert "--address configure the Ray executor; add --executor ray" in capsys.readouterr().err
    assert main([*args, "--executor", "rey"]) == 2
    assert "Did you mean 'ray'" in capsys.readouterr().err
    monkeypatch.setitem(__import__("sys").modules, "ray", None)  # as if Ray were not installed
    common = ["--model", str(tiny_model_dir()), "--data-dir", str(world["data"]), "--corpus", str(world["corpus"])]
    assert main([*args, *common, "--limit", "1", "--executor", "ray"]) == 2
    err = capsys.readouterr().err
    assert '--executor ray needs Ray, an optional extra: pip install -e ".[ray]"' in err and err.count("\n") == 1
