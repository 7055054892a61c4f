"""Scoring of evaluation runs: per-frame outcomes, metrics per policy, the oracle, tables and plots.

A run is what ``adascale evaluate`` recorded while one policy classified the
replayed bag under the load trace: every camera frame the replay published
(with its header stamp), every classification result, the resource states and
the trace's phase changes, each with its receive time in seconds from the
start of the run. Nothing here touches ROS: runs are plain records, so the
scoring is tested on hand-made runs and can be redone from the saved records.

Frame outcomes: a result belongs to the published frame with its header stamp
(the nearest in time when a looping replay repeats stamps). A frame without a
result was dropped. A deadline is missed by a result slower than the budget
and by every dropped frame.
"""

from __future__ import annotations

import gzip
import itertools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from adascale_ros.model.variant import Variant

RUN_FORMAT = 1


@dataclass(frozen=True)
class FrameRecord:
    t_s: float
    stamp_ns: int


@dataclass(frozen=True)
class ResultRecord:
    t_s: float
    stamp_ns: int
    variant_id: str
    exit_index: int
    class_id: int
    latency_ms: float
    early_exited: bool = False
    deadline_exited: bool = False


@dataclass(frozen=True)
class StateRecord:
    t_s: float
    cpu_util: float
    load_index: float
    mem_available_mb: float
    cpu_freq_mhz: float

    def vector(self) -> np.ndarray:
        """The profiler's state vector (``profiling.predictor.STATE_FEATURES`` order)."""
        return np.array([self.cpu_util, self.load_index, self.mem_available_mb, self.cpu_freq_mhz])


@dataclass
class PolicyRun:
    """What one policy did during one replay of the bag under the trace."""

    policy: str
    duration_s: float
    frames: list[FrameRecord] = field(default_factory=list)
    results: list[ResultRecord] = field(default_factory=list)
    states: list[StateRecord] = field(default_factory=list)
    phases: list[tuple[float, int]] = field(default_factory=list)  # (t_s, index) when each phase began
    # CPU time each node process used per second of the run (1.0: one core busy); the graph's own load.
    node_cpu: dict[str, float] = field(default_factory=dict)

    def save(self, path: Path) -> None:
        data = {"format": RUN_FORMAT, **asdict(self)}
        with gzip.open(path, "wt", encoding="utf-8") as f:
            json.dump(data, f, allow_nan=True)

    @classmethod
    def load(cls, path: Path) -> PolicyRun:
        try:
            with gzip.open(path, "rt", encoding="utf-8") as f:
                data = json.load(f)
            if data.get("format") != RUN_FORMAT:
                raise ValueError(f"format {data.get('format')!r}, expected {RUN_FORMAT}")
            return cls(
                policy=str(data["policy"]),
                duration_s=float(data["duration_s"]),
                frames=[FrameRecord(**r) for r in data["frames"]],
                results=[ResultRecord(**r) for r in data["results"]],
                states=[StateRecord(**r) for r in data["states"]],
                phases=[(float(t), int(i)) for t, i in data["phases"]],
                node_cpu={str(n): float(c) for n, c in data.get("node_cpu", {}).items()},  # absent before
            )
        except (OSError, EOFError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}: not a recorded evaluation run ({exc})") from exc


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


# -- adaptation timing and the targets --------------------------------------------------------------

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


def adaptation_targets(metrics: Mapping[str, Mapping[str, Any]], groups: Mapping[str, Any]) -> list[TargetCheck]:
    """``check_targets`` with the phase groups of ``phase_groups``."""
    back = groups["adaptation_s"].get("adascale", {}).get("back_to_top_s", [])
    return check_targets(metrics, groups["idle_phases"], groups["loaded_phases"], back)


@dataclass(frozen=True)
class TargetCheck:
    name: str
    measured: str
    passed: bool


