"""Answer scoring with the semantics of the official SQuAD v1.1 evaluation script.

Every scorer takes ``(prediction, golds)`` and returns the maximum over the gold answers, as a float with no
rounding. ``regex_match`` follows DrQA's CuratedTREC evaluation (case-insensitive ``re.match``).
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np

__all__ = [
    "METRICS",
    "METRIC_LABELS",
    "SCORER_VERSION",
    "accuracy",
    "bootstrap_ci",
    "exact_match",
    "f1",
    "normalize_answer",
    "regex_match",
]

# Bump when any scorer's output could change: it is part of every result key.
SCORER_VERSION = "squad-v1.1/1"

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """Lower-case, remove ASCII punctuation, drop the articles a/an/the, collapse whitespace (SQuAD v1.1)."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _exact_match_one(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def _f1_one(prediction: str, gold: str) -> float:
    prediction_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    common = Counter(prediction_tokens) & Counter(gold_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(prediction_tokens)
    recall = num_same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def _accuracy_one(prediction: str, gold: str) -> float:
    return float(normalize_answer(gold) in normalize_answer(prediction))


def _compile_gold_regex(pattern: str) -> re.Pattern:
    try:
        return re.compile(pattern, flags=re.IGNORECASE | re.UNICODE | re.MULTILINE)
    except re.error as error:
        raise ValueError(f"gold answer {pattern!r} is not a valid regular expression: {error}") from error


def _regex_match_one(prediction: str, gold: str) -> float:
    return float(_compile_gold_regex(gold).match(prediction) is not None)


def _max_over_golds(score_one: Callable[[str, str], float]) -> Callable[[str, Sequence[str]], float]:
    def score(prediction: str, golds: Sequence[str]) -> float:
        if isinstance(golds, str):
            raise TypeError("golds must be a list of answers, not a single string")
        if not golds:
            raise ValueError("cannot score an example with no gold answer")
        return max(score_one(prediction, gold) for gold in golds)

    score.__name__ = score_one.__name__.removeprefix("_").removesuffix("_one")
    score.__doc__ = score_one.__doc__
    return score


exact_match = _max_over_golds(_exact_match_one)
exact_match.__doc__ = "1.0 if the normalised prediction equals some normalised gold, else 0.0."
f1 = _max_over_golds(_f1_one)
f1.__doc__ = "Best token-multiset F1 between the normalised prediction and a normalised gold."
accuracy = _max_over_golds(_accuracy_one)
accuracy.__doc__ = "1.0 if some normalised gold is a substring of the normalised prediction, else 0.0."
regex_match = _max_over_golds(_regex_match_one)
regex_match.__doc__ = "1.0 if some gold regex matches the start of the prediction (case-insensitive), else 0.0."

METRICS: dict[str, Callable[[str, Sequence[str]], float]] = {
    "exact_match": exact_match,
    "f1": f1,
    "accuracy": accuracy,
    "regex_match": regex_match,
}
METRIC_DESCRIPTIONS: dict[str, str] = {name: fn.__doc__ or "" for name, fn in METRICS.items()}
METRIC_LABELS: dict[str, str] = {"exact_match": "EM", "f1": "F1", "accuracy": "Acc", "regex_match": "Regex"}


def bootstrap_ci(
    values: Sequence[float], n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """Mean of ``values`` and its percentile-bootstrap confidence interval ``(mean, low, high)``."""
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        raise ValueError("cannot compute a confidence interval of no values")
    rng = np.random.default_rng(seed)
    means = array[rng.integers(0, array.size, size=(n_resamples, array.size))].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(array.mean()), float(low), float(high)


def standard_error(values: list[float]) -> float:
    """The standard error of the mean (sample standard deviation / sqrt(n)), lm-eval's ``*_stderr``; 0 for n < 2."""
    n = len(values)
    if n < 2:
        return 0.0
    mean = sum(values) / n
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n)
