"""Leaderboard and paired comparison computed from a small store written through the Store API."""

import io
import json

import pandas as pd
import pytest

from harness.cli import main
from harness.errors import HarnessError
from harness.leaderboard import cells_frame, compare, leaderboard, method_label, render, select
from harness.spec import CellSpec, example_ids_hash
from harness.store import Store


def _write(store, dataset, method, scores, model="tiny"):
    ids = [f"{dataset}/{i}" for i in range(len(scores))]
    spec = CellSpec(
        dataset=dataset,
        split="eval",
        example_ids_hash=example_ids_hash(ids),
        examples_hash=example_ids_hash(ids),  # synthetic content
        n_examples=len(ids),
        retriever={"name": "bm25", "corpus_fingerprint": "c"},
        passages=3,
        model={"id": model, "weights_hash": "w"},
        method=method,
        template_hash="t",
        decoding={"max_new_tokens": 32},
        scorer_version="v",
        metrics=("exact_match", "f1"),
    )
    with store.writing(spec, {"created": "2026-11-28T00:00:00"}) as writer:
        writer.append([{"id": i, "prediction": "", "metrics": {"exact_match": em, "f1": f1}} for i, (em, f1) in zip(ids, scores)])
        store.finish(spec, ids)


@pytest.fixture
def store(tmp_path):
    store = Store(tmp_path)
    _write(store, "nq", {"name": "prompt"}, [(1, 1), (0, 0.5), (0, 0), (1, 1)])  # EM 50, F1 62.5
    _write(store, "nq", {"name": "spring", "tokens": 50}, [(1, 1), (1, 1), (0, 0.5), (1, 1)])  # EM 75, F1 87.5
    _write(store, "popqa", {"name": "prompt"}, [(0, 0), (0, 0.25)])  # EM 0, F1 12.5
    _write(store, "popqa", {"name": "spring", "tokens": 50}, [(1, 1), (0, 0.25)])  # EM 50, F1 62.5
    return store


def test_method_label():
    assert method_label({"name": "prompt"}) == "prompt"
    assert method_label({"name": "spring", "tokens": 5, "lr": 1e-3}) == "spring[tokens=5]"
    # Each method's own defaults are left out: prefix's placement and fixed k, SPRING's placement.
    prefix = {"name": "prefix", "tokens": 50, "placement": "trq", "fixed_k": True, "impl": "spring"}
    assert method_label(prefix) == "prefix[tokens=50]"
    assert method_label({**prefix, "impl": "peft"}) == "prefix[tokens=50,impl=peft]"
    assert (
        method_label({"name": "spring", "tokens": 5, "placement": "trq", "fixed_k": True})
        == "spring[tokens=5,fixed_k,placement=trq]"
    )
    assert method_label({"name": "prompt-fewshot", "shots": 3, "seed": 0}) == "prompt-fewshot[shots=3]"


def test_token_counts_sort_as_numbers(tmp_path):
    store = Store(tmp_path)
    for k in (10, 2, 50, 1):
        _write(store, "nq", {"name": "spring", "tokens": k}, [(1, 1)])
    _write(store, "nq", {"name": "prompt"}, [(0, 0)])
    board = leaderboard(select(cells_frame(store), ["nq"]), ["nq"], ["exact_match"], method_order=["prompt"])
    columns = list(dict.fromkeys(board.table.columns.get_level_values(0)))
    assert columns == ["prompt", "spring[tokens=1]", "spring[tokens=2]", "spring[tokens=10]", "spring[tokens=50]"]


def test_leaderboard_values_and_averages(store):
    picked = select(cells_frame(store), ["nq", "popqa"])
    board = leaderboard(picked, ["nq", "popqa"], ["exact_match", "f1"])
    table = board.table
    assert list(table.index) == ["nq", "popqa *", "avg in-domain (1)", "avg held-out (1)", "avg all (2)"]
    assert table.loc["nq", ("prompt", "EM")] == 50.0
    assert table.loc["nq", ("spring[tokens=50]", "F1")] == 87.5
    assert table.loc["popqa *", ("prompt", "F1")] == 12.5
    assert table.loc["avg all (2)", ("spring[tokens=50]", "EM")] == 62.5
    assert table.loc["avg all (2)", ("prompt", "F1")] == 37.5
    assert "backbone tiny" in board.header and "retriever bm25" in board.header
    assert "| 2-4 questions per dataset |" in board.header  # popqa holds 2, nq 4
    one = leaderboard(select(cells_frame(store), ["nq"]), ["nq"], ["exact_match"]).header
    assert "| 4 questions per dataset |" in one  # not "4-4"


