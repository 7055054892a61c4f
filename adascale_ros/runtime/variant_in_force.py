"""Which variant the inference runs: the latest valid selection, or the safe default before one and after
it times out."""

from __future__ import annotations

import math
from dataclasses import dataclass

from adascale_ros.model.variant import Variant


@dataclass(frozen=True)
class InForce:
    """One selection as the inference thread reads it: replaced whole, never changed in place."""

    variant: Variant
    load_index: float = math.nan  # the load the selector chose at; NaN: the safe default
    latency_budget_ms: float = math.nan  # the selection's deadline; NaN: none
    selected_at_s: float | None = None  # monotonic time of the selection; None: the safe default


class VariantInForce:
    """The variant in force, switched by selections and back to ``safe_default`` when they stop."""

    def __init__(self, safe_default: Variant) -> None:
        self.safe_default = safe_default
        self.current = InForce(safe_default)

    @property
    def selected(self) -> bool:
        return self.current.selected_at_s is not None

    def select(self, variant: Variant, load_index: float, latency_budget_ms: float, now_s: float) -> InForce:
        """Put a selection in force (a budget that is not a positive number is none); the one it replaced."""
        budget = latency_budget_ms if math.isfinite(latency_budget_ms) and latency_budget_ms > 0.0 else math.nan
        previous, self.current = self.current, InForce(variant, load_index, budget, now_s)
        return previous

    def expire(self, now_s: float, timeout_s: float) -> bool:
        """Fall back to the safe default when the selection is ``timeout_s`` old (0: never); whether it did."""
        selected_at = self.current.selected_at_s
        if selected_at is None or timeout_s == 0.0 or now_s - selected_at < timeout_s:
            return False
        self.current = InForce(self.safe_default)
        return True

    def age_s(self, now_s: float) -> float:
        """Seconds since the selection in force; NaN for the safe default."""
        selected_at = self.current.selected_at_s
        return now_s - selected_at if selected_at is not None else math.nan
