"""Verdict lines (trained method vs the strongest cheap reference) and the leaderboard's n column and average CIs,
on synthetic stores with known per-question results; expected CIs come from an independent plain loop."""

import io
import json

import numpy as np
import pandas as pd
import pytest

from harness.cli import main
from harness.leaderboard import (
    cells_frame,
    compare,
    comparison_display,
    display_table,
    leaderboard,
    render,
    select,
    verdict_lines,
)
from harness.spec import CellSpec, example_ids_hash
from harness.store import Store

MINUS = "\u2212"


def _write(store, dataset, method, correct, n=20, retriever="bm25"):
    """A cell of ``n`` questions ``<dataset>/<i>``: EM (and F1) 1 on the indices in ``correct``, else 0."""
    ids = [f"{dataset}/{i}" for i in range(n)]
    spec = CellSpec(
        dataset=dataset,
        split="eval",
        example_ids_hash=example_ids_hash(ids),
        examples_hash=example_ids_hash(ids),  # synthetic content
        n_examples=n,
        retriever={"name": retriever, "corpus_fingerprint": "c"},
        passages=3,
        model={"id": "tiny", "weights_hash": "w"},
        method=method,
        template_hash="t",
        decoding={"max_new_tokens": 32},
        scorer_version="v",
        metrics=("exact_match", "f1"),
    )
    rows = [
        {"id": q, "prediction": "", "metrics": {"exact_match": float(i in correct), "f1": float(i in correct)}}
        for i, q in enumerate(ids)
    ]
    with store.writing(spec, {"created": "2026-11-28T00:00:00"}) as writer:
        writer.append(rows)
        store.finish(spec, ids)


def _vector(correct, n=20):
    return np.array([1.0 if i in correct else 0.0 for i in range(n)])


def _macro_ci(samples, n_resamples=1000, seed=0):
    """Percentile 95% CI (x100) of the mean over samples of each sample's mean, by a plain loop: one generator
    draws each sample's (n_resamples, n) index matrix in turn; each resample's mean is summed question by question."""
    rng = np.random.default_rng(seed)
    totals = np.zeros(n_resamples)
    for values in samples:
        idx = rng.integers(0, len(values), size=(n_resamples, len(values)))
        for r in range(n_resamples):
            total = 0.0
            for i in idx[r]:
                total += values[i]
            totals[r] += total / len(values)
    averages = totals / len(samples)
    low, high = np.percentile(averages, [2.5, 97.5])
    return 100 * low, 100 * high


def _picked(store, datasets=("triviaqa", "nq")):
    return select(cells_frame(store), list(datasets))


def test_significant_difference_line(tmp_path):
    store = Store(tmp_path)
    # nq: prompt right on 0-9, SPRING on 0-17: paired diffs are 1 on 10-17 (+40); triviaqa: 0-9 vs 0-15 (+30).
    _write(store, "nq", {"name": "prompt"}, set(range(10)))
    _write(store, "nq", {"name": "spring", "tokens": 50}, set(range(18)))
    _write(store, "triviaqa", {"name": "prompt"}, set(range(10)))
    _write(store, "triviaqa", {"name": "spring", "tokens": 50}, set(range(16)))
    # Draws go in suite order: triviaqa before nq.
    low, high = _macro_ci([_vector(set(range(16))) - _vector(set(range(10))), _vector(set(range(18))) - _vector(set(range(10)))])
    assert 0 < low < 35.0 < high <= 50.0  # every paired diff is >= 0 and 14 of 40 are 1
    lines = verdict_lines(store, _picked(store))
    assert lines == [
        f"spring[tokens=50] {MINUS} prompt: +35.0 EM [{low:+.1f}, {high:+.1f}] over 40 paired questions (in-domain, 2 datasets); significant at 95%"
    ]
    # The same numbers as `compare` (all shared datasets are in-domain here).
    average = compare(store, _picked(store), "prompt", "spring[tokens=50]", "exact_match").table.loc["average (2)"]
    assert average["diff"] == pytest.approx(35.0)
    assert (average["ci_low"], average["ci_high"]) == pytest.approx((low, high))
    assert int(average["n"]) == 40


