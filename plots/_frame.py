"""From the result store to the tidy tables the plots draw, and the shared pieces of every figure.

``plot_frame(store)`` is :func:`harness.leaderboard.cells_frame` (one row per finished cell, same columns, so
:func:`harness.leaderboard.leaderboard` accepts it) plus the method and retriever fields the plots group by:
``method_name``, ``tokens`` (k), ``placement`` (``rtq`` when absent), ``fixed_k``, ``plugged``, ``corpus``,
``harness`` (``lm-eval`` for preservation cells, ``qa`` otherwise), ``num_fewshot`` and ``metric_names``.

:func:`average_points` averages each plotted point over datasets; every point of a figure is averaged over the
*same* datasets (those every point has), and the caption names the datasets left out and which points lack them.
Averages are x100; their 95% intervals combine the per-dataset bootstrap intervals in quadrature (datasets are
independent samples), which for a single dataset is that dataset's own bootstrap interval.

Nothing here touches matplotlib's global state: figures are :class:`matplotlib.figure.Figure` objects made
without pyplot, so they need no backend, no display and no closing.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from harness.errors import HarnessError
from harness.leaderboard import LM_EVAL, cells_frame
from harness.metrics import METRIC_LABELS
from harness.store import Store
from harness.suites import resolve_suite

QA_METRICS = ("exact_match", "f1")
PROMPT, SPRING = "prompt", "spring"
PLACEMENTS = ("trq", "rtq", "rqt")  # t: virtual tokens, r: retrieved passages, q: question; rtq is SPRING's
PLACEMENT_HELP = "t = virtual tokens, r = retrieved passages, q = question (rtq is SPRING's default)"
COLORS = {
    "prompt": "#7f7f7f",
    "spring": "#1f77b4",
    "spring fixed-k": "#ff7f0e",
    "base": "#7f7f7f",
    "lora": "#d62728",
    "spring plugged": "#1f77b4",
    "spring unplugged": "#9ecae1",
}
FALLBACK_COLORS = ("#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf")

# The commands that produce missing cells. One place, so the wording follows the runner's flags.
RUN_COMMANDS = {
    "any": "harness run --suite {suite}{model}",
    "prompt": "harness run --suite {suite}{model} --method prompt{where}",
    "tokens-sweep": "harness run --suite {suite}{model} --method spring --tokens 1,2,5,10,20,50{where}",
    "retrievers": "harness run --suite {suite}{model} --method prompt,spring --retriever bm25,minilm{where}",
    "passages": "harness run --suite {suite}{model} --method prompt,spring --passages 1,3,5,10{where}",
    "placement": "harness run --suite {suite}{model} --method spring --option spring.placement=trq{where} (then =rqt; rtq is the default)",
    "preservation": "harness preserve{model} --method base,lora,spring",
}


def run_command(kind: str, suite: str = "qa9", model: str | None = None, **where: object) -> str:
    """The `harness run` line that would produce the cells ``kind`` needs (``where``: extra flags)."""
    flags = "".join(f" --{name.replace('_', '-')} {value}" for name, value in where.items() if value is not None)
    return RUN_COMMANDS[kind].format(suite=suite, model=f" --model {model}" if model else "", where=flags)


# --------------------------------------------------------------------------------------------------- the frame


def _is_hex(value: object) -> bool:
    return isinstance(value, str) and len(value) >= 16 and re.fullmatch(r"[0-9a-f]+", value) is not None


def retriever_name(retriever: dict) -> str:
    return str(retriever.get("name") or retriever.get("retriever") or "?")


def corpus_label(retriever: dict) -> str:
    """``wiki-offline (sha256:0123456789ab)``, ``sha256:0123456789ab`` or ``none`` (closed book)."""
    name = retriever.get("corpus_name")
    fingerprint = retriever.get("corpus_fingerprint")
    corpus = retriever.get("corpus")
    if isinstance(corpus, str):
        if _is_hex(corpus):
            fingerprint = fingerprint or corpus
        else:
            name = name or corpus
    if retriever_name(retriever) == "none" and not name and not fingerprint:
        return "none"
    short = f"sha256:{fingerprint[:12]}" if isinstance(fingerprint, str) and fingerprint else None
    if name and short:
        return f"{name} ({short})"
    return str(name or short or "?")


def plot_frame(store: Store | pd.DataFrame) -> pd.DataFrame:
    """One row per finished cell: ``cells_frame``'s columns plus the fields the plots group by."""
    if isinstance(store, pd.DataFrame):
        return store
    base = cells_frame(store)
    if base.empty:
        return base
    extras = []
    for cell in store.cells():
        spec, method, retriever = cell.spec, dict(cell.spec.method), dict(cell.spec.retriever)
        decoding = dict(spec.decoding)
        extras.append(
            {
                "key": cell.key,
                "method_name": str(method.get("name", "?")),
                "tokens": method.get("tokens"),
                "placement": method.get("placement") or "rtq",
                "fixed_k": bool(method.get("fixed_k", False)),
                "impl": method.get("impl"),
                "shots": method.get("shots"),
                "plugged": method.get("plugged"),
                "retriever_name": retriever_name(retriever),
                "corpus": corpus_label(retriever),
                "num_fewshot": decoding.get("num_fewshot"),
                "metric_names": tuple(spec.metrics),
            }
        )
    frame = base.merge(pd.DataFrame(extras), on="key", how="left")
    frame["retriever"] = frame["retriever_name"]
    frame["tokens"] = frame["tokens"].astype("Int64")
    frame["created"] = frame["created"].fillna("").astype(str)
    return frame.drop(columns="retriever_name")


