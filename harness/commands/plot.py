"""`harness plot NAME`: a figure of the paper from the result store, written as PNG and SVG."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from harness.registry import unknown_name

PLOT_NAMES = ("tokens-sweep", "retrievers", "passages", "placement", "preservation", "leaderboard")


def register(app: typer.Typer) -> None:
    @app.command("plot")
    def plot_command(
        name: str = typer.Argument(..., help="tokens-sweep, retrievers, passages, placement, preservation or leaderboard"),
        suite: str = typer.Option("qa9", "--suite", help="suite(s) or dataset(s) averaged over, comma-separated"),
        model: Optional[str] = typer.Option(None, "--model", help="backbone id (needed when the store holds several)"),
        retriever: Optional[str] = typer.Option(None, "--retriever", help="retriever of the cells drawn (default: the best covered)"),
        passages: Optional[int] = typer.Option(None, "--passages", help="passage count m of the cells drawn"),
        tokens: Optional[int] = typer.Option(None, "--tokens", help="SPRING's k for the retrievers/passages/placement plots"),
        out: Optional[Path] = typer.Option(None, "--out", help="output folder (default: <results>/plots/)"),
        results: Path = typer.Option(Path("results"), "--results", help="result store folder"),
    ) -> None:
        """Draw a figure from the result store and write <plot>-<model>-<suite>.png and .svg; prints the paths.

        Plots: tokens-sweep (EM/F1 vs k, Fig. 3), retrievers (Table 3), passages (EM/F1 vs m, Fig. 4), placement
        (trq/rtq/rqt, Table 10), preservation (lm-eval tasks vs base, Table 2), leaderboard (heat map of EM).
        Missing cells: one line naming the `harness run` command that produces them.
        """
        if name not in PLOT_NAMES:
            raise unknown_name("plot", name, PLOT_NAMES)
        from plots import load_frame, output_stem, render, save

        frame = load_frame(results)
        figure = render(name, frame, suite=suite, model=model, retriever=retriever, passages=passages, tokens=tokens)
        stem = output_stem(name, figure.harness_model, "lm-eval" if name == "preservation" else suite)
        for path in save(figure, out if out is not None else Path(results) / "plots", stem):
            print(path)
