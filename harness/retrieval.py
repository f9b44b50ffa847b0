"""Cached retrieval runs shared by every method, and recall@k (answer-in-passage).

A *retrieval run* is the top-k hits of one retriever for one question set. It is computed once and stored as
a file that every later method reads::

    <results>/retrieval/<retriever>-<spec hash>/<dataset>/<split>/q<question-set hash>.k<k>.jsonl

one JSON line per example ``{"id", "hits": [[passage_id, score], ...]}`` (best first), with
``.meta.json`` (the retriever's full spec, corpus fingerprint, counts, timing), ``.recall.json`` (recall@1..k)
and, on request, ``.trec`` (TREC run format) beside it. The key covers everything that changes the hits: the
retriever spec (which includes the corpus fingerprint, every result-changing parameter and, for dense models,
the weights identity), the dataset, split, question-set hash (ids and question texts, in order) and k; nothing
else (batch size, device, paths). A request for k is served by any stored run of the same key with k' >= k,
truncated, so asking for k=3 after k=5 reuses the k=5 run. Files are written to a temporary name then moved
into place with ``os.replace``, under a lock, so a crash or a concurrent call never leaves a partial run.

Indexes (BM25, dense embeddings, FAISS) are not results: they live in the user cache
(``<cache>/indexes/``, ``<cache>/embeddings/``), keyed by corpus fingerprint and index parameters.

Recall@k follows DPR's ``has_answer``: the passage text and each gold answer are Unicode-NFD-normalised and
split with DPR's SimpleTokenizer (runs of letters/digits/marks, or single other non-space characters), lower-
cased; a passage has the answer when the answer's token sequence occurs contiguously in the passage tokens.
Datasets whose golds are regular expressions (a task whose metrics include ``regex_match``: CuratedTREC) use
DPR's regex rule instead: a case-insensitive ``search`` of the pattern in the passage text.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import time
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import regex
from filelock import FileLock

from harness.activity import activity
from harness.cache import atomic_write, atomic_write_json
from harness.corpus import DEFAULT_CORPUS
from harness.errors import HarnessError
from harness.plugins import RETRIEVERS
from harness.registry import did_you_mean
from harness.retriever import Retriever
from harness.spec import canonical_json, content_hash
from harness.types import Example, Hit, Passage

# Bump when the run file layout or the recall rule changes (it is part of every run path).
RUN_FORMAT = 1
RECALL_RULE = "dpr-has-answer/1"


class NotApplicable(HarnessError):
    """A retriever that cannot serve this dataset (e.g. ``oracle`` where no gold passages ship)."""


# ------------------------------------------------------------------------------------------ retriever setup


@dataclass(frozen=True)
class RetrieverContext:
    """What a retriever factory is given: the corpus, the raw-data folder, the dataset and user options.

    ``options`` are ``(key, value)`` string pairs from ``--option NAME.KEY=VALUE``; a factory rejects keys it does
    not know with :meth:`check_options`. ``dataset`` matters only to dataset-specific retrievers (``oracle``).
    """

    corpus: str = DEFAULT_CORPUS
    data_dir: Path | None = None
    dataset: str | None = None
    options: tuple[tuple[str, str], ...] = ()

    def option(self, key: str, default: Any, parse: Callable[[str], Any] = str) -> Any:
        """The option ``key`` parsed with ``parse``, else ``default``."""
        for name, value in self.options:
            if name == key:
                try:
                    return parse(value)
                except ValueError as error:
                    raise HarnessError(f"retriever option {key}={value!r} is invalid ({error})") from None
        return default

    def check_options(self, retriever: str, allowed: Iterable[str]) -> None:
        allowed = sorted(allowed)
        for name, _value in self.options:
            if name not in allowed:
                valid = ", ".join(allowed) if allowed else "none"
                raise HarnessError(
                    f"retriever {retriever!r} has no option {name!r}; valid options: {valid}.{did_you_mean(name, allowed)}"
                )


def make_retriever(name: str, context: RetrieverContext | None = None) -> Retriever:
    """Build the registered retriever ``name`` (unknown names get a did-you-mean error)."""
    factory = RETRIEVERS.get(name)
    return factory(context or RetrieverContext())


def spec_hash(spec: Mapping[str, Any]) -> str:
    """A short stable hash of a retriever spec."""
    return content_hash(dict(spec), length=16)


def retriever_id(retriever: Retriever) -> str:
    """``<name>-<spec hash>``: the retriever's folder name in the result store."""
    spec = retriever.spec()
    try:
        return f"{retriever.name}-{spec_hash(spec)}"
    except TypeError as error:
        raise TypeError(f"retriever {retriever.name!r} has a spec that is not JSON-able: {error}") from None


