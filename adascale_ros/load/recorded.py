"""Recorded load traces, and how well the load forecaster does on them.

``record_load_trace`` samples this machine with the resource monitor's own
sampler (optionally while stress-ng drives random bursts) and writes a CSV.
``evaluate_forecasters`` replays a trace walk-forward: at each step the AR
forecaster sees only the past, forecasts ``horizon`` steps ahead, and is
scored against the value that then arrived, beside two baselines
(persistence: "the load stays as it is"; window mean).
"""

from __future__ import annotations

import csv
import json
import math
import random
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from adascale_ros.load.stress import StressNg, StressSpec
from adascale_ros.resources import ARForecaster, LoadIndexWeights, ResourceSampler

TRACE_COLUMNS = ("t_s", "load_index", "cpu_util", "mem_util")


def _bursty_phases(seconds: float, seed: int) -> list[tuple[float, StressSpec]]:
    rng = random.Random(seed)
    phases, total = [], 0.0
    while total < seconds:
        duration = min(rng.uniform(1.0, 5.0), seconds - total)
        spec = rng.choice(
            [StressSpec()] * 2 + [StressSpec(cpu_workers=w, cpu_load_percent=p) for w in (1, 2) for p in (40, 70, 100)]
        )
        phases.append((duration, spec))
        total += duration
    return phases


def record_load_trace(out: Path, seconds: float, rate_hz: float = 10.0, bursty: bool = False, seed: int = 0) -> int:
    """Sample the load index for ``seconds`` at ``rate_hz`` into ``out``; return the row count."""
    period = 1.0 / rate_hz
    sampler = ResourceSampler(LoadIndexWeights(), ARForecaster(), period)
    phases = _bursty_phases(seconds, seed) if bursty else [(seconds, StressSpec())]
    rows = []
    start = next_tick = time.monotonic()
    for duration, spec in phases:
        with StressNg(spec, timeout_s=duration + 5):
            phase_end = time.monotonic() + duration
            while time.monotonic() < phase_end:
                next_tick += period
                time.sleep(max(0.0, next_tick - time.monotonic()))
                s = sampler.sample()
                rows.append((time.monotonic() - start, s.load_index, s.cpu_util, s.mem_util))
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(TRACE_COLUMNS)
        writer.writerows((f"{t:.3f}", f"{li:.4f}", f"{c:.4f}", f"{m:.4f}") for t, li, c, m in rows)
    return len(rows)


def read_load_trace(path: Path) -> np.ndarray:
    """The load_index column of a recorded trace."""
    with path.open(newline="") as f:
        values = [float(row["load_index"]) for row in csv.DictReader(f)]
    if not values:
        raise ValueError(f"{path}: no samples")
    return np.asarray(values)


@dataclass(frozen=True)
class ForecastScore:
    mae: float
    rmse: float


@dataclass(frozen=True)
class ForecastReport:
    samples: int
    order: int
    window: int
    horizon: int
    ar: ForecastScore
    persistence: ForecastScore
    window_mean: ForecastScore

    def to_table(self) -> str:
        lines = [
            f"walk-forward forecast, {self.samples} scored samples, AR({self.order}), "
            f"window {self.window}, horizon {self.horizon} steps",
            f"{'forecaster':<14}{'MAE':>9}{'RMSE':>9}",
        ]
        for name in ("ar", "persistence", "window_mean"):
            score: ForecastScore = getattr(self, name)
            lines.append(f"{name:<14}{score.mae:>9.4f}{score.rmse:>9.4f}")
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def _score(predictions: list[float], actual: np.ndarray) -> ForecastScore:
    errors = np.asarray(predictions) - actual
    return ForecastScore(mae=float(np.mean(np.abs(errors))), rmse=float(math.sqrt(np.mean(errors**2))))


def evaluate_forecasters(series: np.ndarray, order: int = 3, window: int = 100, horizon: int = 10) -> ForecastReport:
    """Walk-forward comparison of the AR forecaster with persistence and window mean.

    Scoring starts once the forecaster has fitted; each method predicts
    ``series[t + horizon]`` from ``series[: t + 1]``.
    """
    forecaster = ARForecaster(order=order, window=window, horizon=horizon)
    recent: deque[float] = deque(maxlen=window)
    ar, persistence, mean, actual = [], [], [], []
    for t, value in enumerate(series[:-horizon]):
        forecaster.update(float(value))
        recent.append(float(value))
        if not forecaster.fitted:
            continue
        ar.append(forecaster.forecast())
        persistence.append(float(value))
        mean.append(float(np.mean(recent)))
        actual.append(float(series[t + horizon]))
    if not actual:
        raise ValueError(f"series of {len(series)} samples is too short for order {order} and horizon {horizon}")
    target = np.asarray(actual)
    return ForecastReport(
        samples=len(actual),
        order=order,
        window=window,
        horizon=horizon,
        ar=_score(ar, target),
        persistence=_score(persistence, target),
        window_mean=_score(mean, target),
    )
