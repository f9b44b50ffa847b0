"""Virtual-token checkpoints: safetensors files with metadata, and the official SPRING ``.pt`` releases."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from harness import cache
from harness.errors import HarnessError

TENSOR_NAME = "virtual_tokens"


def tensor_hash(tensor: torch.Tensor) -> str:
    """sha256 (20 hex) of a tensor's shape and fp32 values (:func:`harness.cache.tensor_hash`): the checkpoint
    identity in result keys."""
    return cache.tensor_hash(tensor, length=20)


def save_virtual_tokens(path: Path, tokens: torch.Tensor, metadata: Mapping[str, Any]) -> str:
    """Write ``tokens`` (n, d) in fp32 with string metadata, atomically; returns the tensor hash."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tensor = tokens.detach().to("cpu", torch.float32).contiguous()
    digest = tensor_hash(tensor)
    meta = {key: str(value) for key, value in metadata.items()} | {"tensor_hash": digest}
    # Serialized in memory and written through the cache's fixed staging name: safetensors' save_file stages in a
    # randomly named .tmpXXXXXX beside the target, which a kill leaves behind for good.
    cache.atomic_write(path, save({TENSOR_NAME: tensor}, metadata=meta))
    return digest


def readable_checkpoint(path: Path) -> bool:
    """Whether ``path`` opens as a safetensors file and its tensor reads back whole (a truncated one does not)."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            for name in handle.keys():  # noqa: SIM118 - safe_open has no __contains__
                handle.get_tensor(name)
    except SafetensorError:
        return False
    return True


def find_checkpoint(folder: Path, digest: str) -> Path | None:
    """The virtual-token checkpoint in ``folder`` whose tensor hash is ``digest`` (headers only are read)."""
    for path in sorted(Path(folder).glob("*.safetensors")):
        try:
            with safe_open(str(path), framework="pt") as handle:
                if (handle.metadata() or {}).get("tensor_hash") == digest:
                    return path
        except SafetensorError:
            continue  # a damaged file is no match; `harness store verify` reports it
    return None


def _read_tokens(path: Path, fix: str) -> tuple[torch.Tensor, dict[str, str]]:
    """The ``virtual_tokens`` tensor and metadata of a safetensors file; damage is a one-line error ending in ``fix``."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
            if TENSOR_NAME not in handle.keys():  # noqa: SIM118 - safe_open has no __contains__
                raise HarnessError(f"{path} holds no {TENSOR_NAME!r} tensor; it is not a harness virtual-token checkpoint")
            tokens = handle.get_tensor(TENSOR_NAME)
    except SafetensorError as error:
        raise HarnessError(f"checkpoint {path} is damaged ({error}); {fix}") from None
    return tokens, metadata


def load_virtual_tokens(
    path: Path,
    *,
    hidden_size: int,
    weights_hash: str | None = None,
    fix: str = "delete it to train it again, or pass an intact file",
) -> tuple[torch.Tensor, dict[str, str]]:
    """Read a checkpoint written by :func:`save_virtual_tokens`, checking it fits this backbone."""
    if path.is_dir():
        raise HarnessError(f"checkpoint {path} is a folder; pass the .safetensors file inside it")
    if not path.is_file():
        raise HarnessError(f"checkpoint {path} does not exist; check the path, or train it with `harness train`")
    tokens, metadata = _read_tokens(path, fix)
    _check_fits(path, tokens, hidden_size)
    if weights_hash is not None and metadata.get("backbone_weights_hash") not in (None, weights_hash):
        raise HarnessError(
            f"{path} was trained on backbone {metadata.get('backbone')} (weights {metadata.get('backbone_weights_hash')}),"
            f" not on the loaded one (weights {weights_hash}); train it for this backbone"
        )
    return tokens, metadata


def import_official(path: str | os.PathLike, *, hidden_size: int, weights_hash: str | None = None) -> torch.Tensor:
    """A SPRING checkpoint passed by path: an official release (``*.added_token_embeddings.pt``: one [n, d]
    tensor, loaded safely) or a harness ``.safetensors`` checkpoint (checked as the store's own are, against
    ``weights_hash`` when given; a damaged one is the user's file to replace, not one to retrain)."""
    path = Path(path)
    if path.is_dir():
        raise HarnessError(f"SPRING checkpoint {path} is a folder; pass the *.added_token_embeddings.pt file inside it")
    if not path.is_file():
        raise HarnessError(f"SPRING checkpoint {path} does not exist; check the path")
    if path.suffix == ".safetensors":
        tokens, _ = load_virtual_tokens(
            path, hidden_size=hidden_size, weights_hash=weights_hash, fix="pass an intact checkpoint file"
        )
        return tokens.to(torch.float32)
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise HarnessError(
            f"{path} is not a tensor file loadable with weights_only=True ({type(error).__name__}); pass an official "
            "*.added_token_embeddings.pt or a harness .safetensors checkpoint"
        ) from error
    if isinstance(loaded, Mapping) and len(loaded) == 1:
        loaded = next(iter(loaded.values()))
    if not isinstance(loaded, torch.Tensor):
        raise HarnessError(
            f"{path} holds a {type(loaded).__name__}, expected one [n, d] tensor (an official *.added_token_embeddings.pt)"
        )
    _check_fits(path, loaded, hidden_size)
    return loaded.to(torch.float32)


def export_official(path: Path, out: Path) -> torch.Tensor:
    """Write the harness checkpoint ``path``'s tokens as the official SPRING release shape, one fp32 ``[n, d]``
    tensor saved with ``torch.save`` (what the official code and FlashRAG's loader read, and
    :func:`import_official` reads back with ``weights_only=True``); returns the tensor."""
    tokens, _ = _read_tokens(path, "pass an intact checkpoint file")
    tensor = tokens.detach().to("cpu", torch.float32).contiguous().clone()
    out.parent.mkdir(parents=True, exist_ok=True)
    cache.publish(out, lambda tmp: torch.save(tensor, tmp))
    return tensor


def _check_fits(path: Path, tokens: torch.Tensor, hidden_size: int) -> None:
    if tokens.dim() != 2:
        raise HarnessError(f"{path}: virtual tokens must be a [n, d] tensor, got shape {tuple(tokens.shape)}")
    if tokens.shape[1] != hidden_size:
        raise HarnessError(
            f"{path}: virtual tokens have hidden size {tokens.shape[1]}, the backbone has {hidden_size}; "
            "they belong to another model"
        )
