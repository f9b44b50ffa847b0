"""Sharded dense indexes: hits of sharded FAISS indexes against one flat index, on the real offline corpus.

The corpus is ``wiki-offline`` (``harness corpus build``), encoded once with ``minilm`` (cached in the user
cache; every variant below shares those embeddings). The questions are the first ``--questions`` (default 500) NQ
evaluation questions. The reference is one ``Flat`` index over the whole corpus (exact inner product). Each
variant is a FAISS factory and a shard size (``--option minilm.faiss=...``, ``minilm.shard_rows=...``), measured in
one process, side by side:

* build: seconds to build (and write) the variant's index files (``cached`` when an earlier run left them in the
  user cache: delete ``<cache>/indexes/minilm-*`` to time them again);
* search: queries/s of the search alone (queries encoded once, beforehand);
* largest index file: the memory one shard needs at search time (a sharded search holds one shard at a time);
* recall@k: the mean share of the flat index's top k that the variant returns; top-1: the share of questions
  whose first hit is the flat index's. Hits with equal scores (duplicate passages) are put in corpus-row order
  first, as the retriever's ``search`` does for every index.

The last line is the headline: whether sharded Flat returned exactly the flat index's hits, and the recall@k of
the approximate sharded variant.

Run: ``python benchmarks/sharded_index.py [--shard-rows 5000] [--questions 500] [--k 10]`` (about 1-2 minutes
on 2 CPU cores once the embeddings are cached; encoding them first takes about a minute more).
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--questions", type=int, default=500)
    parser.add_argument("--shard-rows", type=int, default=5000)
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()

    from harness.datasets import load_examples
    from harness.retrieval import RetrieverContext, make_retriever

    examples = load_examples("nq", "eval", data_dir=args.data_dir)[: args.questions]
    shard = str(args.shard_rows)
    variants = [
        ("Flat, one index", {}),
        (f"Flat, shards of {shard}", {"shard_rows": shard}),
        ("HNSW32,Flat, one index", {"faiss": "HNSW32,Flat"}),
        (f"HNSW32,Flat, shards of {shard}", {"faiss": "HNSW32,Flat", "shard_rows": shard}),
        (f"IVF64,Flat (nprobe 1), shards of {shard}", {"faiss": "IVF64,Flat", "shard_rows": shard}),
    ]
    retrievers = {name: make_retriever("minilm", RetrieverContext(options=tuple(options.items()))) for name, options in variants}
    reference = retrievers["Flat, one index"]
    print(f"corpus {reference.corpus.name}: {len(reference.corpus):,} passages; {len(examples)} NQ questions; k = {args.k}")
    reference.embeddings()  # encodes the corpus once if the cache lacks it; not part of any variant's timing
    queries = (
        reference._model()
        .encode([e.question for e in examples], batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
        .astype(np.float32)
    )
    rows: dict[str, np.ndarray] = {}
    print(f"{'variant':<40} {'build s':>8} {'queries/s':>10} {'largest index':>14} {'recall@k':>9} {'top-1':>6}")
    for name, retriever in retrievers.items():
        folder = retriever.index_path.parent
        cached = folder.is_dir() and any(p.suffix in (".index", ".faiss") for p in folder.iterdir())
        started = time.perf_counter()
        retriever._search_rows(queries[:1], args.k)  # builds every index file the variant needs
        build = "cached" if cached else f"{time.perf_counter() - started:.1f}"
        started = time.perf_counter()
        scores, found = retriever._search_rows(queries, args.k)
        search = time.perf_counter() - started
        # The retriever's own tie rule (equal scores: by corpus row), as its search() applies it to every index.
        found = np.take_along_axis(found, np.lexsort((found, -scores), axis=1), axis=1)
        rows[name] = found
        largest = max(p.stat().st_size for p in folder.iterdir() if p.suffix in (".index", ".faiss"))
        flat = rows["Flat, one index"]
        recall = np.mean([len(set(a) & set(b)) / args.k for a, b in zip(found, flat)])
        top1 = np.mean(found[:, 0] == flat[:, 0])
        print(f"{name:<40} {build:>8} {len(queries) / search:>10.0f} {largest / 2**20:>11.1f} MB {recall:>9.3f} {top1:>6.3f}")
    exact = np.array_equal(rows[f"Flat, shards of {shard}"], rows["Flat, one index"])
    hnsw = rows[f"HNSW32,Flat, shards of {shard}"]
    hnsw_recall = np.mean([len(set(a) & set(b)) / args.k for a, b in zip(hnsw, rows["Flat, one index"])])
    print(
        f"sharded Flat returns {'exactly' if exact else 'NOT'} the flat index's top {args.k}; "
        f"sharded HNSW32 recall@{args.k} vs flat {hnsw_recall:.3f}"
    )


if __name__ == "__main__":
    main()
