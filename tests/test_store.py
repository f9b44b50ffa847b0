"""Cell keys cover every output-changing field; the store resumes, skips, recomputes and survives concurrency."""

import dataclasses
import json
import multiprocessing
import re
import time

import pytest
from filelock import FileLock, Timeout

from harness.errors import HarnessError
from harness.spec import CellSpec, example_ids_hash
from harness.store import Store

BASE = CellSpec(
    dataset="nq",
    split="eval",
    example_ids_hash=example_ids_hash(["nq/test/1", "nq/test/2", "nq/test/3"]),
    examples_hash="e1",
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
    "examples_hash": "e2",
    "n_examples": 2,
    "retriever": {"name": "bm25", "k1": 1.2, "corpus_fingerprint": "abc"},
    "passages": 5,
    "model": {"id": "smollm2-135m", "weights_hash": "w2"},
    "method": {"name": "spring", "tokens": 50, "checkpoint_hash": "c1"},
    "template_hash": "t2",
    "decoding": {"max_new_tokens": 16, "stop": "newline"},
    "scorer_version": "squad-v1.1/2",
    "metrics": ("exact_match", "f1", "accuracy"),
    "schema_version": 3,
    "dataset_sha256": "ab" * 32,
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
    with pytest.raises(KeyboardInterrupt), store.writing(BASE, {"batch_size": 2}) as writer:
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


OTHER = dataclasses.replace(BASE, dataset="triviaqa")


def _write_cells(root, order, queue):
    """One run's group: every cell of ``order`` written inside one ``writing_many``, as compute_cells does."""
    store = Store(root)
    specs = [BASE if name == "base" else OTHER for name in order]
    with store.writing_many(specs, {}) as writers:
        for spec, writer in zip(specs, writers):
            if writer is not None:
                writer.append([_row(i) for i in (1, 2, 3)])
                store.finish(spec, IDS)
    queue.put(order)


def _hold_base(root, holding, queue):
    store = Store(root)
    with store.writing(BASE, {}) as writer:
        holding.set()
        time.sleep(2)  # both other runs are now waiting for this cell
        writer.append([_row(i) for i in (1, 2, 3)])
        store.finish(BASE, IDS)
    queue.put("holder")


def test_runs_listing_shared_cells_in_opposite_orders_do_not_deadlock(tmp_path):
    # The sweep's case: a third run holds one shared cell while two runs list both cells in opposite orders.
    # Taken in list order, whichever of the two got the held cell next waited forever for the other's.
    context = multiprocessing.get_context("spawn")
    queue, holding = context.Queue(), context.Event()
    for round_ in range(3):
        root = tmp_path / str(round_)
        holder = context.Process(target=_hold_base, args=(root, holding, queue))
        holder.start()
        assert holding.wait(60)
        holding.clear()
        runs = [
            context.Process(target=_write_cells, args=(root, order, queue)) for order in (("base", "other"), ("other", "base"))
        ]
        for run in runs:
            run.start()
        for process in (holder, *runs):
            process.join(60)
        stuck = [process for process in (holder, *runs) if process.is_alive()]
        for process in stuck:
            process.kill()
        assert not stuck, "concurrent runs deadlocked"
        assert sorted(str(queue.get(timeout=5)) for _ in range(3)) == sorted(["holder", "('base', 'other')", "('other', 'base')"])
        store = Store(root)
        assert sorted(c.spec.dataset for c in store.cells()) == ["nq", "triviaqa"]


def test_writing_many_locks_in_key_order_and_releases_complete_cells(tmp_path, monkeypatch):
    store = Store(tmp_path)
    with store.writing(BASE, {}) as writer:
        writer.append([_row(i) for i in (1, 2, 3)])
        store.finish(BASE, IDS)
    taken = []
    lock = Store._lock
    monkeypatch.setattr(Store, "_lock", lambda self, key: taken.append(key) or lock(self, key))
    with store.writing_many([OTHER, BASE, OTHER], {}) as writers:
        assert taken == sorted([BASE.key(), OTHER.key()])
        assert writers[1] is None and writers[2] is None and writers[0] is not None
        # The complete cell's lock is free while the group writes: another process can take it at once.
        free = FileLock(str(tmp_path / "locks" / f"{BASE.key()}.lock"), timeout=0)
        free.acquire()
        free.release()
        held = FileLock(str(tmp_path / "locks" / f"{OTHER.key()}.lock"), timeout=0)
        with pytest.raises(Timeout):
            held.acquire()


def test_a_cell_locked_past_the_timeout_stops_with_the_lock_file_named(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_LOCK_TIMEOUT", "0.2")
    (tmp_path / "locks").mkdir()
    other = FileLock(str(tmp_path / "locks" / f"{BASE.key()}.lock"))
    other.acquire()
    try:
        with (
            pytest.raises(HarnessError, match=r"stayed locked by another process for 0.2 s .*\.lock\); let that run finish"),
            Store(tmp_path).writing(BASE, {}),
        ):
            pass
    finally:
        other.release()
    monkeypatch.setenv("HARNESS_LOCK_TIMEOUT", "soon")
    with pytest.raises(HarnessError, match="HARNESS_LOCK_TIMEOUT='soon' is not a number"):
        Store(tmp_path).writing(BASE, {}).__enter__()


def _complete(store, spec=BASE):
    with store.writing(spec, {}) as writer:
        writer.append([_row(i) for i in (1, 2, 3)])
        return store.finish(spec, IDS)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda cell: (cell / "metrics.json").write_text("{garbage"), r"metrics\.json: unreadable \(JSONDecodeError\)"),
        (lambda cell: (cell / "spec.json").write_text("[]"), r"spec\.json: not a JSON object"),
        (
            lambda cell: (cell / "predictions.jsonl").write_text(_lines(2)),
            r": 2 prediction rows for 3 examples \(metrics say 3\)",
        ),
        (
            lambda cell: (cell / "predictions.jsonl").write_bytes(b'{"id": "nq/test/1"}\n\xff\xfe\n'),
            r"predictions\.jsonl: unreadable",
        ),
        (
            lambda cell: (cell / "predictions.jsonl").write_text(_lines(1) + "oops\n" + _lines(1)),
            r"predictions\.jsonl:2: not a JSON prediction row",
        ),
        (lambda cell: _respec(cell, dataset="popqa"), r"spec\.json: its spec hashes to \w+, not to its folder's key"),
    ],
)
def test_a_damaged_cell_is_reported_skipped_then_recomputed(tmp_path, damage, message):
    warnings = []
    _complete(Store(tmp_path))
    damage(tmp_path / "runs" / BASE.key())
    store = Store(tmp_path, warn=warnings.append)
    assert store.cells() == []
    assert (
        len(warnings) == 1
        and re.search(message, warnings[0])
        and warnings[0].endswith("skipped (delete that folder, or run again to recompute it)")
    )
    assert not store.is_complete(BASE.key())
    record = _complete(store)  # the next run: the damaged folder is set aside, the cell published again
    assert [row["id"] for row in record.predictions()] == IDS
    assert (tmp_path / "runs" / f".damaged-{BASE.key()}").is_dir()
    assert [c.key for c in Store(tmp_path).cells()] == [BASE.key()]


