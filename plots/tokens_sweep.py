"""Average EM and F1 against the number of virtual tokens k (the paper's Fig. 3).

SPRING (one model trained for every k) as a line over k on a log axis; a fixed-k series (a separate model trained
per k, cells with ``fixed_k: true``) when the store has one; the Prompt baseline as a horizontal line with its
interval shaded. All at one retriever and passage count m (the one with the most token counts, or
``retriever``/``passages``), placement rtq.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, NullLocator

from harness.errors import HarnessError
from plots._frame import (
    PROMPT,
    QA_METRICS,
    SPRING,
    average_points,
    caption,
    choose,
    color,
    errorbar_line,
    finish,
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

SPRING_SERIES, FIXED_SERIES, PROMPT_SERIES = "SPRING", "fixed-k", "Prompt"


def tokens_sweep(
    frame: pd.DataFrame,
    suite: str = "qa9",
    model: str | None = None,
    retriever: str | None = None,
    passages: int | None = None,
    metrics: Sequence[str] = QA_METRICS,
) -> Figure:
    """EM/F1 (x100, averaged over the suite's datasets) against k; one panel per metric."""
    datasets = suite_datasets(suite, frame)
    cells = latest(qa_cells(frame, datasets))
    spring_all = cells[(cells["method_name"] == SPRING) & cells["tokens"].notna() & (cells["placement"] == "rtq")]
    backbones = frame.loc[frame["harness"] != "lm-eval", "model"].unique() if not frame.empty else []
    if model is None and spring_all.empty and len(backbones) == 1:
        model = backbones[0]  # the store's one backbone, named in the message below
    hint = run_command("tokens-sweep", suite, model, retriever=retriever, passages=passages)
    if restrict(spring_all, model=model).empty:
        raise HarnessError(f"no SPRING cells with several token counts for {suite}/{model or 'any backbone'}; run `{hint}`")
    model = resolve_model(spring_all, model, f"SPRING cells of {suite}", hint)
    hint = run_command("tokens-sweep", suite, model, retriever=retriever, passages=passages)
    spring_all = restrict(spring_all, model=model, retriever=retriever, passages=passages)
    trained = spring_all[~spring_all["fixed_k"]]
    setting = choose(trained, ("retriever", "passages"), rank="tokens")
    sweep = restrict(trained, retriever=setting[0], passages=setting[1]) if setting else trained
    if sweep["tokens"].nunique() < 2:
        raise HarnessError(f"no SPRING cells with several token counts for {suite}/{model}; run `{hint}`")
    assert setting is not None  # else `trained` was empty and the check above raised
    r, m = setting
    fixed = restrict(spring_all[spring_all["fixed_k"]], retriever=r, passages=m)
    prompt = restrict(cells[cells["method_name"] == PROMPT], model=model, retriever=r, passages=m)

    points: dict[str, pd.DataFrame] = {}
    series: dict[str, list[tuple[int, str]]] = {SPRING_SERIES: [], FIXED_SERIES: []}
    for name, source in ((SPRING_SERIES, sweep), (FIXED_SERIES, fixed)):
        for k in sorted(source["tokens"].dropna().unique()):
            label = f"{name} k={int(k)}"
            points[label] = source[source["tokens"] == k]
            series[name].append((int(k), label))
    points[PROMPT_SERIES] = prompt
    averages = average_points(points, metrics, datasets, f"token sweep of {suite}/{model}", hint)
    table = averages.table

    notes = list(averages.notes)
    if prompt.empty:
        notes.append(
            f"no Prompt cells at {r}, m={m}: baseline omitted (run `{run_command('prompt', suite, model, retriever=r, passages=m)}`)"
        )
    notes += other_settings(trained, ("retriever", "passages"), (r, m), "--retriever/--passages", rank="tokens")

    fig, axes = new_figure(5.2 * len(metrics), 4.0, ncols=len(metrics))
    ks = sorted({k for pairs in series.values() for k, _ in pairs})
    for ax, metric in zip(axes, metrics):
        ax.set_xscale("log")  # before drawing: the dodge transform is built on the axis' scale
        ax.set_xlim(min(ks) / 1.5, max(ks) * 1.5)
        for i, (name, style) in enumerate(((SPRING_SERIES, "-"), (FIXED_SERIES, "--"))):
            pairs = series[name]
            if not pairs:
                continue
            rows = table.loc[[label for _, label in pairs]]
            errorbar_line(
                ax,
                [k for k, _ in pairs],
                rows,
                metric,
                i,
                2 if series[FIXED_SERIES] else 1,
                label=name,
                color=color("spring" if name == SPRING_SERIES else "spring fixed-k"),
                linestyle=style,
                marker="o",
                markersize=5,
                capsize=3,
                linewidth=1.8,
            )
        if PROMPT_SERIES in table.index:
            row = table.loc[PROMPT_SERIES]
            ax.axhline(row[metric], color=color("prompt"), linestyle=":", linewidth=1.6, label=PROMPT_SERIES)
            ax.axhspan(row[f"{metric}_low"], row[f"{metric}_high"], color=color("prompt"), alpha=0.12, linewidth=0)
        ax.xaxis.set_major_locator(FixedLocator(ks))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticklabels([str(k) for k in ks])
        ax.set_xlabel("virtual tokens k (log scale)")
        ax.set_ylabel(f"average {metric_label(metric)} (x100)")
        ax.set_title(metric_label(metric), fontsize=10)
    drawn = pd.concat([c for c in points.values() if not c.empty])
    drawn = drawn[drawn["dataset"].isin(averages.datasets)]
    text = caption(drawn, f"retriever {r}, m={m} passages, placement rtq", averages.datasets, notes)
    return finish(fig, f"EM/F1 vs number of virtual tokens: {model} on {suite}", text, model, legend_from=axes[0])
