"""One generic name -> factory registry, used for datasets, retrievers and methods.

Entries may be objects or lazy ``"module:attribute"`` strings, imported on first lookup, so listing names
never imports torch or a model library. Registering a name twice is an error; an unknown name raises
:class:`UnknownNameError` with the closest matches.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterable, Iterator
from typing import Generic, TypeVar

from harness.errors import UnknownNameError

T = TypeVar("T")


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """A sentence suggesting the closest choices to ``name`` (empty if none is close)."""
    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.5)
    return f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def unknown_name(kind: str, name: str, choices: Iterable[str]) -> UnknownNameError:
    """The standard error for an unknown ``name`` of a ``kind`` ("dataset", "suite", ...)."""
    choices = sorted(choices)
    return UnknownNameError(f"unknown {kind} {name!r}.{did_you_mean(name, choices)} Valid {plural(kind)}: {', '.join(choices)}.")


def plural(noun: str) -> str:
    """``noun`` in the plural, for the nouns the registries use ("dataset" -> "datasets", "alias" -> "aliases")."""
    return f"{noun}es" if noun.endswith(("s", "x", "ch", "sh")) else f"{noun}s"


class Registry(Generic[T]):
    """Maps names to objects; ``plugin_package`` is imported first so its registration lines run."""

    def __init__(self, kind: str, plugin_package: str | None = None) -> None:
        self.kind = kind
        self._plugin_package = plugin_package
        self._entries: dict[str, T | str] = {}
        self._loaded = plugin_package is None

    def register(self, name: str, target: T | str, replace: bool = False) -> T | str:
        """Add ``name``; ``target`` is the object or a lazy ``"module:attribute"`` path. ``replace`` lets a
        run-time entry (a ``--dataset-file`` dataset) take the place of an earlier one of the same name."""
        if name in self._entries and not replace:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = target
        return target

    def _ensure_loaded(self) -> None:
        if not self._loaded and self._plugin_package is not None:
            self._loaded = True
            importlib.import_module(self._plugin_package)  # its __init__ calls register()

    def names(self) -> list[str]:
        self._ensure_loaded()
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        self._ensure_loaded()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def check(self, name: str) -> str:
        """Return ``name`` if registered, else raise the did-you-mean error (no import of the target)."""
        self._ensure_loaded()
        if name not in self._entries:
            raise unknown_name(self.kind, name, self._entries)
        return name

    def get(self, name: str) -> T:
        self.check(name)
        target = self._entries[name]
        if isinstance(target, str):
            module_name, _, attribute = target.partition(":")
            target = getattr(importlib.import_module(module_name), attribute)
            self._entries[name] = target
        return target
