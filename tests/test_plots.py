"""Every plot rendered from a small synthetic store written through the Store API."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pytest

from harness.errors import HarnessError
from harness.leaderboard import cells_frame, leaderboard, select
from harness.spec import CellSpec, example_ids_hash
from harness.store import Store
from plots import PLOTS, load_frame, output_stem, render, save
from plots._frame import plot_frame

SUITE = "nq,triviaqa"
DATASETS = ("nq", "triviaqa")
CORPUS = {"corpus": "wiki-offline", "corpus_fingerprint": "ab" * 32}


def write_cell(
    store,
    dataset,
    method,
    p,
    *,
    retriever="bm25",
    passages=5,
    model="tiny",
    n=24,
    seed=0,
    lm_eval=None,
    created="2026-11-28T01:00:00",
):
    """One finished cell whose per-example EM is Bernoulli(p) (F1 a bit higher), deterministic in ``seed``."""
    rng = np.random.default_rng(seed)
    ids = [f"{dataset}/{i}" for i in range(n)]
    em = (rng.random(n) < p).astype(float)
    f1 = np.clip(em + (1 - em) * rng.random(n) * 0.5, 0, 1)
    if lm_eval:
        metrics = (lm_eval["metric"],)
        rows = [{"id": i, "prediction": "", "metrics": {lm_eval["metric"]: float(e)}} for i, e in zip(ids, em)]
        decoding = {"num_fewshot": lm_eval.get("shots", 0), "harness": "lm-eval"}
        retriever_spec = {"name": "none"}
    else:
        metrics = ("exact_match", "f1")
        rows = [{"id": i, "prediction": "", "metrics": {"exact_match": float(e), "f1": float(f)}} for i, e, f in zip(ids, em, f1)]
        decoding = {"max_new_tokens": 32}
        retriever_spec = {"name": retriever, **CORPUS}
    spec = CellSpec(
        dataset=dataset,
        split="eval",
        example_ids_hash=example_ids_hash(ids),
        examples_hash=example_ids_hash(ids),  # synthetic content
        n_examples=n,
        retriever=retriever_spec,
        passages=0 if lm_eval else passages,
        model={"id": model, "weights_hash": "w"},
        method=method,
        template_hash="t",
        decoding=decoding,
        scorer_version="v",
        metrics=metrics,
    )
    with store.writing(spec, {"created": created, "limit": n}) as writer:
        writer.append(rows)
        store.finish(spec, ids)


def build_store(root) -> Store:
    store = Store(root)
    seed = 0
    for d, dataset in enumerate(DATASETS):
        base = 0.3 + 0.1 * d

        def cell(method, p, dataset=dataset, **kw):
            nonlocal seed
            seed += 1
            write_cell(store, dataset, method, p, seed=seed, **kw)

        for m in (1, 3, 5, 10):
            cell({"name": "prompt"}, base + 0.02 * m, passages=m)
            cell({"name": "spring", "tokens": 50}, base + 0.15 + 0.02 * m, passages=m)
        for k in (1, 2, 5, 10, 20):
            cell({"name": "spring", "tokens": k}, base + 0.05 + 0.02 * np.log(k))
            cell({"name": "spring", "tokens": k, "fixed_k": True}, base + 0.07 + 0.02 * np.log(k))
        cell({"name": "spring", "tokens": 50, "fixed_k": True}, base + 0.2)
        for placement, shift in (("trq", -0.1), ("rqt", -0.2)):
            cell({"name": "spring", "tokens": 50, "placement": placement}, base + 0.2 + shift)
        cell({"name": "prompt"}, base - 0.05, retriever="e5-base")
        cell({"name": "spring", "tokens": 50}, base + 0.1, retriever="e5-base")
    for task, metric, shots, p in (
        ("harness_mmlu", "acc", 5, 0.45),
        ("harness_boolq", "acc", 0, 0.6),
        ("harness_gsm8k", "exact_match", 8, 0.1),
    ):
        for method, shift in (
            ({"name": "base"}, 0),
            ({"name": "lora"}, -0.15),
            ({"name": "spring", "plugged": False}, 0),
            ({"name": "spring", "plugged": True, "tokens": 50}, -0.02),
        ):
            seed += 1
            # the same seed for base and unplugged SPRING: identical scores, as the paper's frozen backbone gives
            write_cell(
                store, task, method, p + shift, n=30, seed=7 if shift == 0 else seed, lm_eval={"metric": metric, "shots": shots}
            )
    return store


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return build_store(tmp_path_factory.mktemp("store"))


@pytest.fixture(scope="module")
def frame(store):
    return plot_frame(store)


def check_image_files(paths):
    png, svg = paths
    assert png.suffix == ".png" and svg.suffix == ".svg"
    data = png.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5_000
    assert ET.parse(svg).getroot().tag.endswith("svg") and svg.stat().st_size > 5_000


@pytest.mark.parametrize("name", sorted(PLOTS))
def test_every_plot_renders_to_png_and_svg(frame, name, tmp_path):
    model = "tiny"
    suite = "lm-eval" if name == "preservation" else SUITE
    fig = render(name, frame, suite=SUITE, model=model)
    texts = " ".join(t.get_text() for t in fig.texts) + fig._suptitle.get_text()
    for needed in ("tiny", "examples per dataset", "run 2026-11-28"):
        assert needed in texts, needed
    if name != "preservation":
        assert "wiki-offline (sha256:abababababab)" in texts
    paths = save(fig, tmp_path, output_stem(name, model, suite))
    assert [p.name for p in paths] == [f"{output_stem(name, model, suite)}.png", f"{output_stem(name, model, suite)}.svg"]
    check_image_files(paths)


def _line(ax, label):
    """The data line of the series ``label``: an error-bar container's line, or a plain line (axhline)."""
    for container in ax.containers:
        if container.get_label() == label:
            return container.lines[0]
    return next(line for line in ax.get_lines() if line.get_label() == label)


