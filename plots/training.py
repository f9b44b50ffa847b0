"""Training curves of the checkpoints in a result store (`harness plot training`).

The records are the ones :mod:`harness.weights` writes beside each trained checkpoint:

* virtual-token checkpoints: ``<results>/checkpoints/<method>-<hash>.safetensors`` with a sibling
  ``<method>-<hash>.json`` = ``{"spec": training spec, "log": TrainingLog}``;
* PEFT adapter folders: ``<results>/checkpoints/{lora,prefix-peft}-<hash>/harness-training.json`` =
  ``{"spec": ..., "log": ..., "harness_version": ...}``.

:func:`training_frame` reads them into one row per plotted point; :func:`training_curves` draws that frame (pure:
DataFrame -> Figure, no pyplot, no global state). The log (:class:`harness.training.TrainingLog`) holds the
per-step train loss (``losses``) and, since dev-loss early stopping, one ``curve`` point per dev evaluation
(``step``, ``examples`` seen, ``dev_loss``, ``train_loss``), the kept ``best_step`` and ``stopped_early``. Older
records without a curve draw their per-step train loss only.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from harness.errors import HarnessError
from plots._frame import COLORS, finish, new_figure

__all__ = [
    "COLUMNS",
    "TITLE",
    "checkpoint_labels",
    "load_training_frame",
    "record_paths",
    "training_curves",
    "training_frame",
    "training_stem",
]

TITLE = "Training curves (dev loss on a held-out slice of the training pools)"
TRAIN, DEV = "train", "dev"
SMOOTHING = 5  # steps in the moving average of the per-step train loss
DEFAULT_BATCH_SIZE = 8  # harness.training.TrainingConfig's default, for a record whose spec lacks batch_size
RECORD_FILE = "harness-training.json"  # inside a PEFT adapter folder
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f")

# One row per plotted point; the columns after ``stopped_early`` repeat the checkpoint's settings on each row.
COLUMNS = (
    "checkpoint",
    "method",
    "kind",
    "step",
    "examples",
    "loss",
    "best",
    "stopped_early",
    "model",
    "lr",
    "batch_size",
    "seen",
    "planned_steps",
    "steps",
    "dev_examples",
    "eval_every",
    "patience",
    "path",
)


def train_command(results: Path | str | None = None, method: str = "spring") -> str:
    """The command that writes a training record into the store at ``results``."""
    where = f" --results {results}" if results is not None and str(results) != "results" else ""
    return f"harness train --method {method}{where}"


# ------------------------------------------------------------------------------------------------ the records


def record_paths(results: Path | str) -> list[Path]:
    """The training-record files of the store: ``checkpoints/*.json`` and ``checkpoints/*/harness-training.json``.

    Hidden entries (PEFT's staging folders while an adapter is being written) are left out."""
    folder = Path(results) / "checkpoints"
    if not folder.is_dir():
        return []
    paths = [p for p in folder.glob("*.json") if p.is_file()]
    paths += [p for p in folder.glob(f"*/{RECORD_FILE}") if p.is_file()]
    return sorted(p for p in paths if not p.relative_to(folder).parts[0].startswith("."))


def _checkpoint_name(path: Path) -> str:
    """``<method>-<hash>``: the record's stem, or its PEFT folder's name."""
    return path.parent.name if path.name == RECORD_FILE else path.stem


def _read(path: Path) -> tuple[dict | None, str | None]:
    """(the record, None) or (None, why it was skipped)."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        return None, f"not valid JSON ({type(error).__name__}: {error})".replace("\n", " ")
    if not isinstance(record, dict) or not isinstance(record.get("log"), dict) or not isinstance(record.get("spec"), dict):
        return None, 'not a training record (a JSON object with "spec" and "log" expected)'
    if not isinstance(record["log"].get("losses", []), list) or not isinstance(record["log"].get("curve", []), list):
        return None, 'not a training record ("log.losses" and "log.curve" must be lists)'
    return record, None


def _warn_stderr(message: str) -> None:
    print(message, file=sys.stderr)


def _number(value: Any, kind: type = float) -> Any:
    try:
        return kind(value)
    except (TypeError, ValueError):
        return None


def _rows(name: str, path: Path, record: dict) -> list[dict]:
    spec, log = record["spec"], record["log"]
    training = spec.get("training") if isinstance(spec.get("training"), dict) else {}
    backbone = spec.get("backbone") if isinstance(spec.get("backbone"), dict) else {}
    method = str(spec.get("method") or name.rsplit("-", 1)[0])
    curve = [p for p in log.get("curve") or [] if isinstance(p, dict) and "dev_loss" in p and "step" in p]
    losses = [_number(v) for v in log.get("losses") or []]
    batch = _number(training.get("batch_size"), int)
    if not batch:  # derive it from the curve (questions per step), else the training default
        last = next((p for p in reversed(curve) if _number(p.get("step"), int)), None)
        batch = round(last["examples"] / last["step"]) if last and _number(last.get("examples"), int) else DEFAULT_BATCH_SIZE
    best_step = _number(log.get("best_step"), int) if curve and "best_step" in log else None
    epochs = _number(training.get("epochs"), int) or 1
    items = _number((spec.get("data") or {}).get("n"), int) if isinstance(spec.get("data"), dict) else None
    if curve and _number(curve[-1].get("examples"), int) is not None:
        seen = int(curve[-1]["examples"])  # the last dev evaluation is at the last step (end or early stop)
    elif items:
        seen = items * epochs  # without dev evaluations training runs to the end
    else:
        seen = len(losses) * batch
    common = {
        "checkpoint": name,
        "method": method,
        "stopped_early": bool(log.get("stopped_early", False)),
        "model": str(backbone.get("model", "?")),
        "lr": _number(training.get("lr")),
        "batch_size": int(batch),
        "seen": int(seen),
        "planned_steps": _number(log.get("planned_steps"), int),
        "steps": _number(log.get("steps"), int) or len(losses),
        "dev_examples": _number(log.get("dev_examples"), int),
        "eval_every": _number(training.get("eval_every"), int),
        "patience": _number(training.get("patience"), int),
        "path": str(path),
    }
    rows = [
        {**common, "kind": TRAIN, "step": step, "examples": step * batch, "loss": loss, "best": False}
        for step, loss in enumerate(losses, start=1)
        if loss is not None
    ]
    for point in curve:
        step = int(point["step"])
        examples = _number(point.get("examples"), int)
        rows.append(
            {
                **common,
                "kind": DEV,
                "step": step,
                "examples": step * batch if examples is None else examples,
                "loss": _number(point["dev_loss"]),
                "best": best_step is not None and step == best_step,
            }
        )
    return rows


def training_frame(results: Path | str, warn: Callable[[str], None] | None = None) -> pd.DataFrame:
    """One row per point of every training record in the store at ``results`` (columns :data:`COLUMNS`).

    ``kind`` is ``train`` (one row per optimizer step: ``loss`` the step's train loss, ``examples`` = step x batch
    size) or ``dev`` (one row per dev evaluation: ``loss`` the dev loss, ``examples`` the questions seen then);
    ``best`` marks the dev point whose weights were kept. A record that is not valid JSON is skipped with one
    ``warning: ...`` line naming its path (through ``warn``; default: stderr). The frame's ``attrs`` keep
    ``results`` and the ``skipped`` paths.
    """
    warn = warn or _warn_stderr
    rows: list[dict] = []
    skipped: list[str] = []
    for path in record_paths(results):
        record, why = _read(path)
        if record is None:
            warn(f"warning: skipping {path}: {why}")
            skipped.append(str(path))
            continue
        rows += _rows(_checkpoint_name(path), path, record)
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    frame = frame.astype({"step": "int64", "examples": "int64", "loss": "float64", "best": "bool", "stopped_early": "bool"})
    frame.attrs.update(results=str(results), skipped=skipped)
    return frame


def load_training_frame(results: Path | str, warn: Callable[[str], None] | None = None) -> pd.DataFrame:
    """:func:`training_frame` of the store at ``results``; a store without any training record is a user error."""
    frame = training_frame(results, warn)
    if frame.empty:
        skipped = frame.attrs.get("skipped", [])
        unread = f" ({len(skipped)} unreadable record{'s' * (len(skipped) != 1)} skipped)" if skipped else ""
        raise HarnessError(
            f"no training record in {Path(results) / 'checkpoints'}{unread}; train a checkpoint first: `{train_command(results)}`"
        )
    return frame


# ---------------------------------------------------------------------------------------------------- drawing


def _names(value: str | Iterable[str] | None) -> list[str] | None:
    if value is None:
        return None
    names = value.split(",") if isinstance(value, str) else list(value)
    names = [n.strip() for n in names if n and n.strip()]
    return names or None


def _select(frame: pd.DataFrame, methods: list[str] | None, model: str | None) -> pd.DataFrame:
    results = frame.attrs.get("results")
    if frame.empty:
        where = f" in {Path(results) / 'checkpoints'}" if results else ""
        raise HarnessError(f"no training record{where}; train a checkpoint first: `{train_command(results)}`")
    if model is not None and not (frame["model"] == model).any():
        have = ", ".join(sorted(frame["model"].unique()))
        raise HarnessError(
            f"no training record of backbone {model!r} (backbones with one: {have}); "
            f"run `{train_command(results, (methods or ['spring'])[0])} --model {model}`"
        )
    if model is not None:
        frame = frame[frame["model"] == model]
    if methods is not None:
        chosen = frame[frame["method"].isin(methods)]
        if chosen.empty:
            have = ", ".join(sorted(frame["method"].unique()))
            of = f" of backbone {model!r}" if model else ""
            extra = f" --model {model}" if model else ""
            raise HarnessError(
                f"no training record of method {', '.join(methods)}{of} (methods with one: {have}); "
                f"run `{train_command(results, methods[0])}{extra}`"
            )
        frame = chosen
    return frame


def _lr_text(lr: Any) -> str:
    return "?" if lr is None or (isinstance(lr, float) and math.isnan(lr)) else f"{float(lr):g}"


def checkpoint_labels(settings: pd.DataFrame, with_model: bool = False) -> dict[str, str]:
    """``{checkpoint: "<method> (<seen> q, lr <lr>)"}``, a short hash suffix where two labels would collide,
    the backbone in front when ``with_model``, and ``, early stop`` when the patience ran out."""
    base = {}
    for row in settings.itertuples():
        label = f"{row.method} ({row.seen} q, lr {_lr_text(row.lr)})"
        base[row.checkpoint] = f"{row.model}: {label}" if with_model else label
    counts = pd.Series(list(base.values())).value_counts()
    labels = {}
    for row in settings.itertuples():
        label = base[row.checkpoint]
        if counts[label] > 1:
            label += f" #{row.checkpoint.rsplit('-', 1)[-1][:6]}"
        labels[row.checkpoint] = label + (", early stop" if row.stopped_early else "")
    return labels


def _count(value: Any) -> str:
    return "?" if value is None or pd.isna(value) else str(int(value))


def _colours(settings: pd.DataFrame) -> dict[str, str]:
    """The first checkpoint of a method gets the method's colour of the other figures (SPRING blue, LoRA red),
    the others the next unused colours of :data:`PALETTE`."""
    colours: dict[str, str] = {}
    for row in settings.itertuples():
        own = COLORS.get(row.method)
        if own is not None and own not in colours.values():
            colours[row.checkpoint] = own
    spare = [c for c in PALETTE if c not in colours.values()]
    for index, row in enumerate(r for r in settings.itertuples() if r.checkpoint not in colours):
        colours[row.checkpoint] = spare[index % len(spare)] if spare else PALETTE[index % len(PALETTE)]
    return colours


def training_curves(frame: pd.DataFrame, method: str | Sequence[str] | None = None, model: str | None = None) -> Figure:
    """Loss against training questions seen, one colour per checkpoint of ``frame`` (:func:`training_frame`).

    Per checkpoint: a thin line for the per-step train loss (moving average of :data:`SMOOTHING` steps), markers
    and a line for the dev loss, a star at the kept step. ``method`` (``"spring,lora"`` or a list) and ``model`` (a
    backbone id) filter the checkpoints drawn; by default all are.
    """
    methods = _names(method)
    frame = _select(frame, methods, model)
    settings = frame.drop_duplicates("checkpoint").sort_values(["method", "model", "seen", "lr", "checkpoint"], kind="stable")
    models = sorted(settings["model"].unique())
    labels = checkpoint_labels(settings, with_model=len(models) > 1)

    # the legend sits right of the axes, as wide as its longest label (DejaVu Sans 8 pt: ~0.065 in per character)
    styles = ["kept step (lowest dev loss)", f"train loss ({SMOOTHING}-step moving average)"]
    legend_in = 0.5 + 0.065 * max(len(label) for label in [*labels.values(), *styles])
    axes_in = 7.0
    fig, (ax,) = new_figure(axes_in + 0.9 + legend_in, 4.6)
    handles = []
    no_curve = []
    colours = _colours(settings)
    for name in settings["checkpoint"]:
        colour = colours[name]
        points = frame[frame["checkpoint"] == name]
        train = points[points["kind"] == TRAIN].sort_values("step")
        dev = points[points["kind"] == DEV].sort_values("step")
        if not train.empty:
            smooth = train["loss"].rolling(SMOOTHING, min_periods=1, center=True).mean()
            ax.plot(train["examples"], smooth, color=colour, linewidth=0.8, alpha=0.55, gid=f"train:{name}")
        if not dev.empty:
            ax.plot(dev["examples"], dev["loss"], color=colour, linewidth=1.8, marker="o", markersize=4.5, gid=f"dev:{name}")
            best = dev[dev["best"]]
            if not best.empty:
                ax.plot(
                    best["examples"],
                    best["loss"],
                    linestyle="none",
                    marker="*",
                    markersize=15,
                    color=colour,
                    markeredgecolor="black",
                    markeredgewidth=0.7,
                    zorder=5,
                    gid=f"best:{name}",
                )
        else:
            no_curve.append(labels[name])
        style = {"marker": "o", "markersize": 4.5, "linewidth": 1.8} if not dev.empty else {"linewidth": 0.8}
        handles.append(Line2D([], [], color=colour, label=labels[name], **style))
    grey = "#555555"
    handles += [
        Line2D([], [], color=grey, linewidth=0.8, alpha=0.55, label=f"train loss ({SMOOTHING}-step moving average)"),
        Line2D([], [], color=grey, linewidth=1.8, marker="o", markersize=4.5, label="dev loss"),
        Line2D(
            [],
            [],
            color=grey,
            linestyle="none",
            marker="*",
            markersize=12,
            markeredgecolor="black",
            markeredgewidth=0.7,
            label="kept step (lowest dev loss)",
        ),
    ]
    ax.set_xlabel("training questions seen")
    ax.set_ylabel("loss (answer-only cross-entropy)")
    ax.set_xlim(left=0)
    ax.grid(axis="x", color="#eeeeee", linewidth=0.6)

    notes = [
        f"backbone {', '.join(models)} | {len(settings)} checkpoint{'s' * (len(settings) != 1)}: "
        + ", ".join(f"{n.rsplit('-', 1)[0]}-{n.rsplit('-', 1)[-1][:8]}" for n in settings["checkpoint"])
    ]
    evaluated = settings[settings["checkpoint"].isin(frame.loc[frame["kind"] == DEV, "checkpoint"])]
    dev_settings = {
        labels[row.checkpoint].removesuffix(", early stop"): (
            _count(row.dev_examples),
            _count(row.eval_every),
            _count(row.patience),
        )
        for row in evaluated.itertuples()
    }
    if len(set(dev_settings.values())) == 1:
        dev_n, every, patience = next(iter(dev_settings.values()))
        notes.append(
            f"dev slice of {dev_n} questions held out of the training pools, scored every {every} training questions; "
            f"early stop after {patience} evaluations without a gain; the weights of the lowest dev loss are kept"
        )
    elif dev_settings:
        notes.append(
            "dev slice held out of the training pools (questions / scored every / patience): "
            + "; ".join(f"{label} {'/'.join(values)}" for label, values in dev_settings.items())
            + "; the weights of the lowest dev loss are kept"
        )
    stops = [
        f"{labels[row.checkpoint].removesuffix(', early stop')} at step {row.steps} of {_count(row.planned_steps)}"
        for row in settings.itertuples()
        if row.stopped_early
    ]
    if stops:
        notes.append("early stops (step of planned steps): " + "; ".join(stops))
    notes.append(
        f"train loss: per optimizer step at step x batch size questions, {SMOOTHING}-step moving average; "
        "q = training questions seen"
    )
    if no_curve:
        notes.append(f"no dev curve in the record (older harness, or eval_every=0): {'; '.join(no_curve)}")
    text = "\n".join(notes)
    fig = finish(fig, TITLE, text, ", ".join(models), legend_from=None)
    width = fig.get_figwidth()
    fig.subplots_adjust(left=0.7 / width, right=(0.7 + axes_in) / width, top=1 - 0.55 / fig.get_figheight())  # no legend row
    fig.legend(
        handles=handles,
        loc="upper left",
        bbox_to_anchor=((0.9 + axes_in) / width, fig.subplotpars.top),
        frameon=False,
        fontsize=8,
    )
    return fig


def training_stem(frame: pd.DataFrame, method: str | Sequence[str] | None = None, model: str | None = None) -> str:
    """``training-<backbone>[-<methods>]`` (``all-backbones`` when several are drawn), for the output files."""
    from plots import _safe

    methods = _names(method)
    drawn = _select(frame, methods, model)
    models = sorted(drawn["model"].unique())
    stem = f"training-{_safe(models[0]) if len(models) == 1 else 'all-backbones'}"
    return stem + (f"-{_safe('+'.join(methods))}" if methods else "")
