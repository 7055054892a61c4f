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


def time_call(fn: Callable[[], object], repeats: int = 50, warmup: int = 5) -> Timing:
    """Run ``fn`` ``warmup`` times unmeasured, then time ``repeats`` runs."""
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e3)
    samples.sort()
    return Timing(
        median_ms=statistics.median(samples),
        p90_ms=samples[min(len(samples) - 1, int(0.9 * len(samples)))],
        min_ms=samples[0],
        samples=len(samples),
    )
