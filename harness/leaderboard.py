"""Leaderboard tables, computed only from the result store.

``cells_frame`` flattens every complete cell into one pandas row; ``leaderboard`` pivots it into dataset x
method with in-domain, held-out and overall averages (with n per dataset and, given the store, bootstrap CIs of
every average); ``display_table`` is what the CLI draws; ``compare`` gives paired bootstrap CIs of B - A and
``verdict_lines`` states each trained method against the strongest cheap reference.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from harness.errors import HarnessError
from harness.metrics import METRIC_LABELS
from harness.registry import did_you_mean
from harness.store import CellRecord, Store
from harness.suites import SUITES

LM_EVAL = "lm-eval"  # the ``harness`` column of a preservation cell (an lm-eval task, not a QA dataset)

# Method parameters shown in a row label, in this order, when a method spec carries them and differs from the
# method's own default (its class's ``label_defaults``: e.g. SPRING's placement rtq, prefix's trq and fixed k).
LABEL_PARAMETERS = ("tokens", "fixed_k", "placement", "impl", "shots")


def method_label(method: Mapping[str, Any]) -> str:
    """``{"name": "spring", "tokens": 5, "fixed_k": True}`` -> ``spring[tokens=5,fixed_k]`` (flags by name)."""
    from harness.plugins import METHODS

    name = method["name"]
    defaults = METHODS.get(name).label_defaults if name in METHODS.names() else {}
    shown = [
        p if method[p] is True else f"{p}={method[p]}"
        for p in LABEL_PARAMETERS
        if method.get(p) is not None and method.get(p) != defaults.get(p)
    ]
    return f"{name}[{','.join(shown)}]" if shown else name


def _sweep_of(method: dict[str, Any]) -> tuple[str, bool | None]:
    """``(label without the swept flag, whether the cell is at the headline value)`` of a method spec.

    SPRING's cells at k=1, 5, 50 form one family ``spring`` whose headline is k=50 (``Method.sweep_default``);
    ``None`` for a method that sweeps nothing (or is not registered here)."""
    from harness.plugins import METHODS

    name = method.get("name")
    if name not in METHODS.names():
        return method_label(method), None
    cls = METHODS.get(name)
    if not cls.sweep or method.get(cls.sweep) is None:
        return method_label(method), None
    family = method_label({k: v for k, v in method.items() if k != cls.sweep})
    return family, method[cls.sweep] == cls.sweep_default


def headline_variants(picked: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The cells a leaderboard shows by default, and a note naming what it leaves out.

    Of a sweep (``spring[tokens=1]``, ``[tokens=5]``, ``[tokens=50]``), the headline value stands for the method;
    the other values are left to `harness plot tokens-sweep` (``--all-variants`` shows them). A family with no
    cell at its headline value is shown whole, so nothing the store holds disappears without a headline."""
    if picked.empty or "family" not in picked:
        return picked, ""
    setting = ["family", "retriever", "passages", "model"]
    at_headline = picked["headline"].eq(True)  # the column holds True, False, or None (nothing swept)
    has_headline = at_headline.groupby([picked[c] for c in setting], dropna=False).transform("any")
    hidden = has_headline & picked["headline"].eq(False)
    if not hidden.any():
        return picked, ""
    labels = _ordered(picked.loc[hidden, "method"])
    families = set(picked.loc[hidden, "family"])
    headlines = _ordered(picked.loc[picked["family"].isin(families) & at_headline, "method"])
    plot = " (`harness plot tokens-sweep` draws them)" if any("tokens=" in label for label in labels) else ""
    note = f"also in the store, not shown: {', '.join(labels)}{plot}; the table shows {', '.join(headlines)}; --all-variants lists every value"
    return picked[~hidden].reset_index(drop=True), note


