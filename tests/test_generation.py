"""The generation engine on a tiny random Llama: equivalences that make method comparisons fair."""

from dataclasses import replace

import pytest
import torch
from tiny_model import tiny_loaded

from harness.generation import DecodingConfig, HFBackend, postprocess
from harness.segments import (
    PASSAGE_RESERVE,
    EmbeddingSegment,
    TokenSegment,
    build_segments,
    input_length,
    split_after_passages,
    tokenize,
)
from harness.templates import CLOSED_BOOK, CONCAT, PROMPT, SPRING
from harness.types import Passage

PASSAGES = [
    Passage("a", "Paris", "Paris is the capital and most populous city of France."),
    Passage("b", "Darwin", "Charles Darwin was an English naturalist, geologist and biologist."),
    Passage("c", "Fox", "The quick brown fox jumps over the lazy dog."),
]
QUESTIONS = ["who was darwin?", "what is the capital of france", "which fox?"]
FREE = DecodingConfig(max_new_tokens=10, stop_at_newline=False)


@pytest.fixture(scope="module")
def backend():
    return HFBackend(tiny_loaded())


def _inputs(tokenizer):
    """Mixed methods and passage counts, so lengths differ and batches need padding."""
    inputs = []
    for i, question in enumerate(QUESTIONS):
        inputs.append(build_segments(PROMPT, question, PASSAGES[: i % 3 + 1], tokenizer))
        inputs.append(build_segments(CONCAT, question, PASSAGES[i % 2 :], tokenizer))
        inputs.append(build_segments(CLOSED_BOOK, question, [], tokenizer))
    return inputs


def _ids(segments):
    return [i for s in segments for i in s.ids]


def test_embeddings_equal_token_ids_through_hf_generate(backend):
    """Our decode loop from inputs_embeds == transformers' own generate() from input_ids, token for token."""
    tokenizer, model = backend.tokenizer, backend.model
    for segments in _inputs(tokenizer)[:4]:
        ours = backend.generate([segments], FREE)[0]
        ids = torch.tensor([_ids(segments)])
        reference = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=10,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
        )[0, ids.shape[1] :].tolist()
        eos = [j for j, t in enumerate(reference) if t in backend.eos_ids]
        assert list(ours.token_ids) == reference[: eos[0]] if eos else reference
        assert ours.input_tokens == ids.shape[1]


def test_embedding_segment_equals_its_tokens(backend):
    """A segment given as embedding rows (how virtual tokens enter) behaves exactly like the same tokens."""
    segments = build_segments(PROMPT, "who was darwin?", PASSAGES, backend.tokenizer)
    rows = backend.model.get_input_embeddings().weight[list(segments[-1].ids)]
    as_rows = [*segments[:-1], EmbeddingSegment(rows.clone())]
    assert backend.generate([as_rows], FREE)[0] == backend.generate([segments], FREE)[0]


def test_results_do_not_depend_on_batch_size(backend):
    inputs = _inputs(backend.tokenizer)
    expected = backend.generate(inputs, DecodingConfig(batch_size=1, max_new_tokens=8))
    for batch_size in (4, 9):
        assert backend.generate(inputs, DecodingConfig(batch_size=batch_size, max_new_tokens=8)) == expected


def test_rows_joining_a_running_batch_answer_as_alone(backend, monkeypatch):
    """Continuous batching: rows that finish early free their slots, waiting inputs are prefilled and join the
    running batch (left-padded to its width), and every answer is still the one it gets at batch size 1."""
    inputs = _inputs(backend.tokenizer)
    config = DecodingConfig(batch_size=1, max_new_tokens=8, stop_at_newline=False)
    alone = backend.generate(inputs, config)
    # End answers at a token some of them produce early, so rows finish at different steps.
    early = [g.token_ids[2] for g in alone if len(g.token_ids) > 2]
    monkeypatch.setattr(backend.stop_rule, "eos_ids", frozenset({early[0], early[1]}))
    expected = backend.generate(inputs, config)
    assert len({len(g.token_ids) for g in expected}) > 2
    joins = []
    join = backend._join
    monkeypatch.setattr(backend, "_join", lambda batch, *rest: joins.append(batch is not None) or join(batch, *rest))
    for batch_size in (2, 4):
        joins.clear()
        assert backend.generate(inputs, replace(config, batch_size=batch_size)) == expected
        assert any(joins)  # some rows joined a batch already decoding
        grouped = backend.generate(inputs, replace(config, batch_size=batch_size), reuse_prefix=True)
        assert grouped == expected


