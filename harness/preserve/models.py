"""Which model each preservation method puts in front of lm-eval: method name -> (model, method spec, virtual tokens).

``base`` is the loaded backbone as it is; every other one is a registered method whose class ``preserves`` and
builds its model with :meth:`harness.methods.base.Method.preserve_model` (``lora``: the adapter merged into a copy;
``spring``: the base model plus its trained tokens when plugged, called twice by the CLI, unplugged then plugged).
"""

from __future__ import annotations

from typing import Any

from harness.plugins import METHODS
from harness.preserve.tasks import _unknown, preserve_methods


def require_method(method_name: str) -> None:
    """Raise the user error for a method ``harness preserve`` cannot evaluate: unknown, or without a preservation model."""
    if method_name not in preserve_methods():
        raise _unknown("preservation method", method_name, preserve_methods())


def resolve_preserve_model(
    method_name: str, loaded_model: Any, store: Any = None, **options: Any
) -> tuple[Any, dict[str, Any], Any]:
    """(model object for lm-eval, method spec for the cell key, virtual tokens ``[k, d]`` or ``None``)."""
    require_method(method_name)
    if method_name == "base":
        return loaded_model.model, {"name": "base"}, None
    return METHODS.get(method_name).preserve_model(loaded_model, store, **options)
