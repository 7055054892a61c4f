"""Choosing a variant: AdaScale's constrained search, and stable switching.

``choose`` solves one decision over the tables: among the variants with
predicted latency L <= T, energy E <= E_b and accuracy >= Acc_min, either

- ``max_accuracy``: the most accurate, ties broken by the lower J, or
- ``min_cost``: the lowest J = alpha * L + beta * E (AdaScale eq. 7).

When nothing is feasible it takes the fastest variant and says so.

``SwitchingPolicy`` adds the adaptation-frequency guard: a running variant
that breaks a budget (by prediction or by measurement) is replaced at once;
a feasible running one is replaced only once an upgrade (a feasible variant
that beats it by ``margin``) has been available for ``dwell_s`` seconds
without a break, and then by the best variant at that moment. The dwell
is on the upgrade, not on one candidate: near a budget, noisy predictions
make the best variant alternate between close rivals, and a timer that
restarted with every change would keep the running variant for as long as
the noise lasts. A new choice must also leave ``headroom`` (a fraction of
the latency budget) free, while a running variant is kept up to the budget
itself: without that gap, a variant chosen a hair under the budget broke it
at the next profile, and a downgrade chain ran through near-equal rivals.
"""

from __future__ import annotations

import math
from collections.abc import Callable
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
    exit_index: int
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


def fits(tables: VariantTables, variant_id: str, budgets: Budgets, objective: Objective) -> bool:
    """Whether a variant meets every constraint (an unknown latency never does).

    An unknown energy fails when there is an energy budget, or when the
    objective is min_cost with beta > 0 (J would be undefined).
    """
    if tables.accuracy[variant_id] < budgets.min_accuracy:
        return False
    latency = tables.latency_ms.get(variant_id)
    if latency is None or latency > budgets.latency_ms:
        return False
    if not math.isinf(budgets.energy_mj) or (objective.kind == "min_cost" and objective.beta > 0):
        energy = tables.energy_mj.get(variant_id)
        if energy is None or energy > budgets.energy_mj:
            return False
    return True


def _order(tables: VariantTables, variant_id: str, objective: Objective) -> tuple[float, float, str]:
    """Sort key of the objective, best first: a total order, so every search agrees."""
    accuracy, j = tables.accuracy[variant_id], cost(tables, variant_id, objective)
    if objective.kind == "max_accuracy":
        return (-accuracy, j, variant_id)
    return (j, -accuracy, variant_id)


def _most_accurate(tables: VariantTables, budgets: Budgets, objective: Objective) -> str | None:
    """Walk the variants from the most accurate down; the first that fits wins (then ties by J)."""
    fastest = tables.by_latency.first()
    if fastest is None or fastest[0] > budgets.latency_ms:
        return None
    best: str | None = None
    for variant_id in tables.by_accuracy:
        accuracy = tables.accuracy[variant_id]
        if accuracy < budgets.min_accuracy or (best is not None and accuracy < tables.accuracy[best]):
            break
        if fits(tables, variant_id, budgets, objective) and (
            best is None or _order(tables, variant_id, objective) < _order(tables, best, objective)
        ):
            best = variant_id
    return best


def _cheapest(tables: VariantTables, budgets: Budgets, objective: Objective) -> str | None:
    """Walk the index of the weighted term up to its budget; stop once that term alone costs more than the best J."""
    if objective.alpha > 0:
        keys, weight = tables.by_latency.up_to(budgets.latency_ms), objective.alpha
    else:
        keys, weight = tables.by_energy.up_to(budgets.energy_mj), objective.beta
    best: str | None = None
    best_order: tuple[float, float, str] | None = None
    for value, variant_id in keys:
        if best_order is not None and weight * value > best_order[0]:
            break
        if fits(tables, variant_id, budgets, objective):
            order = _order(tables, variant_id, objective)
            if best_order is None or order < best_order:
                best, best_order = variant_id, order
    return best


def search_indexed(tables: VariantTables, budgets: Budgets, objective: Objective) -> str | None:
    """The best feasible variant, using the accuracy order and the ordered indexes."""
    if objective.kind == "max_accuracy":
        return _most_accurate(tables, budgets, objective)
    return _cheapest(tables, budgets, objective)


def search_linear(tables: VariantTables, budgets: Budgets, objective: Objective) -> str | None:
    """The same answer by scanning every variant: the reference, and the benchmark's baseline."""
    feasible = [v for v in tables.index if fits(tables, v, budgets, objective)]
    return min(feasible, key=lambda v: _order(tables, v, objective)) if feasible else None


def _choice(tables: VariantTables, variant_id: str, feasible: bool, reason: str) -> Choice:
    return Choice(
        variant_id=variant_id,
        exit_index=tables.index[variant_id].exit_index,
        feasible=feasible,
        reason=reason,
        latency_ms=tables.latency_ms.get(variant_id, math.nan),
        energy_mj=tables.energy_mj.get(variant_id, math.nan),
        accuracy=tables.accuracy[variant_id],
    )


def score(tables: VariantTables, variant_id: str, objective: Objective) -> float:
    """Higher is better: accuracy for max_accuracy, -J for min_cost."""
    if objective.kind == "max_accuracy":
        return tables.accuracy[variant_id]
    return -cost(tables, variant_id, objective)


