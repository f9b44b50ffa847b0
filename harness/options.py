"""``--option METHOD.KEY=VALUE``: parsed once, checked against the run's methods, typed by the option's default.

A KEY is either a constructor option of METHOD (``spring.placement``) or, for a trained method, a training
hyper-parameter (``spring.lr``, :class:`harness.training.TrainingConfig`). Values arrive as text; each is
converted to the type of the option's default, and anything that does not convert, names no method of the run
or no option of its method stops the run before any work, with a one-line error.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from harness.errors import HarnessError
from harness.registry import did_you_mean

TRUE, FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")
# Options whose default is None but which take a number when given.
INTEGER_WHEN_SET = frozenset({"max_input_tokens"})


def parse_method_options(items: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """``--option METHOD.KEY=VALUE`` strings as ``("METHOD.KEY", "VALUE")`` pairs (checked here, once)."""
    pairs = []
    for item in items:
        key, equals, value = item.partition("=")
        if not equals:
            raise HarnessError(f"--option {item!r} must look like METHOD.KEY=VALUE (e.g. spring.lr=0.002)")
        pairs.append((key, value))
    split_options(pairs)  # rejects a KEY without METHOD
    return tuple(pairs)


def split_options(pairs: Sequence[tuple[str, str]]) -> list[tuple[str, str, str]]:
    """``(METHOD, KEY, VALUE)`` triples of ``("METHOD.KEY", "VALUE")`` pairs."""
    found = []
    for target_key, value in pairs:
        target, dot, key = target_key.partition(".")
        if not dot or not key:
            raise HarnessError(f"method option {target_key}={value} must look like METHOD.KEY=VALUE")
        found.append((target, key, value))
    return found


def check_targets(pairs: Sequence[tuple[str, str]], methods: Sequence[str]) -> None:
    """Every option names a method of this run (a misspelt or absent one would be ignored without a word)."""
    for target, key, value in split_options(pairs):
        if target not in methods:
            raise HarnessError(
                f"--option {target}.{key}={value}: method {target!r} is not in this run.{did_you_mean(target, methods)} "
                f"Methods of the run: {', '.join(methods)}; add it to --method or drop the option."
            )


def typed_value(target: str, key: str, value: str, default: Any) -> Any:
    """``value`` converted to the type of ``default`` (the option's default), or a one-line error."""
    kind = type(default) if default is not None else (int if key in INTEGER_WHEN_SET else str)
    where = f"--option {target}.{key}={value}"
    if kind is bool:
        if value.strip().lower() in TRUE:
            return True
        if value.strip().lower() in FALSE:
            return False
        raise HarnessError(f"{where}: {key} is true or false (got {value!r}); e.g. {target}.{key}=true")
    if kind is int:
        try:
            return int(value)
        except ValueError:
            raise HarnessError(f"{where}: {key} takes a whole number (e.g. {target}.{key}={default or 1})") from None
    if kind is float:
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not math.isfinite(number):
            raise HarnessError(f"{where}: {key} takes a finite number (e.g. {target}.{key}={default})")
        return number
    return value


__all__ = ["check_targets", "parse_method_options", "split_options", "typed_value"]
