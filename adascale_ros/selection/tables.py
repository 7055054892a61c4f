"""AdaScale's variant tables, indexed by B+ trees.

- Performance Index Table: what a variant *is* (accuracy, parameters,
  storage, FLOPs, memory accesses); fixed for a trained model.
- Predictive Performance Table: what a variant *costs now* (predicted
  latency and energy at the current load); replaced by every profile.

The predictive table is indexed by two B+ trees (``BTrees.OOBTree``) keyed on
``(predicted latency, variant id)`` and ``(predicted energy, variant id)``,
so "every variant within T ms" is a range query. A new profile only moves the
keys whose prediction changed. A variant whose prediction is unknown (NaN)
is in no index and so never selectable.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from BTrees.OOBTree import OOBTree

# Sorts after every variant id (ids are printable ASCII), for inclusive range ends.
_AFTER_ALL_IDS = "\x7f"


@dataclass(frozen=True)
class VariantEntry:
    """One row of the Performance Index Table."""

    variant_id: str
    exit_index: int
    operators: tuple[str, ...]
    accuracy: float
    params: int = 0
    flops: int = 0
    storage_bytes: int = 0
    memory_accesses: int = 0

    @classmethod
    def from_row(cls, row: Mapping[str, Any], accuracy_key: str = "val_accuracy") -> VariantEntry:
        """From a ``variants.json`` row. Selection uses validation accuracy: the test split is for reports."""
        return cls(
            variant_id=str(row["variant_id"]),
            exit_index=int(row["exit_index"]),
            operators=tuple(row["operators"]),
            accuracy=float(row[accuracy_key]),
            params=int(row.get("params", 0)),
            flops=int(row.get("flops", 0)),
            storage_bytes=int(row.get("storage_bytes", 0)),
            memory_accesses=int(row.get("memory_accesses", 0)),
        )


def _finite(value: float) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value >= 0.0


class VariantTables:
    """Both tables and their B+ tree indexes."""

    def __init__(self, entries: Iterable[VariantEntry]) -> None:
        self.index: dict[str, VariantEntry] = {}
        for entry in entries:
            if entry.variant_id in self.index:
                raise ValueError(f"duplicate variant id {entry.variant_id!r}")
            self.index[entry.variant_id] = entry
        self.latency_ms: dict[str, float] = {}
        self.energy_mj: dict[str, float] = {}
        self._by_latency = OOBTree()
        self._by_energy = OOBTree()

    @classmethod
    def from_variant_table(cls, table: Mapping[str, Any]) -> VariantTables:
        return cls(VariantEntry.from_row(row) for row in table["variants"])

    def __len__(self) -> int:
        return len(self.index)

    def __contains__(self, variant_id: object) -> bool:
        return variant_id in self.index

    @staticmethod
    def _move(tree: OOBTree, values: dict[str, float], variant_id: str, value: float) -> bool:
        old = values.get(variant_id)
        if old == value:
            return False
        if old is not None:
            del tree[(old, variant_id)]
            del values[variant_id]
        if _finite(value):
            tree[(value, variant_id)] = None
            values[variant_id] = value
        return old is not None or _finite(value)

    def update_predictions(self, predictions: Mapping[str, tuple[float, float]]) -> int:
        """Set (latency ms, energy mJ) for the given variants; returns how many index entries moved.

        Unknown ids are ignored (a profile for another model); NaN, infinite
        or negative predictions remove the variant from that index.
        """
        moved = 0
        for variant_id, (latency, energy) in predictions.items():
            if variant_id not in self.index:
                continue
            moved += self._move(self._by_latency, self.latency_ms, variant_id, latency)
            moved += self._move(self._by_energy, self.energy_mj, variant_id, energy)
        return moved

    @staticmethod
    def _up_to(tree: OOBTree, bound: float) -> Iterator[str]:
        keys = tree.keys() if math.isinf(bound) else tree.keys(max=(bound, _AFTER_ALL_IDS))
        return (variant_id for _, variant_id in keys)

    def within_latency(self, max_latency_ms: float) -> Iterator[str]:
        """Ids with predicted latency <= the bound, fastest first (B+ tree range query)."""
        return self._up_to(self._by_latency, max_latency_ms)

    def within_energy(self, max_energy_mj: float) -> Iterator[str]:
        """Ids with predicted energy <= the bound, cheapest first."""
        return self._up_to(self._by_energy, max_energy_mj)

    def fastest(self) -> str | None:
        """The variant with the lowest predicted latency, or None before any prediction."""
        return self._by_latency.minKey()[1] if len(self._by_latency) else None
