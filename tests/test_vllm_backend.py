"""``--backend vllm`` on CPU, without vLLM: its requests, its stop mapping and its keys, against the HF backend."""

import importlib.util
from types import SimpleNamespace

import pytest
import torch
from tiny_model import tiny_loaded, tiny_model_dir

from harness.cli import main
from harness.errors import HarnessError
from harness.generation import DecodingConfig, HFBackend
from harness.runner import RunConfig, RunContext
from harness.segments import EmbeddingSegment, TokenSegment, build_segments, tokenize
from harness.templates import CLOSED_BOOK, PROMPT, SPRING
from harness.types import Passage
from harness.vllm_backend import VLLMBackend, VLLMOptions, input_embedding_table

PASSAGES = [
    Passage("a", "Paris", "Paris is the capital and most populous city of France."),
    Passage("b", "Darwin", "Charles Darwin was an English naturalist, geologist and biologist."),
]
HAS_VLLM = importlib.util.find_spec("vllm") is not None


class HFEngine:
    """``vllm.LLM.generate`` done by the HF backend: greedy continuations that end only at EOS (kept in
    ``token_ids``, ``finish_reason="stop"``, as vLLM reports it) or at ``max_tokens``, for both request kinds."""

    def __init__(self, hf: HFBackend) -> None:
        self.hf, self.calls = hf, []

    def generate(self, prompts, params, use_tqdm=True):
        self.calls.append((prompts, params))
        free = DecodingConfig(max_new_tokens=params["max_tokens"], stop_at_newline=False)
        inputs = [
            [TokenSegment(p["prompt_token_ids"])] if "prompt_token_ids" in p else [EmbeddingSegment(p["prompt_embeds"])]
            for p in prompts
        ]
        outputs = []
        for generation in self.hf.generate(inputs, free):
            eos = generation.stop == "eos"
            token_ids = [*generation.token_ids, *([params["stop_token_ids"][0]] if eos else [])]
            completion = SimpleNamespace(token_ids=token_ids, finish_reason="stop" if eos else "length")
            outputs.append(SimpleNamespace(outputs=[completion]))
        return outputs


@pytest.fixture(scope="module")
def hf():
    return HFBackend(tiny_loaded())


def vllm_backend(hf, engine=None, **options):
    return VLLMBackend(
        tiny_model_dir(), hf.loaded.spec(), hf.tokenizer, VLLMOptions(**options), engine=engine, sampling_params=dict
    )


def _inputs(tokenizer, rows):
    return [
        build_segments(SPRING, "who was darwin?", PASSAGES, tokenizer, virtual=EmbeddingSegment(rows[:3])),
        build_segments(SPRING, "what is the capital of france", PASSAGES[:1], tokenizer, virtual=EmbeddingSegment(rows)),
        build_segments(PROMPT, "who was darwin?", PASSAGES, tokenizer),
        build_segments(CLOSED_BOOK, "which fox?", [], tokenizer),
    ]


def test_prompt_embeds_are_the_hf_backends_input_embeddings(hf):
    backend = vllm_backend(hf)
    rows = torch.randn(5, hf.model.config.hidden_size)
    spring, spring_all, prompt, closed = _inputs(hf.tokenizer, rows)
    for segments in (spring, spring_all):
        embeds = backend.prompt(segments)["prompt_embeds"]
        assert embeds.shape == (sum(len(s) for s in segments), 64) and embeds.dtype == torch.float32
        assert torch.equal(embeds, hf.embed(segments))
    # Token-only inputs take vLLM's token path (its prefix caching reuses the passages block) with the same ids.
    for segments in (prompt, closed):
        assert backend.prompt(segments) == {"prompt_token_ids": [i for s in segments for i in s.ids]}
        assert torch.equal(backend.embed(segments), hf.embed(segments))
    # The table is read alone from the safetensors file: the model's own input embeddings, bit for bit.
    assert torch.equal(input_embedding_table(tiny_model_dir()).weight, hf.model.get_input_embeddings().weight)


