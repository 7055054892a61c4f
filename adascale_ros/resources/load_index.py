"""Device load index (AdaScale eq. 2).

    I_load = (W_cpu * U_cpu + W_gpu * U_gpu + W_M * U_M) / W

with W the sum of the weights. A device that cannot measure a term (no GPU,
a failed read) reports it as NaN; its weight is then left out of both the sum
and W, so the index stays a weighted mean of what is known.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

NAN = float("nan")


@dataclass(frozen=True)
class LoadIndexWeights:
    """Weights of CPU, GPU and memory utilisation in the load index."""

    cpu: float = 0.5
    gpu: float = 0.3
    memory: float = 0.2

    def __post_init__(self) -> None:
        values = (self.cpu, self.gpu, self.memory)
        if not all(math.isfinite(w) and w >= 0.0 for w in values):
            raise ValueError(f"load index weights must be finite and >= 0, got {values}")
        if sum(values) <= 0.0:
            raise ValueError("at least one load index weight must be > 0")


def load_index(cpu_util: float, gpu_util: float, mem_util: float, weights: LoadIndexWeights) -> float:
    """Weighted mean of the known utilisations, in [0, 1]; NaN if none is known."""
    terms = ((weights.cpu, cpu_util), (weights.gpu, gpu_util), (weights.memory, mem_util))
    known = [(w, u) for w, u in terms if w > 0.0 and math.isfinite(u)]
    total_weight = sum(w for w, _ in known)
    if total_weight == 0.0:
        return NAN
    return min(1.0, max(0.0, sum(w * u for w, u in known) / total_weight))
