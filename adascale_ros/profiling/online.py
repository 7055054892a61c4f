"""The profiler's loop without ROS: resource states and measured results in, predicted profiles out.

``OnlineProfiler`` keeps the latest valid resource state (and predicts at it when states stop, so measured
latencies still reach the selector), AdaptiveNet's measured/predicted correction, each variant's recent
measured latency and the camera's frame period; ``profiles`` predicts every variant at the current load
and, when known, at the forecast load.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from statistics import median
from typing import Any

import numpy as np

from adascale_ros.profiling.predictor import LatencyCorrection, LatencyPredictor, latency_sample

# A variant's measured latency is the median of its last results, of at least 3, none older than 2 s
# (why: docs/decisions/latency-correction.md).
MEASURED_WINDOW = 5
MEASURED_MIN_RESULTS = 3
MEASURED_MAX_AGE_S = 2.0
# A load index this far below the highest since the last reset means the load has ended: what the
# correction learnt under it is forgotten.
LOAD_DROP = 0.25
COUNTS = ("states", "states_rejected", "results", "results_rejected", "profiles", "corrections_reset")


def state_vector(load_index: float, cpu_util: float, mem_available_mb: float, cpu_freq_mhz: float) -> np.ndarray:
    """The predictor's state from one resource reading; ``ValueError`` when it cannot describe a load.
    Memory and frequency readings that make no sense are unknown (NaN), not fatal."""
    if not (math.isfinite(load_index) and 0.0 <= load_index <= 1.0):
        raise ValueError(f"load_index {load_index} is not in [0, 1]")
    if math.isfinite(cpu_util) and not 0.0 <= cpu_util <= 1.0:
        raise ValueError(f"cpu_util {cpu_util} is not in [0, 1]")
    readings = [v if math.isfinite(v) and v >= 0.0 else math.nan for v in (mem_available_mb, cpu_freq_mhz)]
    return np.array([cpu_util, load_index, *readings])


def profiler_correction(
    predictor: LatencyPredictor, window: int, quantile: float, tail_window: int
) -> LatencyCorrection:
    """The latency correction as the profiler keeps it (``window`` 0: a correction the profiler leaves
    unused, built with a window of 1)."""
    # A variant has its own offset from as many results as its measured latency needs: one that the
    # selector left for what it measured is then priced by it, not tried again at a transferred offset.
    return LatencyCorrection(
        max(window, 1),
        quantile,
        incidence=predictor.incidence,
        variant_min_samples=MEASURED_MIN_RESULTS,
        tail_window=tail_window,
    )


@dataclass(frozen=True)
class Profile:
    """Every variant's corrected latency and energy predicted at one load."""

    load_index: float
    is_forecast: bool
    latency_ms: np.ndarray  # (V,)
    energy_mj: np.ndarray  # (V,)


