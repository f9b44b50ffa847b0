"""Average EM and F1 against the number of retrieved passages m (the paper's Fig. 4).

Prompt and SPRING (at one k: the one with the most passage counts, preferring 50, or ``tokens``) as lines over m,
at one retriever (the one with the most passage counts, or ``retriever``), placement rtq.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
from matplotlib.figure import Figure

from harness.errors import HarnessError
from plots._frame import (
    QA_METRICS,
    average_points,
    caption,
    color,
    errorbar_line,
    finish,
    metric_label,
    new_figure,
    other_settings,
    prompt_spring_sweep,
    restrict,
    spring_label,
)


def passages(
    frame: pd.DataFrame,
    suite: str = "qa9",
    model: str | None = None,
    retriever: str | None = None,
    tokens: int | None = None,
    metrics: Sequence[str] = QA_METRICS,
) -> Figure:
    """Lines over m: Prompt and SPRING k, one panel per metric (x100, dataset averages)."""
    sweep = prompt_spring_sweep(
        frame, "passages", suite, model, varied="passages", fixed="retriever", fixed_value=retriever, tokens=tokens
    )
    datasets, model, hint, both, prompt, spring_r, r, k = (
        sweep.datasets,
        sweep.model,
        sweep.hint,
        sweep.both,
        sweep.prompt,
        sweep.spring,
        sweep.fixed_value,
        sweep.k,
    )
    ms = sorted(set(prompt["passages"]) | set(spring_r["passages"]))
    if len(ms) < 2:
        raise HarnessError(f"no Prompt/SPRING cells with several passage counts for {suite}/{model}; run `{hint}`")
    spring_name = spring_label(k)
    series = {"Prompt": prompt, spring_name: spring_r}
    points = {f"{name} m={m}": restrict(source, passages=m) for name, source in series.items() for m in ms}
    averages = average_points(points, metrics, datasets, f"passage sweep of {suite}/{model}", hint)
    table = averages.table
    notes = list(averages.notes)
    missing = [label for label, c in points.items() if c.empty]
    if missing:
        notes.append(f"no cells for {', '.join(missing)} (run `{hint} --retriever {r}`)")
    notes += other_settings(both, ("retriever",), (r,), "--retriever", rank="passages")

    fig, axes = new_figure(5.2 * len(metrics), 4.0, ncols=len(metrics))
    pad = 0.06 * (max(ms) - min(ms))
    for ax, metric in zip(axes, metrics):
        ax.set_xlim(min(ms) - pad, max(ms) + pad)
        for i, (name, key, style) in enumerate((("Prompt", "prompt", "--"), (spring_name, "spring", "-"))):
            labels = [f"{name} m={m}" for m in ms if f"{name} m={m}" in table.index]
            if not labels:
                continue
            rows = table.loc[labels]
            xs = [int(label.rsplit("m=", 1)[1]) for label in labels]
            errorbar_line(
                ax,
                xs,
                rows,
                metric,
                i,
                2,
                label=name,
                color=color(key),
                linestyle=style,
                marker="o",
                markersize=5,
                capsize=3,
                linewidth=1.8,
            )
        ax.set_xticks(ms, [str(m) for m in ms])
        ax.set_xlabel("retrieved passages m")
        ax.set_ylabel(f"average {metric_label(metric)} (x100)")
        ax.set_title(metric_label(metric), fontsize=10)
    drawn = pd.concat([c for c in points.values() if not c.empty])
    drawn = drawn[drawn["dataset"].isin(averages.datasets)]
    text = caption(drawn, f"retriever {r}, SPRING k={k}, placement rtq", averages.datasets, notes)
    return finish(fig, f"EM/F1 vs number of retrieved passages: {model} on {suite}", text, model, legend_from=axes[0])
