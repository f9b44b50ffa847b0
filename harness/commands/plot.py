"""`harness plot NAME`: a figure of the paper from the result store, written as PNG and SVG."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from harness.errors import HarnessError
from harness.registry import unknown_name

PLOT_NAMES = ("tokens-sweep", "retrievers", "passages", "placement", "preservation", "leaderboard", "training")
DEFAULT_SUITE = "qa9"


def plot_command(
    name: str = typer.Argument(..., help="tokens-sweep, retrievers, passages, placement, preservation, leaderboard or training"),
    suite: str | None = typer.Option(
        None,
        "--suite",
        help="suite(s) or dataset(s) averaged over, comma-separated (default: the smallest suite holding the store's datasets)",
    ),
    model: str | None = typer.Option(
        None, "--model", help="backbone id (needed when the store holds several; training: filter, default all)"
    ),
    method: str | None = typer.Option(None, "--method", help="training plot: the methods drawn, NAME[,NAME] (default: all)"),
    retriever: str | None = typer.Option(None, "--retriever", help="retriever of the cells drawn (default: the best covered)"),
    passages: int | None = typer.Option(None, "--passages", help="passage count m of the cells drawn"),
    tokens: int | None = typer.Option(None, "--tokens", help="SPRING's k for the retrievers/passages/placement plots"),
    out: Path | None = typer.Option(None, "--out", help="output folder (default: <results>/plots/)"),
    results: Path = typer.Option(Path("results"), "--results", help="result store folder"),
) -> None:
    """Draw a figure from the result store and write <plot>-<model>-<suite>.png and .svg; prints the paths.

    Plots: tokens-sweep (EM/F1 vs k, Fig. 3), retrievers (Table 3), passages (EM/F1 vs m, Fig. 4), placement
    (trq/rtq/rqt, Table 10), preservation (lm-eval tasks vs base, Table 2), leaderboard (heat map of EM),
    training (train/dev loss of the store's checkpoints vs questions seen; training-<model>[-<methods>].png).
    Missing cells: one line naming the `harness run` command that produces them.
    """
    if name not in PLOT_NAMES:
        raise unknown_name("plot", name, PLOT_NAMES)
    from harness.paths import store_folder, writable_folder
    from plots import TRAINING, load_frame, output_stem, render, save, stored_suite

    store_folder(results)
    folder = writable_folder(out if out is not None else Path(results) / "plots", "--out")
    if name == TRAINING:
        from plots import load_training_frame, training_curves, training_stem

        given = {"--suite": suite, "--retriever": retriever, "--passages": passages, "--tokens": tokens}
        unused = [flag for flag, value in given.items() if value is not None]
        if unused:
            raise HarnessError(f"plot training does not take {', '.join(unused)} (it takes: --method, --model)")
        frame = load_training_frame(results, warn=lambda line: print(line, file=sys.stderr))
        figure = training_curves(frame, method=method, model=model)
        paths = save(figure, folder, training_stem(frame, method, model))
    else:
        frame = load_frame(results)
        if suite is None and name != "preservation":  # the preservation plot averages no QA suite
            suite = stored_suite(frame)
            print(f"suite {suite} (the datasets the store's cells cover; --suite to choose)", file=sys.stderr)
        suite = suite or DEFAULT_SUITE
        figure = render(
            name, frame, suite=suite, model=model, method=method, retriever=retriever, passages=passages, tokens=tokens
        )
        drawn = figure.harness_model  # type: ignore[attr-defined]  # set by plots._frame.finish
        paths = save(figure, folder, output_stem(name, drawn, "lm-eval" if name == "preservation" else suite))
    for path in paths:
        print(path)


def register(app: typer.Typer) -> None:
    app.command("plot")(plot_command)