def load_frame(results) -> pd.DataFrame:
    """:func:`plot_frame` of the store at ``results``; an empty store is a user error."""
    frame = plot_frame(Store(results))
    if frame.empty:
        raise HarnessError(f"the result store {results} holds no finished cell; run `harness run` first")
    return frame


# ------------------------------------------------------------------------------------------------ selection


def qa_cells(frame: pd.DataFrame, datasets: Sequence[str]) -> pd.DataFrame:
    """The QA cells (not lm-eval preservation cells) of ``datasets``."""
    if frame.empty:
        return frame
    return frame[(frame["harness"] != LM_EVAL) & frame["dataset"].isin(datasets)]


def lm_eval_cells(frame: pd.DataFrame) -> pd.DataFrame:
    return frame if frame.empty else frame[frame["harness"] == LM_EVAL]


def suite_datasets(suite: str, frame: pd.DataFrame) -> tuple[str, ...]:
    """The datasets of ``suite``, a name of the registry's or of a dataset ``frame`` holds (a ``--dataset-file``)."""
    return resolve_suite(suite, also=() if frame.empty else set(frame["dataset"].dropna()))


def stored_suite(frame: pd.DataFrame) -> str:
    """The suite a plot averages over when none is named: what the store's QA cells cover
    (:func:`harness.suites.covering_suite`)."""
    from harness.suites import covering_suite

    stored = set(frame.loc[frame["harness"] != LM_EVAL, "dataset"]) if not frame.empty else set()
    if not stored:
        raise HarnessError("the result store holds no QA cell; run `harness run --suite qa12 --method spring,lora` first")
    return covering_suite(stored)


def resolve_model(cells: pd.DataFrame, model: str | None, what: str, hint: str) -> str:
    """The one backbone to draw: ``model`` if it has cells, the only one present, else a one-line error."""
    present = sorted(cells["model"].unique()) if not cells.empty else []
    if model is not None:
        if model not in present:
            have = f"; backbones with {what}: {', '.join(present)}" if present else ""
            raise HarnessError(f"no {what} of backbone {model!r} in the store{have}; run `{hint}`")
        return model
    if not present:
        raise HarnessError(f"no {what} in the store; run `{hint}`")
    if len(present) > 1:
        raise HarnessError(f"the store holds {what} of several backbones ({', '.join(present)}); pick one with --model")
    return present[0]


