"""The targets an evaluation checks AdaScale against, and the premise they rest on.

The thresholds are data (``Targets``); the defaults are what the project holds AdaScale to on a robot:
the premise (the most accurate variant keeps up when idle and not under load), few misses, accuracy near
the most accurate variant's, a prompt return after the load, few switches, and dominance over what a user
would pick instead.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any


@dataclass(frozen=True)
class Targets:
    """Each target's threshold; rates are fractions of frames, accuracy gaps in points."""

    premise_idle_misses: float = 0.05  # static-top misses at most this in the idle phases...
    premise_loaded_misses: float = 0.30  # ...and at least this in the loaded ones
    misses: float = 0.05  # adascale's misses overall, at most
    idle_accuracy_points: float = 1.0  # adascale's idle-phase accuracy below static-top's, at most
    accuracy_points: float = 3.0  # adascale's accuracy below static-top's overall, at most
    back_to_top_s: float = 2.0  # adascale back on a top-accuracy variant after each load, within
    switches_per_min: float = 6.0  # adascale's switches, at most
    dominance_points: float = 1.0  # "fewer misses" may cost at most this much accuracy


@dataclass(frozen=True)
class TargetCheck:
    name: str
    measured: str
    passed: bool


def dominates(ada: Mapping[str, Any], other: Mapping[str, Any], points: float) -> bool:
    """Fewer misses at no more than ``points`` less accuracy, or more accuracy at no more misses."""
    ada_misses, other_misses = ada["deadline_miss_rate"], other["deadline_miss_rate"]
    fewer_misses = ada_misses < other_misses and ada["accuracy"] >= other["accuracy"] - points / 100
    more_accurate = ada["accuracy"] > other["accuracy"] and ada_misses <= other_misses
    return fewer_misses or more_accurate


def _gap_text(ada: float, top: float) -> str:
    return f"{ada:.1%} vs {top:.1%} ({(top - ada) * 100:+.1f} points below)"


def check_targets(
    metrics: Mapping[str, Mapping[str, Any]],
    idle: Mapping[str, Mapping[str, Any]] | None = None,
    loaded: Mapping[str, Mapping[str, Any]] | None = None,
    back_to_top_s: Sequence[float] = (),
    targets: Targets = Targets(),
) -> list[TargetCheck]:
    """AdaScale against the baselines, for the policies that were run: ``metrics`` over the whole run,
    ``idle`` and ``loaded`` over the idle and the loaded phases (``group_metrics``), and AdaScale's
    ``back_to_top_s`` after each load's end (``adaptation_times``)."""
    t = targets
    checks: list[TargetCheck] = []
    top = metrics.get("static-top")
    if top is not None and idle and loaded and "static-top" in idle and "static-top" in loaded:
        top_idle, top_loaded = idle["static-top"]["deadline_miss_rate"], loaded["static-top"]["deadline_miss_rate"]
        checks.append(
            TargetCheck(
                f"premise: static-top misses <= {t.premise_idle_misses * 100:g} % in the idle phases and"
                f" >= {t.premise_loaded_misses * 100:g} % in the loaded ones",
                f"{top_idle:.1%} idle, {top_loaded:.1%} loaded",
                top_idle <= t.premise_idle_misses and top_loaded >= t.premise_loaded_misses,
            )
        )
    ada = metrics.get("adascale")
    if ada is None:
        return checks
    misses = ada["deadline_miss_rate"]
    checks.append(TargetCheck(f"adascale misses <= {t.misses * 100:g} % overall", f"{misses:.1%}", misses <= t.misses))
    if top is not None:
        if idle and "adascale" in idle and "static-top" in idle:
            ada_idle, top_idle = idle["adascale"]["accuracy"], idle["static-top"]["accuracy"]
            checks.append(
                TargetCheck(
                    f"adascale idle-phase accuracy within {t.idle_accuracy_points:g} point of static-top's",
                    _gap_text(ada_idle, top_idle),
                    (top_idle - ada_idle) * 100 <= t.idle_accuracy_points,
                )
            )
        checks.append(
            TargetCheck(
                f"adascale accuracy within {t.accuracy_points:g} points of static-top overall",
                _gap_text(ada["accuracy"], top["accuracy"]),
                (top["accuracy"] - ada["accuracy"]) * 100 <= t.accuracy_points,
            )
        )
    if back_to_top_s:
        worst = max(back_to_top_s, key=lambda s: math.inf if math.isnan(s) else s)
        checks.append(
            TargetCheck(
                f"adascale back on a top-accuracy variant within {t.back_to_top_s:g} s after the load ends",
                ", ".join("never" if math.isnan(s) else f"{s:.1f} s" for s in back_to_top_s),
                not math.isnan(worst) and worst <= t.back_to_top_s,
            )
        )
    switches = ada["switches_per_min"]
    checks.append(
        TargetCheck(
            f"adascale switches <= {t.switches_per_min:g} per minute",
            f"{switches:.1f}",
            switches <= t.switches_per_min,
        )
    )
    for name in ("static-mid", "reactive"):
        other = metrics.get(name)
        if other is not None:
            checks.append(
                TargetCheck(
                    f"adascale dominates {name} (fewer misses at <= {t.dominance_points:g} point less accuracy,"
                    " or more accuracy at no more misses)",
                    f"{ada['accuracy']:.1%} and {misses:.1%} missed vs {other['accuracy']:.1%}"
                    f" and {other['deadline_miss_rate']:.1%}",
                    dominates(ada, other, t.dominance_points),
                )
            )
    return checks


def adaptation_targets(
    metrics: Mapping[str, Mapping[str, Any]], groups: Mapping[str, Any], targets: Targets = Targets()
) -> list[TargetCheck]:
    """``check_targets`` with the phase groups of ``phase_groups``."""
    back = groups["adaptation_s"].get("adascale", {}).get("back_to_top_s", [])
    return check_targets(metrics, groups["idle_phases"], groups["loaded_phases"], back, targets)


def arm_targets(
    metrics: Mapping[str, Mapping[str, Any]], groups: Mapping[str, Any], policy: str, targets: Targets = Targets()
) -> list[TargetCheck]:
    """AdaScale's targets (not the premise) checked for ``policy``, an arm of it: its figures stand in for
    AdaScale's, and each check is named after it."""

    def standing_in(by_policy: Mapping[str, Any]) -> dict[str, Any]:
        rest = {p: v for p, v in by_policy.items() if p != "adascale"}
        return {**rest, "adascale": by_policy[policy]} if policy in by_policy else rest

    swapped = {key: standing_in(value) for key, value in groups.items()}
    return [
        replace(check, name=check.name.replace("adascale", policy))
        for check in adaptation_targets(standing_in(metrics), swapped, targets)
        if not check.name.startswith("premise")
    ]


def all_targets(
    metrics: Mapping[str, Mapping[str, Any]], groups: Mapping[str, Any], arms: Sequence[str] = ()
) -> list[TargetCheck]:
    """AdaScale's targets and the premise, then AdaScale's targets for each of ``arms`` (policies) that ran."""
    checks = adaptation_targets(metrics, groups)
    for policy in arms:
        if policy in metrics:
            checks += arm_targets(metrics, groups, policy)
    return checks
