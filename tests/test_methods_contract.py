"""The shared contract every registered method passes, on the tiny model."""

import json
from collections.abc import Callable

import pytest
from tiny_model import tiny_loaded

from harness.errors import UnknownNameError
from harness.generation import DecodingConfig, Generation, HFBackend
from harness.methods.base import Method
from harness.plugins import METHODS
from harness.segments import EmbeddingSegment, TokenSegment, input_length
from harness.types import Example, Passage

EXAMPLE = Example("t/1", "who was charles darwin?", ["English naturalist"])
PASSAGES = [
    Passage("a", "Darwin", "Charles Darwin was an English naturalist, geologist and biologist."),
    Passage("b", "Paris", "Paris is the capital of France."),
]


def _prepared_spring() -> Method:
    """SPRING with random tokens in place of trained ones (training has its own tests in test_spring.py)."""
    import torch

    method = METHODS.get("spring")(tokens=2, n=3)
    method.weights = torch.randn(3, tiny_loaded().model.config.hidden_size, generator=torch.Generator().manual_seed(0))
    return method


# Methods that need training or extra inputs before they can build an input give a factory here.
def _prepared_spring_plus() -> Method:
    method = METHODS.get("spring-plus")(tokens=2, n=3)
    method.weights = _prepared_spring().weights
    return method


def _prepared_prefix() -> Method:
    method = METHODS.get("prefix")(tokens=2, n=3)
    method.weights = _prepared_spring().weights
    return method


def _prepared_fewshot() -> Method:
    """Two solved examples as the runner would draw them (drawing has its own tests in test_reference_baselines.py)."""
    method = METHODS.get("prompt-fewshot")(shots=2)
    method.examples = (
        (Example("s/1", "what is the capital of france?", ("Paris",)), (PASSAGES[1],)),
        (Example("s/2", "who was darwin?", ("a naturalist",)), (PASSAGES[0], PASSAGES[1])),
    )
    return method


SETUP: dict[str, Callable[[], Method]] = {
    "prompt-fewshot": _prepared_fewshot,
    "spring": _prepared_spring,
    "spring-plus": _prepared_spring_plus,
    "prefix": _prepared_prefix,
}


@pytest.fixture(scope="module")
def backend():
    return HFBackend(tiny_loaded())


def _make(name: str) -> Method:
    return SETUP[name]() if name in SETUP else METHODS.get(name)()


def test_the_paper_baselines_are_registered():
    assert {"closed-book", "concat", "prompt"} <= set(METHODS.names())
    with pytest.raises(UnknownNameError, match="Did you mean 'prompt'"):
        METHODS.check("promt")


@pytest.mark.parametrize("name", METHODS.names())
def test_spec_is_canonical_json_with_the_template_hash(name):
    method = _make(name)
    spec = method.spec()
    assert spec["method"] == name == method.name
    assert spec["template"] == method.template.spec()
    assert json.loads(json.dumps(spec, sort_keys=True)) == spec
    assert _make(name).spec() == spec  # deterministic


@pytest.mark.parametrize("name", METHODS.names())
def test_build_input_gives_segments_that_generate(name, backend):
    method = _make(name)
    segments = method.build_input(EXAMPLE, PASSAGES, backend.tokenizer)
    assert segments and all(isinstance(s, TokenSegment | EmbeddingSegment) for s in segments)
    closed = method.build_input(EXAMPLE, [], backend.tokenizer)
    if method.uses_passages:
        assert input_length(segments) > input_length(closed)
    else:
        assert segments == closed  # passages are ignored
    generations = backend.generate([segments, closed], DecodingConfig(max_new_tokens=4))
    assert all(isinstance(g, Generation) and len(g.token_ids) <= 4 for g in generations)


@pytest.mark.parametrize("name", METHODS.names())
def test_render_matches_the_segments(name, backend):
    method = _make(name)
    if any(isinstance(s, EmbeddingSegment) for s in method.build_input(EXAMPLE, PASSAGES, backend.tokenizer)):
        pytest.skip("inputs with virtual tokens have no plain-text form")
    tokenizer = backend.tokenizer
    text = tokenizer.decode([i for s in method.build_input(EXAMPLE, PASSAGES, tokenizer) for i in s.ids])
    rendered = method.render(EXAMPLE, PASSAGES)
    if method.chat_template:
        chat = [{"role": "user", "content": rendered}]
        assert text == tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    else:
        assert text == tokenizer.bos_token + rendered


def test_chat_template_is_a_parameter_in_the_spec():
    assert _make("prompt").spec()["params"] == {"chat_template": False}
    assert METHODS.get("prompt")(chat_template=True).spec()["params"] == {"chat_template": True}


# Training options that keep every trained method's run to a few tiny steps (TrainingConfig fields: any trained method).
TINY_TRAINING = (("examples", "2"), ("batch_size", "2"), ("dev_examples", "0"), ("eval_every", "0"))


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_runs_through_the_engine(name, world):
    """The whole path the engine takes with a method, with no per-method set-up here: options, prepare (training
    included), prepare_dataset, backend_for, build_input, a stored and scored cell, then the same cell read back."""
    from tiny_world import run_config

    from harness.runner import RunContext, run
    from harness.store import Store

    cls = METHODS.get(name)
    options = tuple((f"{name}.{key}", value) for key, value in TINY_TRAINING) if cls.trained else ()
    config = run_config(world, methods=(name,), tokens=(2,), shots=(1,), limit=2, method_options=options)
    context = RunContext(config)
    cells, notices = run(config, context)
    assert not notices, notices
    assert len(cells) == 1 and cells[0].spec.method["name"] == name
    # Cells are grouped by backend_key, so it names the backend backend_for gives: None for the shared base one.
    method = cells[0].method
    key = method.backend_key(context)
    assert (method.backend_for(context) is context.backend) == (key is None)
    assert method.backend_key(context) == key
    stored = Store(world["results"]).load(cells[0].key)
    assert [row["id"] for row in stored.predictions()] == [e.id for e in cells[0].examples]
    assert set(stored.metrics["metrics"]) >= {"exact_match", "f1"}
    again, _ = run(config)  # a second run plans the same key and computes nothing
    assert [cell.key for cell in again] == [cells[0].key]


@pytest.mark.parametrize("name", METHODS.names())
def test_options_are_declared_typed_and_documented(name):
    import dataclasses

    from harness.errors import HarnessError
    from harness.options import declared_values, option_fields

    cls = METHODS.get(name)
    assert dataclasses.is_dataclass(cls.Options) and cls.Options.__dataclass_params__.frozen
    fields = option_fields(cls.Options)
    assert all(f.help and f.kind in (int, float, bool, str) for f in fields.values())
    assert cls().spec()["method"] == name  # the declared defaults build the method
    for f in fields.values():  # every option's text form goes through the router back to its default
        if f.default is not None:
            text = str(f.default).lower() if f.kind is bool else str(f.default)
            assert declared_values(name, cls.Options, [(f.name, text)]) == {f.name: f.default}
    with pytest.raises(HarnessError, match="no_such_key"):
        declared_values(name, cls.Options, [("no_such_key", "1")])
