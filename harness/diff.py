"""Two methods compared question by question: which questions B fixed (right where A was wrong) and broke.

``pairs_to_compare`` picks the pairs (named ones, per retriever/passages setting, or each trained method against
its verdict reference); ``compare_cells`` counts the outcomes per dataset on the questions both cells hold and
lists the differing ones with the passages each method read (titles and has-answer marks from the corpus
prepared on this machine, :class:`PassageBook`). `harness report` and `harness diff` show them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from harness.errors import HarnessError
from harness.leaderboard import _dataset_order, resolve_label, verdict_pairs
from harness.store import CellRecord, Store

OUTCOMES = ("fixed", "broken", "both right", "both wrong")
RIGHT = "exact_match"  # a question is right when its exact match is 1


@dataclass(frozen=True)
class PassageRead:
    id: str
    title: str | None  # None: the corpus is not prepared on this machine
    answer_bearing: bool | None
    text: str | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Difference:
    """A question of both cells listed by :func:`compare_cells`: its ``outcome`` (one of :data:`OUTCOMES`), both
    predictions and scores, and the passages each method read."""

    dataset: str
    id: str
    outcome: str
    question: str
    golds: tuple[str, ...]
    prediction_a: str
    prediction_b: str
    scores_a: dict[str, float]
    scores_b: dict[str, float]
    passages_a: tuple[PassageRead, ...]
    passages_b: tuple[PassageRead, ...]


@dataclass(frozen=True)
class Wanted:
    """A pair to compare: labels ``a`` and ``b`` of ``cells`` (one setting's, one per method and dataset) on
    ``datasets``; ``setting`` names the retriever and passage count."""

    cells: pd.DataFrame
    a: str
    b: str
    datasets: tuple[str, ...]
    setting: str


@dataclass(frozen=True)
class Pair:
    """Method ``a`` against method ``b`` in one setting: outcome counts per dataset and the listed questions."""

    a: str
    b: str
    setting: str
    counts: dict[str, dict[str, int]]  # dataset -> outcome -> questions
    differences: tuple[Difference, ...]
    notes: tuple[str, ...]


class PassageBook:
    """Titles and has-answer marks of the passages cells read, from the corpora prepared on this machine
    (found by the fingerprint a cell's retriever spec records); what it cannot find it counts, to be said."""

    def __init__(self) -> None:
        self._corpora: dict[str, Any] = {}
        self.missing: set[str] = set()  # fingerprints of corpora not prepared here
        self.unknown: dict[str, set[str]] = {}  # fingerprint -> passage ids its prepared corpus lacks

    def read(self, cell: CellRecord, ids: Sequence[str], golds: Sequence[str]) -> tuple[PassageRead, ...]:
        from harness.corpus import prepared_corpus
        from harness.retrieval import golds_are_regexes, has_answer

        retriever = dict(cell.spec.retriever)
        fingerprint = str(retriever.get("corpus_fingerprint") or retriever.get("corpus") or "")
        if fingerprint not in self._corpora:
            self._corpora[fingerprint] = prepared_corpus(fingerprint) if fingerprint else None
        corpus = self._corpora[fingerprint]
        if corpus is None:
            if ids:
                self.missing.add(fingerprint)
            return tuple(PassageRead(pid, None, None) for pid in ids)
        regex = golds_are_regexes(cell.spec.dataset)
        passages = []
        for pid in ids:
            try:
                passage = corpus.passage(pid)
            except HarnessError:  # not in the corpus the spec names: shown by id, and notes() says so
                self.unknown.setdefault(fingerprint, set()).add(pid)
                passages.append(PassageRead(pid, None, None))
                continue
            passages.append(PassageRead(pid, passage.title, has_answer(passage.text, list(golds), regex), passage.text))
        return tuple(passages)

    def notes(self) -> list[str]:
        """One line per corpus whose passages are shown by id, saying why."""
        lines = [
            f"passages of corpus sha256:{fingerprint[:12]} are shown by id: it is not prepared on this machine "
            "(`harness corpus build`, or the run's --corpus file, prepares it)"
            for fingerprint in sorted(self.missing)
        ]
        lines += [
            f"{len(ids)} passage id(s) read by the cells are not in corpus sha256:{fingerprint[:12]} and are shown by id: "
            "the cells and the corpus disagree (`harness store verify` checks the store)"
            for fingerprint, ids in sorted(self.unknown.items())
        ]
        return lines


def outcome(a_right: bool, b_right: bool) -> str:
    """``fixed`` (B right, A wrong), ``broken`` (A right, B wrong), ``both right`` or ``both wrong``."""
    if a_right != b_right:
        return "fixed" if b_right else "broken"
    return "both right" if a_right else "both wrong"


def _shared(cells: pd.DataFrame, a: str, b: str) -> tuple[str, ...]:
    has = cells.groupby("method")["dataset"].agg(set)
    return tuple(_dataset_order(has.get(a, set()) & has.get(b, set())))


def pairs_to_compare(picked: pd.DataFrame, compare: Sequence[tuple[str, str]] = ()) -> list[Wanted]:
    """The pairs of ``compare`` (labels, a bare method name standing for its one variant) in every
    retriever/passages setting of ``picked`` holding both; with none named, each trained method against its
    verdict reference (:func:`harness.leaderboard.verdict_pairs`). Each on every dataset the two share."""
    wanted = []
    if not compare:
        for pair in verdict_pairs(picked):
            setting = pair.cells[["retriever", "passages"]].iloc[0]
            name = f"{setting['retriever']} m={setting['passages']}"
            wanted.append(
                Wanted(pair.cells, pair.reference, pair.trained, _shared(pair.cells, pair.reference, pair.trained), name)
            )
        return wanted
    for (retriever, passages), cells in picked.groupby(["retriever", "passages"], sort=False):
        cells = cells.drop_duplicates(["method", "dataset"], keep="last")
        for a, b in compare:
            a_label, b_label = resolve_label(cells, a), resolve_label(cells, b)
            datasets = _shared(cells, a_label, b_label)
            if datasets:
                wanted.append(Wanted(cells, a_label, b_label, datasets, f"{retriever} m={passages}"))
    if not wanted:
        asked = "; ".join(f"{a},{b}" for a, b in compare)
        present = ", ".join(sorted(picked["method"].unique()))
        raise HarnessError(f"--compare {asked}: no dataset has finished cells of both in one setting; methods present: {present}")
    return wanted


def compare_cells(store: Store, wanted: Wanted, max_rows: int, book: PassageBook, changed: bool = False) -> Pair:
    """Outcome counts per dataset on the questions both cells hold, and the fixed and broken ones listed (with
    ``changed``, also those whose prediction or any score differs though both are right or both wrong); at most
    ``max_rows`` per dataset (0: all), a note saying so where that cuts."""
    keys = wanted.cells.set_index(["method", "dataset"])["key"]
    counts: dict[str, dict[str, int]] = {}
    differences: list[Difference] = []
    notes = []
    for dataset in wanted.datasets:
        cell_a, cell_b = store.load(keys[(wanted.a, dataset)]), store.load(keys[(wanted.b, dataset)])
        rows_b = {row["id"]: row for row in cell_b.predictions()}
        tally = dict.fromkeys(OUTCOMES, 0)
        listed = differing = 0
        for row_a in cell_a.predictions():
            row_b = rows_b.get(row_a["id"])
            if row_b is None:
                continue
            kind = outcome(row_a["metrics"][RIGHT] >= 1.0, row_b["metrics"][RIGHT] >= 1.0)
            tally[kind] += 1
            differs = kind in ("fixed", "broken") or (
                changed and (row_a.get("prediction") != row_b.get("prediction") or row_a["metrics"] != row_b["metrics"])
            )
            if not differs:
                continue
            differing += 1
            if max_rows and listed >= max_rows:
                continue
            listed += 1
            golds = tuple(row_a.get("golds", ()))
            differences.append(
                Difference(
                    dataset=dataset,
                    id=row_a["id"],
                    outcome=kind,
                    question=row_a.get("question", ""),
                    golds=golds,
                    prediction_a=row_a.get("prediction", ""),
                    prediction_b=row_b.get("prediction", ""),
                    scores_a=dict(row_a["metrics"]),
                    scores_b=dict(row_b["metrics"]),
                    passages_a=book.read(cell_a, row_a.get("passage_ids", []), golds),
                    passages_b=book.read(cell_b, row_b.get("passage_ids", []), golds),
                )
            )
        if listed < differing:
            notes.append(f"{dataset}: the first {listed} of {differing} differing questions are listed (--max-rows 0 lists all)")
        counts[dataset] = tally
    return Pair(wanted.a, wanted.b, wanted.setting, counts, tuple(differences), tuple(notes))