def test_prefix_kv_once_then_suffixes_equals_full_sequences(backend):
    """Passages block computed once; an instruction, bare question and k virtual tokens continue from it."""
    tokenizer = backend.tokenizer
    torch.manual_seed(0)
    virtual = torch.randn(6, backend.model.config.hidden_size)
    full = [
        build_segments(PROMPT, "who was darwin?", PASSAGES, tokenizer),
        build_segments(CONCAT, "who was darwin?", PASSAGES, tokenizer),
        *[
            build_segments(SPRING, "who was darwin?", PASSAGES, tokenizer, virtual=EmbeddingSegment(virtual[:k]))
            for k in (1, 3, 6)
        ],
    ]
    prefix, _ = split_after_passages(full[0])
    cache = backend.prefill([prefix])  # once
    suffixes = [split_after_passages(segments)[1] for segments in full]
    continued = backend.generate(suffixes, FREE, prefix=cache.select([0] * len(suffixes)))
    assert continued == backend.generate(full, FREE)
    assert {g.token_ids for g in continued}.__len__() > 1  # the suffixes really lead to different answers


def test_forward_with_prefix_matches_full_and_trains_virtual_tokens(backend):
    """Training path: logits after a no-grad prefix equal the full sequence's; gradients reach the rows."""
    tokenizer = backend.tokenizer
    rows = torch.randn(4, backend.model.config.hidden_size, requires_grad=True)
    full = [build_segments(SPRING, q, PASSAGES, tokenizer, virtual=EmbeddingSegment(rows)) for q in QUESTIONS[:2]]
    prefix, _ = split_after_passages(full[0])
    suffixes = [split_after_passages(segments)[1] for segments in full]
    continued, mask = backend.forward(suffixes, prefix=backend.prefill([prefix]).select([0, 0]))
    whole, whole_mask = backend.forward(full)
    for row in range(2):  # compare the real (unpadded) suffix positions
        n = int(mask[row].sum())
        assert torch.allclose(continued[row, -n:], whole[row, -n:], atol=1e-4)
    continued[:, -1].logsumexp(-1).sum().backward()
    assert rows.grad is not None and rows.grad.abs().sum() > 0


def test_grouped_prefix_reuse_equals_plain(backend):
    inputs = _inputs(backend.tokenizer)
    config = DecodingConfig(batch_size=4, max_new_tokens=10, stop_at_newline=False)
    assert backend.generate(inputs, config, reuse_prefix=True) == backend.generate(inputs, config)


def test_prefill_in_chunks_equals_one_forward(backend, monkeypatch):
    """More prefixes than PREFILL_ROWS are prefilled a chunk at a time and joined: the same cache, padded alike."""
    import harness.generation as generation

    prefixes = [split_after_passages(segments)[0] for segments in _inputs(backend.tokenizer)]
    prefixes = [prefix for prefix in prefixes if prefix]
    whole = backend.prefill(prefixes)
    monkeypatch.setattr(generation, "PREFILL_ROWS", 2)
    chunked = backend.prefill(prefixes)
    assert len({input_length(prefix) for prefix in prefixes}) > 2  # the chunks have different widths
    assert torch.equal(chunked.attention_mask, whole.attention_mask) and torch.equal(chunked.lengths, whole.lengths)
    real = whole.attention_mask.bool()[:, None, :, None]
    for (keys, values), (whole_keys, whole_values) in zip(chunked.layers, whole.layers, strict=True):
        assert torch.allclose(keys * real, whole_keys * real, atol=1e-5)
        assert torch.allclose(values * real, whole_values * real, atol=1e-5)
    config = DecodingConfig(batch_size=9, max_new_tokens=10, stop_at_newline=False)
    assert backend.generate(_inputs(backend.tokenizer), config, reuse_prefix=True) == backend.generate(
        _inputs(backend.tokenizer), config
    )


def test_truncation_applies_to_long_inputs(backend):
    segments = build_segments(PROMPT, "who was darwin?", PASSAGES * 3, backend.tokenizer)
    passage_text = sum(len(s) for s in segments if s.role == "passages")
    other = sum(len(s) for s in segments) - passage_text
    limit = PASSAGE_RESERVE + 40
    assert passage_text > 40
    generation = backend.generate([segments], DecodingConfig(max_input_tokens=limit))[0]
    # Under a cut the question's passage text gets limit - PASSAGE_RESERVE tokens, whatever the method adds.
    assert generation.input_tokens == 40 + other


