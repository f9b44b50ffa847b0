"""SPRING: exact gradients of the prefix-once path, unplugging, checkpoints, training, any-k inference."""

import random

import pytest
import torch
from tiny_model import tiny_loaded, tiny_model_dir

from harness.checkpoints import import_official, load_virtual_tokens, save_virtual_tokens, tensor_hash
from harness.errors import HarnessError
from harness.generation import DecodingConfig, HFBackend
from harness.methods.spring import INIT_TEXT, PLACEMENTS, Spring, SpringTrainer, initial_tokens
from harness.models import load_model
from harness.segments import render_segments, tokenize
from harness.training import TrainingConfig, TrainingData, TrainItem, train
from harness.types import Example, Passage

DARWIN = Passage("p1", "Darwin", "Charles Darwin wrote On the Origin of Species.")
PARIS = Passage("p2", "Paris", "Paris is the capital of France.")


def _items(count=4):
    return [
        TrainItem(Example(f"e{i}", f"who wrote the origin of species {i}", [f"Charles Darwin {i}", "Darwin"]), (DARWIN, PARIS))
        for i in range(count)
    ]


@pytest.fixture(scope="module")
def backend():
    return HFBackend(tiny_loaded())


def _initial(backend, n=6, init="prompt"):
    return initial_tokens(backend.model.get_input_embeddings(), backend.tokenizer, n, init, seed=0)


@pytest.fixture(scope="module")
def backend64():
    """A float64 copy of the tiny model: equal computations then agree far below any rounding doubt."""
    loaded = load_model(str(tiny_model_dir()), dtype="fp32", device="cpu")
    loaded.model.double()
    return HFBackend(loaded)


def test_prefix_once_gradients_equal_full_sequence_backprop(backend64):
    backend = backend64
    method = Spring(tokens=4, n=6)
    results = []
    for naive in (False, True):
        trainer = SpringTrainer(method, backend, _initial(backend), TrainingConfig(max_passages=2), naive=naive)
        loss = trainer.loss(_items(), random.Random(0))  # same seed: same k, m and golds on both paths
        loss.backward()
        results.append((loss.detach(), trainer.weight.grad.clone()))
    (loss_once, grad_once), (loss_naive, grad_naive) = results
    assert abs(float(loss_once) - float(loss_naive)) <= 1e-10
    assert grad_once.abs().max() > 0.1
    assert (grad_once - grad_naive).abs().max() <= 1e-5  # the bound; in float64 it is ~1e-12


def test_initialisation_repeats_the_instruction_embeddings(backend):
    embedding = backend.model.get_input_embeddings().weight
    ids = tokenize(backend.tokenizer, INIT_TEXT)
    tokens = _initial(backend, n=len(ids) + 3)
    assert torch.equal(tokens[: len(ids)], embedding[list(ids)].float())
    assert torch.equal(tokens[len(ids) :], embedding[list(ids[:3])].float())
    random_tokens = _initial(backend, n=5, init="random")
    assert random_tokens.shape == (5, embedding.shape[1]) and not torch.equal(random_tokens, tokens[:5])


def test_training_lowers_the_loss_and_leaves_the_backbone_untouched(backend):
    probe = backend.tokenizer("Question: who wrote it?\nAnswer:", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        before = backend.model(input_ids=probe).logits.clone()
    method = Spring(tokens=3, n=3, fixed_k=True)
    trainer = SpringTrainer(method, backend, _initial(backend, n=3), TrainingConfig(max_passages=2))
    items = [TrainItem(Example("e", "who wrote the origin of species", ["Darwin"]), (DARWIN,))]
    with torch.no_grad():
        start = float(trainer.loss(items, random.Random(1)))
    data = TrainingData(tuple(items), ("toy",), ())
    log = train(trainer, data, TrainingConfig(examples=1, epochs=30, batch_size=1, lr=0.1, seed=0), log=lambda _: None)
    with torch.no_grad():
        end = float(trainer.loss(items, random.Random(1)))
        after = backend.model(input_ids=probe).logits
    assert log.trainable_parameters == 3 * backend.model.config.hidden_size
    assert log.steps == 30 and end < start * 0.5
    assert torch.equal(before, after)  # unplugged, the model is bit-identical to the base model
    assert all(not p.requires_grad for p in backend.model.parameters())


def test_any_prefix_of_the_tokens_generates_and_placements_render(backend):
    method = Spring(tokens=2, n=4)
    method.weights = _initial(backend, n=4)
    example = Example("q", "who wrote it?", ["Darwin"])
    segments = method.build_input(example, [DARWIN], backend.tokenizer)
    assert render_segments(segments, backend.tokenizer) == (
        "<s>[1] Darwin Charles Darwin wrote On the Origin of Species.\n\n<T×2>Question: who wrote it?\nAnswer:"
    )
    outputs = [
        backend.generate(
            [Spring.build_input(_with(method, k), example, [DARWIN], backend.tokenizer)], DecodingConfig(max_new_tokens=4)
        )[0]
        for k in (1, 2, 4)
    ]
    assert all(o.input_tokens == outputs[0].input_tokens + k - 1 for o, k in zip(outputs, (1, 2, 4)))
    assert PLACEMENTS["trq"].render(q="x", passages="P ", T="T ") == "T P Question: x\nAnswer:"
    assert PLACEMENTS["rqt"].render(q="x", passages="P ", T="T ") == "P Question: x\nT Answer:"


def _with(method, k):
    clone = Spring(tokens=k, n=method.n)
    clone.weights = method.weights
    return clone


def test_bad_settings_are_one_line_errors():
    with pytest.raises(HarnessError, match="k=51 with n=50"):
        Spring(tokens=51)
    with pytest.raises(HarnessError, match="unknown placement 'rqq'. Did you mean"):
        Spring(placement="rqq")


def test_checkpoint_round_trip_and_mismatch(tmp_path):
    tokens = torch.randn(5, 8)
    path = tmp_path / "spring.safetensors"
    digest = save_virtual_tokens(path, tokens, {"backbone": "tiny", "backbone_weights_hash": "w1", "n": 5})
    loaded, metadata = load_virtual_tokens(path, hidden_size=8, weights_hash="w1")
    assert torch.equal(loaded, tokens) and metadata["tensor_hash"] == digest == tensor_hash(tokens)
    with pytest.raises(HarnessError, match="hidden size 8, the backbone has 16"):
        load_virtual_tokens(path, hidden_size=16)
    with pytest.raises(HarnessError, match="trained on backbone tiny"):
        load_virtual_tokens(path, hidden_size=8, weights_hash="w2")


def test_official_checkpoint_import(tmp_path):
    official = torch.randn(50, 16)
    path = tmp_path / "mistral.added_token_embeddings.pt"
    torch.save(official, path)
    assert torch.equal(import_official(path, hidden_size=16), official)
    with pytest.raises(HarnessError, match="hidden size 16, the backbone has 32"):
        import_official(path, hidden_size=32)
    torch.save({"not": "a tensor", "x": 1}, tmp_path / "bad.pt")
    with pytest.raises(HarnessError, match="expected one \\[n, d\\] tensor"):
        import_official(tmp_path / "bad.pt", hidden_size=16)
