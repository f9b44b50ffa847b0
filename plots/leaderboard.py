"""Dataset x method heat map of EM: the leaderboard table (``harness leaderboard``) as a figure.

The numbers are :func:`harness.leaderboard.leaderboard`'s, at one retriever and passage count m (the setting
with the most cells, or ``retriever``/``passages``); each method's average rows are over the datasets of the group it
has cells for (flagged "k of N" when incomplete), so one method's number never depends on another's cells.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from harness.leaderboard import coverage_flag, leaderboard, select
from harness.metrics import METRIC_LABELS
from plots._frame import (
    PROMPT,
    caption,
    choose,
    finish,
    metric_label,
    new_figure,
    other_settings,
    qa_cells,
    resolve_model,
    restrict,
    run_command,
    suite_datasets,
)


def _column_order(picked: pd.DataFrame) -> list[str]:
    first = picked.drop_duplicates("method").set_index("method")
    key = {
        label: (
            row.method_name != PROMPT,
            row.method_name,
            -1 if pd.isna(row.tokens) else int(row.tokens),
            row.placement != "rtq",
            row.placement,
            bool(row.fixed_k),
        )
        for label, row in first.iterrows()
    }
    return sorted(key, key=lambda label: key[label])


def leaderboard_heatmap(
    frame: pd.DataFrame,
    suite: str = "qa9",
    model: str | None = None,
    retriever: str | None = None,
    passages: int | None = None,
    metric: str = "exact_match",
) -> Figure:
    """Heat map of ``metric`` (x100): rows are the suite's datasets then the leaderboard's averages."""
    datasets = suite_datasets(suite, frame)
    cells = qa_cells(frame, datasets)
    hint = run_command("any", suite, model)
    model = resolve_model(cells, model, f"cells of {suite}", hint)
    cells = restrict(cells, model=model, retriever=retriever, passages=passages)
    resolve_model(cells, model, f"cells of {suite} at these settings", hint)
    setting = choose(cells, ("retriever", "passages"))
    assert setting is not None  # resolve_model refused an empty selection
    chosen = restrict(cells, retriever=setting[0], passages=setting[1])
    picked = select(chosen, datasets, model=model)
    board = leaderboard(picked, datasets, [metric])
    table = board.table.xs(METRIC_LABELS.get(metric, metric), axis=1, level=1)
    table = table[_column_order(picked)]

    values = table.to_numpy(float)
    n_rows, n_cols = values.shape
    fig, (ax,) = new_figure(max(6.5, 2.4 + 0.9 * n_cols), max(2.4, 0.7 + 0.5 * n_rows))
    ax.grid(False)
    ax.spines[:].set_visible(False)
    masked = np.ma.masked_invalid(values)
    cmap = _colormap()
    image = ax.imshow(masked, cmap=cmap, aspect="auto")
    low, high = (np.nanmin(values), np.nanmax(values)) if np.isfinite(values).any() else (0.0, 1.0)
    for i in range(n_rows):
        for j in range(n_cols):
            v = values[i, j]
            flag = coverage_flag(board, table.index[i], (table.columns[j], METRIC_LABELS.get(metric, metric)))
            shade = 0.5 if high == low else (v - low) / (high - low)
            ax.text(
                j,
                i,
                "-" if np.isnan(v) else f"{v:.1f}" + (f"\n{flag}" if flag else ""),  # flag: over fewer datasets
                ha="center",
                va="center",
                fontsize=8,
                color="white" if shade < 0.55 else "black",
            )
    ax.set_xticks(range(n_cols), table.columns, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(n_rows), table.index, fontsize=8)
    ax.tick_params(length=0)
    first_avg = next((i for i, label in enumerate(table.index) if str(label).startswith("avg")), None)
    if first_avg:
        ax.axhline(first_avg - 0.5, color="white", linewidth=3)
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02).set_label(f"{metric_label(metric)} (x100)", fontsize=8)

    notes = [
        "avg rows: each method over the datasets it has (k of N when incomplete); * held out; - no cell; "
        "bootstrap CIs: `harness leaderboard --compare A,B`"
    ]
    notes += other_settings(cells, ("retriever", "passages"), setting, "--retriever/--passages")
    text = caption(picked, f"retriever {setting[0]}, m={setting[1]} passages", (), notes, ci=False)
    longest = max((len(str(c)) for c in table.columns), default=8)
    return finish(
        fig, f"{metric_label(metric)} by dataset and method: {model} on {suite}", text, model, axis_room=0.2 + 0.03 * longest
    )


def _colormap():
    import matplotlib

    return matplotlib.colormaps["viridis"].with_extremes(bad="#eeeeee")
