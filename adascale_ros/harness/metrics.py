"""Metrics of evaluation runs: per-frame outcomes, per policy, per trace phase and per phase group, the
oracle, and the times to adapt.

Frame outcomes: a result belongs to the published frame with its header stamp (the nearest in time when a
looping replay repeats stamps). A frame without a result was dropped. A deadline is missed by a result
slower than the budget and by every dropped frame.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from adascale_ros.harness.records import PolicyRun, ResultRecord
from adascale_ros.model.variant import Variant


@dataclass(frozen=True)
class FrameOutcome:
    """What happened to one published frame."""

    t_s: float
    variant_id: str | None  # None: dropped
    exit_index: int = -1
    latency_ms: float = math.nan
    correct: bool = False
    energy_mj: float = math.nan
    early_exited: bool = False
    deadline_exited: bool = False

    @property
    def dropped(self) -> bool:
        return self.variant_id is None


def frame_outcomes(
    run: PolicyRun, truth: Mapping[int, int], energy_of: Any | None = None
) -> tuple[list[FrameOutcome], int]:
    """One outcome per published frame, in publication order; and how many results matched no frame.

    ``truth`` maps header stamps to class ids. ``energy_of(variant_id, state)``
    (e.g. the profiler's predictor) estimates a frame's energy at the newest
    resource state before its result.
    """
    by_stamp: dict[int, list[int]] = {}
    for index, frame in enumerate(run.frames):
        by_stamp.setdefault(frame.stamp_ns, []).append(index)
    state_times = np.array([s.t_s for s in run.states])
    answered: dict[int, ResultRecord] = {}
    unmatched = 0
    for result in run.results:
        candidates = by_stamp.get(result.stamp_ns)
        if not candidates or result.stamp_ns not in truth:
            unmatched += 1
            continue
        index = min(candidates, key=lambda i: abs(run.frames[i].t_s - result.t_s))
        answered.setdefault(index, result)
    outcomes = []
    for index, frame in enumerate(run.frames):
        result = answered.get(index)
        if result is None:
            outcomes.append(FrameOutcome(frame.t_s, None))
            continue
        energy = math.nan
        if energy_of is not None and len(state_times):
            energy = float(energy_of(ran_path(result), run.states[_latest_at(state_times, result.t_s)]))
        outcomes.append(
            FrameOutcome(
                frame.t_s,
                result.variant_id,
                result.exit_index,
                result.latency_ms,
                result.class_id == truth[frame.stamp_ns],
                energy,
                result.early_exited,
                result.deadline_exited,
            )
        )
    return outcomes, unmatched


def ran_path(result: ResultRecord) -> str:
    """The variant a result's frame actually ran: the selected one, or its prefix to an early exit."""
    if not result.early_exited:
        return result.variant_id
    return Variant.parse(result.variant_id).prefix(result.exit_index).id


def oracle_outcomes(
    outcomes_by_policy: Mapping[str, Sequence[FrameOutcome]], accuracy: Mapping[str, float], budget_ms: float
) -> list[FrameOutcome]:
    """The best variant per frame in hindsight, among the variants the runs measured on that frame.

    Frame k of every run is the same image at the same point of the trace (the
    replay and the trace start together). Per frame the oracle takes the most
    accurate variant (validation accuracy) whose *measured* latency met the
    budget; when none did, the fastest one; when every run dropped the frame,
    it is dropped too.
    """
    runs = [list(o) for o in outcomes_by_policy.values()]
    if not runs:
        raise ValueError("the oracle needs the runs of at least one other policy")
    chosen = []
    for k in range(min(len(r) for r in runs)):
        seen = [r[k] for r in runs if not r[k].dropped]
        if not seen:
            chosen.append(runs[0][k])
            continue
        within = [o for o in seen if o.latency_ms <= budget_ms]
        if within:
            chosen.append(max(within, key=lambda o: (accuracy.get(o.variant_id, 0.0), -o.latency_ms)))
        else:
            chosen.append(min(seen, key=lambda o: o.latency_ms))
    return chosen


def _latest_at(times: np.ndarray, t_s: float) -> int:
    """Index of the newest of the ascending ``times`` at or before ``t_s`` (the first when none is)."""
    return max(0, int(np.searchsorted(times, t_s, side="right")) - 1)


def _switches(outcomes: Sequence[FrameOutcome]) -> int:
    """Variant changes between consecutive answered frames."""
    answered = [o for o in outcomes if not o.dropped]
    return sum(1 for a, b in itertools.pairwise(answered) if a.variant_id != b.variant_id)


def _percentile(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else math.nan


def policy_metrics(outcomes: Sequence[FrameOutcome], budget_ms: float, duration_s: float) -> dict[str, Any]:
    """Accuracy, latency percentiles, deadline misses, drops, switches and energy of one policy."""
    answered = [o for o in outcomes if not o.dropped]
    latency = np.array([o.latency_ms for o in answered])
    dropped = len(outcomes) - len(answered)
    switches = _switches(outcomes)
    energy = np.array([o.energy_mj for o in answered if math.isfinite(o.energy_mj)])
    exits: dict[str, int] = {}
    for o in answered:
        exits[str(o.exit_index)] = exits.get(str(o.exit_index), 0) + 1
    metrics = {
        "frames": len(outcomes),
        "classified": len(answered),
        "dropped": dropped,
        "accuracy": sum(o.correct for o in answered) / len(answered) if answered else math.nan,
        "latency_mean_ms": float(latency.mean()) if len(latency) else math.nan,
        "latency_p50_ms": _percentile(latency, 50),
        "latency_p95_ms": _percentile(latency, 95),
        "latency_p99_ms": _percentile(latency, 99),
        "switches": switches,
        "switches_per_min": switches / (duration_s / 60.0) if duration_s > 0 else math.nan,
        "energy_mj_per_frame": float(energy.mean()) if len(energy) else math.nan,
        "frames_per_exit": dict(sorted(exits.items())),
        "early_exits": sum(o.early_exited for o in answered),
        "deadline_exits": sum(o.deadline_exited for o in answered),
    }
    return _with_misses(metrics, _late(outcomes, budget_ms))


def _late(outcomes: Sequence[FrameOutcome], budget_ms: float) -> int:
    """Answered frames slower than the budget."""
    return sum(1 for o in outcomes if not o.dropped and o.latency_ms > budget_ms)


def _with_misses(metrics: dict[str, Any], late: int) -> dict[str, Any]:
    """``late`` and the deadline-miss rate (late and dropped frames over all frames) set in ``metrics``."""
    metrics["late"] = late
    frames = metrics["frames"]
    metrics["deadline_miss_rate"] = (late + metrics["dropped"]) / frames if frames else math.nan
    return metrics


def pooled_metrics(
    outcomes_per_repeat: Sequence[Sequence[FrameOutcome]], budgets_ms: Sequence[float], duration_s: float
) -> dict[str, Any]:
    """``policy_metrics`` over the frames of every repeat of one policy (each ``duration_s`` long),
    each repeat's frames against that repeat's budget.

    Switches are counted within each repeat: the first frame of a repeat is not a switch from
    the last frame of the one before.
    """
    total_s = duration_s * len(outcomes_per_repeat)
    pooled = policy_metrics([o for run in outcomes_per_repeat for o in run], math.inf, total_s)
    pooled = _with_misses(
        pooled, sum(_late(run, budget) for run, budget in zip(outcomes_per_repeat, budgets_ms, strict=True))
    )
    switches = sum(_switches(run) for run in outcomes_per_repeat)
    pooled["switches"] = switches
    pooled["switches_per_min"] = switches / (total_s / 60.0) if total_s > 0 else math.nan
    return pooled


def phase_indices(outcomes: Sequence[FrameOutcome], phases: Sequence[tuple[float, int]]) -> list[int]:
    """The trace phase each frame was published in: the one that had begun by then (the first phase
    for frames before any change)."""
    if not phases:
        return [0] * len(outcomes)
    starts = np.array([t for t, _ in phases])
    return [phases[_latest_at(starts, o.t_s)][1] for o in outcomes]


def phase_metrics(
    runs: Sequence[tuple[Sequence[FrameOutcome], Sequence[tuple[float, int]], float]],
) -> dict[str, dict[str, Any]]:
    """Frames, mean and p95 latency and deadline-miss rate per trace phase, over runs of one policy.

    ``runs`` holds each run's outcomes with its phase changes ``(t_s, index)`` and its budget [ms].
    A frame belongs to the phase that had begun when it was published; frames
    before the first change count to the first phase. Shows what each phase of
    the load did to a policy's latency.
    """
    by_phase: dict[int, list[FrameOutcome]] = {}
    late: dict[int, int] = {}
    for outcomes, phases, budget_ms in runs:
        for o, index in zip(outcomes, phase_indices(outcomes, phases), strict=True):
            by_phase.setdefault(index, []).append(o)
            late[index] = late.get(index, 0) + _late([o], budget_ms)
    result = {}
    for index in sorted(by_phase):
        m = _with_misses(policy_metrics(by_phase[index], math.inf, 0.0), late[index])
        result[str(index)] = {k: m[k] for k in ("frames", "latency_mean_ms", "latency_p95_ms", "deadline_miss_rate")}
    return result


# A variant within this much validation accuracy of static-top's counts as top accuracy: "back on a
# top-accuracy variant" after the load ends.
TOP_ACCURACY_SLACK = 0.005


def group_metrics(
    runs: Sequence[tuple[Sequence[FrameOutcome], Sequence[tuple[float, int]], float]], indices: set[int]
) -> dict[str, Any]:
    """Accuracy, misses and frames of one policy over the frames of the phases ``indices`` (e.g. every
    idle phase), pooled over ``runs`` of (outcomes, phase changes, budget)."""
    chosen = [
        [o for o, index in zip(outcomes, phase_indices(outcomes, phases), strict=True) if index in indices]
        for outcomes, phases, _ in runs
    ]
    m = policy_metrics([o for run in chosen for o in run], math.inf, 0.0)
    late = sum(_late(run, budget) for run, (_, _, budget) in zip(chosen, runs, strict=True))
    m = _with_misses(m, late)
    return {k: m[k] for k in ("frames", "accuracy", "deadline_miss_rate")}


def adaptation_times(
    outcomes: Sequence[FrameOutcome],
    phases: Sequence[tuple[float, int]],
    idle: Sequence[bool],
    top_accuracy: set[str],
) -> dict[str, list[float]]:
    """Seconds from each load step (idle -> loaded phase) to the first frame answered off the
    top-accuracy variants (``downgrade_s``), and from each load's end (loaded -> idle) to the first
    frame answered on one again (``back_to_top_s``); NaN when it never happened in the phase."""
    times: dict[str, list[float]] = {"downgrade_s": [], "back_to_top_s": []}
    for (start, index), (_, before) in zip(phases[1:], phases, strict=False):
        if idle[before] == idle[index]:
            continue
        end = next((t for t, i in phases if t > start), math.inf)
        in_phase = [o for o in outcomes if start <= o.t_s < end and not o.dropped]
        if idle[index]:
            hit = next((o for o in in_phase if o.variant_id in top_accuracy), None)
            times["back_to_top_s"].append(hit.t_s - start if hit else math.nan)
        else:
            hit = next((o for o in in_phase if o.variant_id not in top_accuracy), None)
            times["downgrade_s"].append(hit.t_s - start if hit else math.nan)
    return times


PhaseRuns = Mapping[str, Sequence[Sequence[FrameOutcome]]]  # per policy, one outcome list per repeat


def phase_groups(
    outcomes: PhaseRuns,
    phases: Mapping[str, Sequence[Sequence[tuple[float, int]]]],
    budgets_ms: Sequence[float],
    idle_phases: Sequence[bool],
    top_accuracy: set[str],
    repeats: slice,
) -> dict[str, Any]:
    """Each policy's metrics over the idle and over the loaded phases of the trace, and its adaptation
    times (``adaptation_times``), over the ``repeats`` of its runs."""
    idle = {i for i, is_idle in enumerate(idle_phases) if is_idle}
    loaded = set(range(len(idle_phases))) - idle
    groups: dict[str, Any] = {"idle_phases": {}, "loaded_phases": {}, "adaptation_s": {}}
    for policy, runs in outcomes.items():
        chosen = list(zip(runs[repeats], phases[policy][repeats], budgets_ms[repeats], strict=True))
        groups["idle_phases"][policy] = group_metrics(chosen, idle)
        groups["loaded_phases"][policy] = group_metrics(chosen, loaded)
        times = [adaptation_times(o, ph, idle_phases, top_accuracy) for o, ph, _ in chosen]
        groups["adaptation_s"][policy] = {
            k: [t for ts in times for t in ts[k]] for k in ("downgrade_s", "back_to_top_s")
        }
    return groups


def mean_node_cpu(runs: Sequence[PolicyRun]) -> dict[str, float]:
    """Each node's CPU per second, averaged over the runs that measured it."""
    names = sorted({name for run in runs for name in run.node_cpu})
    return {n: float(np.mean([run.node_cpu[n] for run in runs if n in run.node_cpu])) for n in names}
