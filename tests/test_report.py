"""`harness report`: the page's numbers are the store's (leaderboard = `harness leaderboard --format json`,
fixed/broken counts = the cells' exact matches), passages are named and marked, the page is self-contained, and
bad input is one line with exit code 2."""

from __future__ import annotations

import json
import re

import pytest
from tiny_store import OUTCOMES, PageReader, write_store

from harness.cli import main
from harness.diff import outcome
from harness.report import build_report, render_html


@pytest.fixture
def store(world):
    return write_store(world["results"], world["corpus"])


def _leaderboard_json(results, capsys) -> list[dict]:
    capsys.readouterr()
    assert main(["leaderboard", "--results", str(results), "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_outcome_names_each_case():
    assert [outcome(a, b) for a, b in ((False, True), (True, False), (True, True), (False, False))] == [
        "fixed",
        "broken",
        "both right",
        "both wrong",
    ]


def test_page_numbers_are_the_leaderboards_and_the_stores(world, store, capsys):
    out = world["results"] / "report.html"
    assert main(["report", "--results", str(world["results"])]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    page = PageReader(out.read_text(encoding="utf-8"))
    records = _leaderboard_json(world["results"], capsys)
    compared = 0
    for record in records:
        for column, expected in record.items():
            metric = column.rsplit(" ", 1)[-1]
            key = (metric, record["dataset"], column)
            if key not in page.values:  # n, lo/hi, datasets: not value columns
                continue
            value, text = page.values[key]
            assert value == pytest.approx(expected, abs=1e-6)
            assert text.split(" ")[0] == f"{expected:.1f}"
            compared += 1
    assert compared == len(page.values) == 2 * 2 * 5  # EM, F1 x prompt, spring x nq, popqa *, 3 averages
    assert page.values[("EM", "nq", "spring[tokens=50] EM")] == (60.0, "60.0")
    assert page.values[("EM", "popqa *", "prompt EM")] == (pytest.approx(100 / 3), "33.3")
    # One pair (SPRING against its verdict reference, prompt), counted on both datasets the two share.
    assert page.counts == {"pair-1": OUTCOMES}
    listed = page.rows["pair-1"]
    assert sorted(listed) == sorted([("fixed", "nq", False)] * 2 + [("broken", "nq", False)] + [("fixed", "popqa", False)])
    assert page.shown == {"pair-1": 4}
    # Passages are shown by title; answer-bearing ones are marked (q1 "capital of france" read Paris and Dog).
    assert "Paris" in page.answer_titles and "Dog" not in page.answer_titles
    assert page.figures["leaderboard"] is True and page.figures["training"] is False


def test_report_model_holds_pairs_commands_and_missing_figures(world, store):
    report = build_report(world["results"])
    (backbone,) = report.backbones
    assert backbone.model == "tiny" and report.suite == "nq,popqa"
    ((anchor, pair),) = backbone.pairs
    assert (anchor, pair.a, pair.b, pair.setting) == ("pair-1", "prompt", "spring[tokens=50]", "bm25 m=2")
    broken = [d for d in pair.differences if d.outcome == "broken"]
    assert [(d.id, d.prediction_a, d.prediction_b) for d in broken] == [("nq/3", "the brown fox", "spring guess 3")]
    assert [p.title for p in broken[0].passages_a] == ["Fox", "Dog"]
    # DPR has-answer: the gold's tokens in a row; "The quick brown fox" does not hold "the brown fox".
    assert [p.answer_bearing for p in broken[0].passages_a] == [False, False]
    assert report.commands == ("harness run --method prompt", "harness run --method spring")
    missing = {f.name: f.missing for f in backbone.figures if f.svg is None}
    assert "harness run" in missing["retrievers"] and "training record" in missing["training"]
    assert backbone.verdicts[0].startswith("spring[tokens=50] \u2212 prompt: +20.0 EM")


def test_compare_names_the_pair_and_caps_the_rows(world, store):
    report = build_report(world["results"], pairs=[("spring", "prompt")], max_rows=1)
    ((_, pair),) = report.backbones[0].pairs
    assert (pair.a, pair.b) == ("spring[tokens=50]", "prompt")  # a bare name stands for its one variant
    assert pair.counts["nq"] == {"fixed": 1, "broken": 2, "both right": 1, "both wrong": 1}  # the reverse view
    assert [d.dataset for d in pair.differences] == ["nq", "popqa"]  # one row per dataset at --max-rows 1
    assert pair.notes == ("nq: the first 1 of 3 differing questions are listed (--max-rows 0 lists all)",)


def test_page_is_self_contained(world, store):
    html = render_html(build_report(world["results"]))
    assert html.count("<svg") >= 1
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", html)  # nothing fetched when viewed
    assert "<link" not in html and "<script src" not in html
    assert "<script>" in html and "<style>" in html


def test_passages_of_a_corpus_not_prepared_here_are_shown_by_id(world, store, monkeypatch, tmp_path):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "another-cache"))
    report = build_report(world["results"])
    ((_, pair),) = report.backbones[0].pairs
    assert [p.title for p in pair.differences[0].passages_a] == [None, None]
    assert len(report.notes) == 1 and "is not prepared on this machine" in report.notes[0]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--compare", "prompt"], "--compare 'prompt': takes two method labels"),
        (["--compare", "prompt,lora"], "no dataset has finished cells of both in one setting; methods present: prompt"),
        (["--max-rows", "-1"], "--max-rows -1: pass a number of questions >= 0"),
        (["--suite", "nq2"], "unknown suite or dataset 'nq2'. Did you mean 'nq' or 'qa12'?"),
    ],
)
def test_bad_input_is_one_line_and_nothing_written(world, store, capsys, arguments, message):
    assert main(["report", "--results", str(world["results"]), *arguments]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (world["results"] / "report.html").exists()


def test_out_is_a_file_and_an_empty_store_is_said(world, store, tmp_path, capsys):
    assert main(["report", "--results", str(world["results"]), "--out", str(tmp_path)]) == 2
    assert "is a folder; pass the path of the HTML file" in capsys.readouterr().err
    assert main(["report", "--results", str(tmp_path / "empty")]) == 2
    assert "holds no finished cell; run `harness run` first" in capsys.readouterr().err