def test_tokens_sweep_values_match_the_leaderboard(store, frame):
    fig = render("tokens-sweep", frame, suite=SUITE)
    em_ax, f1_ax = fig.axes[:2]
    # the leaderboard's labels do not tell fixed-k models from SPRING: leave fixed-k cells out of its input
    cells = cells_frame(store)
    cells = cells[~cells["key"].isin(frame.loc[frame["fixed_k"], "key"])]
    picked = select(cells[cells["passages"] == 5], DATASETS, retriever="bm25")
    board = leaderboard(picked, DATASETS, ["exact_match", "f1"]).table
    for ax, label in ((em_ax, "EM"), (f1_ax, "F1")):
        spring = _line(ax, "SPRING")
        assert list(spring.get_xdata()) == [1, 2, 5, 10, 20, 50]
        expected = [board.loc["avg all (2)", (f"spring[tokens={k}]", label)] for k in (1, 2, 5, 10, 20, 50)]
        np.testing.assert_allclose(spring.get_ydata(), expected)
        assert _line(ax, "Prompt").get_ydata()[0] == pytest.approx(board.loc["avg all (2)", ("prompt", label)])
    fixed = frame[frame["fixed_k"] & (frame["tokens"] == 50)]
    assert list(_line(em_ax, "fixed-k").get_xdata()) == [1, 2, 5, 10, 20, 50]
    assert _line(em_ax, "fixed-k").get_ydata()[-1] == pytest.approx(100 * fixed["exact_match"].mean())


def test_leaderboard_heat_map_shows_the_leaderboard(store, frame):
    fig = render("leaderboard", frame, suite=SUITE, retriever="bm25", passages=5)
    ax = fig.axes[0]
    rows = [t.get_text() for t in ax.get_yticklabels()]
    columns = [t.get_text() for t in ax.get_xticklabels()]
    assert rows == ["nq", "triviaqa", "avg in-domain (2)", "avg all (2)"]
    assert columns[0] == "prompt" and "spring[tokens=5,fixed_k]" in columns
    image = ax.images[0].get_array()
    board = leaderboard(select(frame[frame["passages"] == 5], DATASETS, retriever="bm25"), DATASETS, ["exact_match"]).table
    for i, row in enumerate(rows):
        for j, column in enumerate(columns):
            assert image[i, j] == pytest.approx(board.loc[row, (column, "EM")])


def test_preservation_shows_differences_to_base(frame):
    fig = render("preservation", frame, model="tiny")
    labels = {t.get_text() for t in fig.axes[0].texts}
    assert "+0.0" in labels  # unplugged SPRING equals the base model
    assert any(t.startswith("-") or t.startswith("\u2212") for t in labels)


