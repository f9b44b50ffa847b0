"""A tiny result store for the report tests: prompt vs SPRING on the tiny world's questions, written through the
Store API with known outcomes, whose cells name the tiny world's corpus (prepared in the test's own cache).

Per question (exact match of prompt, SPRING) on nq: q0 (1, 1) both right, q1 (0, 1) fixed, q2 (0, 0) both wrong,
q3 (1, 0) broken, q4 (0, 1) fixed; on popqa (held out): q0 (0, 1) fixed, q1 (0, 0) both wrong, q2 (1, 1) both right.
"""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

from tiny_world import QUESTIONS

from harness.corpus import prepare_corpus
from harness.spec import CellSpec, example_ids_hash
from harness.store import Store

EXACT_MATCH = {
    "nq": {"prompt": [1, 0, 0, 1, 0], "spring": [1, 1, 0, 0, 1]},
    "popqa": {"prompt": [0, 0, 1], "spring": [1, 0, 1]},
}
OUTCOMES = {  # what the report must count, from EXACT_MATCH
    "nq": {"fixed": 2, "broken": 1, "both right": 1, "both wrong": 1},
    "popqa": {"fixed": 1, "broken": 0, "both right": 1, "both wrong": 1},
}
READ = [["p1", "p4"], ["p2", "p5"], ["p3", "p1"], ["p4", "p5"], ["p5", "p4"]]  # passage ids read, per question


def write_store(results: Path, corpus_file: Path) -> Store:
    """Write the four cells (nq, popqa) x (prompt, spring k=50) into the store at ``results``."""
    fingerprint = prepare_corpus(corpus_file).fingerprint
    store = Store(results)
    for dataset, methods in EXACT_MATCH.items():
        for name, scores in methods.items():
            ids = [f"{dataset}/{i}" for i in range(len(scores))]
            method = {"name": "spring", "tokens": 50} if name == "spring" else {"name": "prompt"}
            spec = CellSpec(
                dataset=dataset,
                split="eval",
                example_ids_hash=example_ids_hash(ids),
                examples_hash=example_ids_hash(ids),
                n_examples=len(ids),
                retriever={"name": "bm25", "corpus": fingerprint},
                passages=2,
                model={"model": "tiny", "weights_hash": "sha256:" + "ab" * 32},
                method=method,
                template_hash="t",
                decoding={"max_new_tokens": 32},
                scorer_version="v",
                metrics=("exact_match", "f1"),
            )
            rows = []
            for i, (example_id, em) in enumerate(zip(ids, scores)):
                question, golds = QUESTIONS[i]
                rows.append(
                    {
                        "id": example_id,
                        "question": question,
                        "golds": golds,
                        "passage_ids": READ[i],
                        "prediction": golds[0] if em else f"{name} guess {i}",
                        "metrics": {"exact_match": float(em), "f1": 0.5 + 0.5 * em},
                    }
                )
            with store.writing(spec, {"created": "2026-12-01T00:00:00", "command": f"harness run --method {name}"}) as writer:
                writer.append(rows)
                store.finish(spec, ids)
    return store


class PageReader(HTMLParser):
    """What a report page shows, read from its HTML (as written, or as a browser's DOM dump).

    ``values``: (metric, dataset, column) -> (data-value, text) of the leaderboard tables; ``counts``: pair anchor
    -> dataset -> outcome -> count; ``rows``: pair anchor -> list of (outcome, dataset, hidden) of the differing
    questions; ``shown``: pair anchor -> the page's own count of rows shown; ``figures``: name -> drawn;
    ``answer_titles``: the passage titles marked answer-bearing."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.values: dict[tuple[str, str, str], tuple[float | None, str]] = {}
        self.counts: dict[str, dict[str, dict[str, int]]] = {}
        self.rows: dict[str, list[tuple[str, str, bool]]] = {}
        self.shown: dict[str, int] = {}
        self.figures: dict[str, bool] = {}
        self.answer_titles: list[str] = []
        self._metric = self._dataset = self._pair = ""
        self._capture: tuple | None = None
        self._text = ""
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        classes = (a.get("class") or "").split()
        if tag == "table" and "leaderboard" in classes:
            self._metric = a["data-metric"]
        elif tag == "section" and "pair" in classes:
            self._pair = a["id"]
            self.counts[self._pair], self.rows[self._pair] = {}, []
        elif tag == "tr" and "data-dataset" in a:
            self._dataset = a["data-dataset"]
            if "diff" in classes:
                self.rows[self._pair].append((a["data-outcome"], a["data-dataset"], "hidden" in a))
        elif tag == "td" and "data-column" in a:
            value = float(a["data-value"]) if "data-value" in a else None
            self._capture, self._text = ("value", (self._metric, self._dataset, a["data-column"]), value), ""
        elif tag == "td" and "count" in classes:
            self._capture, self._text = ("count", a["data-outcome"]), ""
        elif tag == "span" and "shown-count" in classes:
            self._capture, self._text = ("shown",), ""
        elif tag == "li" and "answer" in classes:
            self._capture, self._text = ("answer",), ""
        elif tag == "figure":
            self.figures[a["data-name"]] = "drawn" in classes

    def handle_data(self, data: str) -> None:
        if self._capture is not None:
            self._text += data

    def handle_endtag(self, tag: str) -> None:
        if self._capture is None or tag not in ("td", "span", "li"):
            return
        kind, text = self._capture[0], self._text.strip()
        if kind == "value":
            self.values[self._capture[1]] = (self._capture[2], text)
        elif kind == "count":
            self.counts[self._pair].setdefault(self._dataset, {})[self._capture[1]] = int(text)
        elif kind == "shown":
            self.shown[self._pair] = int(text)
        else:
            self.answer_titles.append(text)
        self._capture = None