def test_formats_load_in_pandas(store):
    board = leaderboard(select(cells_frame(store), ["nq", "popqa"]), ["nq", "popqa"], ["exact_match", "f1"])
    csv = pd.read_csv(io.StringIO(render(board, "csv")), index_col=0)
    assert csv.loc["nq", "prompt EM"] == 50.0
    records = pd.DataFrame(json.loads(render(board, "json")))
    assert records.set_index("dataset").loc["popqa *", "spring[tokens=50] EM"] == 50.0
    md = render(board, "md")
    assert "| nq " in md and "50.0 " in md and "50.00" not in md  # the terminal table's rounding


def test_paired_comparison(store):
    picked = select(cells_frame(store), ["nq", "popqa"])
    result = compare(store, picked, "prompt", "spring[tokens=50]", "exact_match")
    assert result.table.loc["nq", "diff"] == 25.0
    assert result.table.loc["popqa", "diff"] == 50.0
    assert result.table.loc["average (2)", "diff"] == 37.5
    low, high = result.table.loc["nq", ["ci_low", "ci_high"]]
    assert 0.0 <= low <= 25.0 <= high <= 75.0  # paired diffs (0, 1, 0, 0): 4 draws hold three 1s < 5% of the time
    # A bare method name stands for its only variant; with several, the error lists them.
    bare = compare(store, picked, "prompt", "spring", "exact_match")
    assert bare.table.equals(result.table) and bare.header == result.header
    assert result.table["n"].tolist() == [4, 2, 6]  # integers, not +4.00
    _write(store, "nq", {"name": "spring", "tokens": 5}, [(1, 1)])
    with pytest.raises(HarnessError, match=r"several variants .*spring\[tokens=5\], spring\[tokens=50\]"):
        compare(store, select(cells_frame(store), ["nq", "popqa"]), "prompt", "spring", "exact_match")


def test_mixed_backbones_are_refused_unless_asked(store):
    _write(store, "nq", {"name": "prompt"}, [(1, 1)], model="other")
    with pytest.raises(HarnessError, match="several backbones .*--model"):
        select(cells_frame(store), ["nq"])
    assert len(select(cells_frame(store), ["nq"], all_models=True)) == 3
    assert len(select(cells_frame(store), ["nq"], model="other")) == 1


def test_cli_leaderboard(store, capsys):
    assert main(["leaderboard", "--suite", "nq,popqa", "--format", "csv", "--results", str(store.root)]) == 0
    frame = pd.read_csv(io.StringIO(capsys.readouterr().out), index_col=0)
    assert frame.loc["avg all (2)", "spring[tokens=50] F1"] == 75.0
    assert main(["leaderboard", "--format", "xml", "--results", str(store.root)]) == 2
    assert "unknown format 'xml'" in capsys.readouterr().err
    assert main(["leaderboard", "--results", str(store.root / "empty")]) == 2
    assert "holds no finished cell" in capsys.readouterr().err


def test_cli_method_labels_keep_commas_inside_brackets():
    from harness.commands.leaderboard import _labels

    assert _labels("prompt, prefix[tokens=50,placement=trq],spring[tokens=5]") == [
        "prompt",
        "prefix[tokens=50,placement=trq]",
        "spring[tokens=5]",
    ]


def test_a_sweep_shows_its_headline_value_and_names_the_rest(store, tmp_path):
    from harness.leaderboard import headline_variants

    for k in (1, 5):
        _write(store, "nq", {"name": "spring", "tokens": k}, [(0, 0), (0, 0), (0, 0), (1, 1)])
    _write(store, "nq", {"name": "spring", "tokens": 5, "placement": "trq"}, [(1, 1)])  # a family without k=50
    picked = select(cells_frame(store), ["nq", "popqa"])
    shown, note = headline_variants(picked)
    assert sorted(shown["method"].unique()) == ["prompt", "spring[tokens=5,placement=trq]", "spring[tokens=50]"]
    assert note == (
        "also in the store, not shown: spring[tokens=1], spring[tokens=5] (`harness plot tokens-sweep` draws them); "
        "the table shows spring[tokens=50]; --all-variants lists every value"
    )
    # The headline's numbers are the ones the full table has: collapsing drops columns, never changes a value.
    full = leaderboard(picked, ["nq", "popqa"], ["exact_match"]).table
    headline = leaderboard(shown, ["nq", "popqa"], ["exact_match"]).table
    assert headline.loc["nq", ("spring[tokens=50]", "EM")] == full.loc["nq", ("spring[tokens=50]", "EM")] == 75.0
    assert headline_variants(picked[picked["method"] == "prompt"])[1] == ""  # nothing swept: nothing to say


