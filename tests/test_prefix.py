"""``prefix``: tokens before BOS, and its two implementations (SPRING's trainer, PEFT prompt tuning) agree."""

import json
import random
from types import SimpleNamespace

import pytest
import torch
from tiny_model import tiny_loaded, tiny_model_dir
from tiny_world import run_config as _config

from harness.checkpoints import tensor_hash
from harness.cli import main
from harness.errors import HarnessError, UnknownNameError
from harness.generation import DecodingConfig, HFBackend
from harness.methods.prefix import Prefix, PrefixTrainer, load_peft_prompt, peft_prompt_tokens, train_prefix_peft
from harness.methods.spring import initial_tokens
from harness.metrics import exact_match
from harness.models import load_model
from harness.runner import RunContext, run
from harness.segments import BOS, PASSAGE_LINES, PASSAGES_END, TEXT, VIRTUAL_TOKENS, render_segments
from harness.store import Store
from harness.training import TrainingConfig, TrainingData, TrainItem, train
from harness.types import Example, Passage
from harness.weights import PEFT_WEIGHTS

DARWIN = Passage("p1", "Darwin", "Charles Darwin wrote On the Origin of Species in 1859.")
PARIS = Passage("p2", "Paris", "Paris is the capital and most populous city of France.")
FOX = Passage("p3", "Fox", "The quick brown fox jumps over the lazy dog.")
ITEMS = (
    TrainItem(Example("a", "who wrote the origin of species", ["Charles Darwin", "Darwin"]), (DARWIN, PARIS)),
    TrainItem(Example("b", "what is the capital of france", ["Paris"]), (PARIS, FOX, DARWIN)),
    TrainItem(Example("c", "which fox is quick", ["the brown fox", "brown"]), (FOX,)),
    TrainItem(Example("d", "where is the lazy dog", ["under the fox"]), ()),
    TrainItem(Example("e", "how many legs does a spider have", ["eight", "8"]), (FOX, PARIS)),
)
# Uneven batches (3 + 2), m ~ U{1..2}, random golds, a limit that cuts the longest passage blocks, and inputs of
# different lengths: the two impls pad differently (left vs right), their draws and truncation must not differ.
CONFIG = TrainingConfig(examples=5, epochs=3, batch_size=3, lr=0.05, max_passages=2, max_input_tokens=80, seed=0)
N = 4


def quiet(message: str) -> None:
    """A training log that prints nothing."""


@pytest.fixture(scope="module")
def backend():
    return HFBackend(tiny_loaded())


@pytest.fixture(scope="module")
def trained(backend, tmp_path_factory):
    """Both impls trained from the same start on the same data: (spring weights, peft folder, both logs)."""
    initial = initial_tokens(backend.model.get_input_embeddings(), backend.tokenizer, N, "prompt", CONFIG.seed)
    spring = PrefixTrainer(Prefix(tokens=N, n=N), backend, initial, CONFIG)
    spring_log = train(spring, TrainingData(ITEMS, ("toy",), ()), CONFIG, log=quiet)
    folder = tmp_path_factory.mktemp("checkpoints") / "prefix-peft-test"
    copy = load_model(str(tiny_model_dir()), dtype="fp32", device="cpu")
    method = Prefix(tokens=N, n=N, impl="peft")
    peft_log = train_prefix_peft(method, copy, TrainingData(ITEMS, ("toy",), ()), CONFIG, folder, {"test": True}, log=quiet)
    return {"initial": initial, "spring": spring.weight.detach().clone(), "folder": folder, "logs": (spring_log, peft_log)}


