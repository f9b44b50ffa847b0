"""`harness run --config run.yaml`: the file's keys are the flags, the command line overrides it, the resolved
flags are saved with the run and re-run it."""

from __future__ import annotations

import json

import yaml
from tiny_model import tiny_model_dir

from harness.cli import main
from harness.leaderboard import cells_frame
from harness.store import Store


def _stored_specs(results):
    return [json.loads(path.read_text(encoding="utf-8")) for path in sorted(results.glob("runs/*/spec.json"))]


def test_run_from_a_yaml_file_with_a_flag_overriding_it(world, tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "suite": "nq",
                "method": ["closed-book", "prompt"],  # a list for a comma-separated flag
                "retriever": "bm25",
                "passages": 2,
                "model": str(tiny_model_dir()),
                "dtype": "fp32",
                "limit": 4,
                "max_new_tokens": 3,  # _ for -
                "corpus": str(world["corpus"]),
                "results": str(world["results"]),
                "data-dir": str(world["data"]),
                "option": {"bm25": {"backend": "numpy"}},
            }
        ),
        encoding="utf-8",
    )
    assert main(["run", "--config", str(config), "--limit", "2"]) == 0  # the flag wins over the file's 4
    frame = cells_frame(Store(world["results"]))
    assert sorted(frame["method"]) == ["closed-book", "prompt"] and set(frame["n"]) == {2}
    specs = _stored_specs(world["results"])
    assert {s["spec"]["passages"] for s in specs if s["spec"]["method"]["name"] == "prompt"} == {2}
    assert {s["spec"]["decoding"]["max_new_tokens"] for s in specs} == {3}

    # The resolved flags are saved with the run (and named in each cell's provenance); they re-run it exactly.
    (saved,) = (world["results"] / "configs").glob("run-*.yaml")
    assert {s["provenance"]["config"] for s in specs} == {f"configs/{saved.name}"}
    resolved = yaml.safe_load(saved.read_text(encoding="utf-8"))
    assert resolved["limit"] == 2 and resolved["method"] == "closed-book,prompt" and resolved["passages"] == "2"
    assert resolved["option"] == ["bm25.backend=numpy"] and resolved["results"] == str(world["results"])
    assert resolved["suite"] == "nq" and "tasks" not in resolved  # the flag's first name, not its alias
    assert saved.read_text(encoding="utf-8").startswith(f"# `harness run` as resolved from --config {config}")
    capsys.readouterr()
    assert main(["run", "--config", str(saved)]) == 0
    assert "cells: 0 computed, 2 read from the store" in " ".join(capsys.readouterr().out.split())


def test_an_unknown_key_is_one_line_with_a_did_you_mean(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("suite: nq\nmethods: prompt\n", encoding="utf-8")
    assert main(["run", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --config {config}: unknown key 'methods' for `harness run`. Did you mean 'method'")
    assert "Keys are its flags without dashes: address, answers-field, backend, batch-size," in err
    assert len(err.strip().splitlines()) == 1


def test_a_value_the_flag_refuses_and_bad_yaml_are_one_line(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("limit: many\n", encoding="utf-8")
    assert main(["run", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: --config {config}: limit: Input should be a valid integer, unable to parse string as an integer\n"
    config.write_text("suite: [nq\n", encoding="utf-8")
    assert main(["run", "--config", str(config)]) == 2
    assert (
        capsys.readouterr().err.strip()
        == f"error: --config {config}: not valid YAML at line 2; fix the file (keys are the flag names)"
    )
    assert main(["run", "--config", str(tmp_path / "absent.yaml")]) == 2
    assert "cannot read it" in capsys.readouterr().err
