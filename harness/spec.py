"""The frozen, canonical description of one result cell, and its content key.

Everything that can change a cell's predictions or scores is a field here; nothing else is (batch size, device
and paths are deliberately absent). The key is the SHA-256 of the canonical JSON of the spec.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

# Bump when the on-disk layout of a cell (spec.json, predictions.jsonl, metrics.json) changes meaning.
# 2: the spec keys the examples' content (examples_hash), not only their ids.
RESULT_SCHEMA_VERSION = 2


def canonical_json(value: Any) -> str:
    """Deterministic JSON: sorted keys, no whitespace, UTF-8 kept; tuples and lists serialise alike."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def content_hash(value: Any, length: int = 20) -> str:
    """Hex SHA-256 prefix of ``value``'s canonical JSON (strings and bytes are hashed as they are)."""
    if isinstance(value, bytes):
        data = value
    elif isinstance(value, str):
        data = value.encode("utf-8")
    else:
        data = canonical_json(value).encode("utf-8")
    return hashlib.sha256(data).hexdigest()[:length]


def example_ids_hash(ids: Sequence[str]) -> str:
    """Hash of the evaluated example ids, in order."""
    return content_hash(list(ids))


def examples_hash(examples: Sequence[Any]) -> str:
    """Hash of what a cell reads and scores against: each example's id, question and golds, in order.

    Ids alone are not enough: a data file corrected in place (a fixed answer, a reworded question) keeps its ids
    and must still change the key.
    """
    return content_hash([[e.id, e.question, list(e.golds)] for e in examples])


@dataclass(frozen=True)
class CellSpec:
    """One evaluation cell: a dataset slice x retriever x model x method x decoding x scorer."""

    dataset: str
    split: str
    example_ids_hash: str
    examples_hash: str  # ids + questions + golds (examples_hash()); example_ids_hash alone names the sample
    n_examples: int
    retriever: Mapping[str, Any]  # the retriever's spec(): id, parameters, corpus fingerprint
    passages: int  # m, the number of retrieved passages in the input
    model: Mapping[str, Any]  # model id and weights hash
    method: Mapping[str, Any]  # method name, its parameters, checkpoint hash for trained methods
    template_hash: str
    decoding: Mapping[str, Any]
    scorer_version: str
    metrics: tuple[str, ...]
    schema_version: int = field(default=RESULT_SCHEMA_VERSION)
    # The sha256 of a --dataset-file dataset's file (harness.dataset_file); None, and then absent from the
    # canonical form (so the built-in datasets' keys are unchanged), for the built-in datasets.
    dataset_sha256: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["metrics"] = list(self.metrics)
        if self.dataset_sha256 is None:
            del data["dataset_sha256"]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CellSpec:
        return cls(**{**data, "metrics": tuple(data["metrics"])})

    def canonical(self) -> str:
        return canonical_json(self.to_dict())

    def key(self) -> str:
        return content_hash(self.canonical())
