"""Where the virtual tokens go: bars of average EM and F1 for placements trq, rtq and rqt (the paper's Table 10).

t = virtual tokens, r = retrieved passages, q = question; rtq (tokens between the passages and the question) is
SPRING's. At one retriever, passage count m and k (the setting with the most placements, or the options); the
Prompt baseline of that retriever and m as a dotted line when the store has it.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
from matplotlib.figure import Figure

from harness.errors import HarnessError
from plots._frame import (
    PLACEMENT_HELP,
    PLACEMENTS,
    PROMPT,
    QA_METRICS,
    SPRING,
    average_points,
    caption,
    choose,
    color,
    finish,
    grouped_bars,
    latest,
    metric_label,
    new_figure,
    other_settings,
    qa_cells,
    resolve_model,
    restrict,
    run_command,
    suite_datasets,
)


def placement(
    frame: pd.DataFrame,
    suite: str = "qa9",
    model: str | None = None,
    retriever: str | None = None,
    passages: int | None = None,
    tokens: int | None = None,
    metrics: Sequence[str] = QA_METRICS,
) -> Figure:
    """One bar per placement, one panel per metric (x100, dataset averages)."""
    datasets = suite_datasets(suite, frame)
    cells = latest(qa_cells(frame, datasets))
    spring = cells[(cells["method_name"] == SPRING) & ~cells["fixed_k"] & cells["tokens"].notna()]
    hint = run_command("placement", suite, model, retriever=retriever, passages=passages, tokens=tokens)
    model = resolve_model(spring, model, f"SPRING cells of {suite}", hint)
    hint = run_command("placement", suite, model, retriever=retriever, passages=passages, tokens=tokens)
    spring = restrict(spring, model=model, retriever=retriever, passages=passages, tokens=tokens)
    setting = choose(spring, ("retriever", "passages", "tokens"), rank="placement")
    if setting is None:
        raise HarnessError(f"no SPRING cells with several placements for {suite}/{model}; run `{hint}`")
    r, m, k = setting
    chosen = restrict(spring, retriever=r, passages=m, tokens=k)
    present = list(chosen["placement"].unique())
    order = [p for p in PLACEMENTS if p in present] + sorted(p for p in present if p not in PLACEMENTS)
    if len(order) < 2:
        raise HarnessError(f"no SPRING cells with several placements for {suite}/{model}; run `{hint}`")
    prompt = restrict(cells[cells["method_name"] == PROMPT], model=model, retriever=r, passages=m)
    points = {f"SPRING k={int(k)} @ {p}": restrict(chosen, placement=p) for p in order}
    points["Prompt"] = prompt
    averages = average_points(points, metrics, datasets, f"placement comparison of {suite}/{model}", hint)
    table = averages.table
    notes = [PLACEMENT_HELP, *averages.notes]
    if prompt.empty:
        notes.append(
            f"no Prompt cells at {r}, m={m}: baseline omitted (run `{run_command('prompt', suite, model, retriever=r, passages=m)}`)"
        )
    notes += other_settings(
        spring, ("retriever", "passages", "tokens"), setting, "--retriever/--passages/--tokens", rank="placement"
    )

    fig, axes = new_figure(4.2 * len(metrics), 4.0, ncols=len(metrics))
    for ax, metric in zip(axes, metrics):
        grouped_bars(ax, order, [(f"SPRING k={int(k)}", color("spring"))], table, metric)
        if "Prompt" in table.index:
            ax.axhline(table.loc["Prompt", metric], color=color("prompt"), linestyle=":", linewidth=1.6, label="Prompt")
        ax.set_xlabel("placement of the virtual tokens")
        ax.set_ylabel(f"average {metric_label(metric)} (x100)")
        ax.set_title(metric_label(metric), fontsize=10)
    drawn = pd.concat([c for c in points.values() if not c.empty])
    drawn = drawn[drawn["dataset"].isin(averages.datasets)]
    text = caption(drawn, f"retriever {r}, m={m} passages, k={int(k)}", averages.datasets, notes)
    return finish(fig, f"Placement of the virtual tokens: {model} on {suite}", text, model, legend_from=axes[0])