def choose(
    tables: VariantTables,
    budgets: Budgets,
    objective: Objective,
    search: Callable[[VariantTables, Budgets, Objective], str | None] = search_indexed,
    fallback: str | None = None,
) -> Choice | None:
    """The best feasible variant; when none is feasible, ``fallback`` (the safe default) if given, else the
    fastest; None before any prediction."""
    best = search(tables, budgets, objective)
    if best is None:
        if tables.fastest() is None:
            return None
        if fallback is not None:
            return _choice(tables, fallback, False, "no variant meets the budgets: the safe default")
        return _choice(tables, tables.fastest(), False, "no variant meets the budgets: fastest variant chosen")
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
    if tables.accuracy[variant_id] < budgets.min_accuracy:
        return f"accuracy {tables.accuracy[variant_id]:.4f} < minimum {budgets.min_accuracy:.4f}"
    return None


class SwitchingPolicy:
    """Downgrade at once, upgrade only after a dwell time and by a margin; choose with headroom. When no
    variant meets the budgets, ``fallback`` runs (the safe default; None: the fastest predicted).

    The dwell backs off: an upgrade that the load reverses before it has run for the dwell it waited
    doubles the dwell, up to ``max_dwell_s``; an upgrade that lasts that long brings it back to
    ``dwell_s``. A load that comes in bursts then stops costing a switch up and a miss at each one.
    """

    def __init__(
        self,
        dwell_s: float = 1.5,
        margin: float = 0.005,
        headroom: float = 0.0,
        fallback: str | None = None,
        max_dwell_s: float | None = None,
    ) -> None:
        if dwell_s < 0 or margin < 0:
            raise ValueError("dwell_s and margin must be >= 0")
        if not 0.0 <= headroom < 1.0:
            raise ValueError(f"headroom must be in [0, 1), got {headroom}")
        if max_dwell_s is not None and not max_dwell_s >= dwell_s:
            raise ValueError(f"max_dwell_s must be >= dwell_s ({dwell_s}), got {max_dwell_s}")
        self.dwell_s = dwell_s
        self.max_dwell_s = dwell_s if max_dwell_s is None else max_dwell_s
        self.margin = margin
        self.headroom = headroom
        self.fallback = fallback
        self.current: Choice | None = None
        self.dwell_in_force_s = dwell_s
        self._upgrade_since: float | None = None  # since when an upgrade has been available
        self._upgraded_at: float | None = None  # when the running variant came by an upgrade, until it lasted

    def _choose(self, tables: VariantTables, budgets: Budgets, objective: Objective) -> Choice | None:
        """The best variant within the budgets less the headroom; within the budgets when none is."""
        if self.headroom == 0.0 or math.isinf(budgets.latency_ms):
            return choose(tables, budgets, objective, fallback=self.fallback)
        tighter = replace(budgets, latency_ms=budgets.latency_ms * (1.0 - self.headroom))
        best = choose(tables, tighter, objective, fallback=self.fallback)
        return best if best is None or best.feasible else choose(tables, budgets, objective, fallback=self.fallback)

    def update(
        self,
        now_s: float,
        tables: VariantTables,
        budgets: Budgets,
        objective: Objective,
        measured_latency_ms: float | None = None,
    ) -> Choice | None:
        """Decide at time ``now_s``; returns the choice in force (the same object when unchanged)."""
        best = self._choose(tables, budgets, objective)
        if best is None:
            return self.current
        current = self.current
        if current is None:
            return self._switch(best, f"initial selection: {best.reason}")
        broken = breaks_budgets(tables, current.variant_id, budgets, measured_latency_ms)
        self._back_off(now_s, reversed_=broken is not None)
        if broken is not None:
            predicted = tables.latency_ms.get(current.variant_id, math.nan)
            if measured_latency_ms is not None and measured_latency_ms > predicted > 0:
                # AdaptiveNet's latency monitor: predictions run r times too low, so
                # choose within T / r.
                ratio = measured_latency_ms / predicted
                scaled = replace(budgets, latency_ms=budgets.latency_ms / ratio)
                best = self._choose(tables, scaled, objective) or best
            if best.variant_id == current.variant_id:
                self.current = best  # nothing better exists: keep it, report why
                return self.current
            why = "" if best.feasible else f"; {best.reason}"
            return self._switch(best, f"{current.variant_id} breaks its budget ({broken}): switch now{why}")
        gain = score(tables, best.variant_id, objective) - score(tables, current.variant_id, objective)
        if best.variant_id == current.variant_id or not best.feasible or gain < self.margin:
            self._upgrade_since = None
            return current
        if self._upgrade_since is None:
            self._upgrade_since = now_s
        if now_s - self._upgrade_since >= self.dwell_in_force_s:
            upgraded = self._switch(best, f"upgrade after {self.dwell_in_force_s:g} s: {best.reason}")
            self._upgraded_at = now_s
            return upgraded
        return current

    def _back_off(self, now_s: float, reversed_: bool) -> None:
        """Double the dwell when the load reverses an upgrade within the dwell it waited; reset it when
        the upgrade lasted."""
        if self._upgraded_at is None:
            return
        if reversed_ and now_s - self._upgraded_at < self.dwell_in_force_s:
            self.dwell_in_force_s = min(2.0 * self.dwell_in_force_s, self.max_dwell_s)
            self._upgraded_at = None
        elif now_s - self._upgraded_at >= self.dwell_in_force_s:
            self.dwell_in_force_s = self.dwell_s
            self._upgraded_at = None

    def _switch(self, choice: Choice, reason: str) -> Choice:
        self._upgrade_since = None
        self._upgraded_at = None
        self.current = replace(choice, reason=reason)
        return self.current
