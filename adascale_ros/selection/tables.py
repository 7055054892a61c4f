"""AdaScale's variant tables and their ordered indexes.

- Performance Index Table: what a variant *is* (accuracy, parameters,
  storage, FLOPs, memory accesses); fixed for a trained model, so its
  accuracy order is computed once.
- Predictive Performance Table: what a variant *costs now* (predicted
  latency and energy at the current load); updated by every profile.

The predictive table is indexed twice, keyed on ``(predicted latency,
variant id)`` and ``(predicted energy, variant id)``, so "every variant
within T ms" is a range query and "the fastest" is the first key. A new
profile only moves the keys whose prediction changed. A variant whose
prediction is unknown (NaN) is in no index and so never selectable.

The shipped index, ``SortedOnQueryKeys``, is a sorted list brought up to
date at the first query after a change: the profiler moves every variant's
key at once, and one sort of the nearly sorted list costs less than moving
each key in AdaScale's B+ tree (``BTreeKeys``, ``BTrees.OOBTree.OOTreeSet``).
``SortedArrayKeys`` (a list kept sorted with ``bisect``) and ``UnorderedKeys``
(no index at all) have the same interface; ``adascale bench selector``
compares them all side by side.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from BTrees.OOBTree import OOTreeSet

# Sorts after every variant id (ids are printable ASCII), for inclusive range ends.
_AFTER_ALL_IDS = "\x7f"

Key = tuple[float, str]


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


class KeyIndex(Protocol):
    """An ordered set of (value, variant id) keys."""

    def add(self, key: Key) -> object: ...
    def remove(self, key: Key) -> object: ...
    def up_to(self, bound: float) -> Iterator[Key]: ...
    def first(self) -> Key | None: ...
    def __len__(self) -> int: ...


class BTreeKeys:
    """AdaScale's index: a B+ tree set, O(log n) updates."""

    def __init__(self) -> None:
        self._tree = OOTreeSet()
        self.add = self._tree.add
        self.remove = self._tree.remove

    def up_to(self, bound: float) -> Iterator[Key]:
        return iter(self._tree.keys() if math.isinf(bound) else self._tree.keys(max=(bound, _AFTER_ALL_IDS)))

    def first(self) -> Key | None:
        return self._tree.minKey() if len(self._tree) else None

    def __len__(self) -> int:
        return len(self._tree)


class SortedArrayKeys:
    """A sorted Python list searched with ``bisect``: O(log n) search, O(n) insert and delete."""

    def __init__(self) -> None:
        self._keys: list[Key] = []

    def add(self, key: Key) -> None:
        bisect.insort(self._keys, key)

    def remove(self, key: Key) -> None:
        del self._keys[bisect.bisect_left(self._keys, key)]

    def up_to(self, bound: float) -> Iterator[Key]:
        end = bisect.bisect_right(self._keys, (bound, _AFTER_ALL_IDS))
        return iter(self._keys[:end])

    def first(self) -> Key | None:
        return self._keys[0] if self._keys else None

    def __len__(self) -> int:
        return len(self._keys)


class UnorderedKeys:
    """No index: a hash set, O(1) updates, and every query scans all keys."""

    def __init__(self) -> None:
        self._keys: set[Key] = set()
        self.add = self._keys.add
        self.remove = self._keys.remove

    def up_to(self, bound: float) -> Iterator[Key]:
        return iter(sorted(k for k in self._keys if k[0] <= bound))

    def first(self) -> Key | None:
        return min(self._keys, default=None)

    def __len__(self) -> int:
        return len(self._keys)


class SortedOnQueryKeys:
    """A sorted list brought up to date at the first query after changes: the shipped index.

    Updates only note what changed. At the query, a few changes go in one by
    one with ``bisect`` (as ``SortedArrayKeys``); many (a whole profile: every
    variant's prediction moves at once) merge in one sort of the nearly sorted
    list, which costs less than moving each key in a tree.
    """

    FEW = 32  # up to this many pending changes go in one by one

    def __init__(self) -> None:
        self._sorted: list[Key] = []
        self._added: set[Key] = set()
        self._removed: set[Key] = set()

    def add(self, key: Key) -> None:
        if key in self._removed:
            self._removed.discard(key)
        else:
            self._added.add(key)

    def remove(self, key: Key) -> None:
        if key in self._added:
            self._added.discard(key)
        else:
            self._removed.add(key)

    def _ordered(self) -> list[Key]:
        added, removed, keys = self._added, self._removed, self._sorted
        if len(added) + len(removed) <= self.FEW:
            for key in removed:
                del keys[bisect.bisect_left(keys, key)]
            for key in added:
                bisect.insort(keys, key)
        else:
            keys = [key for key in keys if key not in removed] if removed else keys
            keys.extend(added)
            keys.sort()
            self._sorted = keys
        added.clear()
        removed.clear()
        return keys

    def up_to(self, bound: float) -> Iterator[Key]:
        ordered = self._ordered()
        return iter(ordered[: bisect.bisect_right(ordered, (bound, _AFTER_ALL_IDS))])

    def first(self) -> Key | None:
        ordered = self._ordered()
        return ordered[0] if ordered else None

    def __len__(self) -> int:
        return len(self._sorted) + len(self._added) - len(self._removed)


