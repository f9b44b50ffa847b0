"""Your own data from flags: a FlashRAG-format questions file (``--dataset-file``) and corpus (``--corpus``)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from tiny_model import tiny_model_dir

from harness.cli import main
from harness.dataset_file import register_dataset_file
from harness.datasets import load_examples
from harness.errors import HarnessError
from harness.spec import CellSpec
from harness.store import Store
from harness.suites import resolve_suite

QUESTIONS = [
    {"id": "test_0", "question": "who wrote the origin of species", "golden_answers": ["Charles Darwin"]},
    {"id": "test_1", "question": "what is the capital of france", "golden_answers": ["Paris"]},
    {"id": "test_2", "question": "how many legs does a spider have", "golden_answers": ["eight", "8"]},
]
CORPUS = [  # FlashRAG's corpus format: the title quoted on the first line of `contents`
    {"id": "0", "contents": '"Darwin"\nCharles Darwin wrote On the Origin of Species in 1859.'},
    {"id": "1", "contents": '"Paris"\nParis is the capital and most populous city of France.'},
    {"id": "2", "contents": '"Spider"\nA spider has eight legs and spins webs.'},
]


def _jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture
def flashrag_pair(tmp_path, monkeypatch) -> dict[str, Path]:
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    return {
        "questions": _jsonl(tmp_path / "mine.jsonl", QUESTIONS),
        "corpus": _jsonl(tmp_path / "passages.jsonl", CORPUS),
        "results": tmp_path / "results",
    }


def _run(pair: dict[str, Path], *extra: str) -> list[str]:
    return [
        "run",
        "--dataset-file",
        str(pair["questions"]),
        "--corpus",
        str(pair["corpus"]),
        "--method",
        "closed-book,prompt",
        "--model",
        str(tiny_model_dir()),
        "--dtype",
        "fp32",
        "--max-new-tokens",
        "3",
        "--results",
        str(pair["results"]),
        *extra,
    ]


def test_run_on_a_flashrag_pair_keys_the_file_and_retrieves_from_its_corpus(flashrag_pair, capsys):
    assert main(_run(flashrag_pair, "--passages", "2")) == 0
    cells = list(Store(flashrag_pair["results"]).cells())
    sha = hashlib.sha256(flashrag_pair["questions"].read_bytes()).hexdigest()
    assert sorted((c.spec.dataset, c.spec.method["name"], c.spec.passages) for c in cells) == [
        ("mine", "closed-book", 0),
        ("mine", "prompt", 2),
    ]
    assert {c.spec.dataset_sha256 for c in cells} == {sha}
    assert {c.spec.metrics for c in cells} == {("exact_match", "f1", "accuracy")}  # the built-in QA metrics
    prompt = next(c for c in cells if c.spec.method["name"] == "prompt")
    rows = list(prompt.predictions())
    assert [r["id"] for r in rows] == ["mine/test_0", "mine/test_1", "mine/test_2"]
    # BM25 over the FlashRAG corpus: each question's own passage (title unquoted) comes first.
    assert [r["passage_ids"][0] for r in rows] == ["0", "1", "2"]
    assert "mine" in capsys.readouterr().out

    # The same flags again read every cell from the store; an edited file is a new dataset (new keys).
    assert main(_run(flashrag_pair, "--passages", "2")) == 0
    assert "cells: 0 computed, 2 read from the store" in " ".join(capsys.readouterr().out.split())
    _jsonl(flashrag_pair["questions"], [*QUESTIONS[:2], {**QUESTIONS[2], "golden_answers": ["8 legs"]}])
    assert main(_run(flashrag_pair, "--passages", "2")) == 0
    assert len(list(Store(flashrag_pair["results"]).cells())) == 4
    capsys.readouterr()

    # Presentation commands know the dataset from the store alone.
    assert main(["leaderboard", "--results", str(flashrag_pair["results"]), "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines()[1].startswith("mine,3,3,")


def test_the_sha256_enters_the_key_only_for_file_datasets():
    base = dict(
        dataset="nq",
        split="eval",
        example_ids_hash="a",
        examples_hash="b",
        n_examples=1,
        retriever={},
        passages=0,
        model={},
        method={},
        template_hash="t",
        decoding={},
        scorer_version="1",
        metrics=("f1",),
    )
    builtin = CellSpec(**base)
    assert "dataset_sha256" not in builtin.to_dict()  # built-in datasets' keys are unchanged
    assert CellSpec.from_dict(builtin.to_dict()) == builtin
    mine = CellSpec(**{**base, "dataset_sha256": "ab" * 32})
    assert mine.key() != builtin.key() and CellSpec.from_dict(mine.to_dict()) == mine
    assert mine.key() != CellSpec(**{**base, "dataset_sha256": "cd" * 32}).key()


def test_nq_open_form_and_a_named_answers_field(tmp_path):
    nq = _jsonl(tmp_path / "nq_form.jsonl", [{"question": "q one", "answer": ["a"]}, {"question": "q two", "answer": ["b"]}])
    name = register_dataset_file(nq, "nq-form")
    examples = load_examples(name)
    assert [(e.id, e.question, e.golds) for e in examples] == [("nq-form/1", "q one", ("a",)), ("nq-form/2", "q two", ("b",))]
    custom = _jsonl(tmp_path / "custom.jsonl", [{"id": 7, "question": "q", "golden_answers": ["x"], "aliases": ["y", "z"]}])
    register_dataset_file(custom, "custom", answers_field="aliases")
    assert [e.golds for e in load_examples("custom")] == [("y", "z")]
    assert resolve_suite("nq,custom") == ("nq", "custom")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"id": "a", "golden_answers": ["x"]}', "bad.jsonl:2: record has no 'question' field"),
        ('{"id": "a", "question": "q", "golden_answers": "x"}', "bad.jsonl:2: 'golden_answers' must be a non-empty list"),
        ('{"id": "a", "question": "q"}', "bad.jsonl:2: record has no 'golden_answers' (FlashRAG) or 'answer' (NQ-open)"),
        ('{"id": "a", "question": "q", "golden_answers": ["x"]', "bad.jsonl:2: not valid JSON"),
        ('{"id": "x", "question": "q", "golden_answers": ["x"]}', "example id 'bad/x' occurs twice"),
    ],
)
def test_malformed_rows_name_file_and_line(tmp_path, capsys, line, message):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "x", "question": "fine", "golden_answers": ["y"]}) + "\n" + line + "\n")
    assert main(["run", "--dataset-file", str(bad), "--method", "closed-book", "--results", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r" / "runs").exists()  # nothing half-written


def test_flag_errors(tmp_path, capsys):
    assert main(["run", "--dataset-file", str(tmp_path / "absent.jsonl")]) == 2
    assert "absent.jsonl: no such file" in capsys.readouterr().err
    questions = _jsonl(tmp_path / "nq.jsonl", QUESTIONS)
    assert main(["run", "--dataset-file", str(questions)]) == 2  # its stem is a built-in dataset's name
    assert "'nq' is a built-in dataset; give your file another name with --dataset-name NAME" in capsys.readouterr().err
    assert main(["retrieve", "--dataset-name", "mine"]) == 2
    assert "--dataset-name describes a --dataset-file" in capsys.readouterr().err
    with pytest.raises(HarnessError, match="must be letters, digits"):
        register_dataset_file(questions, "my data")
