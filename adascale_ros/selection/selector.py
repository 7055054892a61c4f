"""The selector's decision loop, without ROS: profiles in, selections out.

``VariantSelector`` keeps the latest profile at the current load and the
latest at the forecast load, feeds the one to act on into the tables (the
forecast when it is worse than the current load, so the switch happens
before the load arrives), and asks ``SwitchingPolicy`` for the choice.
Before any profile it answers with the configured safe default; when
profiles stop, it keeps the last tables and reports them stale.

The latency budget in force is ``latency_budget_ms`` when one is set, else
``budget_fraction_of_frame_period`` of the camera's frame period the profiles
carry (classification keeps up with the camera and leaves the rest of each
period to the robot's other work), else none.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from adascale_ros.model.directory import USEFUL_ACCURACY_SHARE
from adascale_ros.selection.policy import Budgets, Choice, Objective, SwitchingPolicy
from adascale_ros.selection.tables import VariantTables

# A latency budget from the camera within this fraction of the one in force is the same budget.
BUDGET_TOLERANCE = 0.05

# The budget source of a configured latency budget (the others name the camera or say there is none).
FIXED_BUDGET = "latency_budget_ms"

# Parameters whose value 0 means "no budget".
_BUDGETS = ("latency_budget_ms", "energy_budget_mj")


def _same_latency(new_ms: float, old_ms: float) -> bool:
    """Within ``BUDGET_TOLERANCE`` of each other, or both no budget (inf)."""
    if math.isinf(new_ms) or math.isinf(old_ms):
        return new_ms == old_ms
    return abs(new_ms - old_ms) <= BUDGET_TOLERANCE * old_ms


@dataclass(frozen=True)
class SelectorConfig:
    budgets: Budgets = field(default_factory=Budgets)
    objective: Objective = field(default_factory=Objective)
    dwell_s: float = 1.5
    max_dwell_s: float = 8.0
    margin: float = 0.005
    latency_headroom: float = 0.0
    use_forecast: bool = True
    profile_timeout_s: float = 2.0
    budget_fraction_of_frame_period: float = 0.0  # 0: no budget from the camera

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> SelectorConfig:
        """From the node's parameter values; raises ``ValueError`` with the reason when invalid."""
        limits = {}
        for name in _BUDGETS:
            value = float(values[name])
            if math.isnan(value) or value < 0.0:
                raise ValueError(f"{name} must be >= 0 (0: no budget), got {value}")
            limits[name] = math.inf if value == 0.0 or math.isinf(value) else value
        timeout = float(values["profile_timeout_s"])
        if not (math.isfinite(timeout) and timeout > 0.0):
            raise ValueError(f"profile_timeout_s must be > 0, got {timeout}")
        for name in ("dwell_s", "margin"):
            if not (math.isfinite(float(values[name])) and float(values[name]) >= 0.0):
                raise ValueError(f"{name} must be >= 0, got {values[name]}")
        max_dwell = float(values["max_dwell_s"])
        if not (math.isfinite(max_dwell) and max_dwell >= float(values["dwell_s"])):
            raise ValueError(f"max_dwell_s must be >= dwell_s ({values['dwell_s']}), got {values['max_dwell_s']}")
        if not 0.0 <= float(values["latency_headroom"]) < 1.0:
            raise ValueError(f"latency_headroom must be in [0, 1), got {values['latency_headroom']}")
        fraction = float(values["budget_fraction_of_frame_period"])
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"budget_fraction_of_frame_period must be in [0, 1] (0: off), got {fraction}")
        return cls(
            budgets=Budgets(limits["latency_budget_ms"], limits["energy_budget_mj"], float(values["min_accuracy"])),
            objective=Objective(str(values["objective"]), float(values["alpha"]), float(values["beta"])),
            dwell_s=float(values["dwell_s"]),
            max_dwell_s=max_dwell,
            margin=float(values["margin"]),
            latency_headroom=float(values["latency_headroom"]),
            use_forecast=bool(values["use_forecast"]),
            profile_timeout_s=timeout,
            budget_fraction_of_frame_period=fraction,
        )

    def budgets_for(self, frame_period_ms: float) -> tuple[Budgets, str]:
        """The budgets in force given the camera's frame period (NaN: unknown), and where the latency
        budget came from."""
        if math.isfinite(self.budgets.latency_ms):
            return self.budgets, FIXED_BUDGET
        fraction = self.budget_fraction_of_frame_period
        if fraction == 0.0:
            return self.budgets, "none"
        if not (math.isfinite(frame_period_ms) and frame_period_ms > 0.0):
            return self.budgets, "none until the camera's frame period is measured"
        budgets = replace(self.budgets, latency_ms=fraction * frame_period_ms)
        return budgets, f"{fraction:g} x the camera's {frame_period_ms:.1f} ms frame period"


@dataclass(frozen=True)
class Profile:
    """One VariantProfileArray, as the selector uses it."""

    received_s: float
    load_index: float  # NaN: unknown
    predictions: dict[str, tuple[float, float]]  # id -> (latency ms, energy mJ)
    measured_latency_ms: dict[str, float] = field(default_factory=dict)
    frame_period_ms: float = math.nan  # the camera's; NaN: unknown


@dataclass(frozen=True)
class Selection:
    """The choice in force and the context it was made in."""

    choice: Choice
    budgets: Budgets
    load_index: float
    load_is_forecast: bool
    budget_source: str = ""  # where budgets.latency_ms came from


