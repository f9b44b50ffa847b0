"""Retrieval corpora: passage readers, the prepared passage store, content fingerprints and ``wiki-offline``.

A passage is ``{id, title, text}``. Three on-disk formats are read, always as a stream (a corpus of any size
never becomes one Python list of passages):

* JSON lines ``{"id", "title", "text"}`` (``.jsonl`` or ``.jsonl.gz``);
* FlashRAG JSON lines ``{"id", "contents"}`` where ``contents`` is ``"title\\ntext"`` (a quoted title, as
  FlashRAG writes it, is unquoted);
* DPR's ``psgs_w100.tsv`` (``.tsv`` / ``.tsv.gz``: header ``id<TAB>text<TAB>title``).

Before a retriever uses a corpus file it is *prepared* once: streamed into a SQLite passage store (random
access by id and by row, in file order) while its fingerprint is computed. The fingerprint is the sha256 of
the canonical passage sequence (``json.dumps([id, title, text])`` per line, in order), so the same passages
give the same fingerprint whatever the file format. Every index and retrieval run is keyed by it.

Where things live (all under the user cache, :func:`harness.paths.cache_dir`, so every result store shares
them):

* ``<cache>/corpora/wiki-offline/`` : the default offline corpus written by ``harness corpus build``
  (``passages.jsonl`` in the ``{id, title, text}`` format, ``store.sqlite``, ``meta.json``). ``harness
  retrieve`` never builds it implicitly: if it is absent the error says to run ``harness corpus build``.
* ``<cache>/corpora/stores/<fingerprint>/`` : prepared stores of user corpus files, found again through a
  pointer keyed by the file's resolved path, size and modification time.

Bad input (empty corpus, duplicate id, missing text, a line that is not UTF-8 or not JSON) fails with one
:class:`HarnessError` naming the file and line; nothing partial is left behind (stores are written to a
temporary folder and moved into place only when complete).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from harness import cache
from harness.activity import activity
from harness.errors import HarnessError
from harness.paths import cache_dir
from harness.types import Passage

DEFAULT_CORPUS = "wiki-offline"
# Bump when the stored layout or the wiki-offline assembly changes, so stale stores are rebuilt.
STORE_VERSION = 1
WIKI_OFFLINE_VERSION = 1
_BATCH = 2048


# --------------------------------------------------------------------------------------------------- readers


def passage_id(title: str, text: str) -> str:
    """The content id ``wiki-offline`` and the oracle give a passage: a hash of its title and text.

    Content ids make de-duplication exact and let the oracle name the same passage the corpus holds.
    """
    return hashlib.sha256(f"{title}\n{text}".encode()).hexdigest()[:16]


def clean(text: str) -> str:
    """Whitespace collapsed to single spaces (the raw files mix newlines, tabs and double spaces)."""
    return " ".join(text.split())


def _open_binary(path: Path) -> IO[bytes]:
    if not path.is_file():
        raise HarnessError(f"corpus file {path} does not exist; pass an existing passage file")
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")  # type: ignore[return-value]  # GzipFile is an IO[bytes]


def _format_of(path: Path) -> str:
    name = path.name.lower().removesuffix(".gz")
    if name.endswith(".jsonl"):
        return "jsonl"
    if name.endswith(".tsv"):
        return "tsv"
    raise HarnessError(
        f"{path}: unknown corpus format; use .jsonl ({{id, title, text}} or FlashRAG {{id, contents}}) "
        "or DPR's .tsv (id, text, title), optionally .gz"
    )


def _decoded_lines(path: Path) -> Iterator[tuple[int, str]]:
    # Decode line by line so a bad byte is reported with its line number.
    with _open_binary(path) as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                yield number, raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise HarnessError(f"{path}:{number}: line is not UTF-8 ({error.reason}); re-encode the file as UTF-8") from None


def _split_contents(contents: str) -> tuple[str, str]:
    title, newline, text = contents.partition("\n")
    if not newline:
        return "", contents
    if len(title) >= 2 and title[0] == title[-1] == '"':
        title = title[1:-1]
    return title, text


def _checked(path: Path, line: int, pid: Any, title: Any, text: Any) -> Passage:
    if not isinstance(pid, (str, int)) or isinstance(pid, bool) or str(pid).strip() == "":
        raise HarnessError(f"{path}:{line}: passage has no id; every passage needs a non-empty 'id'")
    if not isinstance(text, str) or not text.strip():
        raise HarnessError(f"{path}:{line}: passage {pid!s} has no text; give it a non-empty 'text' (or 'contents')")
    if title is None:
        title = ""
    if not isinstance(title, str):
        raise HarnessError(f"{path}:{line}: passage {pid!s} has a non-string title")
    return Passage(str(pid), title, text)


def read_passages(path: str | os.PathLike) -> Iterator[tuple[int, Passage]]:
    """``(line_number, passage)`` for each passage of a corpus file, streamed, in file order."""
    path = Path(path)
    fmt = _format_of(path)
    if fmt == "tsv":
        yield from _read_dpr_tsv(path)
        return
    for line, raw in _decoded_lines(path):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as error:
            raise HarnessError(f"{path}:{line}: not valid JSON ({error.msg})") from None
        if not isinstance(record, dict):
            raise HarnessError(f"{path}:{line}: expected a JSON object with id, title and text")
        if "text" in record:
            yield line, _checked(path, line, record.get("id"), record.get("title", ""), record["text"])
        elif "contents" in record:
            if not isinstance(record["contents"], str):
                raise HarnessError(f"{path}:{line}: 'contents' must be a string")
            title, text = _split_contents(record["contents"])
            yield line, _checked(path, line, record.get("id"), title, text)
        else:
            raise HarnessError(f"{path}:{line}: passage has no text; give it a 'text' (or FlashRAG 'contents') field")


def _read_dpr_tsv(path: Path) -> Iterator[tuple[int, Passage]]:
    lines = _decoded_lines(path)
    header = next(lines, None)
    if header is None:
        raise HarnessError(f"{path}: corpus is empty; it needs at least one passage")
    if header[1].rstrip("\r\n").split("\t")[:3] != ["id", "text", "title"]:
        raise HarnessError(f"{path}:1: expected DPR's header 'id<TAB>text<TAB>title'")
    for line, raw in lines:
        raw = raw.rstrip("\r\n")
        if not raw:
            continue
        fields = raw.split("\t")
        if len(fields) != 3:
            raise HarnessError(f"{path}:{line}: expected 3 tab-separated fields (id, text, title), found {len(fields)}")
        pid, text, title = fields
        # DPR quotes fields that contain quotes, doubling the inner ones (csv style).
        if len(text) >= 2 and text[0] == text[-1] == '"':
            text = text[1:-1].replace('""', '"')
        yield line, _checked(path, line, pid, title, text)


def write_passages_jsonl(passages: Iterable[Passage], path: Path) -> int:
    """Write passages as ``{id, title, text}`` JSON lines (the canonical format); returns the count."""
    count = 0
    with open(path, "w", encoding="utf-8") as handle:
        for passage in passages:
            handle.write(json.dumps({"id": passage.id, "title": passage.title, "text": passage.text}, ensure_ascii=False))
            handle.write("\n")
            count += 1
    return count


class Fingerprint:
    """Incremental content fingerprint of a passage sequence (see the module docstring)."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()

    def add(self, passage: Passage) -> None:
        self._hash.update(json.dumps([passage.id, passage.title, passage.text], ensure_ascii=False).encode("utf-8"))
        self._hash.update(b"\n")

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def fingerprint(passages: Iterable[Passage]) -> str:
    """The sha256 content fingerprint of a passage sequence."""
    digest = Fingerprint()
    for passage in passages:
        digest.add(passage)
    return digest.hexdigest()


