"""Options several commands share, declared once so their names, help and defaults agree."""

from __future__ import annotations

from typing import Any

import typer

# Resolved by harness.paths.data_dir: the flag, else $HARNESS_DATA_DIR, else ../shared/data (its errors name which).
DATA_DIR: Any = typer.Option(
    None, "--data-dir", help="raw data folder (default: $HARNESS_DATA_DIR, else ../shared/data beside the project)"
)
DEVICE: Any = typer.Option(None, "--device", help="cpu, cuda, cuda:1 (default: cuda if available)")
DTYPE: Any = typer.Option(
    "auto",
    "--dtype",
    metavar="[auto|fp32|bf16|fp16|mixed]",
    help="auto: mixed on CPUs with native bf16 (bf16 prefills, fp32 decoding), else fp32; bf16 on GPUs with it",
)
BACKEND: Any = typer.Option(
    "hf", "--backend", metavar="[hf|vllm]", help="generation engine: hf (transformers) or vllm (GPU; pip install -e '.[vllm]')"
)


def check_backend(backend: str) -> None:
    """``--backend`` names an engine, and vLLM is installed when it is the one (before any work)."""
    from harness.registry import unknown_name
    from harness.runner import BACKENDS

    if backend not in BACKENDS:
        raise unknown_name("backend", backend, BACKENDS)
    if backend == "vllm":
        from harness.vllm_backend import vllm_version

        vllm_version()