class OnlineProfiler:
    """Predictions for every variant of ``predictor``, corrected by the latencies the inference measures.

    ``correction_window`` 0 turns the correction off; ``resource_aware`` False is AdaptiveNet's reactive
    mode: every prediction at the calibration's idle state, adjusted only by the measured ratio.
    """

    def __init__(
        self,
        predictor: LatencyPredictor,
        correction_window: int = 30,
        correction_quantile: float = 0.9,
        correction_tail_window: int = 100,
        resource_aware: bool = True,
        publish_forecast: bool = True,
        state_timeout_s: float = 2.0,
    ) -> None:
        self.predictor = predictor
        self.correct = correction_window > 0
        self.correction = profiler_correction(predictor, correction_window, correction_quantile, correction_tail_window)
        self.resource_aware = resource_aware
        self.publish_forecast = publish_forecast
        self.state_timeout_s = state_timeout_s
        self.idle_state = predictor.idle_state()  # where the reactive mode predicts
        count = len(predictor.variant_ids)
        self.measured_ms = np.full(count, math.nan)  # each variant's median of its recent results
        self.frame_period_ms = math.nan  # the camera's, from the latest result that knew it
        self.counts = dict.fromkeys(COUNTS, 0)  # corrections_reset: load drops that ended what was learnt
        self.last_state_s = -math.inf
        self._recent: dict[int, deque[tuple[float, float]]] = {}  # variant -> (time [s], latency [ms])
        self._raw_latency = np.full(count, math.nan)  # the last uncorrected prediction at the current load
        self._state: np.ndarray | None = None  # the latest valid resource state, kept when states stop
        self._forecast = math.nan
        self._load_peak = 0.0  # the highest load index since the correction was last reset

    def on_state(self, reading: tuple[float, float, float, float], forecast: float, now_s: float) -> None:
        """One resource reading (load index, CPU utilisation, available memory [MB], CPU frequency [MHz]) and
        the forecast load; ``ValueError`` (counted) when it cannot describe a load."""
        self.counts["states"] += 1
        try:
            state = state_vector(*reading)
        except ValueError:
            self.counts["states_rejected"] += 1
            raise
        self._state = state
        if self.resource_aware:  # the reactive mode senses no load
            self._follow_load(float(state[1]))
        self._forecast = forecast if math.isfinite(forecast) and 0.0 <= forecast <= 1.0 else math.nan
        self.last_state_s = now_s

    def _follow_load(self, load: float) -> None:
        self._load_peak = max(self._load_peak, load)
        if self._load_peak - load > LOAD_DROP:
            self.correction.forget_measured()
            self.counts["corrections_reset"] += 1
            self._load_peak = load

    def on_result(
        self,
        variant_id: str,
        latency_ms: float,
        exit_index: int,
        early_exited: bool,
        deadline_exited: bool,
        frame_period_ms: float,
        now_s: float,
    ) -> None:
        """One classification result; ``ValueError`` (counted) for an unknown variant, a latency that is not
        a positive number or a deadline exit off the variant's path."""
        self.counts["results"] += 1
        if math.isfinite(frame_period_ms) and frame_period_ms > 0.0:  # passed on to the selector's budget
            self.frame_period_ms = frame_period_ms
        try:
            index, prefix = self._indices(variant_id, latency_ms, exit_index, deadline_exited)
        except ValueError:
            self.counts["results_rejected"] += 1
            raise
        sample = latency_sample(latency_ms, early_exited, deadline_exited, self._raw_latency, index, prefix)
        if sample is None:
            return
        self._recent.setdefault(index, deque(maxlen=MEASURED_WINDOW)).append((now_s, sample))
        # A no-op before the first prediction, which the correction is learnt against.
        self.correction.partial_fit(sample, float(self._raw_latency[index]), index)

    def _indices(
        self, variant_id: str, latency_ms: float, exit_index: int, deadline_exited: bool
    ) -> tuple[int, int | None]:
        try:
            index = self.predictor.variant_index(variant_id)
        except KeyError:
            raise ValueError(f"result for unknown variant {variant_id!r}") from None
        if not (math.isfinite(latency_ms) and latency_ms > 0.0):
            raise ValueError(f"result with latency_ms {latency_ms}")
        if not deadline_exited:
            return index, None
        try:
            return index, self.predictor.prefix_index(variant_id, exit_index)
        except (ValueError, KeyError) as exc:
            raise ValueError(f"deadline exit: {exc}") from None

    def state_stale(self, now_s: float) -> bool:
        """Resource-aware and no valid state within ``state_timeout_s`` (none at all counts as stale)."""
        return self.resource_aware and now_s - self.last_state_s > self.state_timeout_s

    def profiles(self, now_s: float) -> list[Profile]:
        """The profile at the current load and, when the forecast is known, at the forecast load; none
        before the first state (resource-aware)."""
        state = self._state if self.resource_aware else self.idle_state
        if state is None:
            return []
        states = [state]
        if self.resource_aware and self.publish_forecast and math.isfinite(self._forecast):
            if not self.state_stale(now_s):
                states.append(self.predictor.at_load(state, self._forecast))
        latency = self.predictor.latency_ms(np.vstack(states))
        self._raw_latency = latency[0]
        self._update_measured(now_s)
        corrected = self.correction.corrected(latency) if self.correct else latency
        self.counts["profiles"] += len(states)
        return [
            Profile(float(s[1]), bool(i), row, self.predictor.energy_mj(s))
            for i, (row, s) in enumerate(zip(corrected, states, strict=True))
        ]

    def _update_measured(self, now_s: float) -> None:
        oldest = now_s - MEASURED_MAX_AGE_S
        for index, recent in list(self._recent.items()):
            fresh = [ms for t, ms in recent if t >= oldest]
            self.measured_ms[index] = median(fresh) if len(fresh) >= MEASURED_MIN_RESULTS else math.nan
            if not fresh:
                del self._recent[index]

    def status_values(self, now_s: float) -> dict[str, Any]:
        return {
            **self.counts,
            "state_stale": self.state_stale(now_s),
            "last_state_age_s": now_s - self.last_state_s,
            "latency_correction_ratio": self.correction.ratio_ if self.correct else 1.0,  # the tail factor
            "variants_with_measured_offset": len(self.correction.measured_offsets_) if self.correct else 0,
            "predictor_mode": self.predictor.mode,
        }
