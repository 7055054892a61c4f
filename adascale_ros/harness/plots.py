"""The evaluation's plots: the timeline (load, exit and latency against the budget) and accuracy against
latency."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from adascale_ros.harness.metrics import FrameOutcome
from adascale_ros.harness.records import PolicyRun


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