def test_leaderboard_command_collapses_sweeps_unless_asked(store, capsys):
    for k in (1, 5):
        _write(store, "nq", {"name": "spring", "tokens": k}, [(0, 0), (0, 0), (0, 0), (1, 1)])
    assert main(["leaderboard", "--results", str(store.root), "--suite", "nq", "--format", "csv"]) == 0
    printed = capsys.readouterr()
    assert "tokens=5]" not in printed.out
    assert printed.err.startswith("also in the store, not shown: spring[tokens=1], spring[tokens=5]")
    assert main(["leaderboard", "--results", str(store.root), "--suite", "nq", "--format", "csv", "--all-variants"]) == 0
    assert "spring[tokens=5]" in capsys.readouterr().out
    assert main(["leaderboard", "--results", str(store.root), "--suite", "nq", "--format", "md"]) == 0
    assert "also in the store, not shown: spring[tokens=1], spring[tokens=5]" in capsys.readouterr().out


def _printed_numbers(out: str) -> dict[tuple[str, str], str]:
    """(metric, row, column) -> cell text of every rich table in ``out`` (tables split by width are merged)."""
    cells, header, metric = {}, None, None
    for line in out.splitlines():
        if " x100" in line and not line.startswith(("│", "┃")) and "|" not in line:
            metric = line.split(" x100")[0]
        if not line.startswith("│") and not line.startswith("┃"):
            continue
        parts = [p.strip() for p in line.strip("│┃").split("│" if line.startswith("│") else "┃")]
        if line.startswith("┃"):
            header = parts
        elif header is not None:
            for column, text in zip(header[1:], parts[1:]):
                cells[(metric, parts[0], column)] = text
    return cells


def test_unrelated_cells_never_change_a_printed_number(store, capsys):
    """Adding sweep values, another method and another method's dataset leaves every printed number as it was."""
    argv = ["leaderboard", "--results", str(store.root), "--suite", "nq,popqa,triviaqa"]
    assert main(argv) == 0
    before = _printed_numbers(capsys.readouterr().out)
    assert before[("EM", "avg all (2)", "spring[tokens=50]")].startswith("62.5 [")
    for k in (1, 5):  # the tokens sweep of `harness plot tokens-sweep`
        _write(store, "nq", {"name": "spring", "tokens": k}, [(0, 0), (0, 0), (0, 0), (1, 1)])
        _write(store, "popqa", {"name": "spring", "tokens": k}, [(0, 0), (0, 0)])
    for name in ("closed-book", "prompt-chat", "lora"):
        _write(store, "nq", {"name": name}, [(0, 0), (0, 0), (1, 1), (1, 1)])
    _write(store, "triviaqa", {"name": "lora"}, [(1, 1), (0, 0)])  # a dataset the old columns lack
    assert main(argv) == 0
    printed = capsys.readouterr().out
    after = _printed_numbers(printed)
    renamed = {"avg all (2)": "avg all (3)", "avg in-domain (1)": "avg in-domain (2)"}  # the row now has triviaqa
    for (metric, row, column), text in before.items():
        if column == "n" and row.startswith("avg"):
            continue  # an average row's n counts its datasets' questions
        now = after[(metric, renamed.get(row, row), column)]
        assert now.split(" of ")[0].rsplit(" ", 1)[0] == text or now == text, (row, column, text, now)
    assert after[("EM", "avg all (3)", "prompt")].endswith(" 2 of 3")  # flagged, same number
    assert not any("tokens=5]" in column for _, _, column in after)  # sweep values collapse into the headline k
    assert "also in the store, not shown: spring[tokens=1], spring[tokens=5]" in printed


def test_a_wide_leaderboard_splits_into_tables_that_fit(store):
    from rich.console import Console

    from harness.console import print_leaderboard

    for name in ("closed-book", "concat", "prompt-chat", "prompt-fewshot", "lora", "prefix", "spring-plus"):
        for dataset, scores in (("nq", [(1, 1), (0, 0), (0, 0), (1, 1)]), ("popqa", [(0, 0), (1, 1)])):
            _write(store, dataset, {"name": name}, scores)
    picked = select(cells_frame(store), ["nq", "popqa"])
    out = Console(width=100, record=True, file=io.StringIO())
    print_leaderboard(out, picked, ["nq", "popqa"], ["exact_match"], store)
    text = out.export_text()
    assert all(len(line) <= 100 for line in text.splitlines() if line[:1] in "┏┃┡│└")
    assert "EM x100 (1/" in text and "…" not in text  # split, nothing truncated
    columns = [c for line in text.splitlines() if line.startswith("┃") for c in (p.strip() for p in line.strip("┃").split("┃"))]
    # Registry order (references first, then trained methods), the same as `harness run` prints.
    methods = [c for c in columns if c not in ("dataset", "n")]
    assert methods == [
        "closed-book",
        "concat",
        "prompt",
        "prompt-chat",
        "prompt-fewshot",
        "spring[tokens=50]",
        "lora",
        "spring-plus",
        "prefix",
    ]
    assert all(f"{m}" in text for m in methods)
