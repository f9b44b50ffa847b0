"""``harness --verbosity info|debug``: how much of the libraries' own chatter reaches the terminal.

``info`` (the default) shows harness's output: its tables, progress bars and log lines, and the libraries' logged
warnings (a checkpoint with missing weights is always said). The Python warnings that transformers, PEFT,
lm-eval, datasets, torch and their kin raise about their own internals (deprecations passed between them, such as
PEFT calling a transformers method renamed in 5.x) and their progress bars are hidden. ``debug`` shows all of it,
with the libraries' info logs, for bug reports. Harness's own warnings are never hidden.
"""

from __future__ import annotations

import os
import warnings

LEVELS = ("info", "debug")
THIRD_PARTY = (
    r"(transformers|peft|lm_eval|datasets|torch|accelerate|huggingface_hub|sentence_transformers|bm25s|faiss|evaluate)(\..*)?$"
)
# Read by the libraries at import (the CLI sets the level before any of them loads).
_LIBRARY_VERBOSITY = ("TRANSFORMERS_VERBOSITY", "DATASETS_VERBOSITY", "HF_HUB_VERBOSITY")
_state = {"level": "info"}


def set_verbosity(level: str) -> None:
    """Apply ``level`` (one of :data:`LEVELS`) to this process's warning filters and library loggers."""
    from harness.registry import unknown_name

    level = level.lower()
    if level not in LEVELS:
        raise unknown_name("verbosity level", level, LEVELS)
    _state["level"] = level
    # The front-most matching filter wins and re-adding a filter moves it to the front: switching levels within
    # one process (the tests call the CLI many times) leaves exactly the latest choice in force.
    warnings.filterwarnings("default" if level == "debug" else "ignore", module=THIRD_PARTY)
    # Their loggers keep their own warnings (a checkpoint with missing weights must still be said); debug adds info.
    for name in _LIBRARY_VERBOSITY:
        if level == "debug":
            os.environ[name] = "info"
        elif os.environ.get(name) == "info":
            del os.environ[name]
    _set_loaded_loggers(level)


def _set_loaded_loggers(level: str) -> None:
    """The libraries already imported in this process (tests call the CLI repeatedly) follow the level too."""
    import logging
    import sys

    for name in ("transformers", "datasets", "huggingface_hub", "peft", "lm_eval", "sentence_transformers"):
        if name in sys.modules:
            logging.getLogger(name).setLevel(logging.INFO if level == "debug" else logging.WARNING)


def debug() -> bool:
    """Whether the third-party chatter is to be shown (``--verbosity debug``)."""
    return _state["level"] == "debug"


__all__ = ["LEVELS", "debug", "set_verbosity"]