IDENTITY = (
    "dataset",
    "model",
    "retriever",
    "corpus",
    "passages",
    "method_name",
    "tokens",
    "placement",
    "fixed_k",
    "impl",
    "shots",
    "plugged",
    "num_fewshot",
)


def latest(cells: pd.DataFrame) -> pd.DataFrame:
    """One cell per identity: the largest evaluation, then the newest (re-runs with more examples replace)."""
    if cells.empty:
        return cells
    ordered = cells.sort_values(["n", "created"], kind="stable")
    return ordered.groupby(list(IDENTITY), dropna=False, sort=False).tail(1)


# ------------------------------------------------------------------------------------------------ averaging


@dataclass
class Averages:
    """Per point: mean, low, high (x100) of each metric over ``datasets``; ``notes`` for the caption."""

    table: pd.DataFrame  # index: point label; columns <metric>, <metric>_low, <metric>_high, n_min, n_max
    datasets: list[str]
    notes: list[str] = field(default_factory=list)


def average_points(
    points: dict[str, pd.DataFrame], metrics: Sequence[str], order: Sequence[str], what: str, hint: str
) -> Averages:
    """Average each point's cells (one per dataset) over the datasets every point has.

    ``points`` maps a point label (a series and x value) to its cells; ``order`` orders the datasets.
    """
    points = {label: cells for label, cells in points.items() if not cells.empty}
    if not points:
        raise HarnessError(f"no {what} in the store; run `{hint}`")
    notes = []
    for label, cells in list(points.items()):
        repeated = cells[cells["dataset"].duplicated(keep=False)]
        if not repeated.empty:  # e.g. the same retriever over two corpora: draw the largest, newest evaluation
            points[label] = cells.sort_values(["n", "created"], kind="stable").drop_duplicates("dataset", keep="last")
            kept = points[label][points[label]["dataset"].isin(repeated["dataset"])]
            notes.append(
                f"{label}: several cells per dataset ({', '.join(sorted(repeated['corpus'].unique()))}); drawn: the largest, newest ({', '.join(sorted(kept['corpus'].unique()))})"
            )
    have = {label: set(cells["dataset"]) for label, cells in points.items()}
    common = [d for d in order if all(d in s for s in have.values())]
    union = [d for d in order if any(d in s for s in have.values())]
    if not common:
        lacking = "; ".join(f"{label} has {', '.join(sorted(s))}" for label, s in have.items())
        raise HarnessError(f"no dataset has cells for every point of the {what} ({lacking}); run `{hint}`")
    left_out = []
    for dataset in union:
        if dataset not in common:
            missing = [label for label, s in have.items() if dataset not in s]
            left_out.append(f"{dataset} (no cell for {', '.join(missing)})")
    if left_out:
        notes.append("left out of the averages, as not every point has them: " + "; ".join(left_out))
    absent = [d for d in order if d not in union]
    if absent and len(order) > 1:
        notes.append(
            f"no cells at all for {len(absent)} of the suite's {len(order)} datasets: {', '.join(absent)} (run `{hint}`)"
        )
    rows = {}
    for label, cells in points.items():
        used = cells.set_index("dataset").loc[common]
        row: dict[str, float] = {"n_min": int(used["n"].min()), "n_max": int(used["n"].max())}
        for metric in metrics:
            if metric not in used.columns or used[metric].isna().any():
                row[metric] = row[f"{metric}_low"] = row[f"{metric}_high"] = np.nan
                continue
            mean = used[metric].to_numpy(float)
            low = used[f"{metric}_low"].to_numpy(float)
            high = used[f"{metric}_high"].to_numpy(float)
            k = len(common)
            row[metric] = 100.0 * mean.mean()
            row[f"{metric}_low"] = 100.0 * (mean.mean() - np.sqrt(np.sum((mean - low) ** 2)) / k)
            row[f"{metric}_high"] = 100.0 * (mean.mean() + np.sqrt(np.sum((high - mean) ** 2)) / k)
        rows[label] = row
    return Averages(table=pd.DataFrame.from_dict(rows, orient="index"), datasets=common, notes=notes)


