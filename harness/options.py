"""``--option NAME.KEY=VALUE``: one router for methods and retrievers, typed by each component's declared options.

NAME is a method or a retriever of the run. A method's KEYs are the fields of its options dataclass
(``Method.Options``, like PEFT's ``PromptTuningConfig``: typed, with help text, validated in ``__post_init__``) and,
for a trained method, the training hyper-parameters (:class:`harness.training.TrainingConfig`). A retriever's KEYs
are checked by its factory (:meth:`harness.retrieval.RetrieverContext.check_options`). Values arrive as text and are
converted to the field's declared type; anything that does not convert, or names no component of the run or no
option of it, stops the run before any work, with a one-line error and a did-you-mean.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Iterable, Sequence
from typing import Any

from harness.errors import HarnessError
from harness.registry import did_you_mean, unknown_name

TRUE, FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def option(default: Any, help: str) -> Any:
    """A field of an options dataclass: its default and the help text `harness ls methods` shows."""
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass(frozen=True)
class OptionField:
    """One declared option: its name, type (``int``, ``float``, ``bool``, ``str``), default and help."""

    name: str
    kind: type
    default: Any
    help: str


def option_fields(options_type: type) -> dict[str, OptionField]:
    """The declared options of an options dataclass, in declaration order."""
    hints = typing.get_type_hints(options_type)
    found = {}
    for f in dataclasses.fields(options_type):
        found[f.name] = OptionField(f.name, _base_type(hints[f.name]), f.default, f.metadata.get("help", ""))
    return found


def _base_type(hint: Any) -> type:
    """``int`` for ``int``, ``int | None`` and ``Optional[int]``; ``str`` for anything else."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
    return hint if hint in (int, float, bool, str) else str


def parse_options(items: Sequence[str], shape: str = "METHOD.KEY=VALUE (e.g. spring.lr=0.002)") -> tuple[tuple[str, str], ...]:
    """``--option NAME.KEY=VALUE`` strings as ``("NAME.KEY", "VALUE")`` pairs (checked here, once); ``shape`` is
    the form the error message shows (``harness retrieve`` takes only retrievers' options)."""
    pairs = []
    for item in items:
        key, equals, value = item.partition("=")
        if not equals:
            raise HarnessError(f"--option {item!r} must look like {shape}")
        pairs.append((key, value))
    split_options(pairs)  # rejects a KEY without NAME
    return tuple(pairs)


def split_options(pairs: Sequence[tuple[str, str]]) -> list[tuple[str, str, str]]:
    """``(NAME, KEY, VALUE)`` triples of ``("NAME.KEY", "VALUE")`` pairs."""
    found = []
    for target_key, value in pairs:
        target, dot, key = target_key.partition(".")
        if not dot or not key:
            raise HarnessError(f"method option {target_key}={value} must look like METHOD.KEY=VALUE")
        found.append((target, key, value))
    return found


def options_for(pairs: Sequence[tuple[str, str]], name: str) -> tuple[tuple[str, str], ...]:
    """The ``(KEY, VALUE)`` pairs addressed to component ``name``."""
    return tuple((key, value) for target, key, value in split_options(pairs) if target == name)


def check_targets(pairs: Sequence[tuple[str, str]], methods: Sequence[str], retrievers: Sequence[str] = ()) -> None:
    """Every option names a method or a retriever of this run (a misspelt or absent one would be ignored)."""
    names = [*dict.fromkeys([*methods, *retrievers])]
    for target, key, value in split_options(pairs):
        if target not in names:
            if not methods:  # `harness retrieve`: retrievers only
                raise HarnessError(
                    f"--option {target}.{key}={value}: {target!r} is no retriever of this run.{did_you_mean(target, names)} "
                    f"Retrievers: {', '.join(retrievers)}; add it to --retriever or drop the option."
                )
            raise HarnessError(
                f"--option {target}.{key}={value}: {target!r} is no method or retriever of this run.{did_you_mean(target, names)} "
                f"Methods: {', '.join(methods) or 'none'}; retrievers: {', '.join(retrievers) or 'none'}; "
                "add it to --method/--retriever or drop the option."
            )


def declared_values(
    name: str, options_type: type, pairs: Iterable[tuple[str, str]], also_accepted: Iterable[str] = ()
) -> dict[str, Any]:
    """The typed values of ``pairs`` (``(KEY, VALUE)``) for the fields of ``options_type``.

    Keys in ``also_accepted`` (training hyper-parameters of a trained method) are left to their own reader; any
    other key is refused with a did-you-mean over both sets.
    """
    fields = option_fields(options_type)
    others = set(also_accepted)
    values: dict[str, Any] = {}
    for key, value in pairs:
        if key in others:
            continue
        if key not in fields:
            if not fields and not others:
                raise HarnessError(
                    f"method {name!r} takes no options (got {key}); `harness ls methods` lists each method's options"
                )
            raise unknown_name(f"{name} option", key, set(fields) | others)
        values[key] = typed_value(name, key, value, fields[key].kind, fields[key].default)
    return values


def typed_value(target: str, key: str, value: str, kind: type, example: Any = None) -> Any:
    """``value`` converted to ``kind``, or a one-line error naming the option and an example of a good value."""
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
            raise HarnessError(f"{where}: {key} takes a whole number (e.g. {target}.{key}={example or 1})") from None
    if kind is float:
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not math.isfinite(number):
            raise HarnessError(f"{where}: {key} takes a finite number (e.g. {target}.{key}={example})")
        return number
    return value


__all__ = [
    "OptionField",
    "check_targets",
    "declared_values",
    "option",
    "option_fields",
    "options_for",
    "parse_options",
    "split_options",
    "typed_value",
]
