"""`harness export-tokens`: a store's SPRING checkpoint as the official release's [n, d] .pt tensor."""

from __future__ import annotations

import torch

from harness.checkpoints import import_official, save_virtual_tokens
from harness.cli import main


def test_the_official_pt_holds_the_same_tensor_and_reads_back_safely(tmp_path, capsys):
    results = tmp_path / "results"
    tokens = torch.randn(5, 8, generator=torch.Generator().manual_seed(0))
    save_virtual_tokens(results / "checkpoints" / "spring-abc.safetensors", tokens, {"n": 5})
    assert main(["export-tokens", "--results", str(results)]) == 0
    written = results / "export" / "spring-abc.added_token_embeddings.pt"
    assert capsys.readouterr().out.strip() == f"{written}  [5, 8] fp32"
    loaded = torch.load(written, map_location="cpu", weights_only=True)  # what the official loader does
    assert isinstance(loaded, torch.Tensor) and loaded.dtype == torch.float32 and torch.equal(loaded, tokens)
    assert torch.equal(import_official(written, hidden_size=8), tokens)  # and harness's --option spring.checkpoint


def test_which_checkpoint_must_be_said_when_the_store_has_none_or_several(tmp_path, capsys):
    results = tmp_path / "results"
    assert main(["export-tokens", "--results", str(results)]) == 2
    assert "0 SPRING checkpoints in" in capsys.readouterr().err
    for name in ("spring-a", "spring-b"):
        save_virtual_tokens(results / "checkpoints" / f"{name}.safetensors", torch.zeros(2, 4), {})
    assert main(["export-tokens", "--results", str(results)]) == 2
    err = capsys.readouterr().err
    assert "2 SPRING checkpoints in" in err and "spring-a.safetensors, " in err and "`harness export-tokens PATH`" in err
    out = tmp_path / "mine.pt"
    assert main(["export-tokens", str(results / "checkpoints" / "spring-b.safetensors"), "--out", str(out)]) == 0
    assert torch.equal(torch.load(out, weights_only=True), torch.zeros(2, 4))
    assert main(["export-tokens", str(tmp_path / "absent.safetensors")]) == 2
    assert "is not a .safetensors file" in capsys.readouterr().err
