"""Plugins from other packages: entry points in the harness.datasets / .retrievers / .methods groups.

The example plugin (examples/harness-plugin-example) is visible to every test of this session (conftest.py), so
the dataset, retriever and method contract tests already run over its three components; here: how the registry
reads entry points, and the plugin installed with pip as a user would, then listed and run by the CLI.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from plugin_example import PLUGIN_ROOT, write_distribution
from tiny_model import tiny_model_dir

from harness.errors import HarnessError
from harness.plugins import DATASETS, METHODS, RETRIEVERS, plugin_packages
from harness.registry import Registry


def _distribution(root: Path, name: str, entry_points: str) -> None:
    write_distribution(root, name, "1.2", entry_points)


def test_the_example_plugins_components_are_registered_with_their_package():
    assert "capitals" in DATASETS and "random-passages" in RETRIEVERS and "prompt-reversed" in METHODS
    assert DATASETS.origin("capitals") == METHODS.origin("prompt-reversed") == "harness-plugin-example 0.1.0"
    assert DATASETS.origin("nq") is None and METHODS.origin("spring") is None
    assert plugin_packages(["nq", "capitals"], ["bm25"], ["prompt", "prompt-reversed"]) == {
        "dataset:capitals": "harness-plugin-example 0.1.0",
        "method:prompt-reversed": "harness-plugin-example 0.1.0",
    }


def test_entry_points_are_lazy_module_attribute_paths(tmp_path, monkeypatch):
    _distribution(tmp_path, "lazy-plugin", "[harness.test-things]\ndumps = json:dumps\nnever = no_such_module_xyz:thing\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = Registry("thing", entry_point_group="harness.test-things")
    assert registry.names() == ["dumps", "never"]  # listing imports nothing, so the broken one lists too
    assert registry.get("dumps") is json.dumps and registry.origin("dumps") == "lazy-plugin 1.2"
    with pytest.raises(ModuleNotFoundError):
        registry.get("never")


def test_an_entry_point_that_names_no_attribute_is_refused(tmp_path, monkeypatch):
    _distribution(tmp_path, "bad-plugin", "[harness.test-bad]\nthing = json\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(
        HarnessError,
        match=r"entry point 'thing' of bad-plugin 1.2 \(group harness.test-bad\) is 'json'; it must name 'module:attribute'",
    ):
        Registry("thing", entry_point_group="harness.test-bad").names()


def test_a_plugin_that_reuses_a_built_in_name_is_refused_with_both_owners(tmp_path, monkeypatch):
    _distribution(tmp_path, "clash-plugin", "[harness.test-clash]\nprompt = json:dumps\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = Registry("method", entry_point_group="harness.test-clash")
    registry.register("prompt", "json:loads")  # as harness.methods' registration line does
    with pytest.raises(HarnessError) as caught:
        registry.names()
    assert str(caught.value) == (
        "method 'prompt' of clash-plugin 1.2 (entry point group harness.test-clash) is already registered by harness "
        "itself; rename it in that package's entry points or uninstall one of them"
    )


def test_a_pip_installed_plugin_is_listed_and_runs_through_the_cli(world, tmp_path):
    """As a user: pip install the plugin package, then `harness ls` and `harness run` use its three components."""
    source, target = tmp_path / "plugin-source", tmp_path / "site"
    shutil.copytree(PLUGIN_ROOT, source)  # the build writes build/ and *.egg-info beside the sources
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(target), str(source)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")])}

    def harness(*arguments: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "harness.cli", *arguments], capture_output=True, text=True, timeout=300, env=env
        )
        assert done.returncode == 0, done.stderr[-2000:]
        return " ".join(done.stdout.split())

    listed = harness("ls", "datasets", "--data-dir", str(world["data"]))
    assert "capitals │ Capitals (example plugin) │ test │ 8 │" in listed and "harness-plugin-example 0.1.0" in listed
    results = world["results"]
    harness(
        "run", "--suite", "capitals", "--method", "prompt-reversed", "--retriever", "random-passages",
        "--corpus", str(world["corpus"]), "--model", str(tiny_model_dir()), "--dtype", "fp32", "--limit", "3",
        "--max-new-tokens", "3", "--results", str(results), "--data-dir", str(world["data"]),
    )  # fmt: skip
    (spec_file,) = results.glob("runs/*/spec.json")
    stored = json.loads(spec_file.read_text(encoding="utf-8"))
    assert stored["spec"]["dataset"] == "capitals" and stored["spec"]["method"]["passage_order"] == "reversed"
    assert (
        stored["spec"]["dataset_sha256"]
        == hashlib.sha256((PLUGIN_ROOT / "harness_plugin_example" / "capitals.jsonl").read_bytes()).hexdigest()
    )
    assert stored["provenance"]["plugins"] == {
        "dataset:capitals": "harness-plugin-example 0.1.0",
        "method:prompt-reversed": "harness-plugin-example 0.1.0",
        "retriever:random-passages": "harness-plugin-example 0.1.0",
    }
