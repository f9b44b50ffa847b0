"""The sample-size rule of the CPU default, and the dtype choice in result keys."""

import math

import numpy as np
import pytest
from tiny_world import run_config

from harness import models
from harness.power import (
    TARGET_HALF_WIDTH,
    Z95,
    cpu_sample_size,
    difference_variance,
    expected_half_width,
    questions_needed,
)
from harness.runner import RunContext, plan


def test_questions_needed_meets_the_half_width_and_one_fewer_does_not():
    # var 0.25 (a difference of +-1 on a quarter of the questions), 7 datasets: 1.96^2 * 0.25 / (7 * 0.05^2) = 54.9
    n = questions_needed(0.25, 7)
    assert n == 55
    assert expected_half_width(0.25, n, 7) <= TARGET_HALF_WIDTH < expected_half_width(0.25, n - 1, 7)
    assert questions_needed(0.25, 7, half_width=0.10) == 14
    assert questions_needed(1.0, 1) == math.ceil(Z95**2 / 0.0025) == 1537


def test_the_rule_matches_the_bootstrap_it_predicts():
    # Simulated paired EM differences with variance ~0.25 on 7 datasets of the rule's n: the percentile bootstrap
    # of the macro average (as the leaderboard computes it) has a half-width within 10% of the rule's +-5.
    rng = np.random.default_rng(0)
    n = questions_needed(0.25, 7)
    diffs = [rng.choice([-1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0], size=n) for _ in range(7)]
    means = np.mean([d[rng.integers(0, n, size=(2000, n))].mean(axis=1) for d in diffs], axis=0)
    low, high = np.quantile(means, [0.025, 0.975])
    assert (high - low) / 2 == pytest.approx(expected_half_width(difference_variance(diffs), n, 7), rel=0.1)
    assert difference_variance([[1.0, -1.0, 0.0, 0.0], [1.0, 1.0]]) == pytest.approx(np.mean([2 / 3, 0.0]))


def test_cpu_sample_size_caps_at_the_affordable_and_says_so():
    capped = cpu_sample_size(7, variance=0.25, affordable=30)
    assert (capped.n, capped.n_for_target) == (30, 55)
    assert "+-6.8 EM" in capped.describe() and "needs 55" in capped.describe()
    met = cpu_sample_size(7, variance=0.25, affordable=80)
    assert met.n == 55 and "the power rule's n" in met.describe()


def test_preserve_sample_is_per_task_with_its_half_width():
    from harness.power import preserve_sample_size

    # D = 1: n = ceil(1.96^2 * 0.25 / 0.05^2) = 385 documents for +-5 points on one task's difference.
    capped = preserve_sample_size(variance=0.25, affordable=200)
    assert (capped.n, capped.n_for_target) == (200, 385)
    assert round(100 * capped.half_width, 1) == 6.9
    assert capped.describe() == (
        "200 documents per task (expected CI half-width +-6.9 acc on a method's difference to base; +-5 needs 385, "
        "beyond the 15-minute CPU budget: --limit 385)"
    )
    assert preserve_sample_size(variance=0.05, affordable=200).n == 77


def test_the_resolved_dtype_is_part_of_every_cell_key(world, monkeypatch):
    keys = {}
    for native in (False, True):
        monkeypatch.setattr(models, "cpu_has_native_bf16", lambda native=native: native)
        config = run_config(world, dtype="auto", methods=("prompt",))
        cells, _ = plan(config, RunContext(config, log=lambda _: None))
        keys[native] = cells[0]
        assert cells[0].spec.model["dtype"] == ("mixed" if native else "fp32")
    assert keys[True].key != keys[False].key
