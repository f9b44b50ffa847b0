"""The contract every registered retriever keeps, checked on a tiny corpus for each one that runs offline.

A new retriever is covered automatically once it is registered in ``retrievers/__init__.py``. The contract is
structural (a JSON-able stable spec naming its corpus, k respected, ranks and scores ordered, ids that resolve to
passages of the corpus, determinism, a cached run that reads back equal), never relevance: whether the right
passage ranks first is each retriever's own test (tests/test_retrievers.py), so a random retriever passes here.
"""

from __future__ import annotations

import json

import pytest

from harness.errors import NotAvailableOffline
from harness.plugins import RETRIEVERS
from harness.retrieval import RetrieverContext, get_run, make_retriever
from harness.retriever import Retriever
from harness.types import Example

ROWS = [
    {
        "id": "n1",
        "title": "List of Nobel laureates in Physics",
        "text": "The first Nobel Prize in Physics was awarded in 1901 to Wilhelm Conrad Röntgen.",
    },
    {
        "id": "n2",
        "title": "Apollo 17",
        "text": "Apollo 17 was the final mission of the Apollo program; it landed on the Moon in December 1972.",
    },
    {"id": "n3", "title": "Honey bee", "text": "A honey bee is a eusocial flying insect known for building wax nests."},
    {"id": "n4", "title": "Jupiter", "text": "Jupiter is the fifth planet from the Sun and the largest in the Solar System."},
    {"id": "n5", "title": "Nile", "text": "The Nile is a major north-flowing river in northeastern Africa."},
]
# Real NQ questions (so the oracle has gold passages for them) that also match the tiny corpus.
EXAMPLES = [
    Example("nq/1", "who got the first nobel prize in physics", ["Wilhelm Conrad Röntgen"]),
    Example("nq/2", "when was the last time anyone was on the moon", ["14 December 1972 UTC", "December 1972"]),
    Example("nq/3", "what is the largest planet in the solar system", ["Jupiter"]),
]
# Options that keep the suite fast; they do not change results.
FAST = {"bm25": (("backend", "numpy"),)}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def isolated_cache(cache, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(cache))


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "tiny.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8")
    return path


@pytest.mark.parametrize("name", RETRIEVERS.names())
def test_retriever_contract(name, corpus_file, real_data_dir, tmp_path):
    context = RetrieverContext(corpus=str(corpus_file), data_dir=real_data_dir, dataset="nq", options=FAST.get(name, ()))
    try:
        retriever = make_retriever(name, context)
    except NotAvailableOffline as reason:  # hub-only models (e5, bge) on a machine without their weights
        pytest.skip(str(reason))
    assert isinstance(retriever, Retriever) and retriever.name == name

    spec = retriever.spec()
    assert json.loads(json.dumps(spec)) == spec, "spec must be JSON-able"
    assert "corpus" in spec, "spec must name the corpus (fingerprint) it retrieves from"
    if name not in ("none", "oracle"):  # those two do not read the corpus
        from harness.corpus import prepare_corpus

        assert spec["corpus"] == prepare_corpus(corpus_file).fingerprint
    assert retriever.spec() == spec, "spec must be stable"

    for k in (1, 2, 10):
        results = retriever.search(EXAMPLES, k)
        assert len(results) == len(EXAMPLES)
        for hits in results:
            assert len(hits) <= k
            assert [h.rank for h in hits] == list(range(1, len(hits) + 1))
            assert all(a.score >= b.score for a, b in zip(hits, hits[1:]))
            assert len({h.passage_id for h in hits}) == len(hits)
            for hit in hits:
                assert retriever.passage(hit.passage_id).id == hit.passage_id
        assert retriever.search(EXAMPLES, k) == results, "search must be deterministic"
    assert retriever.search([], 3) == []

    corpus_ids = {row["id"] for row in ROWS}
    if name != "oracle":  # the oracle serves the dataset's own gold passages, not the corpus's
        assert {h.passage_id for hits in retriever.search(EXAMPLES, 10) for h in hits} <= corpus_ids

    # Cache round trip: the run stored in a result store reads back equal, and is served from the file.
    first = get_run(retriever, "nq", "eval", EXAMPLES, 2, tmp_path / "results")
    again = get_run(make_retriever(name, context), "nq", "eval", EXAMPLES, 2, tmp_path / "results")
    assert not first.cached and again.cached and again.path == first.path
    assert dict(again.hits) == dict(first.hits) == {e.id: tuple(hits) for e, hits in zip(EXAMPLES, retriever.search(EXAMPLES, 2))}
