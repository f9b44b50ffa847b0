"""Options several commands share, declared once so their names, help and defaults agree."""

from __future__ import annotations

from typing import Any

import typer

# Resolved by harness.paths.data_dir: the flag, else $HARNESS_DATA_DIR, else ../shared/data (its errors name which).
DATA_DIR: Any = typer.Option(
    None, "--data-dir", help="raw data folder (default: $HARNESS_DATA_DIR, else ../shared/data beside the project)"
)
DEVICE: Any = typer.Option(None, "--device", help="cpu, cuda, cuda:1 (default: cuda if available)")