# ----------------------------------------------------------------------------------------------------- store


@dataclass(frozen=True)
class CorpusInfo:
    """What identifies a prepared corpus: its name, content fingerprint and size."""

    name: str
    fingerprint: str
    size: int


class Corpus:
    """A prepared corpus: a read-only SQLite passage store with random access by id and by row (0-based)."""

    def __init__(self, directory: Path) -> None:
        meta_path = directory / "meta.json"
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise HarnessError(f"corpus store {directory} is unreadable ({error}); delete it and prepare it again") from None
        if meta.get("store_version") != STORE_VERSION:
            raise HarnessError(f"corpus store {directory} has an old layout; delete it and prepare it again")
        self.directory = directory
        self.info = CorpusInfo(meta["name"], meta["fingerprint"], meta["size"])
        self.meta = meta
        self._connection: sqlite3.Connection | None = None

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def fingerprint(self) -> str:
        return self.info.fingerprint

    def __len__(self) -> int:
        return self.info.size

    def __repr__(self) -> str:
        return f"Corpus({self.name!r}, {self.info.size} passages, sha256:{self.fingerprint[:12]})"

    @property
    def _db(self) -> sqlite3.Connection:
        if self._connection is None:
            uri = f"file:{self.directory / 'store.sqlite'}?mode=ro"
            # Retrievers are read from worker threads (FAISS, bm25s); the store is read-only, so sharing is safe.
            self._connection = sqlite3.connect(uri, uri=True, check_same_thread=False)
        return self._connection

    def _rows(self, sql: str, parameters: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """The rows of a query; a damaged or missing ``store.sqlite`` is a one-line error naming the fix."""
        try:
            return self._db.execute(sql, parameters).fetchall()
        except sqlite3.DatabaseError as error:
            fix = (
                "run `harness corpus build --force`"
                if self.name == DEFAULT_CORPUS
                else "delete that folder; the next command prepares the corpus again"
            )
            raise HarnessError(f"corpus store {self.directory} is damaged ({error}); {fix}") from None

    def passage(self, pid: str) -> Passage:
        """The passage with id ``pid``; a HarnessError if the corpus has none."""
        found = self._rows("SELECT id, title, text FROM passages WHERE id = ?", (pid,))
        row = found[0] if found else None
        if row is None:
            raise HarnessError(f"passage {pid!r} is not in corpus {self.name} (sha256:{self.fingerprint[:12]})")
        return Passage(*row)

    def passage_at(self, row: int) -> Passage:
        """The passage at 0-based position ``row`` in corpus order."""
        found = self._rows("SELECT id, title, text FROM passages WHERE row = ?", (int(row),))
        if not found:
            raise IndexError(f"row {row} out of range for {self!r}")
        return Passage(*found[0])

    def ids_at(self, rows: Sequence[int]) -> list[str]:
        """The passage ids at these 0-based rows, in the given order."""
        wanted = sorted({int(r) for r in rows})
        found: dict[int, str] = {}
        for start in range(0, len(wanted), 900):  # SQLite's host-parameter limit
            chunk = wanted[start : start + 900]
            marks = ",".join("?" * len(chunk))
            found.update(self._rows(f"SELECT row, id FROM passages WHERE row IN ({marks})", chunk))
        return [found[int(r)] for r in rows]

    def batches(self, size: int = _BATCH, start: int = 0) -> Iterator[list[Passage]]:
        """Consecutive lists of up to ``size`` passages in corpus order, from row ``start`` on."""
        last = start - 1
        while True:
            rows = self._rows("SELECT row, id, title, text FROM passages WHERE row > ? ORDER BY row LIMIT ?", (last, size))
            if not rows:
                return
            yield [Passage(row[1], row[2], row[3]) for row in rows]
            last = rows[-1][0]

    def __iter__(self) -> Iterator[Passage]:
        """Every passage in corpus order, streamed in batches."""
        for batch in self.batches():
            yield from batch

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def _write_store(
    numbered: Iterable[tuple[int, Passage]], directory: Path, name: str, source: str, extra: dict[str, Any] | None = None
) -> Corpus:
    """Stream ``(line, passage)`` into a new store at ``directory`` (atomically); checks ids, computes the fingerprint.

    The caller holds ``directory``'s lock (the store is written under the fixed staging name of :func:`cache.publish`).
    """
    directory.parent.mkdir(parents=True, exist_ok=True)
    cache.publish(directory, lambda tmp: _fill_store(numbered, tmp, name, source, extra))
    return Corpus(directory)


def _fill_store(numbered: Iterable[tuple[int, Passage]], tmp: Path, name: str, source: str, extra: dict[str, Any] | None) -> None:
    tmp.mkdir()
    connection = sqlite3.connect(tmp / "store.sqlite")
    connection.execute("PRAGMA journal_mode = OFF")
    connection.execute("PRAGMA synchronous = OFF")
    connection.execute("CREATE TABLE passages (row INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, title TEXT, text TEXT)")
    digest = Fingerprint()
    size = 0
    batch: list[tuple[int, str, str, str]] = []
    batch_lines: list[int] = []

    def flush() -> None:
        try:
            connection.executemany("INSERT INTO passages VALUES (?, ?, ?, ?)", batch)
        except sqlite3.IntegrityError:
            # Name the line of the second occurrence (rare path, so the per-row lookups are fine).
            for (row, pid, _title, _text), line in zip(batch, batch_lines):
                first = connection.execute("SELECT row FROM passages WHERE id = ?", (pid,)).fetchone()
                if first is not None and first[0] != row:
                    raise HarnessError(f"{source}:{line}: duplicate passage id {pid!r}; passage ids must be unique") from None
            raise
        batch.clear()
        batch_lines.clear()

    with activity(f"corpus {name}: storing passages", unit="passages") as advance:
        for line, passage in numbered:
            batch.append((size, passage.id, passage.title, passage.text))
            batch_lines.append(line)
            digest.add(passage)
            size += 1
            if len(batch) >= _BATCH:
                advance(len(batch))
                flush()
        if batch:
            advance(len(batch))
            flush()
    if size == 0:
        raise HarnessError(f"{source}: corpus is empty; it needs at least one passage")
    connection.commit()
    connection.close()
    meta = {
        "store_version": STORE_VERSION,
        "name": name,
        "fingerprint": digest.hexdigest(),
        "size": size,
        "source": source,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **(extra or {}),
    }
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")


def corpora_dir() -> Path:
    return cache_dir() / "corpora"


def default_corpus_dir() -> Path:
    """Where ``harness corpus build`` writes ``wiki-offline``."""
    return corpora_dir() / DEFAULT_CORPUS


def prepare_corpus(path: str | os.PathLike, name: str | None = None) -> Corpus:
    """The prepared store of a user corpus file (prepared on first use, then found by path, size and mtime)."""
    path = Path(path).resolve()
    if not path.is_file():
        raise HarnessError(f"corpus {str(path)!r} is neither {DEFAULT_CORPUS!r} nor an existing passage file")
    _format_of(path)
    stat = path.stat()
    pointer_key = hashlib.sha256(str(path).encode("utf-8")).hexdigest()[:24]
    pointer = corpora_dir() / "pointers" / f"{pointer_key}.json"
    stamp = {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "store_version": STORE_VERSION}

    def prepared(pointer: Path) -> bool:
        """Whether the pointer was written for this very file and the store it names is there."""
        if pointer.is_file():
            with contextlib.suppress(OSError, json.JSONDecodeError, KeyError):
                known = json.loads(pointer.read_text(encoding="utf-8"))
                return known["stamp"] == stamp and (corpora_dir() / "stores" / known["fingerprint"] / "meta.json").is_file()
        return False

    def prepare(pointer_tmp: Path) -> None:
        staging = corpora_dir() / "stores" / f"staging-{pointer_key}"
        corpus = _write_store(read_passages(path), staging, name or path.name, str(path))
        final = corpora_dir() / "stores" / corpus.fingerprint
        corpus.close()
        if final.exists():
            shutil.rmtree(staging)
        else:
            os.replace(staging, final)
        pointer_tmp.write_text(json.dumps({"stamp": stamp, "fingerprint": corpus.fingerprint}), encoding="utf-8")

    # The pointer is what is built (its store is in place before it is written); one preparation per file at a time.
    cache.build_once(pointer, prepare, is_built=prepared)
    return Corpus(corpora_dir() / "stores" / json.loads(pointer.read_text(encoding="utf-8"))["fingerprint"])


def prepared_corpus(fingerprint: str) -> Corpus | None:
    """The corpus prepared on this machine whose content fingerprint is ``fingerprint``, or ``None``.

    Looks at ``wiki-offline`` and at every user corpus prepared from a file; readers of a store (``harness
    report``) use it to show the passages a cell's retriever read, by the fingerprint its spec records."""
    candidates = [default_corpus_dir(), corpora_dir() / "stores" / fingerprint]
    for directory in candidates:
        if (directory / "meta.json").is_file():
            corpus = Corpus(directory)
            if corpus.fingerprint == fingerprint:
                return corpus
            corpus.close()
    return None


def open_corpus(ref: str | os.PathLike = DEFAULT_CORPUS) -> Corpus:
    """The corpus named ``ref``: ``"wiki-offline"`` (built by ``harness corpus build``) or a passage file path."""
    if str(ref) == DEFAULT_CORPUS:
        directory = default_corpus_dir()
        if not (directory / "meta.json").is_file():
            raise HarnessError(
                f"corpus {DEFAULT_CORPUS!r} is not built yet (looked in {directory}); run `harness corpus build` first"
            )
        corpus = Corpus(directory)
        if corpus.meta.get("wiki_offline_version") != WIKI_OFFLINE_VERSION:
            raise HarnessError(f"corpus {DEFAULT_CORPUS!r} was built by an older harness; run `harness corpus build --force`")
        return corpus
    return prepare_corpus(ref)


# ------------------------------------------------------------------------------------------- wiki-offline


def read_json_source(path: Path) -> Any:
    """A raw JSON file of the data directory (one-line errors for missing or malformed files)."""
    if not path.is_file():
        raise HarnessError(f"missing corpus source {path}; pass --data-dir DIR pointing at the raw data folder")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise HarnessError(f"{path}:{error.lineno}: not valid JSON ({error.msg})") from None
    except UnicodeDecodeError as error:
        raise HarnessError(f"{path}: not UTF-8 text ({error.reason})") from None


def read_jsonl_source(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    if not path.is_file():
        raise HarnessError(f"missing corpus source {path}; pass --data-dir DIR pointing at the raw data folder")
    for line, raw in _decoded_lines(path):
        if raw.strip():
            try:
                yield line, json.loads(raw)
            except json.JSONDecodeError as error:
                raise HarnessError(f"{path}:{line}: not valid JSON ({error.msg})") from None


# Each passage reader yields (keys, title, text); the corpus builder ignores the keys. The datasets' own passage files
# are read by their task files (Task.read_passages), which the oracle retriever uses too.
def _task_passages(dataset: str, gold_only: bool) -> Callable[[Path], Iterator[tuple[tuple[str, ...], str, str]]]:
    def read(data_dir: Path) -> Iterator[tuple[tuple[str, ...], str, str]]:
        from harness.plugins import DATASETS

        return DATASETS.get(dataset).read_passages(data_dir, gold_only=gold_only)

    return read


def _vital_passages(data_dir: Path) -> Iterator[tuple[tuple[str, ...], str, str]]:
    document = read_json_source(data_dir / "wiki_vital_articles/summaries_en-us.json")
    for key, entry in document.items():
        yield (), clean(entry.get("title") or key), clean(entry.get("extract") or "")


def _twowiki_passages(data_dir: Path) -> Iterator[tuple[tuple[str, ...], str, str]]:
    for entry in read_json_source(data_dir / "hipporag_2wiki_corpus/2wikimultihopqa_corpus.json"):
        yield (), clean(entry["title"]), clean(entry["text"])


def _flashrag_passages(data_dir: Path) -> Iterator[tuple[tuple[str, ...], str, str]]:
    for _line, passage in read_passages(data_dir / "flashrag_corpus/sample_data.jsonl"):
        yield (), clean(passage.title), clean(passage.text)


# (source name, MANIFEST path, reader). Order matters only for which duplicate is kept (the first).
WIKI_OFFLINE_SOURCES: tuple[tuple[str, str, Callable[[Path], Iterator[tuple[tuple[str, ...], str, str]]]], ...] = (
    ("nq-oracle", "nq_open_oracle/nq-open-oracle.jsonl.gz", _task_passages("nq", gold_only=True)),
    ("hotpotqa", "hotpotqa/dev_subsampled.jsonl", _task_passages("hotpotqa", gold_only=False)),
    ("2wiki", "hipporag_2wiki_corpus/2wikimultihopqa_corpus.json", _twowiki_passages),
    ("squad", "bigbench/squad_shifts/squaddev_v1.1.json", _task_passages("squad", gold_only=False)),
    ("coqa", "bigbench/coqa_conversational_question_answering/coqa.test.json", _task_passages("coqa", gold_only=False)),
    ("flashrag-sample", "flashrag_corpus/sample_data.jsonl", _flashrag_passages),
    ("vital-articles", "wiki_vital_articles/summaries_en-us.json", _vital_passages),
)


@dataclass(frozen=True)
class BuildReport:
    """What ``build_default_corpus`` did: passages kept per source, duplicates dropped, the corpus."""

    corpus: Corpus
    kept: dict[str, int]
    duplicates: int
    seconds: float
    rebuilt: bool


def build_default_corpus(data_dir: Path, force: bool = False) -> BuildReport:
    """Assemble ``wiki-offline`` from the real Wikipedia passage files in ``data_dir`` (see MANIFEST.md).

    Passages are whitespace-normalised, given content ids (:func:`passage_id`) and de-duplicated (first source
    wins). Written to :func:`default_corpus_dir`; an existing build is reused unless ``force``.
    """
    started = time.perf_counter()
    directory = default_corpus_dir()
    counts: dict[str, Any] = {}  # what this call's build kept and dropped, when it built

    def current(folder: Path) -> bool:
        if force or not (folder / "meta.json").is_file():
            return False
        return Corpus(folder).meta.get("wiki_offline_version") == WIKI_OFFLINE_VERSION

    def build(staging: Path) -> None:
        counts["kept"], counts["duplicates"] = _build_default_corpus(data_dir, staging)

    # One build at a time, under the folder's lock (its staging folder keeps the name it always had).
    cache.build_once(directory, build, is_built=current, staging=directory.parent / f"{directory.name}.building")
    if counts:
        return BuildReport(Corpus(directory), counts["kept"], counts["duplicates"], time.perf_counter() - started, rebuilt=True)
    corpus = Corpus(directory)
    return BuildReport(
        corpus, dict(corpus.meta.get("kept", {})), corpus.meta.get("duplicates", 0), time.perf_counter() - started, rebuilt=False
    )


def _build_default_corpus(data_dir: Path, staging: Path) -> tuple[dict[str, int], int]:
    """Write ``wiki-offline`` into the new folder ``staging``; returns the passages kept per source and the
    duplicates dropped."""
    missing = [relative for _name, relative, _reader in WIKI_OFFLINE_SOURCES if not (data_dir / relative).is_file()]
    if missing:
        raise HarnessError(f"missing corpus source file(s) {', '.join(missing)} under {data_dir}; pass --data-dir DIR")
    kept: dict[str, int] = {}
    duplicates = 0
    seen: set[str] = set()

    def passages() -> Iterator[tuple[int, Passage]]:
        nonlocal duplicates
        number = 0
        for source, _relative, reader in WIKI_OFFLINE_SOURCES:
            kept[source] = 0
            for _keys, title, text in reader(data_dir):
                if not text:
                    continue
                pid = passage_id(title, text)
                if pid in seen:
                    duplicates += 1
                    continue
                seen.add(pid)
                kept[source] += 1
                number += 1
                yield number, Passage(pid, title, text)

    corpus = _write_store(passages(), staging, DEFAULT_CORPUS, f"{DEFAULT_CORPUS} (assembled)")
    # The canonical {id, title, text} file sits beside the store so other tools can read the corpus.
    write_passages_jsonl(corpus, staging / "passages.jsonl")
    meta = dict(
        corpus.meta,
        wiki_offline_version=WIKI_OFFLINE_VERSION,
        data_dir=str(data_dir),
        kept=kept,
        duplicates=duplicates,
        sources=[relative for _n, relative, _r in WIKI_OFFLINE_SOURCES],
    )
    corpus.close()
    (staging / "meta.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    return kept, duplicates
