"""Data-parallel training: `harness train` under `torchrun --nproc_per_node 2` on CPU (gloo) trains one checkpoint
together, keyed by its process count, that a one-process `harness run` then finds."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from tiny_model import save_tiny_model

from harness.cli import main

TRAIN = ["--method", "spring", "--retriever", "bm25", "--tokens", "3", "--examples", "4", "--batch-size", "2"]


@pytest.fixture
def setup(world, tmp_path):
    model = save_tiny_model(tmp_path / "tiny-llama")  # a folder both processes read (not removed at exit)
    common = ["--model", str(model), "--results", str(world["results"]), "--data-dir", str(world["data"])]
    return [*common, "--corpus", str(world["corpus"]), "--option", "spring.dev_examples=0"]


def _torchrun(arguments: list[str]) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "harness.cli"]
    return subprocess.run([*command, *arguments], capture_output=True, text=True, timeout=300, env=os.environ.copy())


def test_two_processes_train_one_checkpoint_that_one_process_finds(world, setup, capsys):
    done = _torchrun(["train", *TRAIN, *setup, "--option", "spring.processes=2"])
    assert done.returncode == 0, done.stderr[-3000:]
    printed = [line for line in done.stdout.splitlines() if line.startswith("spring: checkpoint ")]
    assert len(printed) == 2 and printed[0] == printed[1]  # both processes end with the one published checkpoint
    (checkpoint,) = (world["results"] / "checkpoints").glob("spring-*.safetensors")
    record = json.loads(checkpoint.with_suffix(".json").read_text())
    assert record["spec"]["training"]["processes"] == 2 and record["log"]["steps"] == 2
    assert done.stdout.count("trainable parameters: 192") == 1  # one process reports

    # One process finds it by the same option, without training.
    run = ["run", "--suite", "nq", "--method", "spring", "--tokens", "3", "--reference", "", "--limit", "2"]
    spring = [f"spring.{option}" for option in ("examples=4", "batch_size=2", "n=3", "processes=2")]
    assert main([*run, "--max-new-tokens", "3", *setup, *[flag for o in spring for flag in ("--option", o)]]) == 0
    out = capsys.readouterr().out
    assert "trainable parameters" not in out and "cells: 1 computed" in out


def test_the_process_count_must_be_named_and_cannot_be_faked(world, setup, capsys, monkeypatch):
    done = _torchrun(["train", *TRAIN, *setup])
    assert done.returncode != 0
    assert "2 processes train together: add --option METHOD.processes=2" in done.stderr
    assert main(["train", *TRAIN, *setup, "--option", "spring.processes=3"]) == 2
    err = capsys.readouterr().err
    assert "processes=3 is not in the store, and one process cannot train it" in err and err.count("\n") == 1
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["run", "--suite", "nq", "--method", "prompt", *setup]) == 2
    assert "harness run evaluates in one process" in capsys.readouterr().err
