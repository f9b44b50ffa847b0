"""Scorers against exact values worked out by hand from the SQuAD v1.1 definitions, and against a verbatim copy
of the official v1.1 evaluation functions."""

import collections
import random
import re
import string

import pytest

from harness.metrics import accuracy, bootstrap_ci, exact_match, f1, normalize_answer, regex_match


# --- Verbatim from the official SQuAD v1.1 evaluate-v1.1.py (the reference definition) -------------------
def ref_normalize_answer(s):
    def remove_articles(text):
        return re.sub(r"\b(a|an|the)\b", " ", text)

    def white_space_fix(text):
        return " ".join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    def lower(text):
        return text.lower()

    return white_space_fix(remove_articles(remove_punc(lower(s))))


def ref_f1_score(prediction, ground_truth):
    prediction_tokens = ref_normalize_answer(prediction).split()
    ground_truth_tokens = ref_normalize_answer(ground_truth).split()
    common = collections.Counter(prediction_tokens) & collections.Counter(ground_truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(prediction_tokens)
    recall = 1.0 * num_same / len(ground_truth_tokens)
    return (2 * precision * recall) / (precision + recall)


def ref_exact_match_score(prediction, ground_truth):
    return ref_normalize_answer(prediction) == ref_normalize_answer(ground_truth)


def ref_metric_max_over_ground_truths(metric_fn, prediction, ground_truths):
    return max(metric_fn(prediction, gt) for gt in ground_truths)


# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The Denver Broncos!", "denver broncos"),
        ("  denver\n\tbroncos ", "denver broncos"),
        ("U.S.A.", "usa"),
        ("Another theater, an apple", "another theater apple"),
        ("Janet's", "janets"),
        ("Janet’s", "janet’s"),  # the curly apostrophe is not ASCII punctuation: kept, as in the official script
        ("1901—1902", "1901—1902"),  # so is the em dash
        ("Wilhelm Conrad RÖNTGEN", "wilhelm conrad röntgen"),
        ("the", ""),
        ("", ""),
    ],
)
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected
    assert ref_normalize_answer(text) == expected


@pytest.mark.parametrize(
    ("prediction", "golds", "em", "f1_value"),
    [
        ("The Denver Broncos!", ["denver broncos"], 1.0, 1.0),
        ("Denver Broncos won", ["Denver Broncos"], 0.0, 0.8),
        ("the the cat cat cat", ["cat cat dog"], 0.0, 2 / 3),  # multiset: only two "cat" tokens are shared
        ("red green blue", ["green blue yellow purple"], 0.0, 4 / 7),
        ("New York City", ["York", "New York"], 0.0, 0.8),  # max over golds
        ("", ["anything"], 0.0, 0.0),
        ("", ["the"], 1.0, 0.0),  # both normalise to "": EM 1, but v1.1 F1 has no shared token -> 0
        ("Wilhelm Conrad Röntgen", ["wilhelm conrad röntgen"], 1.0, 1.0),
        ("Rontgen", ["Röntgen"], 0.0, 0.0),  # no accent folding
        ("1901—1902", ["1901 1902"], 0.0, 0.0),
        ("Janet's", ["Janets"], 1.0, 1.0),
        ("U.S.A.", ["USA"], 1.0, 1.0),
    ],
)
def test_exact_match_and_f1_exact_values(prediction, golds, em, f1_value):
    assert exact_match(prediction, golds) == em
    assert f1(prediction, golds) == pytest.approx(f1_value, abs=1e-15)
    assert exact_match(prediction, golds) == float(ref_metric_max_over_ground_truths(ref_exact_match_score, prediction, golds))
    assert f1(prediction, golds) == ref_metric_max_over_ground_truths(ref_f1_score, prediction, golds)


def test_scores_equal_official_script_on_random_strings():
    rng = random.Random(13)
    vocabulary = ["a", "an", "the", "The", "cat", "Cat.", "dog,", "x", "ü", "—", "it's", "NEW", "york", "", " "]
    for _ in range(2000):
        prediction = " ".join(rng.choice(vocabulary) for _ in range(rng.randint(0, 6)))
        golds = [" ".join(rng.choice(vocabulary) for _ in range(rng.randint(0, 4))) for _ in range(rng.randint(1, 3))]
        assert f1(prediction, golds) == ref_metric_max_over_ground_truths(ref_f1_score, prediction, golds)
        assert exact_match(prediction, golds) == float(
            ref_metric_max_over_ground_truths(ref_exact_match_score, prediction, golds)
        )


@pytest.mark.parametrize(
    ("prediction", "golds", "expected"),
    [
        ("I think it was the Denver Broncos, yes", ["The Denver Broncos"], 1.0),
        ("Denver", ["Denver Broncos"], 0.0),
        ("catalog", ["cat"], 1.0),  # substring of the normalised text, not token-bounded
        ("Paris.", ["London", "paris"], 1.0),
        ("", ["x"], 0.0),
    ],
)
def test_accuracy(prediction, golds, expected):
    assert accuracy(prediction, golds) == expected


MCKINLEY = r"20\s?,?\s?(32|40)0\s?-?\s?f(ee|oo)t|6,194-meter|20,?237\s*f(oo|ee)?t|20,?073\s*f(oo|ee)?t|6,?168\s*m|6,118\s*m|6\,194 m|20\,322 feet"


@pytest.mark.parametrize(
    ("prediction", "golds", "expected"),
    [
        ("20,320 feet tall", [MCKINLEY], 1.0),
        ("20320 FEET", [MCKINLEY], 1.0),  # case-insensitive
        ("6,194-meter", [MCKINLEY], 1.0),
        ("It is 20,320 feet", [MCKINLEY], 0.0),  # DrQA anchors the match at the start of the prediction
        ("PARIS", ["London", "paris"], 1.0),
        ("", ["paris"], 0.0),
    ],
)
def test_regex_match(prediction, golds, expected):
    assert regex_match(prediction, golds) == expected


def test_invalid_gold_regex_names_the_pattern():
    with pytest.raises(ValueError, match=r"not a valid regular expression"):
        regex_match("x", ["(unclosed"])


def test_scorers_reject_missing_or_string_golds():
    with pytest.raises(ValueError, match="no gold"):
        f1("x", [])
    with pytest.raises(TypeError, match="list of answers"):
        exact_match("x", "x")


def test_bootstrap_ci():
    mean, low, high = bootstrap_ci([1.0] * 10)
    assert (mean, low, high) == (1.0, 1.0, 1.0)
    values = [1.0] * 30 + [0.0] * 70
    mean, low, high = bootstrap_ci(values, seed=0)
    assert mean == 0.3
    assert 0.18 < low < 0.3 < high < 0.42
    assert bootstrap_ci(values, seed=0) == (mean, low, high)  # deterministic for a seed
    with pytest.raises(ValueError):
        bootstrap_ci([])