def test_difference_whose_ci_includes_zero(tmp_path):
    store = Store(tmp_path)
    # nq: one more right question (+5); triviaqa: one lost (0), one won (10): 0. Macro +2.5.
    _write(store, "nq", {"name": "prompt-chat"}, set(range(10)))
    _write(store, "nq", {"name": "lora"}, set(range(11)))
    _write(store, "triviaqa", {"name": "prompt-chat"}, set(range(10)))
    _write(store, "triviaqa", {"name": "lora"}, set(range(1, 11)))
    low, high = _macro_ci(
        [_vector(set(range(1, 11))) - _vector(set(range(10))), _vector(set(range(11))) - _vector(set(range(10)))]
    )
    assert low <= 0 <= high
    assert verdict_lines(store, _picked(store)) == [
        f"lora {MINUS} prompt-chat: +2.5 EM [{low:+.1f}, {high:+.1f}] over 40 paired questions (in-domain, 2 datasets); "
        "the CI includes 0: no significant difference"
    ]


def test_strongest_cheap_reference_by_in_domain_average(tmp_path):
    store = Store(tmp_path)
    for dataset in ("nq", "triviaqa"):
        _write(store, dataset, {"name": "prompt"}, set(range(5)))
        _write(store, dataset, {"name": "prompt-chat"}, set(range(8)))
        _write(store, dataset, {"name": "prompt-fewshot", "shots": 1}, set(range(10)))
        _write(store, dataset, {"name": "prompt-fewshot", "shots": 3}, set(range(12)))
        _write(store, dataset, {"name": "spring", "tokens": 50}, set(range(14)))
        _write(store, dataset, {"name": "lora"}, set(range(13)))
        _write(store, dataset, {"name": "closed-book"}, set())
    _write(store, "popqa", {"name": "prompt-chat"}, set(range(20)))  # best held out: does not count
    _write(store, "popqa", {"name": "spring", "tokens": 50}, set())
    picked = _picked(store, ("triviaqa", "nq", "popqa"))
    lines = verdict_lines(store, picked)
    assert [line.split(":")[0] for line in lines] == [  # the leaderboard's column order: the registry's
        f"spring[tokens=50] {MINUS} prompt-fewshot[shots=3]",
        f"lora {MINUS} prompt-fewshot[shots=3]",
    ]
    assert lines[0].startswith(f"spring[tokens=50] {MINUS} prompt-fewshot[shots=3]: +10.0 EM [")
    assert "over 40 paired questions (in-domain, 2 datasets)" in lines[0]
    # method_order puts LoRA first; without the few-shot cells prompt-chat is the strongest.
    assert verdict_lines(store, picked, method_order=["lora", "spring"])[0].startswith("lora")
    no_fewshot = picked[~picked["method"].str.startswith("prompt-fewshot")]
    assert [line.split(":")[0] for line in verdict_lines(store, no_fewshot)] == [
        f"spring[tokens=50] {MINUS} prompt-chat",
        f"lora {MINUS} prompt-chat",
    ]
    # F1 instead of EM: the same choice, labelled F1.
    assert "+10.0 F1 [" in verdict_lines(store, picked, metric="f1")[0]


def test_no_reference_no_line_and_held_out_fallback(tmp_path):
    store = Store(tmp_path)
    _write(store, "nq", {"name": "spring", "tokens": 50}, set(range(10)))
    _write(store, "nq", {"name": "closed-book"}, set())
    assert verdict_lines(store, _picked(store, ("nq",))) == []
    # Only held-out datasets shared: all shared datasets, said so.
    _write(store, "nq", {"name": "prompt"}, set(range(5)))
    _write(store, "popqa", {"name": "prompt-chat"}, set(range(4)), n=10)
    _write(store, "popqa", {"name": "lora"}, set(range(6)), n=10)
    _write(store, "bamboogle", {"name": "prompt-chat"}, set(range(2)), n=10)
    _write(store, "bamboogle", {"name": "lora"}, set(range(2)), n=10)
    picked = _picked(store, ("nq", "popqa", "bamboogle"))
    low, high = _macro_ci([_vector(set(range(6)), 10) - _vector(set(range(4)), 10), np.zeros(10)])
    lines = verdict_lines(store, picked)
    # lora shares no in-domain dataset with a reference; SPRING is judged against prompt on nq (prompt-chat has no nq).
    assert lines[1] == (
        f"lora {MINUS} prompt-chat: +10.0 EM [{low:+.1f}, {high:+.1f}] over 20 paired questions (all datasets, 2 datasets); "
        "the CI includes 0: no significant difference"
    )
    assert (
        lines[0].startswith(f"spring[tokens=50] {MINUS} prompt: +25.0 EM [")
        and "over 20 paired questions (in-domain, 1 dataset)" in lines[0]
    )


