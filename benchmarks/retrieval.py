"""Retrieval benchmark: bm25s vs rank-bm25 on one 100k-passage corpus, and minilm encoding speed.

The corpus is every ``wiki-offline`` passage (real Wikipedia text, assembled from the data directory as
``harness corpus build`` does) plus generated filler passages up to ``--passages`` (default 100,000): each
filler passage has the length of a random real passage and words drawn (fixed seed) from the real passages'
word distribution, so term statistics stay realistic without duplicating any passage's bag of words. The
questions are the first ``--questions`` (default 1,000) NQ-open test questions.

Both BM25 implementations see the same tokens (the ``bm25`` retriever's tokenizer: lower-case, English stop
words, Snowball stemming) and the same k1/b. Measured in one process:

* index time: tokenizing the corpus + building the index;
* queries/s: tokenizing + scoring + top-k. rank-bm25 scores every document in Python for each query, so it is
  timed on a subset of the questions (``--reference-queries``, default 100) and reported per query;
* top-1 agreement between the two on that subset (Lucene vs Okapi IDF differ slightly, so not always 100%);
* minilm passages/s over a random sample of real passages (``--encode``, default 512; 0 to skip).

The last line is the headline: the bm25s / rank-bm25 queries-per-second ratio.

Run: ``python benchmarks/retrieval.py [--data-dir DIR]`` (about 2-4 minutes on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--passages", type=int, default=100_000)
    parser.add_argument("--questions", type=int, default=1_000)
    parser.add_argument("--reference-queries", type=int, default=100)
    parser.add_argument("--encode", type=int, default=512)
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()

    # Keep the benchmark's corpus store and indexes out of the user cache.
    scratch = Path(tempfile.mkdtemp(prefix="harness-bench-"))
    os.environ["HARNESS_CACHE_DIR"] = str(scratch)

    import bm25s
    from bm25s.tokenization import Tokenized
    from rank_bm25 import BM25Okapi

    from harness.corpus import build_default_corpus
    from harness.datasets import load_examples
    from harness.paths import data_dir as resolve_data_dir
    from retrievers.bm25 import BM25Config, index_text, make_tokenizer

    root = resolve_data_dir(args.data_dir)
    corpus = build_default_corpus(root).corpus
    texts = [index_text(p) for p in corpus]
    real = min(len(texts), args.passages)
    rng = random.Random(13)
    # Filler: as long as a random real passage, with words drawn from the real passages' word distribution.
    # (Shuffling one passage would copy its bag of words, and BM25 would tie the copies.)
    pool = [word for text in texts[:real] for word in text.split()]
    while len(texts) < args.passages:
        length = len(texts[rng.randrange(real)].split())
        texts.append(" ".join(rng.choices(pool, k=length)))
    texts = texts[: args.passages]
    questions = [e.question for e in load_examples("nq", data_dir=root, limit=args.questions)]
    print(
        f"corpus: {len(texts):,} passages ({real:,} real wiki-offline + {len(texts) - real:,} generated filler); "
        f"{len(questions):,} NQ questions; k={args.k}"
    )
    config = BM25Config()
    print(f"tokenizer: stemmer={config.stemmer} stopwords={config.stopwords}; k1={config.k1} b={config.b}")

    # ---- bm25s, as the bm25 retriever uses it: index with the numpy backend, save, load memory-mapped with the
    # numba backend (when installed) for querying.
    backend = "numba" if _has_numba() else "numpy"
    started = time.perf_counter()
    tokenizer = make_tokenizer(config)
    corpus_ids = list(tokenizer.streaming_tokenize(texts, update_vocab=True))
    tokenize_seconds = time.perf_counter() - started
    builder = bm25s.BM25(k1=config.k1, b=config.b, method=config.method, backend="numpy")
    builder.index(Tokenized(ids=corpus_ids, vocab=tokenizer.get_vocab_dict()), show_progress=False)
    bm25s_index = time.perf_counter() - started
    index_dir = scratch / "bm25s-index"
    builder.save(str(index_dir), show_progress=False)
    started = time.perf_counter()
    model = bm25s.BM25.load(str(index_dir), mmap=True, show_progress=False, backend=backend)
    # The first retrieval compiles numba's kernels: a one-off cost per process, not query time.
    warm = tokenizer.tokenize(questions[:5], update_vocab=False, return_as="ids", show_progress=False)
    model.retrieve(warm, k=args.k, show_progress=False)
    compile_seconds = time.perf_counter() - started
    started = time.perf_counter()
    query_ids = tokenizer.tokenize(questions, update_vocab=False, return_as="ids", show_progress=False)
    rows, _scores = model.retrieve(query_ids, k=args.k, show_progress=False)
    bm25s_query = time.perf_counter() - started
    bm25s_qps = len(questions) / bm25s_query
    print(
        f"bm25s ({bm25s.__version__}, {backend} backend): index {bm25s_index:.1f}s (tokenize {tokenize_seconds:.1f}s + "
        f"index {bm25s_index - tokenize_seconds:.1f}s); mmap load + one-off JIT warm-up {compile_seconds:.1f}s not counted; "
        f"{len(questions):,} queries in {bm25s_query:.3f}s = {bm25s_qps:,.1f} queries/s"
    )

    # ---- rank-bm25 on the same tokens
    started = time.perf_counter()
    reference_tokenizer = make_tokenizer(config)
    reference_ids = list(reference_tokenizer.streaming_tokenize(texts, update_vocab=True))
    reference_tokenize = time.perf_counter() - started
    words = {i: w for w, i in reference_tokenizer.get_vocab_dict().items()}
    documents = [[words[i] for i in doc if words[i] != ""] for doc in reference_ids]
    reference = BM25Okapi(documents, k1=config.k1, b=config.b)
    reference_index = time.perf_counter() - started
    subset = questions[: args.reference_queries]
    started = time.perf_counter()
    reference_scores = []
    for tokens in reference_tokenizer.tokenize(subset, update_vocab=False, return_as="string", show_progress=False):
        scores = reference.get_scores(tokens)
        top = np.argpartition(-scores, args.k - 1)[: args.k]
        reference_scores.append(scores)
        del top  # top-k selection is part of what is timed, as in bm25s
    reference_query = time.perf_counter() - started
    reference_qps = len(subset) / reference_query
    print(
        f"rank-bm25 (BM25Okapi): index {reference_index:.1f}s (tokenize {reference_tokenize:.1f}s + index "
        f"{reference_index - reference_tokenize:.1f}s); {len(subset):,} of the queries (a subset: it scores "
        f"every passage in Python) in {reference_query:.1f}s = {reference_qps:,.2f} queries/s "
        f"({1000 * reference_query / len(subset):,.0f} ms/query)"
    )
    # Agreement: bm25s' top passage is also a top passage for rank-bm25 (ties count as agreement).
    agreement = np.mean([np.isclose(reference_scores[i][int(rows[i, 0])], reference_scores[i].max()) for i in range(len(subset))])
    print(
        f"top-1 agreement bm25s vs rank-bm25 on {len(subset)} queries: {agreement:.1%} "
        "(IDF differs: Lucene's log(1 + N/df) form vs Okapi's floored log((N - df)/df))"
    )
    print(
        f"index time ratio rank-bm25 / bm25s: {reference_index / bm25s_index:.2f}x with the shared tokenization, "
        f"{(reference_index - reference_tokenize) / (bm25s_index - tokenize_seconds):.2f}x for building the index alone"
    )

    # ---- minilm encoding speed
    if args.encode:
        _encode_speed(corpus, args.encode)

    print(f"bm25s vs rank-bm25: {bm25s_qps / reference_qps:,.1f}x")
    sys.stdout.flush()


def _has_numba() -> bool:
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


def _encode_speed(corpus, n: int) -> None:
    from harness.errors import HarnessError
    from retrievers.dense import PRESETS, load_model, model_dir, passage_input

    preset = PRESETS["minilm"]
    try:
        directory = model_dir(preset)
    except HarnessError as error:
        print(f"minilm: skipped ({error})")
        return
    model = load_model(directory, None, preset.max_seq_length)
    rng = random.Random(7)
    rows = sorted(rng.sample(range(len(corpus)), min(n, len(corpus))))
    inputs = [passage_input(preset, corpus.passage_at(row)) for row in rows]
    model.encode(inputs[:32], batch_size=32)  # warm-up
    started = time.perf_counter()
    model.encode(inputs, batch_size=32, normalize_embeddings=True)
    seconds = time.perf_counter() - started
    rate = len(inputs) / seconds
    import torch

    print(
        f"minilm encoding ({torch.get_num_threads()} torch threads, max_seq_length={preset.max_seq_length}): "
        f"{len(inputs)} random wiki-offline passages in {seconds:.1f}s = {rate:,.1f} passages/s "
        f"(whole corpus of {len(corpus):,}: ~{len(corpus) / rate / 60:,.0f} min)"
    )


if __name__ == "__main__":
    main()
