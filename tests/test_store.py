"""Cell keys cover every output-changing field; the store resumes, skips, recomputes and survives concurrency."""

import dataclasses
import json
import multiprocessing

import pytest

from harness.spec import CellSpec, example_ids_hash
from harness.store import Store

BASE = CellSpec(
    dataset="nq",
    split="eval",
    example_ids_hash=example_ids_hash(["nq/test/1", "nq/test/2", "nq/test/3"]),
    n_examples=3,
    retriever={"name": "bm25", "k1": 1.5, "corpus_fingerprint": "abc"},
    passages=3,
    model={"id": "smollm2-135m", "weights_hash": "w1"},
    method={"name": "prompt"},
    template_hash="t1",
    decoding={"max_new_tokens": 32, "stop": "newline"},
    scorer_version="squad-v1.1/1",
    metrics=("exact_match", "f1"),
)

CHANGES = {
    "dataset": "triviaqa",
    "split": "train",
    "example_ids_hash": example_ids_hash(["nq/test/1", "nq/test/2"]),
    "n_examples": 2,
    "retriever": {"name": "bm25", "k1": 1.2, "corpus_fingerprint": "abc"},
    "passages": 5,
    "model": {"id": "smollm2-135m", "weights_hash": "w2"},
    "method": {"name": "spring", "tokens": 50, "checkpoint_hash": "c1"},
    "template_hash": "t2",
    "decoding": {"max_new_tokens": 16, "stop": "newline"},
    "scorer_version": "squad-v1.1/2",
    "metrics": ("exact_match", "f1", "accuracy"),
    "schema_version": 2,
}


def test_every_keyed_field_changes_the_key():
    assert set(CHANGES) == {f.name for f in dataclasses.fields(CellSpec)}
    keys = {BASE.key()}
    for name, value in CHANGES.items():
        keys.add(dataclasses.replace(BASE, **{name: value}).key())
    assert len(keys) == 1 + len(CHANGES)


def test_corpus_fingerprint_inside_the_retriever_spec_changes_the_key():
    other = dataclasses.replace(BASE, retriever={**BASE.retriever, "corpus_fingerprint": "abd"})
    assert other.key() != BASE.key()


def test_key_is_canonical():
    reordered = dataclasses.replace(BASE, retriever={"corpus_fingerprint": "abc", "k1": 1.5, "name": "bm25"})
    assert reordered.key() == BASE.key()
    assert CellSpec.from_dict(json.loads(BASE.canonical())).key() == BASE.key()


def _row(i):
    return {"id": f"nq/test/{i}", "prediction": str(i), "metrics": {"exact_match": float(i % 2), "f1": 0.5}}


IDS = ["nq/test/1", "nq/test/2", "nq/test/3"]


def test_resume_after_crash_and_torn_line(tmp_path):
    store = Store(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        with store.writing(BASE, {"batch_size": 2}) as writer:
            writer.append([_row(1)])
            raise KeyboardInterrupt
    partial = tmp_path / "runs" / f".partial-{BASE.key()}" / "predictions.jsonl"
    with open(partial, "a") as handle:
        handle.write('{"id": "nq/test/2", "predic')  # the process died mid-line
    with store.writing(BASE, {"batch_size": 2}) as writer:
        assert writer.done_ids == ["nq/test/1"]
        writer.append([_row(2), _row(3)])
        record = store.finish(BASE, IDS)
    assert [row["id"] for row in record.predictions()] == IDS
    assert record.metrics["n"] == 3
    assert record.metrics["metrics"]["exact_match"]["mean"] == pytest.approx(2 / 3)
    assert record.metrics["metrics"]["f1"] == {"mean": 0.5, "ci_low": 0.5, "ci_high": 0.5}
    assert not partial.parent.exists()
    assert store.load(BASE.key()).spec == BASE
    assert store.load(BASE.key()).provenance == {"batch_size": 2}


def test_complete_cell_is_skipped_and_force_recomputes(tmp_path):
    store = Store(tmp_path)
    with store.writing(BASE, {}) as writer:
        writer.append([_row(i) for i in (1, 2, 3)])
        store.finish(BASE, IDS)
    with store.writing(BASE, {}) as writer:
        assert writer is None
    with store.writing(BASE, {}, force=True) as writer:
        assert writer is not None and writer.done_ids == []
        writer.append([_row(i) for i in (1, 2, 3)])
        store.finish(BASE, IDS)
    assert [c.key for c in store.cells()] == [BASE.key()]


def test_finish_refuses_missing_or_duplicated_examples(tmp_path):
    store = Store(tmp_path)
    with store.writing(BASE, {}) as writer:
        writer.append([_row(1), _row(1), _row(3)])
        with pytest.raises(RuntimeError, match="expected 3 in order"):
            store.finish(BASE, IDS)
    assert not store.is_complete(BASE.key())


def _write_cell(root, queue):
    store = Store(root)
    with store.writing(BASE, {}) as writer:
        if writer is None:
            queue.put("skipped")
            return
        for i in (1, 2, 3):
            writer.append([_row(i)])
        store.finish(BASE, IDS)
        queue.put("wrote")


def test_two_processes_on_one_store_do_not_corrupt_it(tmp_path):
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    workers = [context.Process(target=_write_cell, args=(tmp_path, queue)) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert sorted(queue.get(timeout=5) for _ in workers) == ["skipped", "wrote"]
    assert [row["id"] for row in Store(tmp_path).load(BASE.key()).predictions()] == IDS
