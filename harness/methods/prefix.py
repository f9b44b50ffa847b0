"""``prefix``: the paper's prefix-tuning baseline, n trainable tokens in front of the passages, ``[T; R; Q]``.

It is the ``spring`` method with ``placement="trq"`` (not PEFT's ``PromptTuningConfig``): the same
initialisation, training loop, data and k sampling, only the tokens' place differs. With the tokens first, the
whole input depends on them, so training runs the full sequence with gradients (no passages prefix reuse).
"""

from __future__ import annotations

from typing import Any

from harness.methods.spring import Spring


class Prefix(Spring):
    """Virtual tokens before the passages."""

    name = "prefix"

    def __init__(self, tokens: int = 50, **options: Any) -> None:
        options.pop("placement", None)
        super().__init__(tokens, placement="trq", **options)