def test_the_tokens_come_first_even_before_bos(backend):
    method = Prefix(tokens=2, n=3)
    method.weights = torch.zeros(3, backend.model.config.hidden_size)
    segments = method.build_input(Example("q", "who wrote it?", ["Darwin"]), [DARWIN], backend.tokenizer)
    assert [s.role for s in segments] == [VIRTUAL_TOKENS, BOS, PASSAGE_LINES, PASSAGES_END, TEXT]
    assert render_segments(segments, backend.tokenizer) == (
        "<T×2><s>[1] Darwin Charles Darwin wrote On the Origin of Species in 1859.\n\nQuestion: who wrote it?\nAnswer:"
    )
    # Training inputs put them in the same place, with all n tokens (fixed_k is prefix's default).
    inputs, _ = PrefixTrainer(method, backend, method.weights, CONFIG).inputs(ITEMS[:1], random.Random(0))
    assert [s.role for s in inputs[0]][:2] == [VIRTUAL_TOKENS, BOS] and len(inputs[0][0]) == 3
    assert method.fixed_k is True and Prefix(fixed_k=False).fixed_k is False
    assert method.params()["impl"] == "spring" and Prefix(impl="peft").params()["impl"] == "peft"


def test_spring_and_peft_impls_train_the_same_tokens_and_give_the_same_number(backend, trained):
    peft_weights = load_peft_prompt(trained["folder"], hidden_size=backend.model.config.hidden_size)
    spring_weights, initial = trained["spring"], trained["initial"]
    assert (spring_weights - initial).abs().max() > 0.1  # training moved the tokens
    # Measured: max |diff| 1.3e-6 (fp32 rounding of left- vs right-padded batches; with the tokens after BOS in
    # one impl it is 0.34), so 1e-5 is tight and still robust.
    assert (spring_weights - peft_weights).abs().max() <= 1e-5
    spring_log, peft_log = trained["logs"]
    assert spring_log.steps == peft_log.steps == 6 and spring_log.trainable_parameters == peft_log.trainable_parameters == N * 64
    # logged rounded to 5 decimals; the two paths hand the LM head differently laid-out inputs (fp32 sums in
    # another order): relative 1e-5
    assert spring_log.losses == pytest.approx(peft_log.losses, rel=1e-5, abs=2e-5)

    # The numbers: answer NLL on a fixed draw (tokens first, all n) and greedy predictions with EM.
    def evaluate(weights):
        method = Prefix(tokens=N, n=N)
        method.weights = weights
        with torch.no_grad():
            nll = float(PrefixTrainer(method, backend, weights, CONFIG).loss(ITEMS, random.Random(7)))
        inputs = [method.build_input(item.example, item.passages, backend.tokenizer) for item in ITEMS]
        predictions = [g.prediction for g in backend.generate(inputs, DecodingConfig(max_new_tokens=4))]
        em = sum(exact_match(p, item.example.golds) for p, item in zip(predictions, ITEMS)) / len(ITEMS)
        return nll, predictions, em

    spring_nll, spring_predictions, spring_em = evaluate(spring_weights)
    peft_nll, peft_predictions, peft_em = evaluate(peft_weights)
    start_nll, start_predictions, _ = evaluate(initial)
    assert abs(spring_nll - peft_nll) <= 1e-5 and spring_nll < start_nll - 0.3  # measured 12.34 -> 11.85
    assert spring_predictions == peft_predictions != start_predictions
    assert spring_em == peft_em