class VariantSelector:
    def __init__(self, tables: VariantTables, config: SelectorConfig, safe_default: str) -> None:
        if safe_default not in tables:
            raise ValueError(f"safe default variant {safe_default!r} is not in the variant table")
        self.tables = tables
        self.config = config
        self.stable = SwitchingPolicy(
            config.dwell_s, config.margin, config.latency_headroom, safe_default, config.max_dwell_s
        )
        # AdaScale's Acc_min is never below what classifies: a variant whose generated branches did not
        # learn answers near chance, however fast it is.
        self.accuracy_floor = USEFUL_ACCURACY_SHARE * max(tables.accuracy.values())
        self.current: Profile | None = None
        self.forecast: Profile | None = None
        self._in_tables: Profile | None = None  # the profile whose predictions the tables hold
        budgets, source = self._budgets_for(math.nan)
        self.in_force = Selection(
            Choice(
                variant_id=safe_default,
                exit_index=tables.index[safe_default].exit_index,
                feasible=False,
                reason="safe default: no performance profile received yet",
                latency_ms=math.nan,
                energy_mj=math.nan,
                accuracy=tables.accuracy[safe_default],
            ),
            budgets,
            load_index=math.nan,
            load_is_forecast=False,
            budget_source=source,
        )

    def reconfigure(self, config: SelectorConfig, now_s: float) -> Selection | None:
        """New parameters take effect at once; returns the new selection when it changed."""
        self.config = config
        self.stable.dwell_s, self.stable.margin = config.dwell_s, config.margin
        self.stable.max_dwell_s = config.max_dwell_s
        self.stable.dwell_in_force_s = min(max(self.stable.dwell_in_force_s, config.dwell_s), config.max_dwell_s)
        self.stable.headroom = config.latency_headroom
        return self._decide(now_s)

    def on_profile(self, profile: Profile, is_forecast: bool) -> Selection | None:
        """Take in one profile; returns the new selection when the choice changed."""
        if is_forecast:
            self.forecast = profile
        else:
            self.current = profile
        return self._decide(profile.received_s)

    def acting_profile(self, now_s: float) -> tuple[Profile | None, bool]:
        """The profile to act on: the forecast when it is fresh and predicts a higher load."""
        current, forecast = self.current, self.forecast
        if not self.config.use_forecast or forecast is None:
            return current, False
        fresh = now_s - forecast.received_s <= self.config.profile_timeout_s
        if fresh and (current is None or forecast.load_index > current.load_index):
            return forecast, True
        return current, False

    def last_profile_s(self) -> float:
        """When the newest profile (current or forecast load) arrived; NaN before any."""
        return max((p.received_s for p in (self.current, self.forecast) if p is not None), default=math.nan)

    def stale(self, now_s: float) -> bool:
        """True once profiles were received but none within the timeout (NaN compares false)."""
        return now_s - self.last_profile_s() > self.config.profile_timeout_s

    def _budgets_for(self, frame_period_ms: float) -> tuple[Budgets, str]:
        """The configuration's budgets for the camera's frame period, Acc_min at least ``accuracy_floor``."""
        budgets, source = self.config.budgets_for(frame_period_ms)
        return replace(budgets, min_accuracy=max(budgets.min_accuracy, self.accuracy_floor)), source

    def _budgets(self) -> tuple[Budgets, str, bool]:
        """The budgets in force and their source, and whether they differ from the selection's in force
        (a budget from the camera within ``BUDGET_TOLERANCE`` of it is the same: the camera's jitter)."""
        newest = max(
            (p for p in (self.current, self.forecast) if p is not None), key=lambda p: p.received_s, default=None
        )
        budgets, source = self._budgets_for(newest.frame_period_ms if newest else math.nan)
        old, fixed = self.in_force.budgets, source == FIXED_BUDGET
        same_latency = (
            budgets.latency_ms == old.latency_ms if fixed else _same_latency(budgets.latency_ms, old.latency_ms)
        )
        same = (budgets.energy_mj, budgets.min_accuracy) == (old.energy_mj, old.min_accuracy) and same_latency
        if same and fixed == (self.in_force.budget_source == FIXED_BUDGET):
            return old, self.in_force.budget_source, False
        return budgets, source, True

    def _decide(self, now_s: float) -> Selection | None:
        profile, is_forecast = self.acting_profile(now_s)
        budgets, source, force_publish = self._budgets()
        if profile is None:
            if force_publish:
                self.in_force = replace(self.in_force, budgets=budgets, budget_source=source)
                return self.in_force
            return None
        if profile is not self._in_tables:  # a profile that is not acted on costs no table update
            self.tables.update_predictions(profile.predictions)
            self._in_tables = profile
        running = self.stable.current.variant_id if self.stable.current else None
        measured = profile.measured_latency_ms.get(running, math.nan) if running else math.nan
        before = self.in_force.choice
        first = self.stable.current is None
        choice = self.stable.update(
            now_s,
            self.tables,
            budgets,
            self.config.objective,
            measured if math.isfinite(measured) else None,
        )
        if choice is None:
            return None
        unchanged = (choice.variant_id, choice.feasible) == (before.variant_id, before.feasible)
        if unchanged and not (first or force_publish):
            return None
        if is_forecast:
            choice = replace(choice, reason=f"{choice.reason} (acting on forecast load {profile.load_index:.2f})")
        self.in_force = Selection(choice, budgets, profile.load_index, is_forecast, source)
        return self.in_force