def test_answers_equal_the_hf_backends_from_an_engine_that_ignores_the_newline_rule(hf):
    engine = HFEngine(hf)
    backend = vllm_backend(hf, engine=engine)
    rows = torch.randn(5, hf.model.config.hidden_size)
    inputs = _inputs(hf.tokenizer, rows)
    config = DecodingConfig(max_new_tokens=12, batch_size=3)
    assert backend.generate(inputs, config) == hf.generate(inputs, config)
    ((prompts, params),) = engine.calls  # one call with every request: the engine batches them itself
    assert [sorted(p) for p in prompts] == [["prompt_embeds"]] * 2 + [["prompt_token_ids"]] * 2
    assert params == {"n": 1, "temperature": 0.0, "max_tokens": 12, "stop_token_ids": [2], "detokenize": False}
    # an explicit input cut applies before the requests are made, as on the HF backend
    cut = DecodingConfig(max_new_tokens=4, max_input_tokens=70)
    answers = backend.generate(inputs, cut)
    assert answers == hf.generate(inputs, cut)
    assert len(engine.calls[-1][0][2]["prompt_token_ids"]) == answers[2].input_tokens <= 70 < len(prompts[2]["prompt_token_ids"])


def test_the_stop_rule_cuts_what_vllm_returns(hf):
    backend = vllm_backend(hf)
    tokenizer = hf.tokenizer
    newline, eos, filler = tokenize(tokenizer, "\n"), tokenizer.eos_token_id, tokenize(tokenizer, "a")
    paris, darwin, answer = tokenize(tokenizer, "Paris"), tokenize(tokenizer, " Darwin"), tokenize(tokenizer, "Answer:")
    config = DecodingConfig(max_new_tokens=5)

    def answer_of(token_ids, finish_reason="length"):
        generation = backend.generation(SimpleNamespace(token_ids=token_ids, finish_reason=finish_reason), 7, config)
        return generation.raw, generation.prediction, generation.stop, len(generation.token_ids)

    # a leading newline is skipped, the next one ends the answer (kept, as the HF loop keeps it)
    assert answer_of([*newline, *paris, *newline, *filler]) == ("\nParis\n", "Paris", "newline", len(paris) + 2)
    assert answer_of([*answer, *darwin, eos], "stop") == ("Answer: Darwin", "Darwin", "eos", len(answer + darwin))
    assert answer_of([*answer, *darwin], "stop") == ("Answer: Darwin", "Darwin", "eos", len(answer + darwin))  # EOS left out
    assert answer_of(filler * 5) == ("aaaaa", "aaaaa", "length", 5)
    with pytest.raises(ValueError, match="ended before EOS"):
        answer_of(filler * 2)
    free = DecodingConfig(max_new_tokens=5, stop_at_newline=False)
    assert backend.stop_rule.cut([*newline, *paris, *newline, *filler], free) == ([*newline, *paris, *newline, *filler], "length")


def test_lora_views_share_one_engine_and_refuse_a_rank_it_cannot_serve(hf, tmp_path):
    backend = vllm_backend(hf, engine=object())
    first, again, other = (backend.with_lora(tmp_path, key, 8) for key in ("sha256:aa", "sha256:aa", "sha256:bb"))
    assert (first.adapter, again.adapter, other.adapter) == (
        ("sha256:aa", 1, str(tmp_path)),
        ("sha256:aa", 1, str(tmp_path)),
        ("sha256:bb", 2, str(tmp_path)),
    )
    assert backend.adapter is None and first._engine is backend._engine and first.wants_lora
    with pytest.raises(HarnessError, match=r"exceeds vllm.max_lora_rank=16; add --option vllm.max_lora_rank=32"):
        backend.with_lora(tmp_path, "sha256:cc", 32)
    with pytest.raises(HarnessError, match=r"r=20 exceeds vllm.max_lora_rank=16; add --option vllm.max_lora_rank=32"):
        backend.with_lora(tmp_path, "sha256:cc", 20)  # the next rank vLLM can be built for
    with pytest.raises(HarnessError, match=r"vllm.max_lora_rank=20 is no rank vLLM serves; use one of 1, 8, 16, 32"):
        VLLMOptions(max_lora_rank=20)
    with pytest.raises(HarnessError, match="gpu_memory_utilization"):
        VLLMOptions(gpu_memory_utilization=1.5)


