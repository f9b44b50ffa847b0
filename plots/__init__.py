"""Figures from the result store: pure functions from the plot frame to a matplotlib Figure, one per figure.

Public API::

    frame = load_frame("results")                 # the store's cells as a pandas DataFrame (plot_frame)
    fig = render("tokens-sweep", frame, suite="qa9", model=None)
    paths = save(fig, "results/plots", output_stem("tokens-sweep", model, "qa9"))   # [.png, .svg]

    training = load_training_frame("results")     # the checkpoints' training records, one row per loss point
    fig = training_curves(training, method="spring,lora", model=None)
    paths = save(fig, "results/plots", training_stem(training, "spring,lora"))

``PLOTS`` maps each name to its function ``f(frame, suite=..., model=..., **options) -> Figure``. The
functions draw on :class:`matplotlib.figure.Figure` objects made without pyplot: no styling or rcParams change at
import or after, no backend or display needed, nothing to close. Missing cells raise
:class:`harness.errors.HarnessError` with one line naming the `harness run` command that would produce them.

``training`` is not in ``PLOTS``: it draws the training records beside the checkpoints
(:func:`plots.training.training_frame`), not the store's cells.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from harness.errors import HarnessError
from harness.registry import unknown_name
from plots._frame import RUN_COMMANDS, load_frame, plot_frame, run_command, stored_suite
from plots.leaderboard import leaderboard_heatmap
from plots.passages import passages
from plots.placement import placement
from plots.preservation import preservation
from plots.retrievers import retrievers
from plots.tokens_sweep import tokens_sweep
from plots.training import load_training_frame, training_curves, training_frame, training_stem

__all__ = [
    "PLOTS",
    "PLOT_DESCRIPTIONS",
    "RUN_COMMANDS",
    "TRAINING",
    "load_frame",
    "load_training_frame",
    "output_stem",
    "plot_frame",
    "render",
    "run_command",
    "save",
    "stored_suite",
    "training_curves",
    "training_frame",
    "training_stem",
]

PLOTS: dict[str, Callable[..., Figure]] = {
    "tokens-sweep": tokens_sweep,
    "retrievers": retrievers,
    "passages": passages,
    "placement": placement,
    "preservation": preservation,
    "leaderboard": leaderboard_heatmap,
}
PLOT_DESCRIPTIONS = {
    "tokens-sweep": "average EM/F1 vs virtual tokens k: SPRING, fixed-k, Prompt line (paper Fig. 3)",
    "retrievers": "Prompt vs SPRING bars per retriever (paper Table 3)",
    "passages": "average EM/F1 vs retrieved passages m (paper Fig. 4)",
    "placement": "SPRING bars for token placements trq/rtq/rqt (paper Table 10)",
    "preservation": "lm-eval task x method bars with differences to base (paper Table 2)",
    "leaderboard": "dataset x method heat map of EM",
    "training": "train and dev loss vs training questions seen, per checkpoint (from the checkpoints' records)",
}
TRAINING = "training"  # the plot of the checkpoints' training records (not of cells, so not in PLOTS)


def options_of(name: str) -> list[str]:
    """The optional settings (retriever, passages, tokens, ...) plot ``name`` takes besides suite and model."""
    parameters = inspect.signature(PLOTS[name]).parameters
    return [p for p in parameters if p not in ("frame", "suite", "model", "metrics", "metric")]


def render(name: str, frame: pd.DataFrame, suite: str = "qa9", model: str | None = None, **options) -> Figure:
    """Draw plot ``name`` from ``frame`` (:func:`plot_frame` of a store). ``options`` left at ``None`` are free."""
    if name not in PLOTS:
        raise unknown_name("plot", name, PLOTS)
    given = {k: v for k, v in options.items() if v is not None}
    unknown = sorted(set(given) - set(options_of(name)))
    if unknown:
        takes = ", ".join(f"--{o}" for o in options_of(name)) or "none"
        raise HarnessError(f"plot {name} does not take {', '.join('--' + u for u in unknown)} (it takes: {takes})")
    return PLOTS[name](frame, suite=suite, model=model, **given)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", text).strip("_") or "_"


def output_stem(name: str, model: str, suite: str) -> str:
    """``<plot>-<model>-<suite>`` with characters outside ``[A-Za-z0-9.+-]`` replaced by ``_``."""
    return f"{name}-{_safe(model)}-{_safe(suite)}"


def save(fig: Figure, out_dir: str | Path, stem: str, formats: tuple[str, ...] = ("png", "svg")) -> list[Path]:
    """Write ``fig`` as ``<out_dir>/<stem>.<format>`` for each format; return the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = out / f"{stem}.{fmt}"
        fig.savefig(path, format=fmt, dpi=150 if fmt == "png" else None, metadata={"Date": None} if fmt == "svg" else None)
        paths.append(path)
    return paths