def yerr(table: pd.DataFrame, metric: str) -> np.ndarray:
    """Asymmetric error-bar lengths (2 x n) for ``table``'s ``metric``."""
    mean = table[metric].to_numpy(float)
    return np.vstack([mean - table[f"{metric}_low"].to_numpy(float), table[f"{metric}_high"].to_numpy(float) - mean])


def metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric.replace("_", " "))


# -------------------------------------------------------------------------------------------------- captions


def _dates(cells: pd.DataFrame) -> str:
    dates = sorted({str(c)[:10] for c in cells["created"] if isinstance(c, str) and c})
    if not dates:
        return "run date unknown"
    return f"run {dates[-1]}" if len(dates) == 1 else f"run {dates[0]} to {dates[-1]}"


def _limits(cells: pd.DataFrame) -> str:
    n_min, n_max = int(cells["n"].min()), int(cells["n"].max())
    examples = f"{n_min}" if n_min == n_max else f"{n_min}-{n_max}"
    limits = sorted({int(v) for v in cells["limit"].dropna()}) if "limit" in cells else []
    limit = "full splits" if not limits else "limit " + ", ".join(map(str, limits))
    return f"{examples} examples per dataset ({limit})"


def caption(
    cells: pd.DataFrame, setting: str = "", datasets: Sequence[str] = (), notes: Sequence[str] = (), ci: bool = True
) -> str:
    """Backbone, corpus, example limit and run date of ``cells`` (the cells drawn), then the figure's notes."""
    parts = [
        f"backbone {', '.join(sorted(cells['model'].unique()))}",
        f"corpus {', '.join(sorted(cells['corpus'].unique()))}",
    ]
    if setting:
        parts.append(setting)
    parts += [_limits(cells), _dates(cells)]
    lines = [" | ".join(parts)]
    if datasets:
        lines.append(f"averages over {len(datasets)} dataset{'s' * (len(datasets) != 1)}: {', '.join(datasets)}")
    lines += list(notes)
    if ci:
        lines.append("error bars: 95% bootstrap CIs (per-dataset intervals combined in quadrature); scores x100")
    return "\n".join(lines)


def finish(fig: Figure, title: str, text: str, model: str, legend_from=None, axis_room: float = 0.65) -> Figure:
    """Title on top, the legend of ``legend_from`` (an Axes) under it, the caption below the axes.

    Margins are sized in inches to the wrapped caption; ``axis_room`` is the room for the x tick labels and label.
    The backbone drawn is kept as ``fig.harness_model`` (the CLI names the files after it).
    """
    fig.harness_model = model  # type: ignore[attr-defined]  # an attribute of ours on matplotlib's Figure
    chars = max(40, int(fig.get_figwidth() * 15.5))
    wrapped = "\n".join(textwrap.fill(line, chars, subsequent_indent="  ") for line in text.split("\n"))
    n_lines = wrapped.count("\n") + 1
    caption_in = 0.16 * n_lines + 0.2
    legend_in = 0.35 if legend_from is not None else 0.0
    fig.set_figheight(fig.get_figheight() + caption_in + legend_in + max(0.0, axis_room - 0.65))
    total = fig.get_figheight()
    fig.suptitle(title, fontsize=12, fontweight="bold", y=1 - 0.12 / total, va="top")
    if legend_from is not None:
        handles, labels = legend_from.get_legend_handles_labels()
        fig.legend(
            handles,
            labels,
            loc="upper center",
            bbox_to_anchor=(0.5, 1 - 0.5 / total),
            ncol=len(labels),
            frameon=False,
            fontsize=9,
        )
    fig.text(0.01, 0.08 / total, wrapped, fontsize=8, color="#333333", ha="left", va="bottom", linespacing=1.35)
    fig.subplots_adjust(top=1 - (0.75 + legend_in) / total, bottom=(caption_in + axis_room) / total, wspace=0.28)
    return fig


