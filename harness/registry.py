"""One generic name -> factory registry, used for datasets, retrievers and methods.

Entries may be objects or lazy ``"module:attribute"`` strings, imported on first lookup, so listing names
never imports torch or a model library. Registering a name twice is an error; an unknown name raises
:class:`UnknownNameError` with the closest matches. Other installed packages add entries through an entry-point
group (``harness.datasets``, ``harness.retrievers``, ``harness.methods``): each entry point's value is such a lazy
``"module:attribute"`` string, so a plugin is imported only when its name is used.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterable, Iterator
from importlib.metadata import entry_points
from typing import Generic, TypeVar

from harness.errors import HarnessError, UnknownNameError

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
    """Maps names to objects; ``plugin_package`` is imported first so its registration lines run, then the
    entry points of ``entry_point_group`` that installed packages declare are added."""

    def __init__(self, kind: str, plugin_package: str | None = None, entry_point_group: str | None = None) -> None:
        self.kind = kind
        self._plugin_package = plugin_package
        self._entry_point_group = entry_point_group
        self._entries: dict[str, T | str] = {}
        self._origins: dict[str, str] = {}  # name -> "distribution version" for entries from other packages
        self._loaded = plugin_package is None and entry_point_group is None

    def register(self, name: str, target: T | str, replace: bool = False) -> T | str:
        """Add ``name``; ``target`` is the object or a lazy ``"module:attribute"`` path. ``replace`` lets a
        run-time entry (a ``--dataset-file`` dataset) take the place of an earlier one of the same name."""
        if name in self._entries and not replace:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = target
        return target

    def _ensure_loaded(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        if self._plugin_package is not None:
            importlib.import_module(self._plugin_package)  # its __init__ calls register()
        if self._entry_point_group is not None:
            self._add_entry_points(self._entry_point_group)

    def _add_entry_points(self, group: str) -> None:
        for point in sorted(entry_points(group=group), key=lambda p: p.name):
            package = f"{point.dist.name} {point.dist.version}" if point.dist is not None else "an installed package"
            module, colon, attribute = point.value.partition(":")
            if not colon or not module.strip() or not attribute.strip():
                raise HarnessError(
                    f"entry point {point.name!r} of {package} (group {group}) is {point.value!r}; it must name "
                    "'module:attribute'; fix that package's entry points"
                )
            if point.name in self._entries:
                where = self._origins.get(point.name, "harness itself")
                raise HarnessError(
                    f"{self.kind} {point.name!r} of {package} (entry point group {group}) is already registered by "
                    f"{where}; rename it in that package's entry points or uninstall one of them"
                )
            self._entries[point.name] = f"{module.strip()}:{attribute.strip()}"
            self._origins[point.name] = package

    def origin(self, name: str) -> str | None:
        """``"distribution version"`` of the installed package that registered ``name`` through an entry point;
        ``None`` for a name harness itself registers."""
        self._ensure_loaded()
        return self._origins.get(name)

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
