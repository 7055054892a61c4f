"""``adascale soak``: the full graph for minutes on the replayed bag under a repeating load trace.

One ``adascale`` run of ``adascale evaluate`` (same graph, same replay, the
trace starting over until the time is up), while the resident memory of
every node is sampled. The report says, per node, how much memory grew from
the end of the warm-up to the end of the run, and per minute the latency,
deadline misses and drops; exceptions are tracebacks in the nodes' output,
frames that failed with an unexpected error, and nodes that died.

Passes when no node's memory grew by 5 % or more after the warm-up and
there was no exception.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from adascale_ros.graph.runner import GraphProcesses, unexpected_errors
from adascale_ros.harness.evaluation import EvaluationConfig, Recorder, RunFailed, policy_graph, run_policy
from adascale_ros.harness.metrics import FrameOutcome, frame_outcomes, policy_metrics

MAX_GROWTH_PERCENT = 5.0
SAMPLE_PERIOD_S = 2.0


def warm_up_s(duration_s: float) -> float:
    """Memory before this is start-up (ONNX sessions, first allocations): 2 min, or a quarter of a short run."""
    return min(120.0, duration_s / 4.0)


def window_s(duration_s: float) -> float:
    """Length of the windows memory is compared over (the median of each)."""
    return max(SAMPLE_PERIOD_S * 3, min(60.0, duration_s / 10.0))


@dataclass
class NodeMemory:
    node: str
    samples: list[tuple[float, float]] = field(default_factory=list)  # (s since the first frame, RSS MiB)

    def median_between(self, begin: float, end: float) -> float:
        values = [mb for t, mb in self.samples if begin <= t <= end]
        return float(np.median(values)) if values else math.nan

    def growth(self, duration_s: float) -> dict[str, float]:
        warm, window = warm_up_s(duration_s), window_s(duration_s)
        after_warm_up = self.median_between(warm, warm + window)
        at_end = self.median_between(duration_s - window, duration_s)
        return {
            "rss_start_mb": self.samples[0][1] if self.samples else math.nan,
            "rss_after_warm_up_mb": after_warm_up,
            "rss_end_mb": at_end,
            "rss_peak_mb": max((mb for _, mb in self.samples), default=math.nan),
            "growth_percent": (at_end - after_warm_up) / after_warm_up * 100.0,
        }


class MemorySampler:
    """Resident memory of every node of the graph, every ``SAMPLE_PERIOD_S``."""

    def __init__(self) -> None:
        self.nodes: dict[str, NodeMemory] = {}
        self.t0: float | None = None
        self._next = 0.0

    def __call__(self, graph: GraphProcesses) -> None:
        import psutil

        now = time.monotonic()
        if self.t0 is None:
            self.t0 = now
        if now < self._next:
            return
        self._next = now + SAMPLE_PERIOD_S
        for name, proc in graph.processes.items():
            try:
                rss = psutil.Process(proc.pid).memory_info().rss / 2**20
            except psutil.Error:  # it just ended: the run notices that itself
                continue
            self.nodes.setdefault(name, NodeMemory(name)).samples.append((now - self.t0, rss))


def per_minute(outcomes: list[FrameOutcome], duration_s: float, budget_ms: float) -> list[dict[str, Any]]:
    """Latency, deadline misses and drops per minute of the run (the last minute may be shorter)."""
    rows = []
    for start in np.arange(0.0, duration_s, 60.0):
        end = min(start + 60.0, duration_s)
        chunk = [o for o in outcomes if start <= o.t_s < end]
        m = policy_metrics(chunk, budget_ms, end - start)
        rows.append({"minute": int(start // 60) + 1, **{k: m[k] for k in PER_MINUTE_KEYS}})
    return rows


PER_MINUTE_KEYS = ("frames", "dropped", "latency_p50_ms", "latency_p95_ms", "deadline_miss_rate", "switches_per_min")


@dataclass
class SoakReport:
    minutes: float
    trace: str
    budget_ms: float
    memory: dict[str, dict[str, float]]
    minutes_table: list[dict[str, Any]]
    exceptions: dict[str, str]
    totals: dict[str, Any]

    @property
    def passed(self) -> bool:
        grown = [n for n, m in self.memory.items() if not m["growth_percent"] < MAX_GROWTH_PERCENT]
        return not grown and not self.exceptions and bool(self.memory)

    def latency_drift_percent(self) -> float:
        """p50 latency of the last whole minute against the first minute after the warm-up."""
        if not self.minutes_table:
            return math.nan
        whole = [row for row in self.minutes_table if row["frames"] >= 0.9 * self.minutes_table[0]["frames"]]
        first = next((r for r in whole if (r["minute"] - 1) * 60.0 >= warm_up_s(self.minutes * 60.0)), None)
        if first is None or whole[-1] is first:
            return math.nan
        return (whole[-1]["latency_p50_ms"] - first["latency_p50_ms"]) / first["latency_p50_ms"] * 100.0

    def to_json(self) -> dict[str, Any]:
        return {"passed": self.passed, "latency_drift_percent": self.latency_drift_percent(), **asdict(self)}

    def markdown(self) -> str:
        duration = self.minutes * 60.0
        lines = [
            f"# Soak: {self.minutes:g} min, trace {self.trace} (repeating), budget {self.budget_ms:g} ms",
            "",
            f"Memory growth is the median RSS over the last {window_s(duration):.0f} s against the median over "
            f"{window_s(duration):.0f} s after a {warm_up_s(duration):.0f}-s warm-up.",
            "",
            "| node | RSS at start [MiB] | after warm-up | at the end | peak | growth |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for node, m in self.memory.items():
            lines.append(
                f"| {node} | {m['rss_start_mb']:.1f} | {m['rss_after_warm_up_mb']:.1f} | {m['rss_end_mb']:.1f} "
                f"| {m['rss_peak_mb']:.1f} | {m['growth_percent']:+.2f} % |"
            )
        lines += ["", "| minute | frames | dropped | p50 [ms] | p95 [ms] | deadline misses | switches/min |"]
        lines.append("|---:|---:|---:|---:|---:|---:|---:|")
        for r in self.minutes_table:
            lines.append(
                f"| {r['minute']} | {r['frames']} | {r['dropped']} | {r['latency_p50_ms']:.3f} | "
                f"{r['latency_p95_ms']:.3f} | {r['deadline_miss_rate']:.1%} | {r['switches_per_min']:.1f} |"
            )
        exceptions = ", ".join(f"{n}: {w}" for n, w in self.exceptions.items()) or "none"
        t = self.totals
        lines += [
            "",
            f"Frames {t['frames']}, classified {t['classified']}, dropped {t['dropped']}, "
            f"deadline misses {t['deadline_miss_rate']:.1%}; latency drift (p50, last minute vs first after "
            f"warm-up) {self.latency_drift_percent():+.1f} %; exceptions: {exceptions}.",
            "",
            f"Result: {'PASSED' if self.passed else 'FAILED'} (memory growth < {MAX_GROWTH_PERCENT:g} % per node "
            "after warm-up, no exception).",
            "",
            "![memory](memory.png)",
            "",
        ]
        return "\n".join(lines)


def plot_memory(memory: dict[str, NodeMemory], duration_s: float, out: Path) -> Path:
    """Each node's RSS relative to its level after the warm-up (absolute level in the legend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.5), constrained_layout=True)
    for node in memory.values():
        base = node.growth(duration_s)["rss_after_warm_up_mb"]
        ax.plot(
            [t / 60 for t, _ in node.samples],
            [(mb - base) / base * 100 for _, mb in node.samples],
            lw=1.3,
            label=f"{node.node} ({base:.0f} MiB)",
        )
    ax.axvspan(0, warm_up_s(duration_s) / 60, color="0.92", zorder=0, label="warm-up")
    ax.axhline(MAX_GROWTH_PERCENT, color="crimson", ls="--", lw=1.2, label=f"limit +{MAX_GROWTH_PERCENT:g} %")
    ax.set(
        xlabel="time [min]",
        ylabel="RSS change [%]",
        ylim=(-MAX_GROWTH_PERCENT * 1.5, MAX_GROWTH_PERCENT * 1.5),
        title="Resident memory per node, relative to its level after the warm-up",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    path = out / "memory.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def soak(config: EvaluationConfig, stop: threading.Event, say: Callable[[str], None] = print) -> SoakReport | None:
    """Run the full graph for ``config.run_s``; None when interrupted."""
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    from adascale_ros.harness.bags import read_labels
    from adascale_ros.harness.evaluation import static_variants
    from adascale_ros.model.directory import load_variant_table

    specs = policy_graph("adascale", config, static_variants(load_variant_table(config.model_dir)))
    sampler = MemorySampler()
    exceptions: dict[str, str] = {}
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node("adascale_soak")
    try:
        recorder = Recorder(node, config.camera_topic)
        try:
            run = run_policy("adascale", specs, config, node, recorder, stop, say, on_tick=sampler)
        except RunFailed as exc:
            exceptions["graph"] = str(exc)
            run = None
        diagnostics = dict(recorder.diagnostics)
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    if run is None and not exceptions:
        return None  # interrupted
    log = (config.out / "logs" / "adascale.log").read_text(errors="replace")
    exceptions.update(unexpected_errors([spec.name for spec in specs], log, diagnostics))
    duration = run.duration_s if run is not None else config.run_s
    outcomes = frame_outcomes(run, read_labels(config.bag))[0] if run is not None else []
    minutes = per_minute(outcomes, duration, config.budget_ms) if run is not None else []
    totals = policy_metrics(outcomes, config.budget_ms, duration) if run is not None else {}
    report = SoakReport(
        minutes=duration / 60.0,
        trace=config.trace.name,
        budget_ms=config.budget_ms,
        memory={name: m.growth(duration) for name, m in sampler.nodes.items()},
        minutes_table=minutes,
        exceptions=exceptions,
        totals={k: totals.get(k, math.nan) for k in ("frames", "classified", "dropped", "deadline_miss_rate")},
    )
    config.out.mkdir(parents=True, exist_ok=True)
    (config.out / "soak.json").write_text(json.dumps(report.to_json(), indent=1, allow_nan=True) + "\n")
    (config.out / "memory.json").write_text(json.dumps({n: m.samples for n, m in sampler.nodes.items()}) + "\n")
    plot_memory(sampler.nodes, duration, config.out)
    (config.out / "soak.md").write_text(report.markdown())
    return report
