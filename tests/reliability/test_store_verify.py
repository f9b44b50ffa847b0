"""`harness store verify` finds each kind of damage by path, exits 1, and `--repair` sets it aside for a rerun."""

import json

import pytest
from tiny_world import run_config

from harness.checkpoints import save_virtual_tokens
from harness.cli import main
from harness.runner import run
from harness.spec import CellSpec
from harness.store import file_sha256


@pytest.fixture()
def store(world):
    """A finished tiny run: closed-book and prompt on 5 NQ questions (2 cells, 1 retrieval run)."""
    run(run_config(world))
    return world["results"]


def _cells(root):
    return sorted(p for p in (root / "runs").iterdir() if not p.name.startswith("."))


def _prompt_cell(root):
    return next(p for p in _cells(root) if json.loads((p / "spec.json").read_text())["spec"]["method"]["name"] == "prompt")


def _rows(cell):
    return [json.loads(line) for line in (cell / "predictions.jsonl").read_text().splitlines()]


def _write_rows(cell, rows, redigest):
    (cell / "predictions.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows))
    if redigest:  # as if the wrong bytes had been written before the cell finished
        metrics = json.loads((cell / "metrics.json").read_text())
        (cell / "metrics.json").write_text(json.dumps({**metrics, "predictions_sha256": file_sha256(cell / "predictions.jsonl")}))


def _verify(root, capsys, *flags):
    code = main(["store", "verify", "--results", str(root), *flags])
    return code, capsys.readouterr().out


def test_a_whole_store_verifies(store, capsys):
    code, out = _verify(store, capsys)
    assert code == 0
    assert "checked 2 cells, 0 checkpoints, 1 retrieval runs: every one whole" in out
    metrics = json.loads((_prompt_cell(store) / "metrics.json").read_text())
    assert metrics["predictions_sha256"] == file_sha256(_prompt_cell(store) / "predictions.jsonl")


def _edit_prediction(cell):
    rows = _rows(cell)
    rows[0]["prediction"] = "Charles Darwin"
    _write_rows(cell, rows, redigest=False)


def _wrong_score(cell):
    rows = _rows(cell)
    rows[1]["metrics"]["exact_match"] = 1.0 - rows[1]["metrics"]["exact_match"]
    _write_rows(cell, rows, redigest=True)


def _wrong_mean(cell):
    metrics = json.loads((cell / "metrics.json").read_text())
    metrics["metrics"]["f1"]["mean"] += 0.5
    (cell / "metrics.json").write_text(json.dumps(metrics))


def _other_golds(cell):
    rows = _rows(cell)
    rows[2]["golds"] = ["nine"]
    _write_rows(cell, rows, redigest=True)


def _older_scorer(cell):
    stored = json.loads((cell / "spec.json").read_text())
    stored["spec"]["scorer_version"] = "squad-v1.1/0"
    key = CellSpec.from_dict(stored["spec"]).key()
    (cell / "spec.json").write_text(json.dumps({**stored, "key": key}))
    cell.rename(cell.with_name(key))


@pytest.mark.parametrize(
    ("damage", "kind", "detail"),
    [
        (_edit_prediction, "corrupt", "predictions.jsonl: its sha256 differs from the one metrics.json recorded"),
        (_wrong_score, "corrupt", "predictions.jsonl line 2 (nq/"),
        (_wrong_mean, "corrupt", "metrics.json: its n, means or CIs are not those of predictions.jsonl"),
        (_other_golds, "corrupt", "its rows' ids, questions and golds are not the examples its spec names"),
        (_older_scorer, "outdated", "scored by squad-v1.1/0; this harness scores with squad-v1.1/1"),
    ],
)
def test_each_damage_is_found_repaired_and_recomputed(store, world, capsys, damage, kind, detail):
    damage(_prompt_cell(store))
    code, out = _verify(store, capsys)
    flat = " ".join(out.split())
    assert code == 1 and "checked 2 cells, 0 checkpoints, 1 retrieval runs: 1 problem(s); `harness store verify --repair`" in flat
    assert kind in flat and " ".join(detail.split()) in flat
    code, out = _verify(store, capsys, "--repair")
    assert code == 1 and "1 problem(s), 1 set aside" in out
    assert len(_cells(store)) == 1 and len(list((store / "runs").glob(".damaged-*"))) == 1
    run(run_config(world))  # the set-aside cell is recomputed, the other read from the store
    code, out = _verify(store, capsys)
    assert code == 0 and "checked 2 cells, 0 checkpoints, 1 retrieval runs: every one whole" in out and "set aside" in out


def test_leftovers_partials_checkpoints_and_retrieval_runs(store, capsys):
    cell = _prompt_cell(store)
    (cell / ".metrics.json.tmp").write_text("{")
    partial = store / "runs" / ".partial-0123456789abcdef0123"
    partial.mkdir()
    (partial / "predictions.jsonl").write_text('{"id": "nq/test/1"}\n')
    checkpoints = store / "checkpoints"
    import torch

    whole = checkpoints / "spring-aaaaaaaaaaaaaaaaaaaa.safetensors"
    save_virtual_tokens(whole, torch.ones(3, 8), {"n": 3})
    whole.with_suffix(".json").write_text("{}")
    truncated = checkpoints / "spring-bbbbbbbbbbbbbbbbbbbb.safetensors"
    save_virtual_tokens(truncated, torch.ones(3, 8), {"n": 3})
    truncated.write_bytes(truncated.read_bytes()[:40])
    (checkpoints / ".lora-cccc-x1y2").mkdir()  # a staging folder a killed training left
    retrieval = next((store / "retrieval").rglob("q*.jsonl"))
    retrieval.write_text(retrieval.read_text() + "{torn\n")
    code, out = _verify(store, capsys)
    flat = " ".join(out.split())
    assert code == 1 and "checked 2 cells, 2 checkpoints, 1 retrieval runs: 5 problem(s)" in flat
    for expected in (
        "orphaned",
        ".metrics.json.tmp",
        "incomplete",
        "an interrupted cell (1 rows written); the next",
        "spring-bbbbbbbbbbbbbbbbbbbb.safetensors",
        "unreadable",
        ".lora-cccc-x1y2",
        "line 6: corrupt retrieval run",
    ):
        assert expected in flat, expected
    assert "spring-aaaaaaaaaaaaaaaaaaaa" not in flat
    code, out = _verify(store, capsys, "--repair")
    assert code == 1 and "5 problem(s), 4 set aside, 1 left (interrupted cells resume on the next run)" in " ".join(out.split())
    assert (checkpoints / ".damaged-spring-bbbbbbbbbbbbbbbbbbbb.safetensors").is_file() and whole.is_file()
    assert (cell / ".damaged-.metrics.json.tmp").is_file() and retrieval.with_name(".damaged-" + retrieval.name).is_file()
    code, out = _verify(store, capsys)
    assert code == 1 and "1 problem(s)" in out and "incomplete" in out


def test_verify_on_a_missing_store_is_a_one_line_error(tmp_path, capsys):
    assert main(["store", "verify", "--results", str(tmp_path / "none")]) == 2
    assert capsys.readouterr().err.startswith(f"error: --results {tmp_path / 'none'} is not a result store folder")
