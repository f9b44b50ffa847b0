"""Prompt vs SPRING per retriever, grouped bars of average EM and F1 (the paper's Table 3).

One bar pair per retriever (closed book ``none`` excluded), at one passage count m (the one most retrievers share,
or ``passages``) and one k for SPRING (the one most retrievers have, preferring 50, or ``tokens``).
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
    finish,
    grouped_bars,
    metric_label,
    new_figure,
    other_settings,
    prompt_spring_sweep,
    restrict,
    spring_label,
)


def retrievers(
    frame: pd.DataFrame,
    suite: str = "qa9",
    model: str | None = None,
    passages: int | None = None,
    tokens: int | None = None,
    metrics: Sequence[str] = QA_METRICS,
) -> Figure:
    """Grouped bars: x = retriever, bars = Prompt and SPRING k, one panel per metric (x100, dataset averages)."""
    sweep = prompt_spring_sweep(
        frame, "retrievers", suite, model, varied="retriever", fixed="passages", fixed_value=passages, tokens=tokens
    )
    datasets, model, hint, both, prompt, spring_m, m, k = (
        sweep.datasets,
        sweep.model,
        sweep.hint,
        sweep.both,
        sweep.prompt,
        sweep.spring,
        sweep.fixed_value,
        sweep.k,
    )
    names = sorted(set(prompt["retriever"]) | set(spring_m["retriever"]))
    if len(names) < 2:
        raise HarnessError(f"no Prompt/SPRING cells with several retrievers for {suite}/{model}; run `{hint}`")
    spring_name = spring_label(k)
    points = {}
    for r in names:
        points[f"Prompt @ {r}"] = restrict(prompt, retriever=r)
        points[f"{spring_name} @ {r}"] = restrict(spring_m, retriever=r)
    averages = average_points(points, metrics, datasets, f"retriever comparison of {suite}/{model}", hint)
    notes = list(averages.notes)
    missing = [label for label, c in points.items() if c.empty]
    if missing:
        notes.append(f"no cells for {', '.join(missing)} (run `{hint} --passages {m}`)")
    notes += other_settings(both, ("passages",), (m,), "--passages", rank="retriever")
    series = [
        (name, color(key))
        for name, key in (("Prompt", "prompt"), (spring_name, "spring"))
        if any(label.startswith(name + " @") and not points[label].empty for label in points)
    ]

    fig, axes = new_figure(max(4.2, 1.3 * len(names) + 1.6) * len(metrics), 4.0, ncols=len(metrics))
    for ax, metric in zip(axes, metrics):
        grouped_bars(ax, names, series, averages.table, metric)
        ax.set_xlabel("retriever")
        ax.set_ylabel(f"average {metric_label(metric)} (x100)")
        ax.set_title(metric_label(metric), fontsize=10)
    drawn = pd.concat([c for c in points.values() if not c.empty])
    drawn = drawn[drawn["dataset"].isin(averages.datasets)]
    text = caption(drawn, f"m={m} passages, SPRING k={k}, placement rtq", averages.datasets, notes)
    return finish(fig, f"Prompt vs SPRING across retrievers: {model} on {suite}", text, model, legend_from=axes[0])
