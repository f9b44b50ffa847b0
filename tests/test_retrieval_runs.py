"""Cached retrieval runs, recall@k and has_answer, and the `harness retrieve` / `harness corpus` commands."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from harness.cli import main
from harness.errors import HarnessError
from harness.retrieval import (
    dpr_tokens,
    get_run,
    has_answer,
    make_retriever,
    question_set_hash,
    read_trec,
    recall_at_ks,
)
from harness.retriever import Retriever
from harness.types import Example, Hit, Passage


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))


# ---------------------------------------------------------------------------------------------- has_answer


def test_dpr_tokens_split_punctuation_and_keep_accents_together():
    assert dpr_tokens("Röntgen's prize (1901), U.S.!") == [
        "ro\u0308ntgen",
        "'",
        "s",
        "prize",
        "(",
        "1901",
        ")",
        ",",
        "u",
        ".",
        "s",
        ".",
        "!",
    ]


@pytest.mark.parametrize(
    ("text", "golds", "expected"),
    [
        ("It happened on 14 December 1972.", ["December 1972"], True),
        ("It happened in (1972).", ["1972"], True),  # punctuation is its own token
        ("He went to the party.", ["art"], False),  # no match inside a word
        ("NEW YORK city", ["new york"], True),  # case-insensitive
        ("York, New", ["New York"], False),  # order matters
        ("Wilhelm Conrad Röntgen", ["Wilhelm Conrad Röntgen"], True),
        ("Wilhelm Conrad Rontgen", ["Wilhelm Conrad Röntgen"], False),  # DPR keeps accents
        ("café", ["cafe\u0301"], True),  # NFC vs NFD of the same word
        ("anything", ["", "   "], False),  # an empty gold never matches
        ("The U.S. Army", ["U.S."], True),
        ("price 3,000 dollars", ["3,000"], True),
        ("price 3000 dollars", ["3,000"], False),
    ],
)
def test_has_answer_edge_cases(text, golds, expected):
    assert has_answer(text, golds) is expected


def test_has_answer_with_regex_golds():
    mckinley = r"20\s?,?\s?(32|40)0\s?-?\s?f(ee|oo)t|6,194-meter"
    assert has_answer("Denali rises 20,320 feet above sea level", [mckinley], regex_golds=True)
    assert has_answer("a 6,194-METER peak", [mckinley], regex_golds=True)
    assert not has_answer("it is 19,000 feet tall", [mckinley], regex_golds=True)
    with pytest.raises(HarnessError, match="not a valid regular expression"):
        has_answer("x", ["(unclosed"], regex_golds=True)
    with pytest.raises(TypeError):
        has_answer("x", "a string")  # type: ignore[arg-type]


def test_recall_at_k_exact_values():
    texts = {"a": "the answer is Paris", "b": "nothing here", "c": "Berlin is big", "d": "paris again"}
    examples = [
        Example("e1", "q1", ["Paris"]),  # answer at rank 1
        Example("e2", "q2", ["Berlin"]),  # answer at rank 3
        Example("e3", "q3", ["Rome"]),  # never
        Example("e4", "q4", ["Paris"]),  # no hits at all
    ]
    hits = {
        "e1": [Hit("a", 3.0, 1), Hit("b", 2.0, 2), Hit("c", 1.0, 3)],
        "e2": [Hit("b", 3.0, 1), Hit("d", 2.0, 2), Hit("c", 1.0, 3)],
        "e3": [Hit("a", 3.0, 1), Hit("b", 2.0, 2), Hit("c", 1.0, 3)],
        "e4": [],
    }
    assert recall_at_ks(hits, examples, texts.__getitem__, 3) == {1: 0.25, 2: 0.25, 3: 0.5}


# ------------------------------------------------------------------------------------------------- runs


class CountingRetriever(Retriever):
    """A fake retriever over a dict: hit i of every question is passage i; counts its searches."""

    name = "fake"

    def __init__(self, passages: dict[str, str], version: int = 1) -> None:
        self.passages = passages
        self.version = version
        self.searches = 0

    def spec(self) -> dict[str, Any]:
        return {"retriever": "fake", "corpus": "fixed", "version": self.version}

    def search(self, examples: Sequence[Example], k: int) -> list[list[Hit]]:
        self.searches += 1
        ids = list(self.passages)[:k]
        return [[Hit(pid, float(10 - rank), rank) for rank, pid in enumerate(ids, start=1)] for _ in examples]

    def passage(self, passage_id: str) -> Passage:
        return Passage(passage_id, "", self.passages[passage_id])


PASSAGES = {"p1": "nothing", "p2": "Paris is in France", "p3": "Berlin", "p4": "Rome", "p5": "Madrid"}
EXAMPLES = [
    Example("x1", "capital of France?", ["Paris"]),
    Example("x2", "capital of Spain?", ["Madrid"]),
    Example("x3", "?", ["Oslo"]),
]


def test_run_is_written_then_served_from_cache_and_smaller_k_reuses_it(tmp_path):
    fake = CountingRetriever(PASSAGES)
    first = get_run(fake, "toy", "eval", EXAMPLES, 5, tmp_path)
    assert not first.cached and fake.searches == 1
    assert first.recall == {1: 0.0, 2: 1 / 3, 3: 1 / 3, 4: 1 / 3, 5: 2 / 3}
    assert first.path.name == f"q{question_set_hash(EXAMPLES)[:16]}.k5.jsonl"
    assert first.path.parent == tmp_path / "retrieval" / first.retriever_id / "toy" / "eval"
    lines = [json.loads(line) for line in first.path.read_text().splitlines()]
    assert lines[0] == {"id": "x1", "hits": [["p1", 9.0], ["p2", 8.0], ["p3", 7.0], ["p4", 6.0], ["p5", 5.0]]}
    meta = json.loads(first.path.with_name(first.path.name.replace(".jsonl", ".meta.json")).read_text())
    assert meta["spec"] == fake.spec() and meta["k"] == 5 and meta["n_examples"] == 3
    assert json.loads(first.path.with_name(first.path.name.replace(".jsonl", ".recall.json")).read_text())["recall"]["5"] == 2 / 3

    again = get_run(fake, "toy", "eval", EXAMPLES, 5, tmp_path)
    assert again.cached and fake.searches == 1 and again.hits == first.hits

    smaller = get_run(fake, "toy", "eval", EXAMPLES, 2, tmp_path)
    assert smaller.cached and fake.searches == 1 and smaller.stored_k == 5 and smaller.k == 2
    assert [h.passage_id for h in smaller.hits["x1"]] == ["p1", "p2"]
    assert smaller.recall == {1: 0.0, 2: 1 / 3} and smaller.recall_at_k == 1 / 3
    assert [p.text for p in smaller.passages("x1")] == ["nothing", "Paris is in France"]

    larger = get_run(fake, "toy", "eval", EXAMPLES, 6, tmp_path)  # k=6 cannot be served by k=5
    assert not larger.cached and fake.searches == 2
    # No temporary files are left behind.
    assert not [p for p in first.path.parent.iterdir() if p.name.endswith(".tmp")]


def test_run_key_covers_questions_spec_dataset_and_split(tmp_path):
    fake = CountingRetriever(PASSAGES)
    base = get_run(fake, "toy", "eval", EXAMPLES, 3, tmp_path)
    changed_question = [Example("x1", "capital of FRANCE?", ["Paris"]), *EXAMPLES[1:]]
    assert get_run(fake, "toy", "eval", changed_question, 3, tmp_path).path != base.path
    assert get_run(fake, "toy", "train", EXAMPLES, 3, tmp_path).path != base.path
    assert get_run(fake, "toy2", "eval", EXAMPLES, 3, tmp_path).path != base.path
    assert get_run(CountingRetriever(PASSAGES, version=2), "toy", "eval", EXAMPLES, 3, tmp_path).path != base.path
    assert fake.searches == 4
    # Changed golds keep the run (retrieval does not see golds) but recompute recall.
    new_golds = [Example("x1", EXAMPLES[0].question, ["nothing"]), *EXAMPLES[1:]]
    rerun = get_run(fake, "toy", "eval", new_golds, 3, tmp_path)
    assert rerun.cached and rerun.path == base.path and rerun.recall[1] == 1 / 3 and base.recall[1] == 0.0


def test_trec_output_and_bad_k(tmp_path):
    fake = CountingRetriever(PASSAGES)
    run = get_run(fake, "toy", "eval", EXAMPLES, 2, tmp_path, trec=True)
    trec = run.path.with_suffix(".trec")
    assert trec.read_text().splitlines()[0] == f"x1 Q0 p1 1 9.000000 {run.retriever_id}"
    assert read_trec(trec)["x2"] == [Hit("p1", 9.0, 1), Hit("p2", 8.0, 2)]
    with pytest.raises(HarnessError, match="k must be at least 1"):
        get_run(fake, "toy", "eval", EXAMPLES, 0, tmp_path)


def test_regex_golds_come_from_the_task_card(tmp_path):
    passages = {"p1": "Mount McKinley is 20,320 feet tall"}
    examples = [Example("c1", "How tall is Mount McKinley?", [r"20\s?,?\s?(32|40)0\s?-?\s?f(ee|oo)t"])]
    assert get_run(CountingRetriever(passages), "curatedtrec", "eval", examples, 1, tmp_path).recall == {1: 1.0}
    assert get_run(CountingRetriever(passages), "nq", "eval", examples, 1, tmp_path).recall == {1: 0.0}


def test_oracle_run_on_real_nq(real_data_dir, tmp_path):
    from harness.datasets import load_examples
    from harness.retrieval import RetrieverContext

    examples = load_examples("nq", data_dir=real_data_dir, limit=200)
    oracle = make_retriever("oracle", RetrieverContext(dataset="nq", data_dir=real_data_dir))
    run = get_run(oracle, "nq", "eval", examples, 5, tmp_path)
    with_gold = sum(1 for e in examples if run.hits[e.id])
    assert 120 < with_gold < 200  # 2,655 of 3,610 NQ questions ship a gold passage
    assert run.recall[1] == pytest.approx(run.recall[5])  # one gold passage per question
    assert 0.5 < run.recall[5] <= with_gold / len(examples)


# ------------------------------------------------------------------------------------------------- CLI


def write_corpus(path: Path) -> Path:
    rows = [
        {
            "id": "a",
            "title": "Nobel Prize in Physics",
            "text": "The first Nobel Prize in Physics was awarded to Wilhelm Conrad Röntgen.",
        },
        {"id": "b", "title": "Moon landing", "text": "The last time anyone walked on the moon was in December 1972."},
        {"id": "c", "title": "Filler", "text": "Nothing to see in this passage about gardening."},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_cli_retrieve_suite_skips_unavailable_and_caches(tmp_path, capsys, real_data_dir):
    corpus = write_corpus(tmp_path / "c.jsonl")
    args = [
        "retrieve",
        "--suite",
        "nq",
        "--retriever",
        "bm25,none",
        "--k",
        "2",
        "--limit",
        "30",
        "--corpus",
        str(corpus),
        "--results",
        str(tmp_path / "res"),
        "--data-dir",
        str(real_data_dir),
        "-o",
        "bm25.backend=numpy",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "computed" in out and "recall@2" in out
    assert main(args) == 0
    assert "computed" not in capsys.readouterr().out
    # From a suite, msmarco (hub only) and oracle-less datasets are skipped; alone, they are an error.
    assert (
        main(
            [
                "retrieve",
                "--suite",
                "indomain",
                "--retriever",
                "oracle",
                "--limit",
                "3",
                "--corpus",
                str(corpus),
                "--results",
                str(tmp_path / "res"),
                "--data-dir",
                str(real_data_dir),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "skipped msmarco: msmarco is not available offline" in out
    assert "skipped triviaqa / oracle: oracle: triviaqa ships no gold passages" in out
    assert main(["retrieve", "--suite", "msmarco", "--results", str(tmp_path / "res"), "--data-dir", str(real_data_dir)]) == 2
    assert "msmarco is not available offline" in capsys.readouterr().err
    assert (
        main(
            [
                "retrieve",
                "--suite",
                "triviaqa",
                "--retriever",
                "oracle",
                "--results",
                str(tmp_path / "res"),
                "--data-dir",
                str(real_data_dir),
                "--limit",
                "3",
            ]
        )
        == 2
    )
    # Held-out datasets have no train split: skipped in a suite, an error alone.
    assert (
        main(
            [
                "retrieve",
                "--suite",
                "heldout",
                "--split",
                "train",
                "--retriever",
                "none",
                "--results",
                str(tmp_path / "res"),
                "--data-dir",
                str(real_data_dir),
            ]
        )
        == 0
    )
    assert "skipped bamboogle: bamboogle is a held-out dataset: it has no train split" in capsys.readouterr().out
    assert (
        main(
            [
                "retrieve",
                "--suite",
                "popqa",
                "--split",
                "train",
                "--retriever",
                "none",
                "--results",
                str(tmp_path / "res"),
                "--data-dir",
                str(real_data_dir),
            ]
        )
        == 2
    )
    assert main(["retrieve", "--suite", "nq", "--retriever", "none", "-o", "bm25.k1=2", "--results", str(tmp_path / "res")]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "error: --option bm25.k1=2: 'bm25' is no retriever of this run. Retrievers: none; add it to --retriever or drop the option."
    )
    assert main(["retrieve", "--suite", "nq", "--retriever", "bm25", "-o", "bm2.k1=2", "--results", str(tmp_path / "res")]) == 2
    assert "'bm2' is no retriever of this run. Did you mean 'bm25'?" in capsys.readouterr().err
    assert main(["retrieve", "--suite", "nq", "--retriever", "bm25", "-o", "bm25.k1", "--results", str(tmp_path / "res")]) == 2
    assert "--option 'bm25.k1' must look like RETRIEVER.KEY=VALUE (e.g. minilm.faiss=HNSW32)" in capsys.readouterr().err
    assert main(["retrieve", "--suite", "nq", "--retriever", "bm52", "--results", str(tmp_path / "res")]) == 2
    assert "Did you mean 'bm25'" in capsys.readouterr().err


def test_cli_errors_for_missing_corpus_and_bad_corpus(tmp_path, capsys, real_data_dir):
    assert (
        main(["retrieve", "--suite", "nq", "--limit", "2", "--results", str(tmp_path / "res"), "--data-dir", str(real_data_dir)])
        == 2
    )
    assert "run `harness corpus build` first" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}\n', encoding="utf-8")
    assert main(["corpus", "info", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {bad}:2: duplicate passage id 'a'; passage ids must be unique"
