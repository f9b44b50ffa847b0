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


def writable_folder(path: str | os.PathLike, flag: str) -> Path:
    """``path`` as a folder this process can create and write in, or a one-line error naming ``flag``.

    Checked before a command does any work, so a bad output folder never leaves half a result behind.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise HarnessError(f"{flag} {path} is a file, not a folder; pass a folder (it is created if missing)")
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise HarnessError(f"{flag} {path} cannot be created: {existing} is a file; pass another folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise HarnessError(f"{flag} {path}: {existing} is not writable; pass a folder you can write to")
    return path


def store_folder(path: str | os.PathLike, flag: str = "--results") -> Path:
    """``path`` as a result store to read: a folder (perhaps read-only), or a one-line error."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise HarnessError(f"{flag} {path} is a file, not a result store folder; pass the folder `harness run --results` wrote")
    return path
