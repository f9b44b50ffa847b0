"""A tiny local world for runner tests: 5 NQ-format questions, a 4-question training pool, a 5-passage corpus.

``make_world(tmp_path)`` writes the raw files as the real data folder lays them out; the ``world`` fixture
(conftest.py) does so per test with its own cache folder, and ``run_config`` points a run at it.
"""

from __future__ import annotations

import json
from pathlib import Path

from tiny_model import tiny_model_dir

from harness.runner import RunConfig

QUESTIONS = [
    ("who wrote the origin of species", ["Charles Darwin"]),
    ("what is the capital of france", ["Paris"]),
    ("how many legs does a spider have", ["eight", "8"]),
    ("which fox is quick", ["the brown fox"]),
    ("where is the lazy dog", ["under the fox"]),
]
PASSAGES = [
    {"id": "p1", "title": "Darwin", "text": "Charles Darwin wrote On the Origin of Species in 1859."},
    {"id": "p2", "title": "Paris", "text": "Paris is the capital and most populous city of France."},
    {"id": "p3", "title": "Spider", "text": "A spider has eight legs and spins webs."},
    {"id": "p4", "title": "Fox", "text": "The quick brown fox jumps over the lazy dog."},
    {"id": "p5", "title": "Dog", "text": "The lazy dog sleeps under the tree all day."},
]


def make_world(tmp_path: Path) -> dict[str, Path]:
    """Write the raw files and the corpus under ``tmp_path``; returns their locations."""
    data = tmp_path / "data"
    (data / "nq_open").mkdir(parents=True)
    (data / "nq_open" / "NQ-open.dev.jsonl").write_text(
        "".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in QUESTIONS)
    )
    (data / "dpr_qas").mkdir()
    (data / "dpr_qas" / "topics.nq.dev.txt").write_text(
        "who wrote about species\t['Darwin']\nwhat city is in france\t['Paris']\nhow many legs has a spider\t['8']\n"
    )
    (data / "nq_open" / "NQ-open.efficientqa.dev.1.1.jsonl").write_text(
        json.dumps({"question": "is the dog lazy", "answer": ["yes"]}) + "\n"
    )
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(p) + "\n" for p in PASSAGES))
    return {"data": data, "corpus": corpus, "results": tmp_path / "results"}


def run_config(world: dict[str, Path], **overrides) -> RunConfig:
    """A run over the tiny world with the tiny model (small batches and answers); ``overrides`` replace fields."""
    values = dict(
        datasets=("nq",),
        methods=("closed-book", "prompt"),
        retrievers=("bm25",),
        passages=(2,),
        model=str(tiny_model_dir()),
        dtype="fp32",
        results=world["results"],
        data_dir=world["data"],
        corpus=str(world["corpus"]),
        batch_size=2,
        max_new_tokens=6,
    )
    values.update(overrides)
    return RunConfig(**values)
