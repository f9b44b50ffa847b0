"""Leaderboard tables, computed only from the result store.

``cells_frame`` flattens every complete cell into one pandas row; ``leaderboard`` pivots it into dataset x
method with in-domain, held-out and overall averages; ``compare`` gives paired bootstrap CIs of B - A.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from harness.errors import HarnessError
from harness.metrics import METRIC_LABELS
from harness.store import CellRecord, Store
from harness.suites import SUITES

# Method parameters shown in a row label, in this order, when a method spec carries them and differs from the
# method's own default (its class's ``label_defaults``: e.g. SPRING's placement rtq, prefix's trq and fixed k).
LABEL_PARAMETERS = ("tokens", "fixed_k", "placement", "impl", "shots")


def method_label(method: dict) -> str:
    """``{"name": "spring", "tokens": 5, "fixed_k": True}`` -> ``spring[tokens=5,fixed_k]`` (flags by name)."""
    from harness.plugins import METHODS

    name = method["name"]
    defaults = getattr(METHODS.get(name), "label_defaults", {}) if name in METHODS.names() else {}
    shown = [
        p if method[p] is True else f"{p}={method[p]}"
        for p in LABEL_PARAMETERS
        if method.get(p) is not None and method.get(p) != defaults.get(p)
    ]
    return f"{name}[{','.join(shown)}]" if shown else name


def cells_frame(store: Store) -> pd.DataFrame:
    """One row per complete cell: identity columns plus ``<metric>``, ``<metric>_low``, ``<metric>_high``."""
    rows = []
    for cell in store.cells():
        spec = cell.spec
        row = {
            "key": cell.key,
            "dataset": spec.dataset,
            "split": spec.split,
            "n": spec.n_examples,
            "example_ids_hash": spec.example_ids_hash,
            "held_out": spec.dataset in SUITES["heldout"],
            "method": method_label(dict(spec.method)),
            "retriever": spec.retriever.get("name") or spec.retriever.get("retriever", "?"),
            "passages": spec.passages,
            "model": spec.model.get("model") or spec.model.get("id", "?"),
            "created": cell.provenance.get("created", ""),
            "limit": cell.provenance.get("limit"),
        }
        for name, value in cell.metrics["metrics"].items():
            row[name], row[f"{name}_low"], row[f"{name}_high"] = value["mean"], value["ci_low"], value["ci_high"]
        rows.append(row)
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class Leaderboard:
    """A pivoted table (rows: datasets then averages; columns: (method, metric)) and its header line."""

    table: pd.DataFrame
    header: str


def select(
    frame: pd.DataFrame,
    datasets: Sequence[str],
    model: str | None = None,
    retriever: str | None = None,
    methods: Sequence[str] | None = None,
    all_models: bool = False,
) -> pd.DataFrame:
    """The cells of ``datasets`` (one per dataset x method x retriever x passages: the largest evaluation)."""
    if frame.empty:
        raise HarnessError("the result store holds no finished cell; run `harness run` first")
    picked = frame[frame["dataset"].isin(datasets)]
    if model is not None:
        picked = picked[picked["model"] == model]
    if retriever is not None:
        picked = picked[picked["retriever"] == retriever]
    if methods:
        picked = picked[picked["method"].isin(methods)]
    if picked.empty:
        raise HarnessError("no finished cell matches these filters; `harness leaderboard` without filters lists all")
    models = sorted(picked["model"].unique())
    if len(models) > 1 and not all_models:
        raise HarnessError(
            f"the store holds cells of several backbones ({', '.join(models)}); pick one with --model, "
            "or pass --all-models to show them side by side"
        )
    # Several limits of the same cell: keep the largest evaluation, so re-runs with --full replace samples.
    picked = picked.sort_values(["n", "created"]).groupby(
        ["dataset", "method", "retriever", "passages", "model"], as_index=False
    ).tail(1)
    return picked.reset_index(drop=True)


def leaderboard(
    picked: pd.DataFrame, datasets: Sequence[str], metrics: Sequence[str], method_order: Sequence[str] = ()
) -> Leaderboard:
    """Dataset x method table of ``metrics`` (x100) with averages over datasets every column has.

    Columns follow ``method_order`` (method names, e.g. the reference first), then the rest by name (numbers in
    labels compared as numbers)."""
    picked = picked.copy()
    several = picked[["retriever", "passages", "model"]].drop_duplicates()
    column_name = picked["method"]
    if len(several) > 1:  # show what differs between columns
        column_name = column_name + " | " + picked["retriever"] + " m=" + picked["passages"].astype(str)
        if picked["model"].nunique() > 1:
            column_name = column_name + " | " + picked["model"]
    picked["column"] = column_name
    order = [d for d in datasets if d in set(picked["dataset"])]
    rank = {name: i for i, name in enumerate(method_order)}
    base_name = picked.set_index("column")["method"].str.split("[").str[0].to_dict()
    # Numbers in labels sort as numbers: spring[tokens=2] before spring[tokens=10].
    natural = lambda c: [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", c)]  # noqa: E731
    columns = sorted(dict.fromkeys(picked["column"]), key=lambda c: (rank.get(base_name[c], len(rank)), natural(c)))
    header_columns = pd.MultiIndex.from_product([columns, [METRIC_LABELS[m] for m in metrics]])
    table = pd.DataFrame(index=order, columns=header_columns, dtype=float)
    for row in picked.itertuples(index=False):
        for metric in metrics:
            value = getattr(row, metric, np.nan)
            table.loc[row.dataset, (row.column, METRIC_LABELS[metric])] = 100.0 * value if pd.notna(value) else np.nan
    complete = [d for d in order if table.loc[d].notna().all()]
    groups = {
        "avg in-domain": [d for d in complete if d in SUITES["indomain"]],
        "avg held-out": [d for d in complete if d in SUITES["heldout"]],
        "avg all": complete,
    }
    for label, members in groups.items():
        if members:
            table.loc[f"{label} ({len(members)})"] = table.loc[members].mean()
    table.index = [f"{d} *" if d in SUITES["heldout"] else d for d in table.index]
    n_per = picked.groupby("dataset")["n"].max()
    header = (
        f"backbone {', '.join(sorted(picked['model'].unique()))} | retriever {', '.join(sorted(picked['retriever'].unique()))}"
        f" | passages {', '.join(map(str, sorted(picked['passages'].unique())))}"
        f" | examples per dataset {n_per.min()}-{n_per.max()}"
        f" | * held out | scores x100"
    )
    return Leaderboard(table=table, header=header)


def render(board: Leaderboard, fmt: str) -> str:
    """The table as ``md``, ``csv`` or ``json`` text (``table`` is drawn by the CLI with rich)."""
    flat = board.table.copy()
    flat.columns = [f"{method} {metric}" for method, metric in flat.columns]
    flat.index.name = "dataset"
    if fmt == "md":
        return f"{board.header}\n\n" + flat.round(2).to_markdown(floatfmt=".2f") + "\n"
    if fmt == "csv":
        return flat.to_csv(float_format="%.4f")
    if fmt == "json":
        return flat.reset_index().to_json(orient="records", indent=2) + "\n"
    raise HarnessError(f"unknown format {fmt!r}; use table, md, csv or json")


@dataclass(frozen=True)
class Comparison:
    """Paired difference B - A of one metric: per dataset and on the macro average, with 95% CIs (x100)."""

    table: pd.DataFrame
    header: str


def _aligned(a: CellRecord, b: CellRecord, metric: str) -> np.ndarray:
    rows_a = {row["id"]: row["metrics"][metric] for row in a.predictions()}
    rows_b = {row["id"]: row["metrics"][metric] for row in b.predictions()}
    if rows_a.keys() != rows_b.keys():
        raise HarnessError(f"{a.spec.dataset}: the two methods were evaluated on different examples; re-run with the same --limit/--seed")
    return np.array([rows_b[i] - rows_a[i] for i in rows_a])


def compare(
    store: Store, picked: pd.DataFrame, method_a: str, method_b: str, metric: str, n_resamples: int = 1000, seed: int = 0
) -> Comparison:
    """Paired bootstrap of ``method_b - method_a`` on the datasets both have."""
    by_method = {m: picked[picked["method"] == m].set_index("dataset") for m in (method_a, method_b)}
    for m, cells in by_method.items():
        if cells.empty:
            raise HarnessError(f"no finished cell of method {m!r} among the selected cells")
    datasets = [d for d in by_method[method_a].index if d in by_method[method_b].index]
    if not datasets:
        raise HarnessError(f"{method_a} and {method_b} share no dataset in the store")
    rng = np.random.default_rng(seed)
    rows, resampled_means = [], []
    for dataset in datasets:
        diff = _aligned(store.load(by_method[method_a].loc[dataset, "key"]), store.load(by_method[method_b].loc[dataset, "key"]), metric)
        means = diff[rng.integers(0, diff.size, size=(n_resamples, diff.size))].mean(axis=1)
        resampled_means.append(means)
        low, high = np.quantile(means, [0.025, 0.975])
        rows.append({"dataset": dataset, "n": diff.size, "diff": 100 * diff.mean(), "ci_low": 100 * low, "ci_high": 100 * high})
    average = np.mean(resampled_means, axis=0)
    low, high = np.quantile(average, [0.025, 0.975])
    rows.append({"dataset": f"average ({len(datasets)})", "n": sum(r["n"] for r in rows), "diff": float(np.mean([r["diff"] for r in rows])), "ci_low": 100 * low, "ci_high": 100 * high})
    header = f"{METRIC_LABELS[metric]}: {method_b} - {method_a}, paired bootstrap 95% CI ({n_resamples} resamples) x100"
    return Comparison(table=pd.DataFrame(rows).set_index("dataset"), header=header)