def test_mixed_precision_is_bf16_prefill_and_independent_of_batching():
    from tiny_model import tiny_model_dir

    from harness.models import load_model

    mixed = HFBackend(load_model(tiny_model_dir(), dtype="mixed", device="cpu"))
    assert mixed.model.dtype == torch.float32  # weights and decoding stay fp32
    inputs = _inputs(mixed.tokenizer)
    expected = mixed.generate(inputs, DecodingConfig(batch_size=1, max_new_tokens=8), reuse_prefix=True)
    for batch_size in (4, 9):
        assert mixed.generate(inputs, DecodingConfig(batch_size=batch_size, max_new_tokens=8), reuse_prefix=True) == expected
    prefixes = [split_after_passages(segments)[0] for segments in inputs[:4]]
    together, alone = mixed.prefill(prefixes), mixed.prefill(prefixes[1:2])
    width = int(alone.lengths[0])
    # A prefix's cache is the same with or without neighbours (it ran alone, without padding) ...
    assert torch.equal(together.layers[0][0][1, :, -width:], alone.layers[0][0][0])
    assert mixed._bf16_model.dtype == torch.bfloat16
    # ... and it is bf16's: values representable in bf16, unlike fp32's own prefill of the same prefix.
    keys = alone.layers[-1][0]
    assert keys.dtype == torch.float32 and torch.equal(keys, keys.to(torch.bfloat16).float())
    fp32_keys = HFBackend(tiny_loaded()).prefill(prefixes[1:2]).layers[-1][0]
    assert not torch.equal(fp32_keys, keys)


class Scripted(HFBackend):
    """The real decode loop driven by scripted next tokens (keyed by each row's input length)."""

    def __init__(self, loaded, scripts):
        super().__init__(loaded)
        self.scripts = scripts  # input length -> tokens to emit in order

    def _forward(self, embeds, mask, positions, cache):
        logits = torch.zeros(embeds.shape[0], self.model.config.vocab_size)
        for row, position in enumerate(positions[:, -1].tolist()):
            for length, script in self.scripts.items():
                if length - 1 <= position < length - 1 + len(script):
                    logits[row, script[position - length + 1]] = 1.0
        return logits


def test_stop_rules_and_postprocessing_in_the_loop():
    loaded = tiny_loaded()
    tokenizer = loaded.tokenizer
    newline, eos = tokenize(tokenizer, "\n"), tokenizer.eos_token_id
    assert len(newline) == 1
    paris, darwin, answer = tokenize(tokenizer, "Paris"), tokenize(tokenizer, " Darwin"), tokenize(tokenizer, "Answer:")
    filler = tokenize(tokenizer, "a")
    scripts = {
        1: [*newline, *paris, *newline, *filler],  # a leading newline is skipped; the next one stops
        40: [*answer, *darwin, eos, *filler],  # EOS stops (and is not part of the output)
        80: filler * 30,  # never stops: max_new_tokens
    }
    backend = Scripted(loaded, scripts)
    inputs = [[TokenSegment([5] * length)] for length in scripts]
    first, second, third = backend.generate(inputs, DecodingConfig(max_new_tokens=5, batch_size=3))
    assert (first.raw, first.prediction, first.stop) == ("\nParis\n", "Paris", "newline")
    assert (second.raw, second.prediction, second.stop) == ("Answer: Darwin", "Darwin", "eos")
    assert (len(third.token_ids), third.stop) == (5, "length")
    # without the newline rule the first row runs on
    free = backend.generate(inputs[:1], DecodingConfig(max_new_tokens=5, stop_at_newline=False))[0]
    assert free.raw.startswith("\nParis\na") and free.prediction == "Paris"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  Paris  ", "Paris"),
        ("\nParis\nFrance", "Paris"),
        ("Answer: Paris", "Paris"),
        (" answer:Charles Darwin\nQuestion: x", "Charles Darwin"),
        ("The Answer: is here", "The Answer: is here"),
        ("", ""),
    ],
)
def test_postprocess(raw, expected):
    assert postprocess(raw) == expected


def test_decoding_spec_excludes_batch_size():
    assert DecodingConfig(batch_size=1).spec() == DecodingConfig(batch_size=64).spec()
    assert DecodingConfig().spec()["max_new_tokens"] == 32