def _lines(n):
    return "".join(json.dumps(_row(i)) + "\n" for i in range(1, n + 1))


def _respec(cell, **changes):
    stored = json.loads((cell / "spec.json").read_text())
    stored["spec"].update(changes)
    (cell / "spec.json").write_text(json.dumps(stored))


def test_a_folder_without_metrics_is_recomputed_and_published(tmp_path):
    # It once failed to publish on every run ("Directory not empty").
    (tmp_path / "runs" / BASE.key()).mkdir(parents=True)
    (tmp_path / "runs" / BASE.key() / "predictions.jsonl").write_text(_lines(1))
    warnings = []
    record = _complete(Store(tmp_path, warn=warnings.append))
    assert record.metrics["n"] == 3
    assert warnings == [f"{tmp_path / 'runs' / BASE.key()} was not a whole cell; moved to .damaged-{BASE.key()} and recomputed"]


@pytest.mark.parametrize(
    ("predictions", "message"),
    [
        (_lines(1) + "garbage\n", r"predictions\.jsonl:2: not a JSON prediction row; that partial cell is started again"),
        (json.dumps(_row(2)) + "\n", r"predictions\.jsonl: its 1 rows are not the cell's first examples in order; that partial"),
    ],
)
def test_a_damaged_partial_cell_starts_again(tmp_path, predictions, message):
    store = Store(tmp_path)
    with pytest.raises(KeyboardInterrupt), store.writing(BASE, {}) as writer:
        raise KeyboardInterrupt
    (tmp_path / "runs" / f".partial-{BASE.key()}" / "predictions.jsonl").write_text(predictions)
    warnings = []
    store = Store(tmp_path, warn=warnings.append)
    with store.writing(BASE, {}, expected_ids=IDS) as writer:
        assert writer.done_ids == []
        writer.append([_row(i) for i in (1, 2, 3)])
        store.finish(BASE, IDS)
    assert len(warnings) == 1 and re.search(message, warnings[0])
    assert [row["id"] for row in store.load(BASE.key()).predictions()] == IDS


def test_cells_of_another_result_schema_are_skipped_with_one_notice(tmp_path):
    for spec in (BASE, OTHER):
        _complete(Store(tmp_path), spec)
        _respec(tmp_path / "runs" / spec.key(), schema_version=1)
    warnings = []
    assert Store(tmp_path, warn=warnings.append).cells() == []
    assert warnings == [
        f"2 cell(s) under {tmp_path / 'runs'} were written by another harness version and are skipped; "
        "`harness run` recomputes what you ask for (delete them to silence this)"
    ]


def test_leaderboard_over_a_store_with_a_damaged_cell_reports_it_and_shows_the_rest(tmp_path, capsys):
    from harness.cli import main

    store = Store(tmp_path)
    _complete(store)
    _complete(store, OTHER)
    (tmp_path / "runs" / OTHER.key() / "metrics.json").write_text("not json")
    assert main(["leaderboard", "--results", str(tmp_path), "--format", "csv"]) == 0
    out, err = capsys.readouterr()
    assert "nq" in out and "triviaqa" not in out
    assert f"warning: {tmp_path / 'runs' / OTHER.key() / 'metrics.json'}: unreadable (JSONDecodeError); skipped" in err
