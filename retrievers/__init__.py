"""The retrievers. Adding one = a file in this folder + one registration line below.

Each entry is a factory ``(harness.retrieval.RetrieverContext) -> harness.retriever.Retriever``.
"""

from harness.plugins import RETRIEVERS

RETRIEVERS.register("none", "retrievers.none:closed_book")
RETRIEVERS.register("oracle", "retrievers.oracle:oracle")
RETRIEVERS.register("bm25", "retrievers.bm25:bm25")
RETRIEVERS.register("bm25-reference", "retrievers.bm25:bm25_reference")
RETRIEVERS.register("minilm", "retrievers.dense:minilm")
RETRIEVERS.register("e5-base", "retrievers.dense:e5_base")
RETRIEVERS.register("e5-large", "retrievers.dense:e5_large")
RETRIEVERS.register("bge-base", "retrievers.dense:bge_base")
