"""Progress of long engine steps: silent without a reporter; the CLI's rich reporter nests steps in one bar and
leaves a line for the slow ones."""

from __future__ import annotations

import itertools
import time

from rich.console import Console

from harness.activity import activity, reporting
from harness.console import rich_reporter


def test_without_a_reporter_a_step_is_silent(capsys):
    with activity("indexing", total=3, unit="passages") as advance:
        advance(3)
    assert capsys.readouterr() == ("", "")


def test_nested_steps_share_one_bar_and_slow_ones_leave_a_line(monkeypatch):
    out = Console(record=True, width=120, force_terminal=False)
    clock = itertools.count(start=0.0, step=1.5)  # each step spans two readings: 1.5 s apart
    monkeypatch.setattr(time, "perf_counter", lambda: next(clock))
    with reporting(rich_reporter(out)), activity("retrieving nq/eval with bm25[k=5]", total=10, unit="q") as outer:
        with activity("bm25 index of tiny: tokenizing", total=4000, unit="passages") as inner:  # mid-search
            inner(4000)
        outer(10)
    lines = [line.strip() for line in out.export_text().splitlines() if line.strip()]
    # The inner step took 1.5 s (no line); the outer one 4.5 s, and its label is printed as typed (no markup).
    assert lines == ["retrieving nq/eval with bm25[k=5]: 10 q in 4.5 s (2 q/s)"]


def test_a_step_inside_a_commands_own_progress_joins_it():
    from rich.progress import Progress

    out = Console(record=True, width=120, force_terminal=False)
    with Progress(console=out) as progress, reporting(rich_reporter(out, progress)):
        with activity("encoding tiny with minilm", total=2, unit="passages") as advance:
            assert [task.description for task in progress.tasks] == ["encoding tiny with minilm"]
            advance(2)
        assert progress.tasks == []  # the step's bar goes when it ends
