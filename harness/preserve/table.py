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


def preservation_table(store: Any, model: str | None = None, intervals: bool = False) -> Any:
    """Table 2 layout: rows ``<task> <k>-shot``, columns each method's score (x100) and, for every method but base,
    ``Δ <method>`` = method - base on the same documents. Per (task, shots) the document slice (example ids) held
    by most methods is shown (the larger one on a tie); cells of other slices are left out. ``n`` = documents.

    ``intervals``: every score and Δ column is followed by ``<column> low`` and ``<column> high``, its 95%
    percentile-bootstrap CI (x100), and ``<column> stderr``, lm-eval's standard error of the mean (x100): a score's is the cell's own (documents resampled), a Δ's the paired bootstrap of
    the per-document differences to base (1,000 resamples, seed 0), so "LoRA hurts, SPRING does not" is read with
    its uncertainty."""
    import pandas as pd

    from harness.metrics import bootstrap_ci, standard_error

    cells = preservation_cells(store, model)
    by_row: dict[tuple[str, int], dict[str, list[Any]]] = {}
    for cell in cells:
        name = next(t.name for t in PRESERVE_TASKS.values() if cell.spec.dataset in (t.local_task, t.stock_task))
        key = (name, int(cell.spec.decoding.get("num_fewshot", 0)))
        by_row.setdefault(key, {}).setdefault(cell.spec.example_ids_hash, []).append(cell)
    task_order = list(PRESERVE_TASKS)
    table: dict[str, dict[str, float]] = {}
    bounds: dict[str, dict[str, tuple[float, float]]] = {}
    errors: dict[str, dict[str, float]] = {}  # lm-eval's *_stderr (x100) of each score and Δ
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
        ci: dict[str, tuple[float, float]] = {}
        per_doc: dict[str, dict[str, float]] = {}
        for cell in sorted(chosen, key=lambda c: c.provenance.get("created", "")):  # newest wins on duplicates
            label = preservation_label(cell.spec.method)
            summary = cell.metrics["metrics"][metric]
            row[label] = 100.0 * summary["mean"]
            labels.add(label)
            if intervals:
                ci[label] = (100.0 * summary["ci_low"], 100.0 * summary["ci_high"])
                per_doc[label] = {r["id"]: float(r["metrics"][metric]) for r in cell.predictions()}
        stderr = {label: 100.0 * standard_error(list(values.values())) for label, values in per_doc.items()}
        if intervals and "base" in per_doc:
            for label, values in per_doc.items():
                if label != "base":
                    diffs = [values[i] - per_doc["base"][i] for i in values if i in per_doc["base"]]
                    _, low, high = bootstrap_ci(diffs)
                    ci[f"Δ {label}"] = (100.0 * low, 100.0 * high)
                    stderr[f"Δ {label}"] = 100.0 * standard_error(diffs)
        table[row_label] = row
        bounds[row_label] = ci
        errors[row_label] = stderr
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
    if not intervals:
        return frame
    ordered: list[str] = ["n"]
    for column in columns:
        ordered += [column, f"{column} low", f"{column} high", f"{column} stderr"]
    frame = frame.reindex(columns=ordered)
    for row_label, ci in bounds.items():
        for column, (low, high) in ci.items():
            frame.loc[row_label, f"{column} low"], frame.loc[row_label, f"{column} high"] = low, high
        for column, error in errors[row_label].items():
            frame.loc[row_label, f"{column} stderr"] = error
    return frame


def with_intervals_as_text(frame: Any) -> Any:
    """A table from ``preservation_table(..., intervals=True)`` with each value and its CI in one text cell:
    ``43.1 [38.0, 48.2]``, differences signed (``+1.2 [-3.0, +5.1]``); ``-`` where a method has no cell."""
    import pandas as pd

    values = [c for c in frame.columns if c != "n" and not str(c).endswith((" low", " high", " stderr"))]
    shown = pd.DataFrame(index=frame.index)
    shown.index.name = frame.index.name
    shown["n"] = frame["n"].astype(str)
    for column in values:
        number = "{:+.1f}" if str(column).startswith("Δ") else "{:.1f}"
        texts = []
        for label in frame.index:
            value, low, high = (frame.loc[label, c] for c in (column, f"{column} low", f"{column} high"))
            if value != value:  # NaN: no cell
                texts.append("-")
            elif low != low:
                texts.append(number.format(value))
            else:
                texts.append(f"{number.format(value)} [{number.format(low)}, {number.format(high)}]")
        shown[column] = texts
    return shown


def render_preservation(frame: Any, fmt: str = "md") -> str:
    """The table as ``md``, ``csv`` or ``json`` text."""
    if fmt == "md" and any(str(c).endswith(" low") for c in frame.columns):
        return with_intervals_as_text(frame).to_markdown() + "\n"
    if fmt == "md":
        shown = frame.astype(object).where(frame.notna(), None)
        floatfmt = ("", *(".0f" if c == "n" else ("+.2f" if str(c).startswith("Δ") else ".2f") for c in frame.columns))
        return shown.to_markdown(floatfmt=floatfmt, missingval="-") + "\n"
    if fmt == "csv":
        return frame.to_csv(float_format="%.4f")
    if fmt == "json":
        return frame.reset_index().to_json(orient="records", indent=2, force_ascii=False) + "\n"
    raise HarnessError(f"unknown format {fmt!r}; use table, md, csv or json")