def dodge(ax, index: int, count: int, points: float = 4.0):
    """A transform shifting series ``index`` of ``count`` sideways by a few points, so error bars do not overlap."""
    from matplotlib.transforms import ScaledTranslation

    shift = (index - (count - 1) / 2) * points / 72.0
    return ax.transData + ScaledTranslation(shift, 0, ax.figure.dpi_scale_trans)


def new_figure(width: float, height: float, ncols: int = 1, sharey: bool = False):
    """A pyplot-free figure with ``ncols`` axes (no global state, nothing to close)."""
    fig = Figure(figsize=(width, height), dpi=110)
    axes = fig.subplots(1, ncols, sharey=sharey, squeeze=False)[0]
    for ax in axes:
        ax.spines[["top", "right"]].set_visible(False)
        ax.grid(axis="y", color="#dddddd", linewidth=0.6)
        ax.set_axisbelow(True)
    return fig, list(axes)


def color(label: str, index: int = 0) -> str:
    return COLORS.get(label, FALLBACK_COLORS[index % len(FALLBACK_COLORS)])


def spring_label(tokens: Any) -> str:
    return f"SPRING k={int(tokens)}" if tokens is not None and not pd.isna(tokens) else "SPRING"


def restrict(cells: pd.DataFrame, **equal: object) -> pd.DataFrame:
    """The rows whose columns equal the given values (``None`` values are not filtered on)."""
    for column, value in equal.items():
        if value is not None:
            cells = cells[cells[column] == value]
    return cells


def choose(cells: pd.DataFrame, columns: Sequence[str], rank: str | None = None) -> tuple | None:
    """The combination of ``columns`` with the most distinct values of ``rank`` (else the most cells)."""
    if cells.empty:
        return None
    grouped = cells.groupby(list(columns), dropna=False)
    score = grouped[rank].nunique() * 10_000 + grouped.size() if rank else grouped.size()
    best = score[score == score.max()].index
    # ties: a real retriever before "none", then more passages
    choice = sorted(
        best,
        key=lambda key: tuple(
            (str(v) != "none", v) if isinstance(v, str) else (True, v) for v in (key if isinstance(key, tuple) else (key,))
        ),
    )[-1]
    return choice if isinstance(choice, tuple) else (choice,)


def other_settings(cells: pd.DataFrame, columns: Sequence[str], chosen: tuple, flags: str, rank: str | None = None) -> list[str]:
    """A caption note naming the settings of ``cells`` not drawn (those with several ``rank`` values)."""
    if cells.empty:
        return []
    grouped = cells.groupby(list(columns), dropna=False)
    sizes = grouped[rank].nunique() if rank else grouped.size()
    others = [
        key
        for key, size in sizes.items()
        if (key if isinstance(key, tuple) else (key,)) != tuple(chosen) and (not rank or size >= 2)
    ]
    if not others:
        return []
    shown = ", ".join("/".join(map(str, key if isinstance(key, tuple) else (key,))) for key in others[:6])
    more = f" and {len(others) - 6} more" if len(others) > 6 else ""
    return [f"also in the store ({'/'.join(columns)}): {shown}{more}; pick with {flags}"]


def grouped_bars(
    ax, groups: Sequence[str], series: Sequence[tuple[str, str]], table: pd.DataFrame, metric: str, label_bars: bool = True
) -> None:
    """Bars of ``table`` (index ``"<series> @ <group>"``) grouped by ``groups``, one bar per series (name, colour)."""
    width = 0.8 / max(1, len(series))
    x = np.arange(len(groups))
    for i, (name, colour) in enumerate(series):
        labels = [f"{name} @ {group}" for group in groups]
        rows = table.reindex(labels)
        heights = rows[metric].to_numpy(float)
        offsets = x + (i - (len(series) - 1) / 2) * width
        bars = ax.bar(
            offsets,
            heights,
            width * 0.92,
            yerr=yerr(rows, metric),
            color=colour,
            label=name,
            capsize=2.5,
            error_kw={"linewidth": 0.9, "ecolor": "#333333"},
        )
        if label_bars:
            for bar, h in zip(bars, heights):
                if np.isfinite(h):
                    inside = h >= 0.12 * np.nanmax(table[metric].to_numpy(float))
                    ax.annotate(
                        f"{h:.1f}",
                        (bar.get_x() + bar.get_width() / 2, 0 if inside else h),
                        xytext=(0, 2),
                        textcoords="offset points",
                        ha="center",
                        va="bottom",
                        fontsize=7,
                        color="white" if inside else "#333333",
                    )
    ax.set_xticks(x, groups, fontsize=9)


