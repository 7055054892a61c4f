"""What ``adascale evaluate`` records of one policy's run, as plain records.

A run is what one policy did while it classified the replayed bag under the load trace: every camera
frame the replay published (with its header stamp), every classification result, the resource states and
the trace's phase changes, each with its receive time in seconds from the start of the run. Nothing here
touches ROS, so scoring is tested on hand-made runs and can be redone from the saved records.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

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


def save_run_config(runs_dir: Path, budgets_ms: list[float], variants: dict[str, str], repeats: int) -> None:
    """What an evaluation's runs were made with (``runs_dir/config.json``): the budget of each round, the
    static policies' variants and the number of repeats."""
    saved = {"budgets_ms": budgets_ms, "variants": variants, "repeats": repeats}
    (runs_dir / "config.json").write_text(json.dumps(saved))


def saved_run_config(runs_dir: Path) -> dict:
    """``runs_dir/config.json`` as written by ``save_run_config``, ``budgets_ms`` one float per round
    (records from before per-round budgets hold one ``budget_ms`` for every round)."""
    saved = json.loads((runs_dir / "config.json").read_text())
    repeats = int(saved.get("repeats", 1))
    if "budgets_ms" in saved:
        budgets = [float(b) for b in saved["budgets_ms"]]
    else:
        budgets = [float(saved["budget_ms"])] * repeats
    return {**saved, "budgets_ms": budgets, "repeats": repeats}