INDEX_KINDS: dict[str, type] = {
    "btree": BTreeKeys,
    "sorted_on_query": SortedOnQueryKeys,
    "sorted_array": SortedArrayKeys,
    "unordered": UnorderedKeys,
}


def _usable(value: float) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value >= 0.0


class VariantTables:
    """Both tables and their indexes (``SortedOnQueryKeys`` unless ``index_kind`` says otherwise)."""

    def __init__(self, entries: Iterable[VariantEntry], index_kind: str = "sorted_on_query") -> None:
        if index_kind not in INDEX_KINDS:
            raise ValueError(f"index_kind must be one of {sorted(INDEX_KINDS)}, got {index_kind!r}")
        self.index: dict[str, VariantEntry] = {}
        for entry in entries:
            if entry.variant_id in self.index:
                raise ValueError(f"duplicate variant id {entry.variant_id!r}")
            self.index[entry.variant_id] = entry
        # Most accurate first (ties by id): the walk order of the max_accuracy search.
        self.by_accuracy: list[str] = sorted(self.index, key=lambda v: (-self.index[v].accuracy, v))
        self.accuracy: dict[str, float] = {v: e.accuracy for v, e in self.index.items()}
        self.latency_ms: dict[str, float] = {}
        self.energy_mj: dict[str, float] = {}
        self.by_latency: KeyIndex = INDEX_KINDS[index_kind]()
        self.by_energy: KeyIndex = INDEX_KINDS[index_kind]()

    @classmethod
    def from_variant_table(cls, table: Mapping[str, Any], index_kind: str = "sorted_on_query") -> VariantTables:
        try:
            entries = [VariantEntry.from_row(row) for row in table["variants"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed variant table row: {exc!r}") from exc
        if not entries:
            raise ValueError("the variant table has no variants")
        return cls(entries, index_kind)

    def __len__(self) -> int:
        return len(self.index)

    def __contains__(self, variant_id: object) -> bool:
        return variant_id in self.index

    @staticmethod
    def _move(keys: KeyIndex, values: dict[str, float], variant_id: str, value: float) -> bool:
        old = values.get(variant_id)
        if old == value:
            return False
        if old is not None:
            keys.remove((old, variant_id))
            del values[variant_id]
        if _usable(value):
            value = float(value)
            keys.add((value, variant_id))
            values[variant_id] = value
        return old is not None or _usable(value)

    def update_predictions(self, predictions: Mapping[str, tuple[float, float]]) -> int:
        """Set (latency ms, energy mJ) for the given variants; returns how many index entries moved.

        Unknown ids are ignored (a profile for another model); NaN, infinite
        or negative predictions remove the variant from that index.
        """
        moved = 0
        for variant_id, (latency, energy) in predictions.items():
            if variant_id not in self.index:
                continue
            moved += self._move(self.by_latency, self.latency_ms, variant_id, latency)
            moved += self._move(self.by_energy, self.energy_mj, variant_id, energy)
        return moved

    def within_latency(self, max_latency_ms: float) -> Iterator[str]:
        """Ids with predicted latency <= the bound, fastest first (range query)."""
        return (variant_id for _, variant_id in self.by_latency.up_to(max_latency_ms))

    def within_energy(self, max_energy_mj: float) -> Iterator[str]:
        """Ids with predicted energy <= the bound, cheapest first."""
        return (variant_id for _, variant_id in self.by_energy.up_to(max_energy_mj))

    def fastest(self) -> str | None:
        """The variant with the lowest predicted latency, or None before any prediction."""
        first = self.by_latency.first()
        return None if first is None else first[1]