def _dominates(ada: Mapping[str, Any], other: Mapping[str, Any]) -> bool:
    """Fewer misses at no more than 1 point less accuracy, or more accuracy at no more misses."""
    fewer_misses = (
        ada["deadline_miss_rate"] < other["deadline_miss_rate"] and ada["accuracy"] >= other["accuracy"] - 0.01
    )
    more_accurate = ada["accuracy"] > other["accuracy"] and ada["deadline_miss_rate"] <= other["deadline_miss_rate"]
    return fewer_misses or more_accurate


def check_targets(
    metrics: Mapping[str, Mapping[str, Any]],
    idle: Mapping[str, Mapping[str, Any]] | None = None,
    loaded: Mapping[str, Mapping[str, Any]] | None = None,
    back_to_top_s: Sequence[float] = (),
) -> list[TargetCheck]:
    """AdaScale against the baselines, for the policies that were run: ``metrics`` over the whole run,
    ``idle`` and ``loaded`` over the idle and the loaded phases (``group_metrics``), and AdaScale's
    ``back_to_top_s`` after each load's end (``adaptation_times``)."""
    checks: list[TargetCheck] = []
    top = metrics.get("static-top")
    if top is not None and idle and loaded and "static-top" in idle and "static-top" in loaded:
        top_idle, top_loaded = idle["static-top"]["deadline_miss_rate"], loaded["static-top"]["deadline_miss_rate"]
        checks.append(
            TargetCheck(
                "premise: static-top misses <= 5 % in the idle phases and >= 30 % in the loaded ones",
                f"{top_idle:.1%} idle, {top_loaded:.1%} loaded",
                top_idle <= 0.05 and top_loaded >= 0.30,
            )
        )
    ada = metrics.get("adascale")
    if ada is None:
        return checks
    checks.append(
        TargetCheck(
            "adascale misses <= 5 % overall", f"{ada['deadline_miss_rate']:.1%}", ada["deadline_miss_rate"] <= 0.05
        )
    )
    if top is not None:
        if idle and "adascale" in idle and "static-top" in idle:
            gap = (idle["static-top"]["accuracy"] - idle["adascale"]["accuracy"]) * 100
            checks.append(
                TargetCheck(
                    "adascale idle-phase accuracy within 1 point of static-top's",
                    f"{idle['adascale']['accuracy']:.1%} vs {idle['static-top']['accuracy']:.1%}"
                    f" ({gap:+.1f} points below)",
                    gap <= 1.0,
                )
            )
        gap = (top["accuracy"] - ada["accuracy"]) * 100
        checks.append(
            TargetCheck(
                "adascale accuracy within 3 points of static-top overall",
                f"{ada['accuracy']:.1%} vs {top['accuracy']:.1%} ({gap:+.1f} points below)",
                gap <= 3.0,
            )
        )
    if back_to_top_s:
        worst = max(back_to_top_s, key=lambda t: math.inf if math.isnan(t) else t)
        checks.append(
            TargetCheck(
                "adascale back on a top-accuracy variant within 2 s after the load ends",
                ", ".join("never" if math.isnan(t) else f"{t:.1f} s" for t in back_to_top_s),
                not math.isnan(worst) and worst <= 2.0,
            )
        )
    checks.append(
        TargetCheck(
            "adascale switches <= 6 per minute", f"{ada['switches_per_min']:.1f}", ada["switches_per_min"] <= 6.0
        )
    )
    for name in ("static-mid", "reactive"):
        other = metrics.get(name)
        if other is not None:
            checks.append(
                TargetCheck(
                    f"adascale dominates {name} (fewer misses at <= 1 point less accuracy, or more accuracy at no"
                    " more misses)",
                    f"{ada['accuracy']:.1%} and {ada['deadline_miss_rate']:.1%} missed vs {other['accuracy']:.1%}"
                    f" and {other['deadline_miss_rate']:.1%}",
                    _dominates(ada, other),
                )
            )
    return checks


# -- tables ---------------------------------------------------------------------------------------------


def _cell(value: float, spec: str) -> str:
    return format(value, spec) if isinstance(value, int | float) and math.isfinite(value) else "n/a"


