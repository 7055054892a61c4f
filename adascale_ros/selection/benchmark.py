"""Decision-time benchmark of the selector: the shipped index vs a B+ tree vs a sorted array vs a linear scan.

One *decision* is what the selector does per new prediction: one variant's
profile comes in (its latency and energy prediction move in the index), one
selection goes out (``choose`` under the budgets in force). Every method
replays the same sequence of profiles, interleaved in rounds so that machine
noise falls on all of them alike, and every decision's answer is compared
across methods.

A whole ``VariantProfileArray`` (every prediction changed at once: what the
profiler publishes) is timed separately as ``full_profile_ms``.

The default model's predictions are proportional to its FLOPs (the profiler
replaces this with measured predictors); the synthetic table draws latency
log-uniformly over two decades and makes accuracy rise with latency plus noise.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from adascale_ros.selection.policy import Budgets, Objective, choose, search_indexed, search_linear
from adascale_ros.selection.tables import VariantEntry, VariantTables
from adascale_ros.timing import quantile

# method name -> (index structure, search)
METHODS: dict[str, tuple[str, Callable[..., str | None]]] = {
    "sorted_on_query": ("sorted_on_query", search_indexed),
    "btree": ("btree", search_indexed),
    "sorted_array": ("sorted_array", search_indexed),
    "linear_scan": ("unordered", search_linear),
}
SHIPPED_METHOD = "sorted_on_query"
TARGET_MEDIAN_US = 20.0


@dataclass(frozen=True)
class Workload:
    """A variant table, base predictions, and the budgets decisions are made under."""

    name: str
    entries: list[VariantEntry]
    predictions: dict[str, tuple[float, float]]
    budgets: Budgets
    objective: Objective


def flops_workload(entries: Sequence[VariantEntry], ms_per_gflop: float = 25.0) -> Workload:
    """Predictions proportional to FLOPs (energy to memory accesses), budget at the median latency."""
    predictions = {e.variant_id: (e.flops / 1e9 * ms_per_gflop, e.memory_accesses / 1e6 * 0.05) for e in entries}
    latencies = sorted(latency for latency, _ in predictions.values())
    return Workload(
        "default",
        list(entries),
        predictions,
        Budgets(latency_ms=latencies[len(latencies) // 2]),
        Objective(),
    )


def synthetic_workload(n: int, seed: int = 0) -> Workload:
    rng = random.Random(seed)
    entries, predictions = [], {}
    for i in range(n):
        position = rng.random()  # 0 fastest .. 1 slowest
        latency = 0.5 * 100.0**position
        accuracy = min(0.99, max(0.1, 0.55 + 0.4 * position + rng.gauss(0.0, 0.03)))
        variant_id = f"s{i:05d}"
        entries.append(VariantEntry(variant_id, 0, ("syn",), round(accuracy, 4)))
        predictions[variant_id] = (latency, latency * 0.8)
    latencies = sorted(latency for latency, _ in predictions.values())
    return Workload(f"synthetic_{n}", entries, predictions, Budgets(latency_ms=latencies[n // 2]), Objective())


def _percentiles(samples_ns: list[int]) -> dict[str, float]:
    ordered = sorted(samples_ns)
    return {
        "median_us": quantile(ordered, 0.5) / 1e3,
        "p90_us": quantile(ordered, 0.9) / 1e3,
        "p99_us": quantile(ordered, 0.99) / 1e3,
        "min_us": ordered[0] / 1e3,
    }


def run_workload(workload: Workload, decisions: int = 2000, rounds: int = 10, seed: int = 0) -> dict[str, Any]:
    """Time ``decisions`` single-profile decisions per method, plus full-profile updates."""
    rng = random.Random(seed)
    ids = [e.variant_id for e in workload.entries]
    # The profile stream: one variant's prediction moves by up to +-25 % (load drift).
    stream = []
    for _ in range(decisions):
        variant_id = rng.choice(ids)
        latency, energy = workload.predictions[variant_id]
        factor = rng.uniform(0.8, 1.25)
        stream.append({variant_id: (latency * factor, energy * factor)})

    tables = {}
    for method, (index_kind, _) in METHODS.items():
        tables[method] = VariantTables(workload.entries, index_kind)
        tables[method].update_predictions(workload.predictions)
    samples: dict[str, list[int]] = {m: [] for m in METHODS}
    answers: dict[str, list[str | None]] = {m: [] for m in METHODS}
    per_round = math.ceil(decisions / rounds)
    clock = time.perf_counter_ns
    for start in range(0, decisions, per_round):
        chunk = stream[start : start + per_round]
        for method, (_, search) in METHODS.items():
            table, out, answer = tables[method], samples[method], answers[method]
            for profile in chunk:
                t0 = clock()
                table.update_predictions(profile)
                choice = choose(table, workload.budgets, workload.objective, search)
                out.append(clock() - t0)
                answer.append(choice.variant_id if choice else None)

    # A whole profile: every prediction scaled by a load factor, then one choice.
    full_ms: dict[str, float] = {}
    for method, (_, search) in METHODS.items():
        times = []
        for factor in (1.3, 1.0, 1.6, 1.0, 1.15, 1.0):
            scaled = {v: (lat * factor, en * factor) for v, (lat, en) in workload.predictions.items()}
            t0 = clock()
            tables[method].update_predictions(scaled)
            choose(tables[method], workload.budgets, workload.objective, search)
            times.append(clock() - t0)
        full_ms[method] = sorted(times)[len(times) // 2] / 1e6

    reference = answers[SHIPPED_METHOD]
    return {
        "variants": len(ids),
        "decisions": decisions,
        "latency_budget_ms": round(workload.budgets.latency_ms, 4),
        "objective": workload.objective.kind,
        "methods": {m: _percentiles(samples[m]) | {"full_profile_ms": full_ms[m]} for m in METHODS},
        "answers_agree": all(answers[m] == reference for m in METHODS),
    }


def bench_selector(default_entries: Sequence[VariantEntry], decisions: int = 2000, synthetic: int = 10_000) -> dict:
    """The report of ``adascale bench selector``; the top-level figures are the default table's shipped index."""
    results = {"default": run_workload(flops_workload(default_entries), decisions)}
    results[f"synthetic_{synthetic}"] = run_workload(synthetic_workload(synthetic), decisions)
    shipped = results["default"]["methods"][SHIPPED_METHOD]
    return {
        "median_us": shipped["median_us"],
        "p99_us": shipped["p99_us"],
        "full_profile_ms": shipped["full_profile_ms"],  # what the node does per profile
        "index": SHIPPED_METHOD,
        "target_median_us": TARGET_MEDIAN_US,
        "meets_target": shipped["median_us"] < TARGET_MEDIAN_US,
        "tables": results,
    }


def format_report(report: dict[str, Any]) -> str:
    lines = ["table            variants  method         median us    p99 us  full profile ms  agree"]
    for name, result in report["tables"].items():
        for method, m in result["methods"].items():
            lines.append(
                f"{name:<16} {result['variants']:>8}  {method:<13} {m['median_us']:>10.2f} {m['p99_us']:>9.2f}"
                f" {m['full_profile_ms']:>16.3f}  {result['answers_agree']}"
            )
    verdict = "meets" if report["meets_target"] else "misses"
    lines.append(
        f"default table, {report['index']}: median {report['median_us']:.2f} us, p99 {report['p99_us']:.2f} us"
        f" ({verdict} the {report['target_median_us']:g} us target); a whole profile {report['full_profile_ms']:.2f} ms"
    )
    return "\n".join(lines)
