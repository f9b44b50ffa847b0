"""The registries of pluggable components. Each plugin package registers its entries in its ``__init__``."""

from harness.registry import Registry

DATASETS: Registry = Registry("dataset", plugin_package="tasks")
RETRIEVERS: Registry = Registry("retriever", plugin_package="retrievers")
METHODS: Registry = Registry("method", plugin_package="harness.methods")
