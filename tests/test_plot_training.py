"""`harness plot training`: the checkpoints' training records drawn from a synthetic store (no model, no training)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest
import typer
from typer.testing import CliRunner

from harness.cli import main
from harness.errors import HarnessError
from harness.training import TrainingConfig, TrainingLog
from plots import load_training_frame, save, training_curves, training_frame, training_stem
from plots.training import TITLE

SPRING_HASH = "0123456789abcdef0123"
LORA_HASH = "fedcba9876543210fedc"


def spec(method, model="tiny", batch_size=4, lr=0.002, **training):
    """A training spec as harness.methods.trained writes it (the hyper-parameters from TrainingConfig.spec())."""
    values = {"train_passages": "retrieved", **training}
    config = TrainingConfig(examples=40, batch_size=batch_size, lr=lr, dev_examples=8, eval_every=16, patience=2, **values)
    return {
        "method": method,
        "training_version": 2,
        "backbone": {"model": model, "weights_hash": "w", "dtype": "fp32"},
        "data": {"datasets": ["nq"], "n": 40, "ids_hash": "i", "passages_hash": "p"},
        "training": config.spec(),
    }


# SPRING: 10 steps of 4 questions, dev loss scored every 16 questions, stopped early; the kept step is 4.
SPRING_LOG = {
    "trainable_parameters": 100,
    "steps": 10,
    "seconds": 1.5,
    "examples_per_second": 26.7,
    "losses": [3.0, 2.8, 2.6, 2.4, 2.3, 2.2, 2.15, 2.1, 2.05, 2.0],
    "curve": [
        {"step": 0, "examples": 0, "dev_loss": 3.1},
        {"step": 4, "examples": 16, "dev_loss": 2.5, "train_loss": 2.7},
        {"step": 8, "examples": 32, "dev_loss": 2.52, "train_loss": 2.19},
        {"step": 10, "examples": 40, "dev_loss": 2.55, "train_loss": 2.025},
    ],
    "dev_examples": 8,
    "best_step": 4,
    "stopped_early": True,
    "planned_steps": 12,
}
# LoRA, an older record: per-step losses only (no curve, best_step, stopped_early, planned_steps).
LORA_LOG = {
    "trainable_parameters": 50,
    "steps": 5,
    "seconds": 1.0,
    "examples_per_second": 40.0,
    "losses": [2.0, 1.9, 1.7, 1.6, 1.5],
}


def write_store(root):
    checkpoints = root / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / f"spring-{SPRING_HASH}.safetensors").write_bytes(b"not really tensors")
    log = TrainingLog(**SPRING_LOG).__dict__  # the fields the training loop records, as trained.py dumps them
    (checkpoints / f"spring-{SPRING_HASH}.json").write_text(json.dumps({"spec": spec("spring"), "log": log}))
    folder = checkpoints / f"lora-{LORA_HASH}"
    folder.mkdir()
    (folder / "adapter_model.safetensors").write_bytes(b"")
    lora = {"spec": spec("lora", batch_size=8, lr=0.0001), "log": LORA_LOG, "harness_version": "0.1"}
    (folder / "harness-training.json").write_text(json.dumps(lora))
    return root


@pytest.fixture
def store(tmp_path):
    return write_store(tmp_path / "results")


def test_frame_has_one_row_per_point(store):
    frame = training_frame(store)
    assert set(frame["checkpoint"]) == {f"spring-{SPRING_HASH}", f"lora-{LORA_HASH}"}
    spring = frame[frame["method"] == "spring"]
    dev = spring[spring["kind"] == "dev"]
    assert dev["step"].tolist() == [0, 4, 8, 10]
    assert dev["examples"].tolist() == [0, 16, 32, 40]
    assert dev["loss"].tolist() == [3.1, 2.5, 2.52, 2.55]
    assert dev["best"].tolist() == [False, True, False, False]
    train = spring[spring["kind"] == "train"]
    assert train["step"].tolist() == list(range(1, 11))
    assert train["examples"].tolist() == [4 * s for s in range(1, 11)]  # step x batch size
    assert train["loss"].tolist() == SPRING_LOG["losses"]
    assert not train["best"].any()
    assert spring["stopped_early"].all() and (spring["seen"] == 40).all() and (spring["model"] == "tiny").all()

    lora = frame[frame["method"] == "lora"]
    assert set(lora["kind"]) == {"train"}  # an old record: no dev curve
    assert lora["examples"].tolist() == [8, 16, 24, 32, 40]
    assert lora["loss"].tolist() == LORA_LOG["losses"]
    assert not lora["best"].any() and not lora["stopped_early"].any()
    assert (lora["lr"] == 0.0001).all() and (lora["seen"] == 40).all()  # data.n x epochs without a curve


def test_figure_draws_train_dev_and_kept_step(store):
    fig = training_curves(training_frame(store))
    ax = fig.axes[0]
    assert fig._suptitle.get_text() == TITLE
    lines = {line.get_gid(): line for line in ax.get_lines()}
    dev = lines[f"dev:spring-{SPRING_HASH}"]
    assert list(dev.get_xdata()) == [0, 16, 32, 40] and list(dev.get_ydata()) == [3.1, 2.5, 2.52, 2.55]
    best = lines[f"best:spring-{SPRING_HASH}"]
    assert list(best.get_xdata()) == [16] and best.get_marker() == "*"
    train = lines[f"train:spring-{SPRING_HASH}"]
    assert list(train.get_xdata()) == [4 * s for s in range(1, 11)]
    assert train.get_ydata()[4] == pytest.approx(sum(SPRING_LOG["losses"][2:7]) / 5)  # centred 5-step average
    assert f"dev:lora-{LORA_HASH}" not in lines and f"train:lora-{LORA_HASH}" in lines
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "spring (40 q, lr 0.002), early stop" in labels
    assert "lora (40 q, lr 0.0001)" in labels
    assert "kept step (lowest dev loss)" in labels
    caption = fig.texts[-1].get_text()
    assert "backbone tiny" in caption and "no dev curve" in caption and "lora (40 q" in caption


def test_filters_and_colliding_labels(store):
    twin = store / "checkpoints" / "spring-aaaaaa9999999999bbbb.json"
    twin.write_text(json.dumps({"spec": spec("spring"), "log": {**SPRING_LOG, "stopped_early": False}}))
    frame = training_frame(store)
    fig = training_curves(frame, method="spring")
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "spring (40 q, lr 0.002) #012345, early stop" in labels and "spring (40 q, lr 0.002) #aaaaaa" in labels
    assert not any(label.startswith("lora") for label in labels)
    assert training_stem(frame, "spring") == "training-tiny-spring"
    assert training_stem(frame) == "training-tiny"
    with pytest.raises(HarnessError, match=r"no training record of method prefix .*methods with one: lora, spring"):
        training_curves(frame, method="prefix")
    with pytest.raises(HarnessError, match=r"backbone 'other' \(backbones with one: tiny\)"):
        training_curves(frame, model="other")


def cli_app() -> typer.Typer:
    from harness.commands import plot

    app = typer.Typer()
    plot.register(app)

    @app.callback()
    def _root() -> None:  # keep "plot" a sub-command even when it is the only one
        pass

    return app


def test_cli_writes_png_and_svg(store, tmp_path):
    out = tmp_path / "figures"
    result = CliRunner().invoke(cli_app(), ["plot", "training", "--results", str(store), "--out", str(out)])
    assert result.exit_code == 0, result.output
    paths = sorted(out.iterdir())
    assert [p.name for p in paths] == ["training-tiny.png", "training-tiny.svg"]
    for path in paths:
        assert str(path) in result.output.replace("\n", "")
    png, svg = paths
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") and png.stat().st_size > 5_000
    assert ET.parse(svg).getroot().tag.endswith("svg")
    result = CliRunner().invoke(cli_app(), ["plot", "training", "--results", str(store), "--method", "lora", "--model", "tiny"])
    assert result.exit_code == 0, result.output
    assert (store / "plots" / "training-tiny-lora.png").is_file() and (store / "plots" / "training-tiny-lora.svg").is_file()


def test_empty_store_is_one_line_error(tmp_path, capsys):
    assert main(["plot", "training", "--results", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"error: no training record in {tmp_path / 'empty' / 'checkpoints'}")
    assert "harness train --method spring --results" in err
    with pytest.raises(HarnessError):
        load_training_frame(tmp_path / "empty")


def test_training_plot_rejects_cell_options(store, capsys):
    assert main(["plot", "training", "--results", str(store), "--suite", "qa9"]) == 2
    assert "plot training does not take --suite" in capsys.readouterr().err


def test_corrupt_record_is_skipped_with_a_warning(store, tmp_path, capsys):
    broken = store / "checkpoints" / "spring-badbadbadbadbadbadba.json"
    broken.write_text('{"spec": {"method": "spring"}, "log": {"losses": [1.0, ')
    out = tmp_path / "figures"
    assert main(["plot", "training", "--results", str(store), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and str(broken) in warnings[0] and "not valid JSON" in warnings[0]
    assert sorted(p.name for p in out.iterdir()) == ["training-tiny.png", "training-tiny.svg"]
    frame = training_frame(store, warn=lambda line: None)
    assert "spring-badbadbadbadbadbadba" not in set(frame["checkpoint"]) and frame.attrs["skipped"] == [str(broken)]


def test_only_corrupt_records_is_the_empty_store_error(tmp_path, capsys):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "spring-0000.json").write_text("{")
    assert main(["plot", "training", "--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("warning: skipping") and err[1].startswith("error: no training record in")
    assert "1 unreadable record skipped" in err[1]


def test_save_writes_both_formats(store, tmp_path):
    frame = training_frame(store)
    paths = save(training_curves(frame), tmp_path, training_stem(frame))
    assert [p.name for p in paths] == ["training-tiny.png", "training-tiny.svg"]
