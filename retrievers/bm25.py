"""``bm25`` (bm25s) and ``bm25-reference`` (rank-bm25, for cross-checks) over a prepared corpus.

Both index ``"title text"`` of every passage with the same bm25s tokenizer: lower-cased ``\\w\\w+`` tokens,
English stop words removed, Snowball English stemming (PyStemmer). ``bm25`` uses bm25s with Lucene's BM25
(``k1=0.9, b=0.4`` by default, Anserini's defaults for Wikipedia passages). The backend changes speed, not
scores, so it is not part of the spec: ``auto`` uses numpy for searches under ``NUMBA_MIN_QUERIES`` questions and
numba (when installed) above, because numba compiles bm25s's kernels afresh in every process (about 12 s) and
pays that back only over thousands of questions (benchmarks/README.md). Its index is saved under
``<cache>/indexes/bm25-<key>/``, keyed by the corpus fingerprint plus tokenizer, stemmer and BM25 parameters,
and memory-mapped on load. ``bm25-reference`` scores with rank-bm25's ``BM25Okapi`` (same k1, b) in memory;
it exists to cross-check ``bm25`` and is slow on large corpora. As in Lucene, only passages sharing a term with
the question are returned (a question of stop words only gets no hits).

Options (``--option bm25.KEY=VALUE``): ``k1``, ``b``, ``method`` (bm25s: lucene, robertson, atire, bm25l,
bm25+), ``stemmer`` (a PyStemmer algorithm or ``none``), ``stopwords`` (``en`` or ``none``), ``backend``
(``auto``, ``numba``, ``numpy``), ``index`` (an explicit index folder; its corpus fingerprint is checked).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness import cache
from harness.activity import activity
from harness.corpus import Corpus, open_corpus
from harness.errors import HarnessError
from harness.paths import cache_dir
from harness.retrieval import RetrieverContext, spec_hash
from harness.retriever import Retriever
from harness.types import Example, Hit, Passage

TOKEN_PATTERN = r"(?u)\b\w\w+\b"  # bm25s' default splitter, recorded in the spec
METHODS = ("lucene", "robertson", "atire", "bm25l", "bm25+")


@dataclass(frozen=True)
class BM25Config:
    """Everything that changes BM25 scores (the tokenizer and the scoring parameters)."""

    k1: float = 0.9
    b: float = 0.4
    method: str = "lucene"
    stemmer: str = "english"
    stopwords: str = "en"
    token_pattern: str = TOKEN_PATTERN
    lower: bool = True

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise HarnessError(f"bm25: unknown method {self.method!r}; use one of {', '.join(METHODS)}")
        if self.stopwords not in ("en", "none"):
            raise HarnessError(f"bm25: stopwords must be 'en' or 'none' (got {self.stopwords!r})")
        if self.k1 < 0 or not 0 <= self.b <= 1:
            raise HarnessError(f"bm25: need k1 >= 0 and 0 <= b <= 1 (got k1={self.k1}, b={self.b})")


def _stemmer(name: str) -> Any:
    if name == "none":
        return None
    try:
        import Stemmer
    except ImportError:
        raise HarnessError(
            "bm25 stems with PyStemmer, which is not installed: pip install PyStemmer (or pass --option bm25.stemmer=none)"
        ) from None
    if name not in Stemmer.algorithms():
        raise HarnessError(f"bm25: unknown stemmer {name!r}; PyStemmer offers {', '.join(Stemmer.algorithms())}")
    return Stemmer.Stemmer(name)


def make_tokenizer(config: BM25Config) -> Any:
    """A fresh bm25s tokenizer for ``config``."""
    from bm25s.tokenization import Tokenizer

    return Tokenizer(
        lower=config.lower,
        splitter=config.token_pattern,
        stopwords="en" if config.stopwords == "en" else None,
        stemmer=_stemmer(config.stemmer),
    )


def index_text(passage: Passage) -> str:
    """What BM25 indexes for a passage."""
    return f"{passage.title} {passage.text}" if passage.title else passage.text


def _base_spec(name: str, corpus: Corpus, config: BM25Config, library: str) -> dict[str, Any]:
    return {
        "retriever": name,
        "corpus": corpus.fingerprint,
        "corpus_size": len(corpus),
        "library": library,
        "fields": "title text",
        **asdict(config),
    }


def _check_k(k: int) -> None:
    if k < 1:
        raise HarnessError(f"k must be at least 1 (got {k})")


# --------------------------------------------------------------------------------------------------- bm25s


class BM25(Retriever):
    """BM25 with bm25s over a prepared corpus; the index is built once per (corpus, config) and mmapped."""

    name = "bm25"

    def __init__(self, corpus: Corpus, config: BM25Config, backend: str = "auto", index_dir: Path | None = None) -> None:
        import bm25s

        self.corpus = corpus
        self.config = config
        self.backend = backend
        self._bm25s_version = bm25s.__version__
        self._explicit_index = index_dir

    def spec(self) -> dict[str, Any]:
        return _base_spec("bm25", self.corpus, self.config, f"bm25s=={self._bm25s_version}")

    @property
    def index_dir(self) -> Path:
        if self._explicit_index is not None:
            return self._explicit_index
        return cache_dir() / "indexes" / f"bm25-{spec_hash(self.spec())}"

    def _loaded(self, backend: str) -> tuple[Any, Any]:
        # Under the index's lock: two processes must not build the same index at once.
        directory = cache.build_once(
            self.index_dir, lambda staging: _save_bm25_index(self.corpus, self.config, staging), is_built=_index_built
        )
        return _load_index(directory, self.corpus.fingerprint, self.config, backend)

    def search(self, examples: Sequence[Example], k: int) -> list[list[Hit]]:
        _check_k(k)
        if not examples:
            return []
        model, tokenizer = self._loaded(_backend_for(self.backend, len(examples)))
        k_eff = min(k, len(self.corpus))
        query_ids = tokenizer.tokenize([e.question for e in examples], update_vocab=False, return_as="ids", show_progress=False)
        rows, scores = model.retrieve(query_ids, k=k_eff, show_progress=False, n_threads=0)
        flat_ids = self.corpus.ids_at(rows.reshape(-1).tolist())
        results = []
        for q in range(len(examples)):
            order = [j for j in _stable_order(scores[q], rows[q]) if scores[q, j] > 0]
            results.append([Hit(flat_ids[q * k_eff + j], float(scores[q, j]), rank) for rank, j in enumerate(order, start=1)])
        return results

    def passage(self, passage_id: str) -> Passage:
        return self.corpus.passage(passage_id)


# Measured on 2 cores, wiki-offline (27k passages): numpy 1.9 ms/question, numba 0.10 ms/question after a 12 s
# compile, so numba is faster from about 6,700 questions in one process.
NUMBA_MIN_QUERIES = 6000
_numba_compiled = {"done": False}  # once paid in this process, numba is the faster backend for any size


def _backend_for(backend: str, n_queries: int) -> str:
    """The backend one search uses: ``auto`` resolves by query count (and numba's availability)."""
    if backend == "numba":
        try:
            import numba
        except ImportError:
            raise HarnessError("bm25: backend 'numba' needs numba: pip install numba") from None
    if backend != "auto":
        return backend
    if n_queries < NUMBA_MIN_QUERIES and not _numba_compiled["done"]:
        return "numpy"
    try:
        import numba  # noqa: F401
    except ImportError:
        return "numpy"
    _numba_compiled["done"] = True
    return "numba"


def _stable_order(scores: np.ndarray, rows: np.ndarray) -> list[int]:
    # Ties are broken by corpus row so runs are reproducible across backends.
    return sorted(range(len(rows)), key=lambda j: (-float(scores[j]), int(rows[j])))


def _index_built(directory: Path) -> bool:
    return (directory / "harness.json").is_file()  # written last: its presence marks a whole index


def build_bm25_index(corpus: Corpus, config: BM25Config, directory: Path) -> None:
    """Tokenize the corpus as a stream, index it with bm25s and save it atomically to ``directory``."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    cache.publish(directory, lambda staging: _save_bm25_index(corpus, config, staging))


def _save_bm25_index(corpus: Corpus, config: BM25Config, staging: Path) -> None:
    """Tokenize the corpus as a stream, index it with bm25s and save the index into the new folder ``staging``."""
    import bm25s
    from bm25s.tokenization import Tokenized

    tokenizer = make_tokenizer(config)
    with activity(f"bm25 index of {corpus.name}: tokenizing", total=len(corpus), unit="passages") as advance:

        def texts() -> Iterator[str]:
            for row, passage in enumerate(corpus, start=1):
                if row % 1000 == 0:
                    advance(1000)
                yield index_text(passage)
            advance(len(corpus) % 1000)

        ids = list(tokenizer.streaming_tokenize(texts(), update_vocab=True))
    model = bm25s.BM25(k1=config.k1, b=config.b, method=config.method, backend="numpy")
    with activity(f"bm25 index of {corpus.name}: scoring", unit="passages") as advance:
        model.index(Tokenized(ids=ids, vocab=tokenizer.get_vocab_dict()), show_progress=False)
        advance(len(ids))
    staging.mkdir()
    model.save(str(staging), show_progress=False)
    tokenizer.save_vocab(str(staging))
    tokenizer.save_stopwords(str(staging))
    meta = {"corpus": corpus.fingerprint, "corpus_size": len(corpus), "config": asdict(config), "bm25s": bm25s.__version__}
    (staging / "harness.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")


def check_index_meta(directory: Path, fingerprint: str, what: str) -> dict[str, Any]:
    """The index's ``harness.json``; a one-line error if it was built for another corpus."""
    path = directory / "harness.json"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise HarnessError(f"{what} index {directory} is unreadable ({error}); delete it to rebuild") from None
    if meta.get("corpus") != fingerprint:
        raise HarnessError(
            f"{what} index {directory} was built for corpus sha256:{str(meta.get('corpus'))[:12]}, not for the "
            f"requested corpus sha256:{fingerprint[:12]}; rebuild it for this corpus or pick the matching corpus"
        )
    return meta


@functools.lru_cache(maxsize=4)
def _load_index(directory: Path, fingerprint: str, config: BM25Config, backend: str) -> tuple[Any, Any]:
    """The memory-mapped bm25s model and its tokenizer, for ``backend`` (numpy or numba), cached per process."""
    import bm25s

    meta = check_index_meta(directory, fingerprint, "bm25")
    if meta.get("config") != asdict(config):
        raise HarnessError(f"bm25 index {directory} was built with other parameters {meta.get('config')}; delete it to rebuild")
    tokenizer = make_tokenizer(config)
    try:
        model = bm25s.BM25.load(str(directory), mmap=True, show_progress=False, backend=backend)
        tokenizer.load_vocab(str(directory))
        tokenizer.load_stopwords(str(directory))
    except (OSError, ValueError, KeyError, EOFError) as error:  # a truncated .npy, a torn JSON file, a missing one
        raise HarnessError(
            f"bm25 index {directory} is damaged ({type(error).__name__}: {error}); delete that folder to rebuild it"
        ) from None
    return model, tokenizer


# ----------------------------------------------------------------------------------------------- rank-bm25


class BM25Reference(Retriever):
    """rank-bm25's BM25Okapi over the same tokens as ``bm25`` (in memory; for cross-checks)."""

    name = "bm25-reference"

    def __init__(self, corpus: Corpus, config: BM25Config) -> None:
        self.corpus = corpus
        self.config = config

    def spec(self) -> dict[str, Any]:
        import importlib.metadata

        spec = _base_spec("bm25-reference", self.corpus, self.config, f"rank-bm25=={importlib.metadata.version('rank-bm25')}")
        spec["method"] = "okapi"
        spec["epsilon"] = 0.25
        return spec

    def search(self, examples: Sequence[Example], k: int) -> list[list[Hit]]:
        _check_k(k)
        model, tokenizer = _reference_model(self.corpus, self.config)
        k_eff = min(k, len(self.corpus))
        queries = tokenizer.tokenize([e.question for e in examples], update_vocab=False, return_as="string", show_progress=False)
        results = []
        for tokens in queries:
            scores = model.get_scores(tokens)
            top = np.argpartition(-scores, k_eff - 1)[:k_eff] if k_eff < len(scores) else np.arange(len(scores))
            order = [row for row in sorted(top.tolist(), key=lambda row: (-float(scores[row]), row)) if scores[row] > 0]
            ids = self.corpus.ids_at(order)
            results.append([Hit(pid, float(scores[row]), rank) for rank, (pid, row) in enumerate(zip(ids, order), start=1)])
        return results

    def passage(self, passage_id: str) -> Passage:
        return self.corpus.passage(passage_id)


@functools.lru_cache(maxsize=2)
def _reference_model(corpus: Corpus, config: BM25Config) -> tuple[Any, Any]:
    from rank_bm25 import BM25Okapi

    tokenizer = make_tokenizer(config)
    ids = list(tokenizer.streaming_tokenize((index_text(p) for p in corpus), update_vocab=True))
    words = {index: word for word, index in tokenizer.get_vocab_dict().items()}
    # The empty token stands for "no token"; rank-bm25 must not count it as a word.
    documents = [[words[i] for i in doc if words[i] != ""] for doc in ids]
    return BM25Okapi(documents, k1=config.k1, b=config.b, epsilon=0.25), tokenizer


# ------------------------------------------------------------------------------------------------ factories

_OPTIONS = ("k1", "b", "method", "stemmer", "stopwords")


def _config(context: RetrieverContext) -> BM25Config:
    return BM25Config(
        k1=context.option("k1", BM25Config.k1, float),
        b=context.option("b", BM25Config.b, float),
        method=context.option("method", BM25Config.method),
        stemmer=context.option("stemmer", BM25Config.stemmer),
        stopwords=context.option("stopwords", BM25Config.stopwords),
    )


def bm25(context: RetrieverContext) -> BM25:
    context.check_options("bm25", (*_OPTIONS, "backend", "index"))
    backend = context.option("backend", "auto")
    if backend not in ("auto", "numba", "numpy"):
        raise HarnessError(f"bm25: backend must be auto, numba or numpy (got {backend!r})")
    config = _config(context)
    _stemmer(config.stemmer)  # fail now, not in the middle of a run
    index = context.option("index", None, Path)
    return BM25(open_corpus(context.corpus), config, backend=backend, index_dir=index)


def bm25_reference(context: RetrieverContext) -> BM25Reference:
    context.check_options("bm25-reference", _OPTIONS)
    config = _config(context)
    _stemmer(config.stemmer)
    return BM25Reference(open_corpus(context.corpus), config)
