"""Where data, caches and results live. Every location can be overridden by a flag or an environment variable."""

from __future__ import annotations

import os
from pathlib import Path

from harness.errors import HarnessError

DATA_DIR_ENV = "HARNESS_DATA_DIR"
CACHE_DIR_ENV = "HARNESS_CACHE_DIR"
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def data_dir(explicit: str | os.PathLike | None = None) -> Path:
    """The raw-data folder: ``--data-dir``, else ``$HARNESS_DATA_DIR``, else ``../shared/data`` beside the project."""
    if explicit is not None:
        path, origin = Path(explicit), "--data-dir"
    elif os.environ.get(DATA_DIR_ENV):
        path, origin = Path(os.environ[DATA_DIR_ENV]), f"${DATA_DIR_ENV}"
    else:
        path, origin = PROJECT_ROOT.parent / "shared" / "data", "the default location"
    if not path.is_dir():
        raise HarnessError(
            f"data directory {path} ({origin}) does not exist; pass --data-dir DIR or set {DATA_DIR_ENV} "
            f"to the folder holding the raw dataset files (see MANIFEST.md in it)"
        )
    return path.resolve()


def cache_dir() -> Path:
    """The user cache (converted models, indexes shared across result stores): ``$HARNESS_CACHE_DIR`` or XDG."""
    if os.environ.get(CACHE_DIR_ENV):
        path = Path(os.environ[CACHE_DIR_ENV])
    else:
        path = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "harness"
    path.mkdir(parents=True, exist_ok=True)
    return path


def results_dir(explicit: str | os.PathLike | None = None) -> Path:
    """The result store: ``--results DIR`` or ``results/`` in the working directory."""
    return Path(explicit) if explicit is not None else Path("results")