def test_peft_checkpoint_is_peft_format_and_round_trips(backend, trained):
    from peft import PeftConfig, PeftModel, PeftType

    folder = trained["folder"]
    assert {"adapter_config.json", PEFT_WEIGHTS, "harness-training.json"} <= {p.name for p in folder.iterdir()}
    config = PeftConfig.from_pretrained(str(folder))
    assert config.peft_type == PeftType.PROMPT_TUNING and config.num_virtual_tokens == N
    record = json.loads((folder / "harness-training.json").read_text())
    assert record["spec"] == {"test": True} and record["log"]["losses"] == trained["logs"][1].losses

    hidden = backend.model.config.hidden_size
    weights = load_peft_prompt(folder, hidden_size=hidden)
    assert weights.shape == (N, hidden) and weights.dtype == torch.float32
    assert tensor_hash(load_peft_prompt(folder, hidden_size=hidden)) == tensor_hash(weights)
    # PEFT's own loader sees the same tensor, and its forward (prompt prepended to BOS + text) equals the
    # harness's input with the tokens first.
    peft_model = PeftModel.from_pretrained(load_model(str(tiny_model_dir()), dtype="fp32", device="cpu").model, str(folder))
    assert torch.equal(peft_model.prompt_encoder["default"].embedding.weight, weights)
    method = Prefix(tokens=N, n=N)
    method.weights = weights
    segments = method.build_input(ITEMS[0].example, ITEMS[0].passages, backend.tokenizer)
    ids = torch.tensor([[i for s in segments[1:] for i in s.ids]])
    with torch.no_grad():
        ours, _ = backend.forward([segments])
        theirs = peft_model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    assert (ours - theirs).abs().max() <= 1e-4
    # --option prefix.checkpoint=FOLDER with impl=peft uses such a folder as it is (n from the folder).
    method = Prefix(tokens=2, impl="peft", checkpoint=str(folder))
    context = SimpleNamespace(model_name=str(tiny_model_dir()))
    loaded, digest = peft_prompt_tokens(method, context, "none")
    assert torch.equal(loaded, weights) and digest == tensor_hash(weights) and method.n == N
    with pytest.raises(HarnessError, match="hidden size 32"):
        load_peft_prompt(folder, hidden_size=32)
    with pytest.raises(HarnessError, match="is not a PEFT adapter folder"):
        load_peft_prompt(folder / "missing", hidden_size=hidden)


def test_bad_options_are_one_line_errors(tmp_path, capsys):
    with pytest.raises(HarnessError, match="prefix.impl=peft always trains all n tokens"):
        Prefix(impl="peft", fixed_k=False)
    with pytest.raises(UnknownNameError, match="unknown prefix impl 'pefft'. Did you mean 'peft'"):
        Prefix(impl="pefft")
    with pytest.raises(HarnessError, match="prefix always puts its tokens first"):
        Prefix(placement="rtq")
    # Through the CLI, as a user meets them: exit code 2 and one line, before any model is loaded.
    results = ["--results", str(tmp_path / "results")]
    for options, message in (
        (["prefix.impl=pefft"], "error: unknown prefix impl 'pefft'. Did you mean 'peft'? Valid prefix impls: peft, spring.\n"),
        (["prefix.impl=peft", "prefix.fixed_k=false"], "error: prefix.impl=peft always trains all n tokens"),
    ):
        assert main(["train", "--method", "prefix", *[a for o in options for a in ("--option", o)], *results]) == 2
        err = capsys.readouterr().err
        assert err.startswith(message) and err.count("\n") == 1


def test_runner_trains_both_impls_and_they_score_the_same(world):
    options = (("prefix.n", "3"), ("prefix.examples", "4"), ("prefix.batch_size", "2"), ("prefix.lr", "0.01"))
    cells = {}
    for impl in ("spring", "peft"):
        # Retriever none (closed-book tokens): the passages paths are covered above, and BM25's first search
        # costs a numba compilation of ~10 s.
        config = _config(
            world,
            methods=("prefix",),
            retrievers=("none",),
            tokens=(3,),
            limit=3,
            max_new_tokens=4,
            method_options=(*options, ("prefix.impl", impl)),
        )
        (cell,), _ = run(config, RunContext(config))
        cells[impl] = cell
    assert cells["spring"].spec.method["impl"] == "spring" and cells["peft"].spec.method["impl"] == "peft"
    assert cells["spring"].key != cells["peft"].key
    checkpoints = world["results"] / "checkpoints"
    assert len(list(checkpoints.glob("prefix-*.safetensors"))) == 1
    (folder,) = [p for p in checkpoints.glob("prefix-peft-*") if p.is_dir()]
    assert json.loads((folder / "harness-training.json").read_text())["spec"]["settings"]["impl"] == "peft"
    store = Store(world["results"])
    records = {impl: store.load(cell.key) for impl, cell in cells.items()}
    predictions = {impl: [row["prediction"] for row in record.predictions()] for impl, record in records.items()}
    assert len(predictions["spring"]) == 3 and predictions["spring"] == predictions["peft"]
    assert records["spring"].metrics["metrics"] == records["peft"].metrics["metrics"]