def test_leaderboard_n_column_and_average_cis(tmp_path):
    store = Store(tmp_path)
    _write(store, "nq", {"name": "prompt"}, set(range(10)))
    _write(store, "nq", {"name": "spring", "tokens": 50}, set(range(8)), n=10)  # evaluated on fewer questions
    _write(store, "triviaqa", {"name": "prompt"}, set(range(5)))
    _write(store, "triviaqa", {"name": "spring", "tokens": 50}, set(range(15)))
    _write(store, "popqa", {"name": "prompt"}, set(), n=10)
    _write(store, "popqa", {"name": "spring", "tokens": 50}, set(range(10)), n=10)
    datasets = ["nq", "triviaqa", "popqa"]
    board = leaderboard(_picked(store, datasets), datasets, ["exact_match", "f1"], store=store)
    rows = ["nq", "triviaqa", "popqa *", "avg in-domain (2)", "avg held-out (1)", "avg all (3)"]
    assert list(board.table.index) == rows
    assert board.n.to_dict("list") == {"min": [10, 20, 10, 30, 10, 40], "max": [20, 20, 10, 40, 10, 50]}
    assert board.table.loc["avg in-domain (2)", ("spring[tokens=50]", "EM")] == pytest.approx(77.5)  # (80 + 75) / 2
    assert board.table.loc["avg all (3)", ("prompt", "EM")] == pytest.approx(25.0)  # (50 + 25 + 0) / 3

    # Per column one generator draws the averaged datasets in row order (nq, triviaqa, popqa); every average row
    # averages those draws. Recompute by the plain loop, rebuilding the draw sequence for each average.
    def expected(correct_nq, n_nq, correct_tq, correct_pq, members):
        rng = np.random.default_rng(0)
        vectors = {"nq": _vector(correct_nq, n_nq), "triviaqa": _vector(correct_tq), "popqa": _vector(correct_pq, 10)}
        draws = {d: rng.integers(0, len(v), size=(1000, len(v))) for d, v in vectors.items()}
        averages = [np.mean([sum(vectors[d][i] for i in draws[d][r]) / len(vectors[d]) for d in members]) for r in range(1000)]
        return tuple(100 * np.percentile(averages, [2.5, 97.5]))

    for column, args in (
        ("prompt", (set(range(10)), 20, set(range(5)), set())),
        ("spring[tokens=50]", (set(range(8)), 10, set(range(15)), set(range(10)))),
    ):
        for row, members in (("avg in-domain (2)", ["nq", "triviaqa"]), ("avg all (3)", ["nq", "triviaqa", "popqa"])):
            bounds = expected(*args, members)
            for metric in ("EM", "F1"):  # F1 equals EM here, and draws are shared across metrics
                got = (board.ci_low.loc[row, (column, metric)], board.ci_high.loc[row, (column, metric)])
                assert got == pytest.approx(bounds), (column, row, metric)
    # Held out: one dataset all wrong / all right, so every resample agrees (hand-checked exact bounds).
    assert (board.ci_low.loc["avg held-out (1)", ("prompt", "EM")], board.ci_high.loc["avg held-out (1)", ("prompt", "EM")]) == (
        0.0,
        0.0,
    )
    assert (
        board.ci_low.loc["avg held-out (1)", ("spring[tokens=50]", "EM")],
        board.ci_high.loc["avg held-out (1)", ("spring[tokens=50]", "EM")],
    ) == (100.0, 100.0)
    assert board.ci_low.loc["nq"].isna().all()  # dataset rows carry no CI
    assert "avg rows: mean [95% bootstrap CI]" in board.header

    shown = display_table(board)
    assert list(shown.columns) == ["n", "prompt EM", "prompt F1", "spring[tokens=50] EM", "spring[tokens=50] F1"]
    assert list(shown["n"]) == ["10-20", "20", "10", "30-40", "10", "40-50"]
    assert shown.loc["nq", "spring[tokens=50] EM"] == "80.0"
    assert shown.loc["avg held-out (1)", "spring[tokens=50] EM"] == "100.0 [100.0, 100.0]"
    low, high = board.ci_low.loc["avg all (3)", ("prompt", "EM")], board.ci_high.loc["avg all (3)", ("prompt", "EM")]
    assert shown.loc["avg all (3)", "prompt EM"] == f"25.0 [{low:.1f}, {high:.1f}]"

    # csv stays numeric: n, n max, and lo/hi columns (empty on dataset rows).
    csv = pd.read_csv(io.StringIO(render(board, "csv")), index_col=0)
    assert csv["n"].tolist() == [10, 20, 10, 30, 10, 40] and csv["n max"].tolist() == [20, 20, 10, 40, 10, 50]
    assert csv.loc["avg held-out (1)", "spring[tokens=50] EM hi"] == 100.0
    assert pd.isna(csv.loc["nq", "prompt EM lo"])
    assert "| 10-20 |" in render(board, "md").replace("  ", "")

    # Without the store: the same means and n, no CIs (older callers).
    plain = leaderboard(_picked(store, datasets), datasets, ["exact_match"])
    assert plain.ci_low is None and list(display_table(plain)["n"]) == list(shown["n"])
    assert display_table(plain).loc["avg all (3)", "prompt EM"] == "25.0"


