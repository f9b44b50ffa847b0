"""Named groups of datasets. Every dataset name is also a suite of one."""

from __future__ import annotations

from collections.abc import Iterable

from harness.errors import HarnessError
from harness.plugins import DATASETS
from harness.registry import unknown_name

QA12 = ("triviaqa", "nq", "hotpotqa", "squad", "webq", "2wiki", "coqa", "msmarco", "popqa", "fermi", "musique", "bamboogle")
SUITES: dict[str, tuple[str, ...]] = {
    "qa12": QA12,
    "qa9": QA12[:9],
    "heldout": ("popqa", "fermi", "musique", "bamboogle"),
    "indomain": ("triviaqa", "nq", "hotpotqa", "squad", "webq", "2wiki", "coqa", "msmarco"),
}
SUITE_DESCRIPTIONS = {
    "qa12": "the paper's 12 QA datasets",
    "qa9": "the first 9 of qa12 (the paper's main table without three held-out sets)",
    "heldout": "held-out datasets, never trained on",
    "indomain": "the 8 datasets whose training pools SPRING trains on",
}


def resolve_suite(spec: str, also: Iterable[str] = ()) -> tuple[str, ...]:
    """Datasets of a comma-separated list of suite and dataset names, in order, without repeats.

    ``also``: more dataset names to accept (the presentation commands pass the store's, which may hold
    ``--dataset-file`` datasets this process never registered)."""
    extra = set(also)
    names: list[str] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        if part in SUITES:
            names += SUITES[part]
        elif part in DATASETS or part in extra:
            names.append(part)
        else:
            known = dict.fromkeys([*SUITES, *DATASETS.names(), *sorted(extra)])  # a stored dataset is often registered too
            raise unknown_name("suite or dataset", part, list(known))
    if not names:
        raise HarnessError(
            f"--suite {spec!r} names no suite or dataset; pass e.g. --suite qa12 or --suite nq,popqa ({', '.join(SUITES)})"
        )
    return tuple(dict.fromkeys(names))


def covering_suite(datasets: Iterable[str]) -> str:
    """The suite to average ``datasets`` (a store's) over when none is named.

    The smallest registered suite that holds every one of them, when they cover at least half of it (the main
    job's 11 datasets -> ``qa12``, a qa9 run -> ``qa9``); else the datasets themselves, comma-separated, in the
    registry's order (a run on ``nq`` alone -> ``nq``; a dataset not registered, e.g. a ``--dataset-file``, last)."""
    stored = set(datasets)
    holding = sorted((len(members), name) for name, members in SUITES.items() if stored <= set(members))
    if holding and 2 * len(stored) >= holding[0][0]:
        return holding[0][1]
    order = DATASETS.names()
    return ",".join(sorted(stored, key=lambda d: (order.index(d) if d in order else len(order), d)))