def cells_frame(store: Store) -> pd.DataFrame:
    """One row per complete cell: identity columns plus ``<metric>``, ``<metric>_low``, ``<metric>_high``.

    ``harness`` is ``lm-eval`` for a preservation cell (`harness preserve`) and ``qa`` for a QA cell."""
    rows = []
    for cell in store.cells():
        spec = cell.spec
        family, swept = _sweep_of(dict(spec.method))
        row = {
            "key": cell.key,
            "dataset": spec.dataset,
            "split": spec.split,
            "n": spec.n_examples,
            "example_ids_hash": spec.example_ids_hash,
            "held_out": spec.dataset in SUITES["heldout"],
            "harness": LM_EVAL if dict(spec.decoding).get("harness") == LM_EVAL else "qa",
            "method": method_label(dict(spec.method)),
            "family": family,
            "headline": swept,
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


def stored_qa_cells(store: Store, suite: str | None = None) -> tuple[pd.DataFrame, tuple[str, ...]]:
    """The store's QA cells (:func:`cells_frame` rows, preservation cells left out) and the datasets of ``suite``:
    by default the suite their datasets cover (:func:`harness.suites.covering_suite`); an empty store is an error."""
    from harness.suites import covering_suite, resolve_suite

    frame = cells_frame(store)
    qa = frame[frame["harness"] == "qa"] if not frame.empty else frame
    if qa.empty:
        raise HarnessError(f"the result store {store.root} holds no finished QA cell; run `harness run` first")
    stored = set(qa["dataset"])
    return qa, resolve_suite(suite or covering_suite(stored), also=stored)


@dataclass(frozen=True)
class Leaderboard:
    """A pivoted table (rows: datasets then averages; columns: (method, metric)) and its header line.

    ``table`` holds the means (x100). ``n`` (same index, columns ``min``/``max``, ints) is the number of
    evaluated questions of each row over the columns (an average row: the sum over its datasets). ``ci_low`` and
    ``ci_high`` (same index and columns as ``table``) hold the 95% bootstrap CI of every average row (x100; NaN on
    dataset rows); they are ``None`` when the leaderboard was built without the store. ``coverage``
    (same index and columns as ``table``, ints) counts the datasets behind each value and ``row_datasets`` (same
    index) those of each row: an average row's value is over the column's own ``k`` of the row's ``N``."""

    table: pd.DataFrame
    header: str
    n: pd.DataFrame | None = field(default=None)
    ci_low: pd.DataFrame | None = field(default=None)
    ci_high: pd.DataFrame | None = field(default=None)
    coverage: pd.DataFrame | None = field(default=None)
    row_datasets: pd.Series | None = field(default=None)


def coverage_flag(board: Leaderboard, row: str, column: tuple[str, str]) -> str:
    """``"k of N"`` where ``board``'s value at (row, column) is an average over fewer than the row's N datasets."""
    if board.coverage is None or board.row_datasets is None or pd.isna(board.table.loc[row, column]):
        return ""
    have, of = int(board.coverage.loc[row, column]), int(board.row_datasets[row])
    return f"{have} of {of}" if have < of else ""


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
    picked = (
        picked.sort_values(["n", "created"])
        .groupby(["dataset", "method", "retriever", "passages", "model"], as_index=False)
        .tail(1)
    )
    return picked.reset_index(drop=True)


def _natural(label: str) -> list:
    """Numbers in labels sort as numbers: spring[tokens=2] before spring[tokens=10]."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", label)]


def _base(label: str) -> str:
    """``prompt-fewshot[shots=3]`` -> ``prompt-fewshot`` (also drops a `` | retriever`` suffix)."""
    return label.split("[")[0].split(" | ")[0]


def _ordered(columns, method_order: Sequence[str] = ()) -> list[str]:
    """Column labels in ``method_order`` of their base method names, then the rest, each group by natural order."""
    rank = {name: i for i, name in enumerate(method_order)}
    return sorted(dict.fromkeys(columns), key=lambda c: (rank.get(_base(c), len(rank)), _natural(c)))


def _dataset_order(datasets) -> list[str]:
    """Datasets in the suite order (qa12), others after by name: the order bootstrap draws are made in."""
    position = {d: i for i, d in enumerate(SUITES["qa12"])}
    return sorted(dict.fromkeys(datasets), key=lambda d: (position.get(d, len(position)), d))


def _resampled_means(samples: Sequence[np.ndarray], n_resamples: int, seed: int) -> list[np.ndarray]:
    """Bootstrap means of each sample in turn from one generator: sample i (shape (n,) or (n, k)) gets indices
    ``rng.integers(0, n, size=(n_resamples, n))`` and yields means of shape (n_resamples,) or (n_resamples, k).

    The shared core of ``leaderboard``'s average CIs and ``compare``'s paired CIs; averaging the returned arrays
    over the samples resamples the macro average (questions resampled within each dataset)."""
    rng = np.random.default_rng(seed)
    out = []
    for values in samples:
        idx = rng.integers(0, len(values), size=(n_resamples, len(values)))
        if values.ndim == 1:
            out.append(values[idx].mean(axis=1))
        else:
            out.append(np.stack([values[:, j][idx].mean(axis=1) for j in range(values.shape[1])], axis=-1))
    return out


def _percentile_ci(resampled: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """2.5% and 97.5% quantiles over the resamples (axis 0)."""
    low, high = np.quantile(resampled, [0.025, 0.975], axis=0)
    return low, high


def _metric_values(cell: CellRecord, metrics: Sequence[str]) -> np.ndarray:
    """(n, len(metrics)) per-question values of a cell; NaN where a prediction row lacks a metric."""
    return np.array([[row["metrics"].get(m, np.nan) for m in metrics] for row in cell.predictions()], dtype=float).reshape(
        -1, len(metrics)
    )


def leaderboard(
    picked: pd.DataFrame,
    datasets: Sequence[str],
    metrics: Sequence[str],
    method_order: Sequence[str] = (),
    store: Store | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
) -> Leaderboard:
    """Dataset x method table of ``metrics`` (x100) with averages over the in-domain, held-out and all datasets
    shown (each column's average over its own datasets of the row, counted in ``coverage``).

    Columns follow ``method_order`` (method names; by default the registry's order, so every command and format
    shows the same order), then the rest by name (numbers in labels compared as numbers). With ``store``, every
    average row gets a 95% percentile-bootstrap CI per column: for each column one generator (``seed``) draws
    ``n_resamples`` resamples of the questions of each of its averaged datasets in turn (table row order, the same
    indices for every metric); each average row averages the resampled per-dataset means of those datasets (a
    macro average)."""
    from harness.plugins import METHODS

    method_order = tuple(method_order) or tuple(METHODS.names())  # one column order for run, leaderboard, formats
    picked = picked.copy()
    several = picked[["retriever", "passages", "model"]].drop_duplicates()
    column_name = picked["method"]
    if len(several) > 1:  # show what differs between columns
        column_name = column_name + " | " + picked["retriever"] + " m=" + picked["passages"].astype(str)
        if picked["model"].nunique() > 1:
            column_name = column_name + " | " + picked["model"]
    picked["column"] = column_name
    order = [d for d in datasets if d in set(picked["dataset"])]
    columns = _ordered(picked["column"], method_order)
    labels = [METRIC_LABELS[m] for m in metrics]
    header_columns = pd.MultiIndex.from_product([columns, labels])
    table = pd.DataFrame(index=order, columns=header_columns, dtype=float)
    cell_key: dict[tuple[str, str], str] = {}
    for row in picked.itertuples(index=False):
        cell_key[(row.dataset, row.column)] = row.key
        for metric in metrics:
            value = getattr(row, metric, np.nan)
            table.loc[row.dataset, (row.column, METRIC_LABELS[metric])] = 100.0 * value if pd.notna(value) else np.nan
    counts = picked[picked["dataset"].isin(order)].groupby("dataset")["n"]
    n = pd.DataFrame({"min": counts.min(), "max": counts.max()}).reindex(order)
    # Each column's average is over its own datasets of the row's group, so no other column's cells ever change
    # it; ``coverage`` counts them, and a column with fewer than the row's datasets (named in its label) is
    # flagged "k of N" wherever it is shown.
    groups = {
        "avg in-domain": [d for d in order if d in SUITES["indomain"]],
        "avg held-out": [d for d in order if d in SUITES["heldout"]],
        "avg all": list(order),
    }
    average_rows = {f"{label} ({len(members)})": members for label, members in groups.items() if members}
    coverage = table.notna().astype(int)
    row_datasets = pd.Series(1, index=order)
    for label, members in average_rows.items():
        row_datasets[label] = len(members)
        coverage.loc[label] = table.loc[members].notna().sum()
        table.loc[label] = table.loc[members].mean(skipna=True)
        n.loc[label] = n.loc[members].sum()
    ci_low = ci_high = None
    if store is not None:
        ci_low, ci_high = (pd.DataFrame(np.nan, index=table.index, columns=table.columns) for _ in range(2))
        for column in columns:
            has = [d for d in order if (d, column) in cell_key]
            resampled = dict(
                zip(
                    has,
                    _resampled_means(
                        [_metric_values(store.load(cell_key[(d, column)]), metrics) for d in has], n_resamples, seed
                    ),
                )
            )
            for label, members in average_rows.items():
                own = [d for d in members if d in resampled]
                if not own:
                    continue
                low, high = _percentile_ci(np.mean([resampled[d] for d in own], axis=0))
                for j, metric_label in enumerate(labels):
                    ci_low.loc[label, (column, metric_label)] = 100 * low[j]
                    ci_high.loc[label, (column, metric_label)] = 100 * high[j]
    shown = [f"{d} *" if d in SUITES["heldout"] else d for d in table.index]
    for frame in (table, n, ci_low, ci_high, coverage, row_datasets):
        if frame is not None:
            frame.index = shown
    n = n.astype(int)
    n_per = picked.groupby("dataset")["n"].max()
    header = (
        f"backbone {', '.join(sorted(picked['model'].unique()))} | retriever {', '.join(sorted(picked['retriever'].unique()))}"
        f" | passages {', '.join(map(str, sorted(picked['passages'].unique())))}"
        f" | {_n_text(int(n_per.min()), int(n_per.max()))} questions per dataset"
        f" | * held out | scores x100" + (" | avg rows: mean [95% bootstrap CI]" if store is not None else "")
    )
    if (coverage.lt(row_datasets, axis=0) & table.notna()).any().any():
        header += " | 'k of N': a column's average over the k of the row's N datasets it has"
    return Leaderboard(
        table=table, header=header, n=n, ci_low=ci_low, ci_high=ci_high, coverage=coverage, row_datasets=row_datasets
    )


def _n_text(low: int, high: int) -> str:
    return str(low) if low == high else f"{low}-{high}"


def display_table(board: Leaderboard, value_format: str = "{:.1f}") -> pd.DataFrame:
    """The leaderboard as text cells, for ``frame_table`` and markdown: a column ``n`` (``40-50`` when methods
    were evaluated on different numbers of questions), then ``<method> <metric>`` columns; average rows read
    ``mean [low, high]`` when the board has CIs; ``-`` where there is no cell."""
    table = board.table
    shown = pd.DataFrame(index=table.index)
    shown.index.name = "dataset"
    if board.n is not None:
        shown["n"] = [_n_text(int(low), int(high)) for low, high in board.n[["min", "max"]].itertuples(index=False)]
    for method, metric in table.columns:
        cells = []
        for row in table.index:
            value = table.loc[row, (method, metric)]
            text = "-" if pd.isna(value) else value_format.format(value)
            if board.ci_low is not None and board.ci_high is not None and pd.notna(value):
                low, high = board.ci_low.loc[row, (method, metric)], board.ci_high.loc[row, (method, metric)]
                if pd.notna(low) and pd.notna(high):
                    text += f" [{value_format.format(low)}, {value_format.format(high)}]"
            flag = coverage_flag(board, row, (method, metric))
            text += f" {flag}" if flag else ""
            cells.append(text)
        shown[f"{method} {metric}"] = cells
    return shown


def render(board: Leaderboard, fmt: str) -> str:
    """The table as ``md``, ``csv`` or ``json`` text (``table`` is drawn by the CLI with rich).

    ``md`` is :func:`display_table` (one decimal, as the terminal table); ``csv``/``json`` stay numeric: columns
    ``n`` and ``n max`` (questions per row: the least and most over the methods), ``<method> <metric>``, its
    ``<method> <metric> datasets`` (how many datasets the value is over) and, when the board has CIs,
    ``<method> <metric> lo``/``hi`` (empty on dataset rows); a missing value is empty (csv) or null (json)."""
    if fmt == "md":
        shown = display_table(board)
        text = shown.to_markdown(disable_numparse=True, colalign=("left",) + ("right",) * len(shown.columns))
        return f"{board.header}\n\n{text}\n"
    flat = pd.DataFrame(index=board.table.index)
    flat.index.name = "dataset"
    if board.n is not None:
        flat["n"], flat["n max"] = board.n["min"], board.n["max"]
    for method, metric in board.table.columns:
        flat[f"{method} {metric}"] = board.table[(method, metric)]
        if board.coverage is not None:
            flat[f"{method} {metric} datasets"] = board.coverage[(method, metric)]
        if board.ci_low is not None and board.ci_high is not None:
            flat[f"{method} {metric} lo"] = board.ci_low[(method, metric)]
            flat[f"{method} {metric} hi"] = board.ci_high[(method, metric)]
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


def _aligned(a: CellRecord, b: CellRecord, metric: str, common_only: bool = False) -> np.ndarray:
    """Per-question ``b - a``; the two cells must hold the same questions unless ``common_only`` (then the
    questions both hold, in ``a``'s order)."""
    rows_a = {row["id"]: row["metrics"][metric] for row in a.predictions()}
    rows_b = {row["id"]: row["metrics"][metric] for row in b.predictions()}
    if common_only:
        return np.array([rows_b[i] - rows_a[i] for i in rows_a if i in rows_b], dtype=float)
    if rows_a.keys() != rows_b.keys():
        raise HarnessError(
            f"{a.spec.dataset}: the two methods were evaluated on different examples; re-run with the same --limit/--seed"
        )
    return np.array([rows_b[i] - rows_a[i] for i in rows_a], dtype=float)


def resolve_label(picked: pd.DataFrame, method: str) -> str:
    """The column label ``method`` names: itself, or a bare method name's one variant among the selected cells
    (``prompt-fewshot`` -> ``prompt-fewshot[shots=3]``); several variants are an error listing them."""
    labels = set(picked["method"].unique())
    variants = sorted((label for label in labels if _base(label) == method and label != method), key=_natural)
    if method in labels or not variants:
        return method
    if len(variants) == 1:
        return variants[0]
    raise HarnessError(f"method {method!r} has several variants among the selected cells: {', '.join(variants)}; name one")


def _cells_of(picked: pd.DataFrame, method: str) -> pd.DataFrame:
    cells = picked[picked["method"] == method].set_index("dataset")
    if cells.empty:
        present = sorted(picked["method"].unique())
        raise HarnessError(
            f"no finished cell of method {method!r} among the selected cells.{did_you_mean(method, present)} "
            f"Methods present: {', '.join(present)} (`harness leaderboard` shows their labels)"
        )
    return cells


def _paired(
    store: Store,
    picked: pd.DataFrame,
    method_a: str,
    method_b: str,
    metric: str,
    datasets: Sequence[str],
    n_resamples: int,
    seed: int,
    common_only: bool = False,
) -> pd.DataFrame:
    """Rows per dataset (in the given order) and ``average (k)``: n, diff, ci_low, ci_high of ``b - a`` (x100).

    One generator (``seed``) draws each dataset's resamples in turn; the average row is the macro average of the
    per-dataset differences and its CI the quantiles of the averaged resampled differences."""
    by_method = {m: _cells_of(picked, m) for m in (method_a, method_b)}
    diffs = [
        _aligned(
            store.load(by_method[method_a].loc[d, "key"]), store.load(by_method[method_b].loc[d, "key"]), metric, common_only
        )
        for d in datasets
    ]
    if common_only:  # a dataset whose two cells share no question drops out
        datasets, diffs = [d for d, x in zip(datasets, diffs) if x.size], [x for x in diffs if x.size]
        if not datasets:
            return pd.DataFrame(columns=["n", "diff", "ci_low", "ci_high"])
    resampled = _resampled_means(diffs, n_resamples, seed)
    rows = []
    for dataset, diff, means in zip(datasets, diffs, resampled):
        low, high = _percentile_ci(means)
        rows.append(
            {"dataset": dataset, "n": int(diff.size), "diff": 100 * diff.mean(), "ci_low": 100 * low, "ci_high": 100 * high}
        )
    low, high = _percentile_ci(np.mean(resampled, axis=0))
    rows.append(
        {
            "dataset": f"average ({len(datasets)})",
            "n": sum(r["n"] for r in rows),
            "diff": float(np.mean([r["diff"] for r in rows])),
            "ci_low": 100 * low,
            "ci_high": 100 * high,
        }
    )
    table = pd.DataFrame(rows).set_index("dataset")
    table["n"] = table["n"].astype(int)
    return table


def compare(
    store: Store, picked: pd.DataFrame, method_a: str, method_b: str, metric: str, n_resamples: int = 1000, seed: int = 0
) -> Comparison:
    """Paired bootstrap of ``method_b - method_a`` on the datasets both have (in suite order); a bare method name
    stands for its one variant (:func:`resolve_label`)."""
    method_a, method_b = resolve_label(picked, method_a), resolve_label(picked, method_b)
    by_method = {m: _cells_of(picked, m) for m in (method_a, method_b)}
    datasets = _dataset_order(d for d in by_method[method_a].index if d in by_method[method_b].index)
    if not datasets:
        raise HarnessError(f"{method_a} and {method_b} share no dataset in the store")
    table = _paired(store, picked, method_a, method_b, metric, datasets, n_resamples, seed)
    header = f"{METRIC_LABELS[metric]}: {method_b} - {method_a}, paired bootstrap 95% CI ({n_resamples} resamples) x100"
    return Comparison(table=table, header=header)


def comparison_display(result: Comparison) -> pd.DataFrame:
    """``result.table`` with ``n`` as integer text and the rest as signed two-decimal text, for ``frame_table``."""
    shown = result.table.copy().astype(object)
    shown["n"] = [str(int(v)) for v in result.table["n"]]
    for column in ("diff", "ci_low", "ci_high"):
        shown[column] = [f"{v:+.2f}" for v in result.table[column]]
    return shown


# The cheap references a trained method must beat (labels whose base name is one of these).
CHEAP_REFERENCES = ("prompt", "prompt-chat", "prompt-fewshot")


def _is_trained(label: str) -> bool:
    from harness.plugins import METHODS

    name = _base(label)
    return name in METHODS.names() and METHODS.get(name).trained


def _signed(value: float) -> str:
    text = f"{value:+.1f}"
    return "+0.0" if text == "-0.0" else text


@dataclass(frozen=True)
class VerdictPair:
    """A trained method and the cheap reference it is judged against, in one retriever/passages/backbone setting.

    ``cells`` are the setting's cells (one per method and dataset), ``datasets`` those the two are compared on
    (suite order), ``scope`` ``"in-domain"`` or ``"all datasets"``, ``prefix`` the setting's name on a line
    (empty when ``picked`` holds one setting)."""

    trained: str
    reference: str
    scope: str
    datasets: tuple[str, ...]
    cells: pd.DataFrame
    prefix: str


def verdict_pairs(
    picked: pd.DataFrame, method_order: Sequence[str] | None = None, metric: str = "exact_match"
) -> list[VerdictPair]:
    """Each trained method label of ``picked`` with the strongest cheap reference of its setting.

    The reference is, among labels whose base name is prompt, prompt-chat or prompt-fewshot, the one with the
    highest mean ``metric`` over the in-domain datasets it shares with the trained method (ties: the first in
    column order); when no reference shares an in-domain dataset, all shared datasets are used. A trained method
    with no reference gets no pair. With several retriever/passage/backbone settings in ``picked``, each setting
    is judged on its own."""
    from harness.plugins import METHODS

    settings = list(picked[["retriever", "passages", "model"]].drop_duplicates().itertuples(index=False))
    pairs = []
    for retriever, passages, model in settings:
        cells = picked[(picked["retriever"] == retriever) & (picked["passages"] == passages) & (picked["model"] == model)]
        cells = cells.drop_duplicates(["method", "dataset"], keep="last")  # one cell per method and dataset
        prefix = ""
        if len(settings) > 1:
            prefix = f"{retriever} m={passages}" + (f" {model}" if picked["model"].nunique() > 1 else "") + ": "
        labels = _ordered(cells["method"], method_order or METHODS.names())  # the leaderboard's column order
        references = [label for label in labels if _base(label) in CHEAP_REFERENCES]
        means = cells.set_index(["method", "dataset"])[metric]
        datasets_of = {label: set(cells.loc[cells["method"] == label, "dataset"]) for label in labels}
        for trained in (label for label in labels if _is_trained(label)):
            best = None  # (rank, scope, datasets, reference); rank: in-domain before all-datasets, then the score
            for reference in references:
                shared = datasets_of[trained] & datasets_of[reference]
                indomain = [d for d in shared if d in SUITES["indomain"]]
                scope, members = ("in-domain", indomain) if indomain else ("all datasets", list(shared))
                if not members:
                    continue
                score = float(np.mean([means[(reference, d)] for d in members]))
                rank = (scope == "in-domain", score)
                if best is None or rank > best[0]:
                    best = (rank, scope, _dataset_order(members), reference)
            if best is not None:
                _, scope, members, reference = best
                pairs.append(VerdictPair(trained, reference, scope, tuple(members), cells, prefix))
    return pairs


def verdict_lines(
    store: Store, picked: pd.DataFrame, method_order: Sequence[str] | None = None, metric: str = "exact_match"
) -> list[str]:
    """One line per :func:`verdict_pairs` pair: the trained method's paired difference to its reference.

    The difference is the macro average over the pair's datasets with a paired bootstrap 95% CI (``compare``'s
    procedure: 1000 resamples, seed 0, questions both cells hold). No line when there is no reference."""
    lines = []
    for pair in verdict_pairs(picked, method_order, metric):
        table = _paired(store, pair.cells, pair.reference, pair.trained, metric, pair.datasets, 1000, 0, common_only=True)
        if table.empty:
            continue
        members, average = list(table.index[:-1]), table.iloc[-1]
        low, high = average["ci_low"], average["ci_high"]
        verdict = "the CI includes 0: no significant difference" if low <= 0 <= high else "significant at 95%"
        count = f"{len(members)} dataset" + ("s" if len(members) != 1 else "")
        lines.append(
            f"{pair.prefix}{pair.trained} \u2212 {pair.reference}: {_signed(average['diff'])} {METRIC_LABELS[metric]} "
            f"[{_signed(low)}, {_signed(high)}] over {int(average['n'])} paired questions ({pair.scope}, {count}); {verdict}"
        )
    return lines