def test_cli_prints_the_verdict_and_integer_n(tmp_path, capsys):
    store = Store(tmp_path)
    for dataset in ("nq", "triviaqa"):
        _write(store, dataset, {"name": "prompt"}, set(range(10)))
        _write(store, dataset, {"name": "spring", "tokens": 50}, set(range(18)))
    args = ["leaderboard", "--suite", "nq,triviaqa", "--results", str(tmp_path)]
    assert main(args) == 0
    out = capsys.readouterr().out
    verdict = verdict_lines(store, _picked(store))[0]
    assert verdict in out.splitlines()
    assert "avg in-domain (2)" in out and "90.0 [" in out
    assert main([*args, "--format", "csv"]) == 0  # csv: the table only
    assert pd.read_csv(io.StringIO(capsys.readouterr().out), index_col=0).loc["nq", "n"] == 20
    assert main([*args, "--compare", "prompt,spring[tokens=50]", "--metrics", "exact_match"]) == 0
    rows = {
        line.strip("│ ").split(" ")[0]: [c.strip() for c in line.strip("│").split("│")]
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("│")
    }
    assert rows["nq"][:3] == ["nq", "20", "+40.00"]  # n is an integer; the diff on nq is +40
    assert rows["average"][:3] == ["average (2)", "40", "+40.00"]
    assert main([*args, "--compare", "prompt,spring", "--metrics", "exact_match", "--format", "json"]) == 0
    (record,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]  # JSON, not Markdown
    assert record["metric"] == "exact_match" and "spring[tokens=50] - prompt" in record["header"]
    assert {r["dataset"]: (r["n"], r["diff"]) for r in record["rows"]}["nq"] == (20, 40.0)
    shown = comparison_display(compare(store, _picked(store), "prompt", "spring[tokens=50]", "exact_match"))
    assert list(shown["n"]) == ["20", "20", "40"]


def test_an_average_is_over_the_columns_own_datasets_and_flags_missing_ones(tmp_path):
    store = Store(tmp_path)
    _write(store, "nq", {"name": "prompt"}, {0, 1})  # 10.0
    _write(store, "triviaqa", {"name": "prompt"}, {0, 1, 2, 3})  # 20.0
    _write(store, "popqa", {"name": "prompt"}, {0})  # 5.0
    _write(store, "nq", {"name": "closed-book"}, {0})  # 5.0
    _write(store, "triviaqa", {"name": "closed-book"}, {0, 1, 2})  # 15.0 (no popqa cell)
    datasets = ["triviaqa", "nq", "popqa"]
    board = leaderboard(_picked(store, datasets), datasets, ["exact_match"], store=store)
    em = board.table.xs("EM", axis=1, level=1)
    assert em.loc["avg in-domain (2)"].to_dict() == {"closed-book": 10.0, "prompt": 15.0}
    assert em.loc["avg all (3)", "prompt"] == pytest.approx(35.0 / 3)
    assert em.loc["avg all (3)", "closed-book"] == 10.0  # over its own 2 of the row's 3 datasets
    assert np.isnan(em.loc["avg held-out (1)", "closed-book"])  # none of the row's datasets: no number
    shown = display_table(board)
    assert shown.loc["avg all (3)", "closed-book EM"].endswith("] 2 of 3")
    assert shown.loc["avg all (3)", "prompt EM"].endswith("]")  # complete: no flag
    assert shown.loc["avg held-out (1)", "closed-book EM"] == "-"
    assert "'k of N'" in board.header
