"""The paper's Table 2 layout from the store: rows ``<task> <k>-shot``, a score column per method and its delta
to base on the same documents; rendered as md, csv or json (``harness preserve``, ``harness leaderboard --preserve``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from harness.errors import HarnessError
from harness.preserve.tasks import PRESERVE_TASKS


def preservation_label(method: Mapping[str, Any]) -> str:
    """``base``, ``lora``, ``spring (unplugged)``, ``spring (plugged, k=5)``."""
    label = str(method["name"])
    if "plugged" in method:
        if method["plugged"]:
            tokens = method.get("tokens")
            label += f" (plugged, k={tokens})" if tokens is not None else " (plugged)"
        else:
            label += " (unplugged)"
    return label


def _method_rank(label: str) -> tuple[int, str]:
    for i, prefix in enumerate(("base", "lora", "spring (unplugged)", "spring")):
        if label.startswith(prefix):
            return i, label
    return 5, label  # other methods after the paper's


def preservation_cells(store: Any, model: str | None = None) -> list[Any]:
    """The store's complete preservation cells (one backbone: ``model`` or the only one present)."""
    datasets = {t.local_task: t for t in PRESERVE_TASKS.values()} | {t.stock_task: t for t in PRESERVE_TASKS.values()}
    cells = [c for c in store.cells() if c.spec.dataset in datasets and c.spec.decoding.get("harness") == "lm-eval"]
    if model is not None:
        cells = [c for c in cells if c.spec.model.get("id") == model]
    if not cells:
        raise HarnessError(
            "the result store holds no preservation cell"
            + (f" for model {model}" if model else "")
            + "; run `harness preserve` first"
        )
    models = sorted({c.spec.model.get("id", "?") for c in cells})
    if len(models) > 1:
        raise HarnessError(
            f"the store holds preservation cells of several backbones ({', '.join(models)}); pick one with --model"
        )
    return cells


def preservation_table(store: Any, model: str | None = None) -> Any:
    """Table 2 layout: rows ``<task> <k>-shot``, columns each method's score (x100) and, for every method but base,
    ``Δ <method>`` = method - base on the same documents. Per (task, shots) the document slice (example ids) held
    by most methods is shown (the larger one on a tie); cells of other slices are left out. ``n`` = documents."""
    import pandas as pd

    cells = preservation_cells(store, model)
    by_row: dict[tuple[str, int], dict[str, list[Any]]] = {}
    for cell in cells:
        name = next(t.name for t in PRESERVE_TASKS.values() if cell.spec.dataset in (t.local_task, t.stock_task))
        key = (name, int(cell.spec.decoding.get("num_fewshot", 0)))
        by_row.setdefault(key, {}).setdefault(cell.spec.example_ids_hash, []).append(cell)
    task_order = list(PRESERVE_TASKS)
    table: dict[str, dict[str, float]] = {}
    labels: set[str] = set()
    n_docs: dict[str, int] = {}
    for name, n_shots in sorted(by_row, key=lambda k: (task_order.index(k[0]), k[1])):
        slices = by_row[(name, n_shots)]
        chosen = max(
            slices.values(), key=lambda group: (len({preservation_label(c.spec.method) for c in group}), group[0].spec.n_examples)
        )
        row_label = f"{name} {n_shots}-shot"
        metric = PRESERVE_TASKS[name].primary_metric
        row: dict[str, float] = {}
        for cell in sorted(chosen, key=lambda c: c.provenance.get("created", "")):  # newest wins on duplicates
            label = preservation_label(cell.spec.method)
            row[label] = 100.0 * cell.metrics["metrics"][metric]["mean"]
            labels.add(label)
        table[row_label] = row
        n_docs[row_label] = chosen[0].spec.n_examples
    methods = sorted(labels, key=_method_rank)
    columns: list[str] = []
    for label in methods:
        columns.append(label)
        if label != "base" and "base" in labels:
            columns.append(f"Δ {label}")
    frame = pd.DataFrame(index=list(table), columns=["n", *columns], dtype=float)
    frame.index.name = "task"
    for row_label, row in table.items():
        frame.loc[row_label, "n"] = n_docs[row_label]
        for label, value in row.items():
            frame.loc[row_label, label] = value
            if label != "base" and "base" in row:
                frame.loc[row_label, f"Δ {label}"] = value - row["base"]
    frame["n"] = frame["n"].astype(int)
    return frame


def render_preservation(frame: Any, fmt: str = "md") -> str:
    """The table as ``md``, ``csv`` or ``json`` text."""
    if fmt == "md":
        shown = frame.astype(object).where(frame.notna(), None)
        floatfmt = ("", *(".0f" if c == "n" else ("+.2f" if str(c).startswith("Δ") else ".2f") for c in frame.columns))
        return shown.to_markdown(floatfmt=floatfmt, missingval="-") + "\n"
    if fmt == "csv":
        return frame.to_csv(float_format="%.4f")
    if fmt == "json":
        return frame.reset_index().to_json(orient="records", indent=2, force_ascii=False) + "\n"
    raise HarnessError(f"unknown format {fmt!r}; use table, md, csv or json")
