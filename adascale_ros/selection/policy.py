"""Choosing a variant: AdaScale's constrained search, and stable switching.

``choose`` solves one decision over the tables: among the variants with
predicted latency L <= T, energy E <= E_b and accuracy >= Acc_min, either

- ``max_accuracy``: the most accurate, ties broken by the lower J, or
- ``min_cost``: the lowest J = alpha * L + beta * E (AdaScale eq. 7).

When nothing is feasible it takes the fastest variant and says so.

``StableSelector`` adds the adaptation-frequency guard: a running variant
that breaks a budget (by prediction or by measurement) is replaced at once;
a better variant replaces a feasible running one only after it has been the
choice for ``dwell_s`` seconds and beats it by ``margin``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from adascale_ros.selection.tables import VariantTables

OBJECTIVES = ("max_accuracy", "min_cost")


@dataclass(frozen=True)
class Budgets:
    latency_ms: float = math.inf
    energy_mj: float = math.inf
    min_accuracy: float = 0.0

    def __post_init__(self) -> None:
        for name in ("latency_ms", "energy_mj"):
            value = getattr(self, name)
            if math.isnan(value) or value <= 0.0:
                raise ValueError(f"{name} budget must be > 0 (inf: no budget), got {value}")
        if not 0.0 <= self.min_accuracy <= 1.0:
            raise ValueError(f"min_accuracy must be in [0, 1], got {self.min_accuracy}")


@dataclass(frozen=True)
class Objective:
    kind: str = "max_accuracy"
    alpha: float = 1.0  # weight of latency [1/ms] in J
    beta: float = 0.0  # weight of energy [1/mJ] in J

    def __post_init__(self) -> None:
        if self.kind not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.kind!r}")
        if not (math.isfinite(self.alpha) and math.isfinite(self.beta) and self.alpha >= 0 and self.beta >= 0):
            raise ValueError(f"alpha and beta must be finite and >= 0, got {self.alpha}, {self.beta}")
        if self.alpha == 0 and self.beta == 0:
            raise ValueError("alpha and beta cannot both be 0")


@dataclass(frozen=True)
class Choice:
    variant_id: str
    feasible: bool
    reason: str
    latency_ms: float
    energy_mj: float
    accuracy: float


def cost(tables: VariantTables, variant_id: str, objective: Objective) -> float:
    """J = alpha * L + beta * E; an unknown energy counts only when beta > 0 (then J is inf)."""
    latency = tables.latency_ms.get(variant_id, math.inf)
    energy = tables.energy_mj.get(variant_id, math.inf) if objective.beta > 0 else 0.0
    return objective.alpha * latency + objective.beta * energy


def feasible_ids(tables: VariantTables, budgets: Budgets) -> list[str]:
    in_latency = tables.within_latency(budgets.latency_ms)
    if math.isinf(budgets.energy_mj):
        candidates = list(in_latency)
    else:
        in_energy = set(tables.within_energy(budgets.energy_mj))
        candidates = [v for v in in_latency if v in in_energy]
    return [v for v in candidates if tables.index[v].accuracy >= budgets.min_accuracy]


def _choice(tables: VariantTables, variant_id: str, feasible: bool, reason: str) -> Choice:
    return Choice(
        variant_id=variant_id,
        feasible=feasible,
        reason=reason,
        latency_ms=tables.latency_ms.get(variant_id, math.nan),
        energy_mj=tables.energy_mj.get(variant_id, math.nan),
        accuracy=tables.index[variant_id].accuracy,
    )


def score(tables: VariantTables, variant_id: str, objective: Objective) -> float:
    """Higher is better: accuracy for max_accuracy, -J for min_cost."""
    if objective.kind == "max_accuracy":
        return tables.index[variant_id].accuracy
    return -cost(tables, variant_id, objective)


def choose(tables: VariantTables, budgets: Budgets, objective: Objective) -> Choice | None:
    """The best feasible variant, or the fastest when none is feasible; None before any prediction."""
    candidates = feasible_ids(tables, budgets)
    if not candidates:
        fastest = tables.fastest()
        if fastest is None:
            return None
        return _choice(tables, fastest, False, "no variant meets the budgets: fastest variant chosen")
    best = max(candidates, key=lambda v: (score(tables, v, objective), -cost(tables, v, objective)))
    return _choice(tables, best, True, f"best {objective.kind.replace('_', ' ')} within budgets")


def breaks_budgets(
    tables: VariantTables, variant_id: str, budgets: Budgets, measured_latency_ms: float | None = None
) -> str | None:
    """Why the running variant is no longer acceptable, or None when it still is."""
    latency = tables.latency_ms.get(variant_id, math.inf)
    if latency > budgets.latency_ms:
        return f"predicted latency {latency:.2f} ms > budget {budgets.latency_ms:.2f} ms"
    if measured_latency_ms is not None and measured_latency_ms > budgets.latency_ms:
        return f"measured latency {measured_latency_ms:.2f} ms > budget {budgets.latency_ms:.2f} ms"
    energy = tables.energy_mj.get(variant_id, math.nan)
    if not math.isinf(budgets.energy_mj) and not energy <= budgets.energy_mj:
        return f"predicted energy {energy:.3f} mJ > budget {budgets.energy_mj:.3f} mJ"
    if tables.index[variant_id].accuracy < budgets.min_accuracy:
        return f"accuracy {tables.index[variant_id].accuracy:.4f} < minimum {budgets.min_accuracy:.4f}"
    return None


class StableSelector:
    """Downgrade at once, upgrade only after a dwell time and by a margin."""

    def __init__(self, dwell_s: float = 2.0, margin: float = 0.005) -> None:
        if dwell_s < 0 or margin < 0:
            raise ValueError("dwell_s and margin must be >= 0")
        self.dwell_s = dwell_s
        self.margin = margin
        self.current: Choice | None = None
        self._candidate: str | None = None
        self._candidate_since = 0.0

    def update(
        self,
        now_s: float,
        tables: VariantTables,
        budgets: Budgets,
        objective: Objective,
        measured_latency_ms: float | None = None,
    ) -> Choice | None:
        """Decide at time ``now_s``; returns the choice in force (the same object when unchanged)."""
        best = choose(tables, budgets, objective)
        if best is None:
            return self.current
        current = self.current
        if current is None:
            return self._switch(best, f"initial selection: {best.reason}")
        broken = breaks_budgets(tables, current.variant_id, budgets, measured_latency_ms)
        if broken is not None:
            predicted = tables.latency_ms.get(current.variant_id, math.nan)
            if measured_latency_ms is not None and measured_latency_ms > predicted > 0:
                # AdaptiveNet's latency monitor: predictions run r times too low, so
                # choose within T / r.
                ratio = measured_latency_ms / predicted
                scaled = replace(budgets, latency_ms=budgets.latency_ms / ratio)
                best = choose(tables, scaled, objective) or best
            if best.variant_id == current.variant_id:
                self.current = best  # nothing better exists: keep it, report why
                return self.current
            return self._switch(best, f"{current.variant_id} breaks its budget ({broken}): switch now")
        if best.variant_id == current.variant_id or not best.feasible:
            self._candidate = None
            return current
        gain = score(tables, best.variant_id, objective) - score(tables, current.variant_id, objective)
        if gain < self.margin:
            self._candidate = None
            return current
        if self._candidate != best.variant_id:
            self._candidate, self._candidate_since = best.variant_id, now_s
        if now_s - self._candidate_since >= self.dwell_s:
            return self._switch(best, f"upgrade after {self.dwell_s:g} s: {best.reason}")
        return current

    def _switch(self, choice: Choice, reason: str) -> Choice:
        self._candidate = None
        self.current = replace(choice, reason=reason)
        return self.current
