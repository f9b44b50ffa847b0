"""`harness diff A,B`: the questions whose prediction or score changed, as jsonl records and a terminal table."""

from __future__ import annotations

import json

import pytest
from tiny_store import OUTCOMES, write_store

from harness.cli import main


@pytest.fixture
def results(world):
    write_store(world["results"], world["corpus"])
    return str(world["results"])


def test_jsonl_lists_every_changed_question_with_its_passages(results, capsys):
    assert main(["diff", "prompt,spring", "--format", "jsonl", "--results", results]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    # Both right with the same answer (nq/0, popqa/2) is no change; both wrong with other answers is one.
    assert [(r["id"], r["outcome"]) for r in records] == [
        ("nq/1", "fixed"),
        ("nq/2", "both wrong"),
        ("nq/3", "broken"),
        ("nq/4", "fixed"),
        ("popqa/0", "fixed"),
        ("popqa/1", "both wrong"),
    ]
    first = records[0]
    assert first["a"]["method"] == "prompt" and first["b"]["method"] == "spring[tokens=50]"
    assert (first["question"], first["golds"], first["b"]["prediction"]) == ("what is the capital of france", ["Paris"], "Paris")
    assert first["a"]["scores"] == {"exact_match": 0.0, "f1": 0.5} and first["b"]["scores"]["exact_match"] == 1.0
    assert first["b"]["passages"] == [
        {"id": "p2", "title": "Paris", "answer_bearing": True},
        {"id": "p5", "title": "Dog", "answer_bearing": False},
    ]
    assert first["setting"] == "bm25 m=2"


def test_table_shows_the_counts_and_caps_the_rows(results, capsys):
    assert main(["diff", "prompt,spring", "--max-rows", "1", "--results", results]) == 0
    out = " ".join(capsys.readouterr().out.split())
    nq = OUTCOMES["nq"]
    assert f"│ nq │ {nq['fixed']} │ {nq['broken']} │ {nq['both right']} │ {nq['both wrong']} │" in out
    assert "Paris *" in out and "capital of france" in out
    assert "nq: the first 1 of 4 differing questions are listed (--max-rows 0 lists all)" in out


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["prompt"], "takes two method labels, A,B"),
        (["prompt,spring", "--format", "xml"], "unknown format 'xml'"),
        (["prompt,lora"], "no dataset has finished cells of both in one setting; methods present: prompt, spring[tokens=50]"),
        (["prompt,spring", "--max-rows", "-2"], "--max-rows -2: pass a number of questions >= 0"),
    ],
)
def test_bad_input_is_one_line(results, capsys, arguments, message):
    assert main(["diff", *arguments, "--results", results]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