def question_set_hash(examples: Sequence[Example]) -> str:
    """sha256 of the example ids and question texts, in order (what a retriever sees)."""
    digest = hashlib.sha256()
    for example in examples:
        digest.update(canonical_json([example.id, example.question]).encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


def _golds_hash(examples: Sequence[Example]) -> str:
    digest = hashlib.sha256()
    for example in examples:
        digest.update(canonical_json([example.id, list(example.golds)]).encode("utf-8"))
    return digest.hexdigest()[:16]


# ------------------------------------------------------------------------------------------------- recall

_SIMPLE_TOKEN = regex.compile(r"[\p{L}\p{N}\p{M}]+|[^\p{Z}\p{C}]", flags=regex.IGNORECASE | regex.UNICODE | regex.MULTILINE)


def dpr_tokens(text: str) -> list[str]:
    """DPR SimpleTokenizer tokens of ``text``, NFD-normalised and lower-cased (``has_answer`` semantics)."""
    return [token.lower() for token in _SIMPLE_TOKEN.findall(unicodedata.normalize("NFD", text))]


@functools.lru_cache(maxsize=65536)
def _token_string(text: str) -> str:
    # Tokens never contain spaces, so a contiguous token subsequence is a substring of the space-joined form.
    return " " + " ".join(dpr_tokens(text)) + " "


@functools.lru_cache(maxsize=4096)
def _compile_gold(pattern: str) -> re.Pattern:
    try:
        return re.compile(pattern, flags=re.IGNORECASE | re.UNICODE | re.MULTILINE)
    except re.error as error:
        raise HarnessError(f"gold answer {pattern!r} is not a valid regular expression ({error})") from None


def has_answer(text: str, golds: Sequence[str], regex_golds: bool = False) -> bool:
    """Whether ``text`` contains any gold answer (DPR has_answer; regex search when ``regex_golds``)."""
    if isinstance(golds, str):
        raise TypeError("golds must be a list of answers, not a single string")
    if regex_golds:
        normalized = unicodedata.normalize("NFD", text)
        return any(_compile_gold(pattern).search(normalized) is not None for pattern in golds)
    haystack = _token_string(text)
    for gold in golds:
        needle = _token_string(gold)
        if needle.strip() and needle in haystack:
            return True
    return False


def recall_at_ks(
    hits: Mapping[str, Sequence[Hit]],
    examples: Sequence[Example],
    text_of: Callable[[str], str],
    k: int,
    regex_golds: bool = False,
) -> dict[int, float]:
    """Recall@1..k: the fraction of ``examples`` with an answer-bearing passage among their top-j hits."""
    if not examples:
        return {j: 0.0 for j in range(1, k + 1)}
    first_answer_rank = []
    for example in examples:
        rank = None
        for hit in list(hits.get(example.id, ()))[:k]:
            if has_answer(text_of(hit.passage_id), example.golds, regex_golds):
                rank = hit.rank
                break
        first_answer_rank.append(rank)
    n = len(examples)
    return {j: sum(1 for r in first_answer_rank if r is not None and r <= j) / n for j in range(1, k + 1)}


def golds_are_regexes(dataset: str) -> bool:
    """True for datasets scored with ``regex_match`` (their golds are patterns, e.g. CuratedTREC)."""
    from harness.plugins import DATASETS

    if dataset not in DATASETS:
        return False
    return "regex_match" in DATASETS.get(dataset).metrics


# ---------------------------------------------------------------------------------------------------- runs


@dataclass(frozen=True)
class RetrievalRun:
    """The top-k hits of one retriever for one question set, as stored in (or read from) the result store."""

    retriever_name: str
    retriever_id: str
    dataset: str
    split: str
    question_hash: str
    k: int  # what was asked for: every hit list is truncated to it
    stored_k: int  # the k of the run file that served it (>= k)
    path: Path
    hits: Mapping[str, tuple[Hit, ...]]  # example id -> hits, best first
    recall: Mapping[int, float]  # recall@j for j in 1..k
    cached: bool
    seconds: float  # time to retrieve (or to read the cached file)
    retriever: Retriever = field(repr=False, compare=False)

    def passages(self, example_id: str) -> list[Passage]:
        """The retrieved passages of one example, best first."""
        return [self.retriever.passage(hit.passage_id) for hit in self.hits[example_id]]

    @property
    def recall_at_k(self) -> float:
        return self.recall.get(self.k, 0.0)


def run_dir(results_dir: Path, retriever: Retriever, dataset: str, split: str) -> Path:
    return Path(results_dir) / "retrieval" / retriever_id(retriever) / dataset / split


def _run_stem(question_hash: str, k: int) -> str:
    return f"q{question_hash[:16]}.k{k}"


def _find_stored(directory: Path, question_hash: str, k: int) -> tuple[Path, int] | None:
    """The stored run with the smallest k' >= k for this question set, if any."""
    best: tuple[Path, int] | None = None
    if not directory.is_dir():
        return None
    pattern = re.compile(rf"^q{question_hash[:16]}\.k(\d+)\.jsonl$")
    for path in directory.iterdir():
        match = pattern.match(path.name)
        if match and int(match.group(1)) >= k and (best is None or int(match.group(1)) < best[1]):
            meta = path.with_name(path.name.removesuffix(".jsonl") + ".meta.json")
            if meta.is_file():
                best = (path, int(match.group(1)))
    return best


def _read_hits(path: Path, k: int) -> dict[str, tuple[Hit, ...]]:
    hits: dict[str, tuple[Hit, ...]] = {}
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            try:
                record = json.loads(line)
                hits[record["id"]] = tuple(
                    Hit(pid, float(score), rank) for rank, (pid, score) in enumerate(record["hits"][:k], start=1)
                )
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
                raise HarnessError(
                    f"{path}:{line_number}: corrupt retrieval run ({error}); delete the file to recompute it"
                ) from None
    return hits


def get_run(
    retriever: Retriever,
    dataset: str,
    split: str,
    examples: Sequence[Example],
    k: int,
    results_dir: str | os.PathLike,
    *,
    trec: bool = False,
    regex_golds: bool | None = None,
) -> RetrievalRun:
    """The retrieval run of ``retriever`` on ``examples`` (of ``dataset``/``split``) at depth ``k``.

    Served from the result store when a run with the same key and k' >= k exists; otherwise retrieved, written
    atomically with its recall@1..k and returned. ``regex_golds`` defaults to the dataset's task card.
    """
    if k < 1:
        raise HarnessError(f"k must be at least 1 (got {k})")
    ids = [example.id for example in examples]
    if len(set(ids)) != len(ids):
        raise HarnessError(f"{dataset}/{split}: example ids are not unique")
    if regex_golds is None:
        regex_golds = golds_are_regexes(dataset)
    started = time.perf_counter()
    qhash = question_set_hash(examples)
    directory = run_dir(Path(results_dir), retriever, dataset, split)
    existing = next(folder for folder in (directory, *directory.parents) if folder.exists())
    lock_path = directory / f".q{qhash[:16]}.lock"
    first = not lock_path.exists()  # no run of this question set was ever asked for in this store
    directory.mkdir(parents=True, exist_ok=True)
    try:
        # Not cache.build_once: the run that serves k is found by a search (any stored k' >= k), not named up front,
        # and the lock also covers reading it and adding its recall and TREC files; each file is atomic_write's.
        with FileLock(str(lock_path)):
            stored = _find_stored(directory, qhash, k)
            if stored is None:
                path, stored_k = _compute(retriever, dataset, split, examples, k, directory, qhash, regex_golds, trec), k
                cached = False
            else:
                path, stored_k = stored
                cached = True
            hits = _read_hits(path, k)
            missing = [i for i in ids if i not in hits]
            if missing:
                raise HarnessError(f"{path}: run has no hits for example {missing[0]!r}; delete the file to recompute it")
            recall = _recall(path, stored_k, examples, retriever, regex_golds)
            if trec and not path.with_suffix(".trec").is_file():
                _write_trec(path.with_suffix(".trec"), _read_hits(path, stored_k), retriever_id(retriever))
    except BaseException:
        if first:
            _remove_traces(lock_path, directory, existing)
        raise
    return RetrievalRun(
        retriever_name=retriever.name,
        retriever_id=retriever_id(retriever),
        dataset=dataset,
        split=split,
        question_hash=qhash,
        k=k,
        stored_k=stored_k,
        path=path,
        hits=hits,
        recall={j: recall[j] for j in range(1, k + 1)},
        cached=cached,
        seconds=time.perf_counter() - started,
        retriever=retriever,
    )


def _remove_traces(lock_path: Path, directory: Path, existing: Path) -> None:
    """After a first retrieval of a question set failed (a damaged index, bad input, Ctrl-C): its lock file and
    the folders the call created, while empty, so a failed command leaves the result store as it found it."""
    with contextlib.suppress(OSError):
        lock_path.unlink()
    folder = directory
    while folder != existing and existing in folder.parents:
        try:
            folder.rmdir()  # only an empty folder: a run another process wrote meanwhile stays
        except OSError:
            return
        folder = folder.parent


def _compute(
    retriever: Retriever,
    dataset: str,
    split: str,
    examples: Sequence[Example],
    k: int,
    directory: Path,
    qhash: str,
    regex_golds: bool,
    trec: bool,
) -> Path:
    started = time.perf_counter()
    # One search call for all questions (a retriever picks its fastest path by their number, as bm25's backend does).
    with activity(f"retrieving {dataset}/{split} with {retriever.name} (k={k})", total=len(examples), unit="q") as advance:
        results = retriever.search(list(examples), k) if examples else []
        advance(len(examples))
    seconds = time.perf_counter() - started
    if len(results) != len(examples):
        raise RuntimeError(f"retriever {retriever.name!r} returned {len(results)} hit lists for {len(examples)} examples")
    path = directory / f"{_run_stem(qhash, k)}.jsonl"
    hits = {example.id: tuple(found[:k]) for example, found in zip(examples, results)}

    def write_run(handle: Any) -> None:
        for example in examples:
            handle.write(canonical_json({"id": example.id, "hits": [[h.passage_id, h.score] for h in hits[example.id]]}))
            handle.write("\n")

    meta = {
        "run_format": RUN_FORMAT,
        "retriever": retriever.name,
        "retriever_id": retriever_id(retriever),
        "spec": retriever.spec(),
        "dataset": dataset,
        "split": split,
        "question_set_sha256": qhash,
        "k": k,
        "n_examples": len(examples),
        "search_seconds": round(seconds, 3),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    # The meta file marks a complete run, so it is written after the hits (see _find_stored).
    atomic_write(path, write_run)
    _write_recall(path, k, examples, hits, retriever, regex_golds)
    if trec:
        _write_trec(path.with_suffix(".trec"), hits, retriever_id(retriever))
    atomic_write_json(path.with_name(path.name.removesuffix(".jsonl") + ".meta.json"), meta)
    return path


def _recall_path(path: Path) -> Path:
    return path.with_name(path.name.removesuffix(".jsonl") + ".recall.json")


def _write_recall(
    path: Path, k: int, examples: Sequence[Example], hits: Mapping[str, Sequence[Hit]], retriever: Retriever, regex_golds: bool
) -> dict[int, float]:
    texts: dict[str, str] = {}

    def text_of(pid: str) -> str:
        if pid not in texts:
            texts[pid] = retriever.passage(pid).text
        return texts[pid]

    recall = recall_at_ks(hits, examples, text_of, k, regex_golds)
    record = {
        "rule": RECALL_RULE,
        "answer_match": "regex" if regex_golds else "dpr-tokens",
        "golds_sha256": _golds_hash(examples),
        "n_examples": len(examples),
        "k": k,
        "recall": {str(j): value for j, value in recall.items()},
    }
    atomic_write_json(_recall_path(path), record)
    return recall


def _recall(path: Path, stored_k: int, examples: Sequence[Example], retriever: Retriever, regex_golds: bool) -> dict[int, float]:
    """Recall@1..stored_k from the saved file, recomputed if the golds or the rule changed since."""
    with contextlib.suppress(OSError, json.JSONDecodeError, KeyError, ValueError):
        record = json.loads(_recall_path(path).read_text(encoding="utf-8"))
        if (
            record["rule"] == RECALL_RULE
            and record["golds_sha256"] == _golds_hash(examples)
            and record["answer_match"] == ("regex" if regex_golds else "dpr-tokens")
        ):
            return {int(j): float(v) for j, v in record["recall"].items()}
    return _write_recall(path, stored_k, examples, _read_hits(path, stored_k), retriever, regex_golds)


def _write_trec(path: Path, hits: Mapping[str, Sequence[Hit]], tag: str) -> None:
    def write(handle: Any) -> None:
        for example_id, found in hits.items():
            for hit in found:
                handle.write(f"{example_id} Q0 {hit.passage_id} {hit.rank} {hit.score:.6f} {tag}\n")

    atomic_write(path, write)


def read_trec(path: str | os.PathLike) -> dict[str, list[Hit]]:
    """Hits per query from a TREC run file (``qid Q0 docid rank score tag``), sorted by rank."""
    found: dict[str, list[Hit]] = {}
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            fields = line.split()
            if len(fields) != 6:
                raise HarnessError(f"{path}:{line_number}: expected 6 fields (qid Q0 docid rank score tag)")
            found.setdefault(fields[0], []).append(Hit(fields[2], float(fields[4]), int(fields[3])))
    return {qid: sorted(hits, key=lambda h: h.rank) for qid, hits in found.items()}


def hits_from_scores(rows_and_scores: Iterable[tuple[str, float]], k: int) -> list[Hit]:
    """Hits ranked 1..k from ``(passage_id, score)`` pairs already sorted best first."""
    return [Hit(pid, float(score), rank) for rank, (pid, score) in enumerate(rows_and_scores, start=1) if rank <= k]