def test_missing_cells_name_the_command(tmp_path, frame):
    store = Store(tmp_path)
    write_cell(store, "nq", {"name": "prompt"}, 0.5)
    with pytest.raises(HarnessError) as error:
        render("tokens-sweep", plot_frame(store), suite="qa9")
    message = str(error.value)
    assert "\n" not in message
    assert "no SPRING cells with several token counts for qa9/" in message
    assert "harness run --suite qa9" in message and "--method spring --tokens 1,2,5,10,20,50" in message
    with pytest.raises(HarnessError, match="run `harness preserve"):
        render("preservation", plot_frame(store))
    with pytest.raises(HarnessError, match="holds no finished cell"):
        load_frame(tmp_path / "empty")


def test_cli_writes_png_and_svg_and_prints_paths(store, tmp_path, capsys):
    import typer

    from harness.commands import plot

    app = typer.Typer()
    plot.register(app)

    @app.callback()
    def _root() -> None:  # keep "plot" a sub-command even when it is the only one
        pass

    from typer.testing import CliRunner

    out = tmp_path / "plots"
    result = CliRunner().invoke(app, ["plot", "tokens-sweep", "--suite", SUITE, "--results", str(store.root), "--out", str(out)])
    assert result.exit_code == 0, result.output
    paths = sorted(out.iterdir())
    assert [p.name for p in paths] == ["tokens-sweep-tiny-nq_triviaqa.png", "tokens-sweep-tiny-nq_triviaqa.svg"]
    for path in paths:
        assert str(path) in result.output.replace("\n", "")
    result = CliRunner().invoke(app, ["plot", "tokens-swep", "--results", str(store.root)])
    assert result.exit_code != 0 and "tokens-sweep" in str(result.exception)


def test_drawing_leaves_matplotlib_global_state_alone(frame):
    import matplotlib

    before = dict(matplotlib.rcParams)
    fig = render("passages", frame, suite=SUITE)
    assert dict(matplotlib.rcParams) == before
    assert fig.canvas.manager is None  # a pyplot-free figure: nothing registered, nothing to close


def test_averages_use_only_datasets_every_point_has(tmp_path):
    store = Store(tmp_path)
    for k in (1, 5):
        write_cell(store, "nq", {"name": "spring", "tokens": k}, 0.5, seed=k)
    write_cell(store, "triviaqa", {"name": "spring", "tokens": 5}, 0.9, seed=9)  # k=1 lacks triviaqa
    fig = render("tokens-sweep", plot_frame(store), suite=SUITE)
    text = fig.texts[-1].get_text().replace("\n  ", " ")
    assert "averages over 1 dataset: nq" in text
    assert "triviaqa (no cell for SPRING k=1)" in text
    assert "Prompt baseline omitted" in text or "baseline omitted" in text
    nq = plot_frame(store).query("dataset == 'nq'").sort_values("tokens")
    np.testing.assert_allclose(_line(fig.axes[0], "SPRING").get_ydata(), 100 * nq["exact_match"].to_numpy())


def test_the_default_suite_is_what_the_store_covers():
    import pandas as pd

    from harness.suites import SUITES
    from plots import stored_suite

    def frame(datasets, harness="qa"):
        return pd.DataFrame({"dataset": list(datasets), "harness": harness})

    main_job = [d for d in SUITES["qa12"] if d != "msmarco"]  # the 11 datasets the main job has offline
    assert stored_suite(frame(main_job)) == "qa12"
    assert stored_suite(frame(SUITES["qa9"])) == "qa9"
    assert stored_suite(frame(["popqa", "nq"])) == "nq,popqa"  # too few of any suite: the datasets themselves
    assert stored_suite(pd.concat([frame(["nq"]), frame(["mmlu"], harness="lm-eval")])) == "nq"
    with pytest.raises(HarnessError, match="holds no QA cell"):
        stored_suite(frame(["mmlu"], harness="lm-eval"))


def test_leaderboard_heat_map_flags_an_average_over_fewer_datasets(tmp_path):
    store = Store(tmp_path)
    write_cell(store, "nq", {"name": "prompt"}, 0.5)
    write_cell(store, "triviaqa", {"name": "prompt"}, 0.25)
    write_cell(store, "nq", {"name": "closed-book"}, 0.5)  # no triviaqa cell
    ax = render("leaderboard", plot_frame(store), suite=SUITE).axes[0]
    texts = [t.get_text() for t in ax.texts]
    # closed-book's two averages (in-domain, all) are over nq only: flagged, with nq's own value; prompt's are not.
    nq_closed_book = texts[0]  # row nq, first column (closed-book, in registry order)
    assert [t for t in texts if "of" in t] == [f"{nq_closed_book}\n1 of 2"] * 2
