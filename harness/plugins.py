"""The registries of pluggable components.

Each built-in plugin package registers its entries in its ``__init__``; other installed packages add theirs through
the entry-point groups below (``[project.entry-points."harness.methods"]`` in their pyproject.toml, see
``examples/harness-plugin-example``).
"""

from collections.abc import Iterable

from harness.registry import Registry

DATASETS: Registry = Registry("dataset", plugin_package="tasks", entry_point_group="harness.datasets")
RETRIEVERS: Registry = Registry("retriever", plugin_package="retrievers", entry_point_group="harness.retrievers")
METHODS: Registry = Registry("method", plugin_package="harness.methods", entry_point_group="harness.methods")


def plugin_packages(datasets: Iterable[str] = (), retrievers: Iterable[str] = (), methods: Iterable[str] = ()) -> dict[str, str]:
    """``{"dataset:NAME": "distribution version", ...}`` for the named components that other packages registered
    (a result's provenance: the plugin code that produced it)."""
    found = {}
    for kind, registry, names in (
        ("dataset", DATASETS, datasets),
        ("retriever", RETRIEVERS, retrievers),
        ("method", METHODS, methods),
    ):
        for name in names:
            origin = registry.origin(name)
            if origin is not None:
                found[f"{kind}:{name}"] = origin
    return found
