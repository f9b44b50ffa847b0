"""How many questions a comparison needs: the sample-size rule behind the CPU default.

The question a run answers is "does method X beat method Y on the in-domain average, and by how much?". Its
uncertainty is the paired 95% bootstrap CI of the macro-average EM difference (``harness.leaderboard``). With n
questions per dataset on D datasets and a per-question difference d (in {-1, 0, 1} for EM) of variance s^2 in
each dataset, the macro average has variance s^2 / (D n), so its CI half-width is about z * s / sqrt(D n), and

    n = ceil(z^2 s^2 / (D h^2))

questions per dataset give a half-width of at most h. ``s^2`` is measured, not guessed:
:data:`MEASURED_VARIANCE` is the pooled in-domain variance of the per-question EM difference between SPRING
(k=50) and the strongest cheap reference on the default backbone (see its comment for the run it comes from);
:func:`difference_variance` re-measures it on any store.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Z95 = 1.959964
TARGET_HALF_WIDTH = 0.05  # +-5 EM points on the in-domain average difference
# Pooled in-domain variance of the per-question EM difference between a trained method and the strongest cheap
# reference, measured on SmolLM2-135M-Instruct (BM25 top-3, inputs cut to 384 tokens, the CPU training budget):
# the main job with 20 questions per dataset gave 0.101 (lora - prompt-fewshot), 0.084 (spring - prompt-fewshot),
# 0.100 (spring - prompt-chat) over the 7 offline in-domain datasets; the largest is used. Better-trained methods
# disagree with the references more often, so re-measure (difference_variance) when the training budget grows.
MEASURED_VARIANCE = 0.101
# What the main job affords within 15 minutes on 2 cores (benchmarks/main_job.py: 871-873 s at 20): after about
# 6.5 minutes of training, evaluating its 5 method columns on the 11 offline datasets costs ~24 s per question
# per dataset, so the rule's 23 would take ~16 minutes.
CPU_AFFORDABLE_PER_DATASET = 20
# `harness preserve`: the variance of the per-document accuracy difference (method - base) on one task, the largest
# over MMLU 0/5-shot and BoolQ 0-shot of LoRA's and plugged SPRING's, measured after the main job on
# SmolLM2-135M-Instruct with 200 documents per task: lora 0.116 / 0.174 / 0.093, spring plugged 0.000 / 0.171 /
# 0.087 (MMLU 0-shot, 5-shot, BoolQ); the largest (lora, MMLU 5-shot) is used, so +-5 points needs 268.
PRESERVE_MEASURED_VARIANCE = 0.174
# Documents per task that `harness preserve --tasks mmlu,boolq` affords in 15 minutes on 2 cores (fp32) for base,
# LoRA and SPRING unplugged and plugged, 3 cells each (MMLU 0- and 5-shot, BoolQ 0-shot): 200 took 23 min 15 s
# (per method 55 s + 228 s + 55 s), so 114 (two per MMLU subject) is what fits.
PRESERVE_CPU_AFFORDABLE = 114


@dataclass(frozen=True)
class SampleSize:
    """The CPU default's questions per dataset and what they buy."""

    n: int  # questions per dataset actually used
    n_for_target: int  # what the power rule asks for
    half_width: float  # the expected CI half-width at n (EM, 0..1)
    datasets: int
    # How the header names them: the main job's questions, or `harness preserve`'s documents per task.
    per: str = "per dataset"
    metric: str = "EM"
    scope: str = "on the in-domain average"

    def describe(self) -> str:
        if self.n >= self.n_for_target:
            return (
                f"{self.n} {self.per}: the power rule's n for a +-{100 * TARGET_HALF_WIDTH:.0f} {self.metric} CI "
                f"half-width {self.scope}" + (f" ({self.datasets} datasets)" if self.datasets > 1 else "")
            )
        return (
            f"{self.n} {self.per} (expected CI half-width +-{100 * self.half_width:.1f} {self.metric} {self.scope}; "
            f"+-{100 * TARGET_HALF_WIDTH:.0f} needs {self.n_for_target}, beyond the 15-minute CPU budget: --limit "
            f"{self.n_for_target})"
        )


def questions_needed(variance: float, datasets: int, half_width: float = TARGET_HALF_WIDTH, z: float = Z95) -> int:
    """Questions per dataset for a CI half-width of at most ``half_width`` on the macro average of ``datasets``."""
    if datasets < 1:
        raise ValueError("the rule needs at least one dataset")
    return max(1, math.ceil(z * z * variance / (datasets * half_width * half_width)))


def expected_half_width(variance: float, n: int, datasets: int, z: float = Z95) -> float:
    """The CI half-width ``n`` questions per dataset give on the macro average of ``datasets``."""
    return z * math.sqrt(variance / (datasets * n))


def cpu_sample_size(
    in_domain_datasets: int, variance: float = MEASURED_VARIANCE, affordable: int = CPU_AFFORDABLE_PER_DATASET
) -> SampleSize:
    """The CPU default: the power rule's n, capped by what the 15-minute budget affords (the README says which)."""
    datasets = max(in_domain_datasets, 1)
    needed = questions_needed(variance, datasets)
    n = min(needed, affordable)
    return SampleSize(n=n, n_for_target=needed, half_width=expected_half_width(variance, n, datasets), datasets=datasets)


def preserve_sample_size(variance: float | None = None, affordable: int | None = None) -> SampleSize:
    """`harness preserve`'s CPU default: documents per task for a +-5 point CI on a method's accuracy difference
    to base (each task on its own, so D = 1), capped by what 15 minutes afford for base, LoRA and SPRING
    (defaults: :data:`PRESERVE_MEASURED_VARIANCE`, :data:`PRESERVE_CPU_AFFORDABLE`)."""
    variance = PRESERVE_MEASURED_VARIANCE if variance is None else variance
    affordable = PRESERVE_CPU_AFFORDABLE if affordable is None else affordable
    needed = questions_needed(variance, 1)
    n = min(needed, affordable)
    return SampleSize(
        n=n,
        n_for_target=needed,
        half_width=expected_half_width(variance, n, 1),
        datasets=1,
        per="documents per task",
        metric="acc",
        scope="on a method's difference to base",
    )


def difference_variance(differences: Sequence[Sequence[float]]) -> float:
    """Pooled variance of per-question paired differences, one sequence per dataset (each its own mean)."""
    pooled = [np.asarray(d, dtype=np.float64) for d in differences if len(d) > 1]
    if not pooled:
        raise ValueError("no dataset with at least two paired questions")
    return float(np.mean([d.var(ddof=1) for d in pooled]))


__all__ = [
    "CPU_AFFORDABLE_PER_DATASET",
    "MEASURED_VARIANCE",
    "PRESERVE_CPU_AFFORDABLE",
    "PRESERVE_MEASURED_VARIANCE",
    "TARGET_HALF_WIDTH",
    "SampleSize",
    "cpu_sample_size",
    "difference_variance",
    "expected_half_width",
    "preserve_sample_size",
    "questions_needed",
]
