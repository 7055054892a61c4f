"""``adascale replay-correction``: the profiler's latency correction, replayed over recorded runs.

An evaluation saves every result (variant, measured latency) and every
resource state of each run (``runs/*.json.gz``). Feeding those results, in
order, through ``LatencyCorrection`` with other settings shows what those
settings would have predicted, without running the robot again: for each
result, the corrected prediction of its variant just before it arrived, and
whether the measured latency stayed under it. With ``correction_quantile``
0.9 about one frame in ten should not. Against the evaluation's deadline it
also counts the results at which the running variant was priced over the
deadline while a variant that computes more (a higher raw prediction) was
priced within it: the selector would leave the one for the other, on the
strength of what the other had not yet measured.

It is a replay, not a rerun: the selector's choices, and so the variants
that ran, stay those of the recording. Predictions are made at the newest
state recorded before each result (the profiler uses the newest it has
received), and at the calibration's idle state for the ``reactive`` policy,
as its profiler does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from adascale_ros.harness.records import PolicyRun, saved_run_config
from adascale_ros.profiling.online import profiler_correction
from adascale_ros.profiling.predictor import LatencyPredictor, latency_sample


@dataclass(frozen=True)
class ReplayResult:
    policy: str
    tail_window: int
    results: int
    over_prediction: float  # fraction of results slower than their variant's corrected prediction
    tail_median: float
    tail_p90: float
    inverted: float  # fraction of results priced over the deadline while a slower variant was within it


def replay(
    run: PolicyRun,
    predictor: LatencyPredictor,
    window: int,
    tail_window: int,
    quantile: float,
    resource_aware: bool = True,
    budget_ms: float = math.inf,
) -> tuple[int, int, list[float], int]:
    """(results replayed, results over their corrected prediction, the tail after each, results at which
    the running variant was priced over ``budget_ms`` and a variant of a higher raw prediction within it)."""
    correction = profiler_correction(predictor, window, quantile, tail_window)
    times = np.array([s.t_s for s in run.states])
    idle = predictor.idle_state()
    raw_at: dict[int, np.ndarray] = {}
    replayed, over, inverted, tails = 0, 0, 0, []
    for result in run.results:
        if not result.latency_ms > 0.0:
            continue  # as the profiler: a rejected result
        at = int(np.searchsorted(times, result.t_s, side="right")) - 1 if resource_aware else -1
        if at not in raw_at:
            state = run.states[at].vector() if at >= 0 else idle
            raw_at[at] = predictor.latency_ms(state[None, :])[0]
        raw, index = raw_at[at], predictor.variant_index(result.variant_id)
        prefix = predictor.prefix_index(result.variant_id, result.exit_index) if result.deadline_exited else None
        latency = latency_sample(result.latency_ms, result.early_exited, result.deadline_exited, raw, index, prefix)
        if latency is None:
            continue  # as the profiler: not a sample of the variant's latency
        corrected = correction.corrected(raw)
        over += latency > corrected[index]
        inverted += priced_above_more_work(raw, corrected, index, budget_ms)
        correction.partial_fit(latency, float(raw[index]), index)
        replayed += 1
        tails.append(correction.ratio_)
    return replayed, over, tails, inverted


def priced_above_more_work(raw: np.ndarray, corrected: np.ndarray, index: int, budget_ms: float) -> bool:
    """Whether variant ``index`` is priced over ``budget_ms`` while a variant with at least its raw
    prediction is priced within it: the selector would leave it for one that does more work."""
    return bool(corrected[index] > budget_ms and np.any((raw >= raw[index]) & (corrected <= budget_ms)))


def replay_evaluation(
    runs: dict[str, list[PolicyRun]],
    predictor: LatencyPredictor,
    tail_windows: Sequence[int],
    window: int = 30,
    quantile: float = 0.9,
    budget_ms: float = math.inf,
) -> list[ReplayResult]:
    """Every policy's runs replayed once per tail window; the runs of a policy pooled."""
    out = []
    for policy, policy_runs in runs.items():
        for tail_window in tail_windows:
            replayed, over, inverted, tails = 0, 0, 0, []
            for run in policy_runs:
                n, o, t, i = replay(run, predictor, window, tail_window, quantile, policy != "reactive", budget_ms)
                replayed, over, inverted, tails = replayed + n, over + o, inverted + i, tails + t
            if replayed:
                median, p90 = np.percentile(tails, [50, 90])
                out.append(
                    ReplayResult(
                        policy, tail_window, replayed, over / replayed, float(median), float(p90), inverted / replayed
                    )
                )
    return out


def evaluation_deadline_ms(directory: Path) -> float:
    """The deadline an evaluation in ``directory`` ran against (its ``runs/config.json``); inf when
    it recorded none."""
    try:
        budgets = saved_run_config(Path(directory) / "runs")["budgets_ms"]
    except (OSError, ValueError, KeyError):
        return math.inf
    return budgets[0] if budgets else math.inf


def load_evaluation_runs(directory: Path) -> dict[str, list[PolicyRun]]:
    """Every run an evaluation saved in ``directory/runs``, by policy, in name order."""
    paths = sorted((Path(directory) / "runs").glob("*.json.gz"))
    if not paths:
        raise FileNotFoundError(f"{directory}/runs: no recorded runs (run adascale evaluate --out {directory})")
    runs: dict[str, list[PolicyRun]] = {}
    for path in paths:
        run = PolicyRun.load(path)
        runs.setdefault(run.policy, []).append(run)
    return runs


def markdown(results: Sequence[ReplayResult], quantile: float, budget_ms: float = math.inf) -> str:
    deadline = f"{budget_ms:g} ms" if math.isfinite(budget_ms) else "no deadline recorded"
    rows = [
        f"| policy | tail window | results | over their corrected prediction (target {1 - quantile:.0%}) "
        f"| tail median | tail p90 | priced over the deadline ({deadline}), a slower variant within it |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        rows.append(
            f"| {r.policy} | {r.tail_window} | {r.results} | {r.over_prediction:.1%} "
            f"| {r.tail_median:.2f} | {r.tail_p90:.2f} | {r.inverted:.1%} |"
        )
    return "\n".join(rows)