def test_vllm_cells_are_keyed_apart_and_hf_keys_are_unchanged(monkeypatch, tmp_path):
    import harness.vllm_backend

    assert "engine" not in DecodingConfig().spec()  # the HF backend's keys are those of every earlier store
    monkeypatch.setattr(harness.vllm_backend, "vllm_version", lambda: "0.34.0")
    config = RunConfig(datasets=("nq",), methods=("prompt",), results=tmp_path, backend="vllm")
    decoding = RunContext(config).decoding.spec()
    assert decoding["engine"] == {"backend": "vllm", "vllm": "0.34.0", "tensor_parallel_size": 1}
    options = (("vllm.tensor_parallel_size", "2"),)
    sharded = RunContext(
        RunConfig(datasets=("nq",), methods=("prompt",), results=tmp_path, backend="vllm", method_options=options)
    )
    assert sharded.decoding.spec()["engine"]["tensor_parallel_size"] == 2
    assert (
        RunContext(RunConfig(datasets=("nq",), methods=("prompt",), results=tmp_path)).decoding.spec()
        == DecodingConfig(batch_size=8).spec()
    )


@pytest.mark.skipif(HAS_VLLM, reason="vLLM is installed here")
@pytest.mark.parametrize("command", ["run", "generate"])
def test_backend_vllm_without_vllm_is_one_line_with_the_pip_command(command, capsys, tmp_path):
    assert main([command, "--backend", "vllm", "--model", str(tiny_model_dir()), "--data-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == (
        'error: --backend vllm needs vLLM, an optional extra for GPU machines: pip install -e ".[vllm]"'
    )


def test_backend_names_and_engine_options_are_checked(capsys, tmp_path):
    assert main(["run", "--backend", "vlm", "--results", str(tmp_path / "r")]) == 2
    assert "unknown backend 'vlm'. Did you mean 'vllm'?" in capsys.readouterr().err
    argv = ["run", "--method", "prompt", "--option", "vllm.enforce_eager=true", "--results", str(tmp_path / "r")]
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == ("error: --option vllm.KEY=VALUE configures the vLLM engine; add --backend vllm")
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())


def test_a_run_with_lora_methods_serves_their_adapters_on_one_engine(monkeypatch, tmp_path):
    import harness.vllm_backend
    from harness.methods.lora import Lora
    from harness.methods.spring_plus import SpringPlus

    monkeypatch.setattr(harness.vllm_backend, "vllm_version", lambda: "0.34.0")
    config = RunConfig(
        datasets=("nq",), methods=("prompt", "lora"), model=str(tiny_model_dir()), dtype="fp32", results=tmp_path, backend="vllm"
    )
    context = RunContext(config)
    assert context.backend.name == "vllm" and context.backend.wants_lora  # the engine is built with LoRA support
    assert context.training_backend.name == "hf"  # training stays on transformers
    lora, plus = Lora(), SpringPlus()
    lora.adapter, lora.checkpoint_hash = tmp_path / "adapter", "sha256:ab"
    plus.lora = lora
    view = lora.backend_for(context)
    assert view.adapter == ("sha256:ab", 1, str(tmp_path / "adapter")) and view._engine is context.backend._engine
    assert plus.backend_for(context) is view  # SPRING+ generates on the same adapter, from one view
    hf_only = RunContext(RunConfig(datasets=("nq",), methods=("prompt",), model=str(tiny_model_dir()), results=tmp_path))
    assert hf_only.backend is hf_only.training_backend