def markdown_table(metrics: Mapping[str, Mapping[str, Any]], variants: Mapping[str, str]) -> str:
    header = (
        "| policy | variant | frames | accuracy | mean ms | p50 ms | p95 ms | p99 ms | deadline misses "
        "| dropped | switches/min | energy mJ/frame |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    rows = [header]
    for name, m in metrics.items():
        rows.append(
            f"| {name} | {variants.get(name, 'adaptive')} | {m['frames']} | {_cell(m['accuracy'], '.1%')} "
            f"| {_cell(m['latency_mean_ms'], '.2f')} | {_cell(m['latency_p50_ms'], '.2f')} "
            f"| {_cell(m['latency_p95_ms'], '.2f')} | {_cell(m['latency_p99_ms'], '.2f')} "
            f"| {_cell(m['deadline_miss_rate'], '.1%')} | {m['dropped']} | {_cell(m['switches_per_min'], '.1f')} "
            f"| {_cell(m['energy_mj_per_frame'], '.2f')} |"
        )
    return "\n".join(rows)


def results_table(report: Mapping[str, Any], source: Path | str) -> str:
    """The README's results: the pooled table of a saved report, what it was measured on, its targets."""
    config = report["config"]
    runs = config.get("repeats", 1)
    lines = [
        f"Trace `{config['trace']}`, {runs} run{'s' if runs > 1 else ''} per policy pooled, deadline"
        f" {budget_text(config)} ({config.get('budget_source', 'given')}); from `{source}`.",
        "",
        markdown_table(report["policies"], report["variants"]),
        "",
        *(f"- [{'x' if t['passed'] else ' '}] {target_line(t)}" for t in report["targets"]),
    ]
    return "\n".join(lines)


def target_line(target: Mapping[str, Any]) -> str:
    """One target's result, pooled, and in how many repeats it was met."""
    line = f"{target['name']}: {target['measured']}"
    if target.get("runs", 1) > 1:
        line += f" (met in {target['met_in_runs']} of {target['runs']} runs)"
    return line


def repeats_table(repeats: Sequence[Mapping[str, Any]]) -> str:
    """Accuracy, mean latency and deadline misses of each policy in each repeat, side by side."""
    rows = ["| policy | accuracy per run | mean ms per run | deadline misses per run |", "|---|---|---|---|"]
    for name in repeats[0]["policies"]:
        runs = [r["policies"][name] for r in repeats if name in r["policies"]]
        rows.append(
            f"| {name} | {' / '.join(_cell(m['accuracy'], '.1%') for m in runs)} "
            f"| {' / '.join(_cell(m['latency_mean_ms'], '.2f') for m in runs)} "
            f"| {' / '.join(_cell(m['deadline_miss_rate'], '.1%') for m in runs)} |"
        )
    return "\n".join(rows)


def phases_table(phases: Mapping[str, Mapping[str, Mapping[str, Any]]], describe: Sequence[str]) -> str:
    """Mean latency and deadline misses of each policy in each phase of the trace."""
    header = "| policy | " + " | ".join(f"phase {i}: {d}" for i, d in enumerate(describe)) + " |"
    rows = [header, "|---|" + "---:|" * len(describe)]
    for name, by_phase in phases.items():
        cells = []
        for i in range(len(describe)):
            m = by_phase.get(str(i))
            cells.append(
                f"{_cell(m['latency_mean_ms'], '.2f')} ms, {_cell(m['deadline_miss_rate'], '.0%')} missed" if m else "-"
            )
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def adaptation_table(report: Mapping[str, Any]) -> str:
    """Accuracy and misses over the idle and the loaded phases, and how fast each policy moved off the
    top-accuracy variants at a load step and back on after it (every step of every run)."""

    def seconds(values: Sequence[float]) -> str:
        return ", ".join("never" if math.isnan(t) else f"{t:.1f}" for t in values) or "-"

    rows = [
        "| policy | idle: accuracy | idle: misses | loaded: accuracy | loaded: misses | downgrade after a load step [s]"
        " | back to top accuracy after it [s] |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    for name, idle in report["idle_phases"].items():
        loaded, times = report["loaded_phases"][name], report["adaptation_s"][name]
        rows.append(
            f"| {name} | {_cell(idle['accuracy'], '.1%')} | {_cell(idle['deadline_miss_rate'], '.1%')} "
            f"| {_cell(loaded['accuracy'], '.1%')} | {_cell(loaded['deadline_miss_rate'], '.1%')} "
            f"| {seconds(times['downgrade_s'])} | {seconds(times['back_to_top_s'])} |"
        )
    return "\n".join(rows)


def mean_node_cpu(runs: Sequence[PolicyRun]) -> dict[str, float]:
    """Each node's CPU per second, averaged over the runs that measured it."""
    names = sorted({name for run in runs for name in run.node_cpu})
    return {n: float(np.mean([run.node_cpu[n] for run in runs if n in run.node_cpu])) for n in names}


def node_cpu_table(node_cpu: Mapping[str, Mapping[str, float]]) -> str:
    """Percent of one core each policy's nodes used while frames flowed, and their sum."""
    names = sorted({name for nodes in node_cpu.values() for name in nodes})
    rows = ["| policy | " + " | ".join(names) + " | all nodes |", "|---|" + "---:|" * (len(names) + 1)]
    for policy, nodes in node_cpu.items():
        cells = [_cell(100 * nodes[n], ".1f") if n in nodes else "-" for n in names]
        rows.append(f"| {policy} | " + " | ".join(cells) + f" | {_cell(100 * sum(nodes.values()), '.1f')} |")
    return "\n".join(rows)


def budget_text(config: Mapping[str, Any]) -> str:
    """ "1.2 ms", or one budget per round: "1.6 / 1.4 / 1.5 ms (one per round)"."""
    budgets = config.get("budgets_ms") or [config["budget_ms"]]
    if len(set(budgets)) == 1:
        return f"{budgets[0]:g} ms"
    return " / ".join(f"{b:g}" for b in budgets) + " ms (one per round)"


def markdown_report(report: Mapping[str, Any]) -> str:
    config = report["config"]
    repeats = config.get("repeats", 1)
    pooled = f", {repeats} runs per policy, interleaved; the table pools them" if repeats > 1 else ""
    lines = [
        "# Evaluation",
        "",
        f"Bag `{config['bag']}`, trace `{config['trace']}` ({config['duration_s']:g} s per policy{pooled}), "
        f"latency budget {budget_text(config)}, model `{config['model_dir']}`; accuracy is against "
        + config.get("accuracy_against", "the bag's labels")
        + ".",
        "",
        f"The deadline was fixed before any run: {config.get('budget_source', 'given')}. The comparison rests"
        " on a premise, checked below: static-top (what one would deploy without adaptation) meets that"
        " deadline while the robot is idle and misses it under the trace's load.",
        "",
        markdown_table(report["policies"], report["variants"]),
        "",
    ]
    if report["targets"]:
        lines += ["## Targets", ""]
        lines += [f"- [{'x' if t['passed'] else ' '}] {target_line(t)}" for t in report["targets"]]
        lines.append("")
    if report.get("idle_phases"):
        lines += ["## Idle and loaded phases", "", adaptation_table(report), ""]
    if repeats > 1:
        lines += ["## Each run", "", repeats_table(report["repeats"]), ""]
    if report.get("phases"):
        lines += ["## By trace phase", "", phases_table(report["phases"], config["trace_phases"]), ""]
    if any(report.get("node_cpu", {}).values()):
        measured = {p: nodes for p, nodes in report["node_cpu"].items() if nodes}
        lines += ["## CPU of the nodes (% of one core)", "", node_cpu_table(measured), ""]
    lines += [
        "Deadline misses count results slower than the budget and dropped frames. Energy is the profiler's",
        "eq. 3 estimate for the path that ran (to its early exit, if it took one), at the resource state of"
        " the moment; early exits are in the JSON report."
        + (" The timeline shows the first run of each policy." if repeats > 1 else ""),
        "",
        "![timeline](timeline.png)",
        "",
        "![accuracy vs latency](accuracy_latency.png)",
        "",
    ]
    return "\n".join(lines)


# -- plots ----------------------------------------------------------------------------------------------


def plot_report(
    runs: Mapping[str, PolicyRun],
    outcomes: Mapping[str, Sequence[FrameOutcome]],
    metrics: Mapping[str, Mapping[str, Any]],
    budget_ms: float,
    out_dir: Path,
) -> list[Path]:
    """timeline.png (load, exit and latency against the budget over time) and accuracy_latency.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {name: plt.get_cmap("tab10")(i) for i, name in enumerate(metrics)}
    live = [name for name in runs if name in outcomes]
    fig, (ax_load, ax_exit, ax_lat) = plt.subplots(3, 1, figsize=(11, 8.5), sharex=True, constrained_layout=True)
    first = runs[live[0]] if live else None
    if first is not None:  # the trace's phases, shaded alternately, behind every panel
        starts = [t for t, _ in first.phases] + [first.duration_s]
        for i, (begin, end) in enumerate(itertools.pairwise(starts)):
            for ax in (ax_load, ax_exit, ax_lat):
                ax.axvspan(begin, end, color="0.93" if i % 2 else "white", zorder=0)
    for name in live:
        states = runs[name].states
        ax_load.plot([s.t_s for s in states], [s.load_index for s in states], color=colours[name], lw=1.2, label=name)
        answered = [o for o in outcomes[name] if not o.dropped]
        times = [o.t_s for o in answered]
        ax_exit.step(times, [o.exit_index for o in answered], where="post", color=colours[name], lw=1.4, label=name)
        ax_lat.scatter(times, [o.latency_ms for o in answered], s=5, color=colours[name], alpha=0.7, label=name)
    ax_lat.axhline(budget_ms, color="crimson", ls="--", lw=1.2, label=f"budget {budget_ms:g} ms")
    ax_load.set(ylabel="load index", ylim=(0, 1), title="Load, chosen exit and latency per frame (shaded: phases)")
    deepest = max((o.exit_index for v in outcomes.values() for o in v), default=0)
    ax_exit.set(ylabel="exit", yticks=range(deepest + 1), ylim=(-0.3, deepest + 0.3))
    lat = [o.latency_ms for v in outcomes.values() for o in v if not o.dropped]
    top = max(budget_ms * 2.0, float(np.percentile(lat, 99)) * 1.1) if lat else budget_ms * 2.0
    ax_lat.set(ylabel="latency [ms]", xlabel="time [s]", ylim=(0, top))
    ax_load.legend(loc="upper right", fontsize=8, ncols=len(live) or 1)
    ax_lat.legend(loc="upper right", fontsize=8, ncols=len(live) + 1, markerscale=3)
    timeline = out_dir / "timeline.png"
    fig.savefig(timeline, dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 5), constrained_layout=True)
    for name, m in metrics.items():
        if not math.isfinite(m["latency_mean_ms"]):
            continue
        p95 = m["latency_p95_ms"] - m["latency_mean_ms"]
        ax.errorbar(
            m["latency_mean_ms"], m["accuracy"] * 100, xerr=[[0], [max(p95, 0.0)]], fmt="o", ms=8, capsize=4,
            color=colours[name], label=f"{name} (misses {m['deadline_miss_rate']:.0%})",
        )  # fmt: skip
    ax.axvline(budget_ms, color="crimson", ls="--", lw=1.2, label=f"budget {budget_ms:g} ms")
    ax.set(xlabel="mean latency [ms] (bar: to p95)", ylabel="accuracy [%]", title="Accuracy vs latency per policy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    scatter = out_dir / "accuracy_latency.png"
    fig.savefig(scatter, dpi=110)
    plt.close(fig)
    return [timeline, scatter]
