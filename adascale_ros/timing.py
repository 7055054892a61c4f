"""Wall-clock timing of one call, repeated: the primitive every latency figure uses."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Timing:
    median_ms: float
    p90_ms: float
    min_ms: float
    samples: int


def quantile(ordered: list[float], q: float) -> float:
    """The sample at quantile ``q`` of an ascending, non-empty list (nearest rank below)."""
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summarize(samples_ms: list[float]) -> Timing:
    ordered = sorted(samples_ms)
    return Timing(
        median_ms=statistics.median(ordered),
        p90_ms=quantile(ordered, 0.9),
        min_ms=ordered[0],
        samples=len(ordered),
    )


def time_samples(fn: Callable[[], object], repeats: int) -> list[float]:
    """The wall time of each of ``repeats`` runs of ``fn`` [ms], for callers that pool rounds."""
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e3)
    return samples


def time_call(fn: Callable[[], object], repeats: int = 50, warmup: int = 5) -> Timing:
    """Run ``fn`` ``warmup`` times unmeasured, then time ``repeats`` runs."""
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    for _ in range(warmup):
        fn()
    return summarize(time_samples(fn, repeats))
