"""Named groups of datasets. Every dataset name is also a suite of one."""

from __future__ import annotations

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


def resolve_suite(spec: str) -> tuple[str, ...]:
    """Datasets of a comma-separated list of suite and dataset names, in order, without repeats."""
    names: list[str] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        if part in SUITES:
            names += SUITES[part]
        elif part in DATASETS:
            names.append(part)
        else:
            raise unknown_name("suite or dataset", part, [*SUITES, *DATASETS.names()])
    if not names:
        raise HarnessError(
            f"--suite {spec!r} names no suite or dataset; pass e.g. --suite qa12 or --suite nq,popqa ({', '.join(SUITES)})"
        )
    return tuple(dict.fromkeys(names))