def errorbar_line(ax, xs: Sequence[float], rows: pd.DataFrame, metric: str, index: int, count: int, **style) -> None:
    """A line with asymmetric error bars, dodged sideways (series ``index`` of ``count``) without moving the data.

    Artists with a dodge transform do not take part in autoscaling, so the data limits are updated here.
    """
    ax.errorbar(
        np.asarray(xs, float), rows[metric].to_numpy(float), yerr=yerr(rows, metric), transform=dodge(ax, index, count), **style
    )
    lows, highs = rows[f"{metric}_low"].to_numpy(float), rows[f"{metric}_high"].to_numpy(float)
    ax.update_datalim(np.column_stack([np.concatenate([xs, xs]).astype(float), np.concatenate([lows, highs])]))
    ax.autoscale_view()


@dataclass(frozen=True)
class PromptSpringSweep:
    """Prompt and SPRING (trained over all k, placement rtq) cells of a suite for a sweep over one column."""

    datasets: tuple[str, ...]
    model: str
    hint: str
    both: pd.DataFrame  # every candidate cell, before choosing the fixed setting (for "other settings" notes)
    prompt: pd.DataFrame
    spring: pd.DataFrame
    fixed_value: object  # the chosen value of the fixed column (passages for retrievers, retriever for passages)
    k: int | None


def prompt_spring_sweep(
    frame: pd.DataFrame,
    plot: str,
    suite: str,
    model: str | None,
    varied: str,
    fixed: str,
    fixed_value: object,
    tokens: int | None,
) -> PromptSpringSweep:
    """The cells of a Prompt-vs-SPRING sweep over ``varied``, at one ``fixed`` setting and one k.

    ``fixed_value``/``tokens`` given by the user are honoured; otherwise the setting most ``varied`` values share
    is chosen (k preferring the largest)."""
    datasets = suite_datasets(suite, frame)
    cells = latest(qa_cells(frame, datasets))
    cells = cells[(cells["retriever"] != "none") & (cells["passages"] > 0)]
    prompt = cells[cells["method_name"] == PROMPT]
    spring = cells[(cells["method_name"] == SPRING) & ~cells["fixed_k"] & (cells["placement"] == "rtq") & cells["tokens"].notna()]
    hint = run_command(plot, suite, model, **{fixed: fixed_value, "tokens": tokens})
    model = resolve_model(pd.concat([prompt, spring]), model, f"Prompt or SPRING cells of {suite}", hint)
    hint = run_command(plot, suite, model, **{fixed: fixed_value, "tokens": tokens})
    prompt = restrict(prompt, model=model, **{fixed: fixed_value})
    spring = restrict(spring, model=model, tokens=tokens, **{fixed: fixed_value})
    if spring.empty:
        raise HarnessError(f"no SPRING cells{'' if tokens is None else f' with k={tokens}'} for {suite}/{model}; run `{hint}`")
    both = pd.concat([prompt, spring])
    (chosen,) = choose(both, (fixed,), rank=varied) or (None,)
    spring = restrict(spring, **{fixed: chosen})
    k = None
    if not spring.empty:
        counts = spring.groupby("tokens")[varied].nunique()
        k = int(sorted(counts[counts == counts.max()].index)[-1])
    return PromptSpringSweep(
        datasets, model, hint, both, restrict(prompt, **{fixed: chosen}), restrict(spring, tokens=k), chosen, k
    )
