"""Does the method keep the backbone's general abilities? Task x method bars with differences to base (Table 2).

Cells are lm-eval runs (``decoding.harness == "lm-eval"``, dataset = the task, e.g. ``harness_mmlu``): the base
model, LoRA, and SPRING with the virtual tokens unplugged (the frozen backbone) or plugged in. Each task shows its
first metric (x100) with its bootstrap interval; the number above a bar is its difference to base.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from plots._frame import (
    caption,
    color,
    finish,
    grouped_bars,
    latest,
    lm_eval_cells,
    metric_label,
    new_figure,
    resolve_model,
    run_command,
)

# the paper's order; local task names (harness_*) and the stock lm-eval names of `harness preserve --source hub`
TASK_ORDER = ("harness_mmlu", "mmlu", "harness_boolq", "boolq", "harness_csqa", "commonsense_qa", "harness_gsm8k", "gsm8k")


def variant(row) -> str:
    """``base``, ``LoRA``, ``SPRING unplugged`` or ``SPRING plugged k=50`` (else the leaderboard label)."""
    if row.method_name == "base":
        return "base"
    if row.method_name == "lora":
        return "LoRA"
    if row.method_name == "spring":
        if row.plugged is True or (isinstance(row.plugged, (bool, np.bool_)) and bool(row.plugged)):
            return "SPRING plugged" + (f" k={int(row.tokens)}" if not pd.isna(row.tokens) else "")
        return "SPRING unplugged"
    return row.method


def _variant_key(name: str) -> tuple:
    rank = {"base": 0, "LoRA": 1, "SPRING unplugged": 2}
    return (rank.get(name, 3 if name.startswith("SPRING plugged") else 4), name)


def _group(task: str, shots: Any) -> str:
    short = task.removeprefix("harness_")
    return short if shots is None or pd.isna(shots) else f"{short}\n{int(shots)}-shot"


def preservation(frame: pd.DataFrame, suite: str | None = None, model: str | None = None) -> Figure:
    """Grouped bars: x = task, bars = method variants; ``suite`` is ignored (the tasks are lm-eval's)."""
    cells = lm_eval_cells(frame)
    hint = run_command("preservation", model=model)
    model = resolve_model(cells, model, "preservation (lm-eval) cells", hint)
    hint = run_command("preservation", model=model)
    cells = latest(cells[cells["model"] == model]).copy()
    cells["variant"] = [variant(row) for row in cells.itertuples()]
    cells["group"] = [_group(row.dataset, row.num_fewshot) for row in cells.itertuples()]
    tasks = sorted(cells["dataset"].unique(), key=lambda t: (TASK_ORDER.index(t) if t in TASK_ORDER else len(TASK_ORDER), t))
    groups = list(dict.fromkeys(g for t in tasks for g in sorted(cells.loc[cells["dataset"] == t, "group"].unique())))
    variants = sorted(cells["variant"].unique(), key=_variant_key)

    rows, metrics_used = {}, {}
    for row in cells.itertuples():
        metric = row.metric_names[0]
        metrics_used[row.group] = metric_label(metric)
        frame_row = cells.loc[row.Index]
        rows[f"{row.variant} @ {row.group}"] = {
            "value": 100.0 * frame_row[metric],
            "value_low": 100.0 * frame_row[f"{metric}_low"],
            "value_high": 100.0 * frame_row[f"{metric}_high"],
        }
    table = pd.DataFrame.from_dict(rows, orient="index")

    palette = {"base": color("base"), "LoRA": color("lora"), "SPRING unplugged": color("spring unplugged")}
    series = [
        (name, palette.get(name, color("spring plugged") if name.startswith("SPRING plugged") else color(name, i)))
        for i, name in enumerate(variants)
    ]
    fig, (ax,) = new_figure(max(6.5, 1.1 + len(groups) * (0.45 * len(variants) + 0.6)), 4.2)
    grouped_bars(ax, [g for g in groups], series, table, "value", label_bars=False)
    ax.set_xticks(range(len(groups)), [f"{g}\n({metrics_used[g]})" for g in groups], fontsize=8)
    width = 0.8 / len(variants)
    notes = ["number above a bar: difference to base (points x100)"]
    missing_base = [g.replace("\n", " ") for g in groups if f"base @ {g}" not in table.index]
    if missing_base:
        notes.append(f"no base cell for {', '.join(missing_base)}: no difference shown there (run `{hint}`)")
    for j, group in enumerate(groups):
        if f"base @ {group}" not in table.index:
            continue
        base = table.loc[f"base @ {group}", "value"]
        for i, name in enumerate(variants):
            label = f"{name} @ {group}"
            if name == "base" or label not in table.index:
                continue
            value, high = table.loc[label, ["value", "value_high"]]
            x = j + (i - (len(variants) - 1) / 2) * width
            diff = value - base
            ax.annotate(
                f"{diff:+.1f}",
                (x, high),
                xytext=(0, 2),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize=7,
                color="#b22222" if diff < -0.05 else "#333333",
            )
    ax.set_ylabel("score (x100)")
    ax.set_ylim(0, min(100.0, np.nanmax(table["value_high"].to_numpy(float)) * 1.15 + 5))
    text = caption(cells, "lm-eval tasks, closed book (no retrieval)", (), notes)
    return finish(fig, f"Preservation of general abilities: {model}", text, model, legend_from=ax, axis_room=0.9)
