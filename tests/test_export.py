"""`harness export`: the tiny store in lm-eval's and FlashRAG's shapes and as JSONL, read back with json."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from tiny_store import EXACT_MATCH, write_store

from harness.cli import main
from harness.export import standard_error


@pytest.fixture
def results(world):
    write_store(world["results"], world["corpus"])
    return world["results"]


def _export(results, fmt, capsys) -> list[str]:
    assert main(["export", "--format", fmt, "--results", str(results)]) == 0
    return capsys.readouterr().out.split()


def test_standard_error_is_lm_evals():
    assert standard_error([1.0, 0.0, 0.0, 1.0, 0.0]) == pytest.approx(math.sqrt(0.3 / 5))  # sample variance 0.3
    assert standard_error([1.0]) == 0.0


def test_lm_eval_shape(results, capsys):
    paths = _export(results, "lm-eval", capsys)
    folder = results / "export" / "lm-eval" / "tiny_spring_tokens=50_bm25-m2"
    assert str(folder / "results.json") in paths and str(folder / "samples_nq.jsonl") in paths
    document = json.loads((folder / "results.json").read_text())
    assert set(document) >= {"results", "configs", "versions", "n-shot", "higher_is_better", "n-samples", "config"}
    nq = document["results"]["nq"]
    assert nq["exact_match,none"] == pytest.approx(0.6) and nq["alias"] == "nq"
    assert nq["exact_match_stderr,none"] == pytest.approx(standard_error([float(v) for v in EXACT_MATCH["nq"]["spring"]]))
    assert document["n-samples"]["popqa"] == {"original": 3, "effective": 3}
    assert document["config"]["model_args"] == "model=tiny,method=spring[tokens=50],retriever=bm25,passages=2"
    assert document["configs"]["nq"]["metadata"]["harness_cell"]
    samples = [json.loads(line) for line in (folder / "samples_nq.jsonl").read_text().splitlines()]
    assert [s["exact_match"] for s in samples] == [1.0, 1.0, 0.0, 0.0, 1.0]
    first = samples[1]  # "what is the capital of france", read Paris and Dog
    assert first["doc"]["question"] == "what is the capital of france" and first["target"] == ["Paris"]
    assert first["filtered_resps"] == ["Paris"]
    assert [(p["title"], p["answer_bearing"]) for p in first["passages"]] == [("Paris", True), ("Dog", False)]
    assert first["passages"][0]["text"] == "Paris is the capital and most populous city of France."


def test_flashrag_shape(results, capsys):
    _export(results, "flashrag", capsys)
    folder = results / "export" / "flashrag" / "nq_prompt_bm25-m2"
    items = json.loads((folder / "intermediate_data.json").read_text())
    assert [item["output"]["metric_score"]["em"] for item in items] == [1.0, 0.0, 0.0, 1.0, 0.0]
    assert set(items[0]) == {"id", "question", "golden_answers", "output"}
    assert set(items[0]["output"]) == {"retrieval_result", "prompt", "raw_pred", "pred", "metric_score"}
    assert items[0]["output"]["prompt"] is None  # a cell written without its inputs (the tiny store's rows)
    assert items[1]["output"]["retrieval_result"][0] == {
        "id": "p2",
        "contents": '"Paris"\nParis is the capital and most populous city of France.',
    }
    scores = dict(line.split(": ") for line in (folder / "metric_score.txt").read_text().splitlines())
    assert float(scores["em"]) == pytest.approx(0.4) and set(scores) == {"em", "f1"}


def test_jsonl_and_bad_input(results, capsys):
    (path,) = _export(results, "jsonl", capsys)
    rows = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 2 * (5 + 3) and {r["method"] for r in rows} == {"prompt", "spring[tokens=50]"}
    assert [p["title"] for p in rows[0]["passages_read"]] == ["Darwin", "Fox"]  # nq/0 read p1 and p4
    assert main(["export", "--format", "lmeval", "--results", str(results)]) == 2
    assert "Did you mean 'lm-eval'" in capsys.readouterr().err
    assert main(["export", "--method", "lora", "--results", str(results)]) == 2
    assert "no finished cell matches these filters" in capsys.readouterr().err


def test_each_exported_row_carries_the_input_the_model_read(world, capsys):
    """A cell computed by the runner stores each question's rendered input (passages cut as they were read)."""
    from tiny_world import run_config

    from harness.runner import run
    from harness.templates import INSTRUCTION

    run(run_config(world, methods=("prompt",), max_input_tokens=90))
    paths = _export(world["results"], "lm-eval", capsys)
    (samples,) = [Path(p) for p in paths if p.endswith("samples_nq.jsonl")]
    rows = [json.loads(line) for line in samples.read_text().splitlines()]
    assert len(rows) == 5
    for row in rows:
        prompt, decoding = row["arguments"][0]
        assert prompt.endswith(f"{INSTRUCTION}\nQuestion: {row['doc']['question']}\nAnswer:")
        assert prompt.removeprefix("<s>").startswith("[1] ") and decoding["max_new_tokens"] == run_config(world).max_new_tokens
    paths = _export(world["results"], "flashrag", capsys)
    (intermediate,) = [Path(p) for p in paths if p.endswith("intermediate_data.json")]
    assert [item["output"]["prompt"] for item in json.loads(intermediate.read_text())] == [r["arguments"][0][0] for r in rows]


def test_run_writes_its_cells_in_lm_evals_shape_with_output_path(world, tmp_path):
    from tiny_model import tiny_model_dir

    out = tmp_path / "lm-eval-out"
    flags = ["--model", str(tiny_model_dir()), "--dtype", "fp32", "--results", str(world["results"])]
    flags += ["--data-dir", str(world["data"]), "--corpus", str(world["corpus"]), "--max-new-tokens", "3"]
    assert main(["run", "--suite", "nq", "--method", "prompt", "--limit", "3", "--output-path", str(out), *flags]) == 0
    (document,) = [json.loads(path.read_text()) for path in out.glob("*/results.json")]
    assert document["n-samples"]["nq"] == {"original": 3, "effective": 3}
    assert {"exact_match,none", "exact_match_stderr,none", "f1,none"} <= set(document["results"]["nq"])
    assert len((next(out.glob("*/samples_nq.jsonl"))).read_text().splitlines()) == 3
