"""profiler: predicted latency and energy of every variant at the current and the forecast load.

Subscriptions
  ~/resource_state   adascale_msgs/ResourceState from the resource monitor
  ~/classification   adascale_msgs/ElasticClassification: measured latency per variant (online correction)
Publications
  ~/profiles         adascale_msgs/VariantProfileArray at ``max_rate_hz`` once a state has arrived: one at
                     the current load and, when the forecast is known, one at the forecast load
                     (load_is_forecast). When states stop, at the last state (stale in diagnostics).
  /diagnostics       diagnostic_msgs/DiagnosticArray at 1 Hz

The predictions come from ``adascale_ros.profiling.predictor`` (fitted by
``adascale calibrate``); this node converts messages, rate-limits and keeps
AdaptiveNet's measured/predicted ratio.
"""

from __future__ import annotations

import array
import math
import threading
import time
from collections import deque
from statistics import median
from typing import Any

import numpy as np

from adascale_msgs.msg import ElasticClassification, ResourceState, VariantProfileArray
from adascale_ros.model.files import load_variant_table
from adascale_ros.nodes.common import (
    OK,
    WARN,
    AdascaleNode,
    Param,
    spin_node,
)
from adascale_ros.profiling.predictor import LatencyCorrection, LatencyPredictor, device_fingerprint, latency_sample

# A variant's measured latency is the median of its last results (one slow frame is not a trend),
# of at least 3 (the first frame after a switch meets the variant's weights cold: a median of that
# one result broke the budget of a variant the selector had just upgraded to), and only of recent
# ones: what a variant measured before the load changed says nothing now.
# A load index this far below the highest since the last reset means the load has ended (a load
# step comes and goes by more): what the correction learnt under it is forgotten.
LOAD_DROP = 0.25
MEASURED_WINDOW = 5
MEASURED_MIN_RESULTS = 3
MEASURED_MAX_AGE_S = 2.0

PARAMETERS: dict[str, Param] = {
    "model_dir": Param(
        "", "Model directory with variants.json and profiler/ (adascale calibrate); empty: the default.", read_only=True
    ),
    "max_rate_hz": Param(5.0, "Profiles are published at most this often [Hz], above 0.", low=0.0, high=100.0),
    "publish_forecast": Param(True, "Also publish the profile at the forecast load when it is known."),
    "correction_window": Param(
        30,
        "Results each variant's offset is the median of; 0: no correction.",
        read_only=True,
        low=0,
    ),
    "correction_tail_window": Param(
        100,
        "Results the tail (the quantile of measured / corrected prediction) is taken over.",
        read_only=True,
        low=1,
    ),
    "correction_quantile": Param(
        0.9,
        "Quantile of those ratios applied: predictions then describe that latency quantile.",
        low=0.0,
        high=1.0,
    ),
    "state_timeout_s": Param(
        2.0,
        "A resource state older than this is stale: predictions continue at it, flagged in diagnostics [s], above 0.",
        low=0.0,
    ),
    "resource_aware": Param(
        True,
        "false: AdaptiveNet's reactive mode: predictions at the calibration's idle state, adjusted only by "
        "the measured/predicted ratio; resource states are ignored.",
        read_only=True,
    ),
}


def _validate(values: dict[str, Any]) -> None:
    if not 0.0 < float(values["max_rate_hz"]) <= 100.0:
        raise ValueError(f"max_rate_hz must be in (0, 100], got {values['max_rate_hz']}")
    if int(values["correction_window"]) < 0:
        raise ValueError(f"correction_window must be >= 0 (0: off), got {values['correction_window']}")
    if int(values["correction_tail_window"]) < 1:
        raise ValueError(f"correction_tail_window must be >= 1, got {values['correction_tail_window']}")
    if not 0.0 <= float(values["correction_quantile"]) <= 1.0:
        raise ValueError(f"correction_quantile must be in [0, 1], got {values['correction_quantile']}")
    if not float(values["state_timeout_s"]) > 0.0:
        raise ValueError(f"state_timeout_s must be > 0, got {values['state_timeout_s']}")


def float32_array(values: np.ndarray) -> array.array:
    """A float32[] message field from numpy values, in one copy (a list would be checked value by value)."""
    return array.array("f", np.asarray(values, np.float32).tobytes())


def state_of(msg: ResourceState) -> np.ndarray:
    """The predictor's state vector; ValueError when the message cannot describe a load."""
    load = float(msg.load_index)
    if not (math.isfinite(load) and 0.0 <= load <= 1.0):
        raise ValueError(f"load_index {load} is not in [0, 1]")
    cpu = float(msg.cpu_util)
    if math.isfinite(cpu) and not 0.0 <= cpu <= 1.0:
        raise ValueError(f"cpu_util {cpu} is not in [0, 1]")
    readings = [float(msg.mem_available_mb), float(msg.cpu_freq_mhz)]
    readings = [v if math.isfinite(v) and v >= 0.0 else math.nan for v in readings]  # unknown, not fatal
    return np.array([cpu, load, *readings])


class Profiler(AdascaleNode):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__("profiler", PARAMETERS, _validate, **kwargs)
        values = self.settings
        _validate(values)
        model_dir = self.model_dir()
        table = load_variant_table(model_dir)
        self.predictor = LatencyPredictor.load(model_dir)
        self.warnings = self.predictor.check_against(table, device_fingerprint())
        for warning in self.warnings:
            self.get_logger().warning(warning)
        window = int(values["correction_window"])
        self.correction = LatencyCorrection(
            max(window, 1),
            float(values["correction_quantile"]),
            incidence=self.predictor.incidence,
            tail_window=int(values["correction_tail_window"]),
        )
        self.correct = window > 0
        self.publish_forecast = bool(values["publish_forecast"])
        self.state_timeout_s = float(values["state_timeout_s"])
        self.resource_aware = bool(values["resource_aware"])
        # Reactive mode predicts every variant at this one state: the calibration's, moved to load 0.
        self.idle_state = self.predictor.idle_state()

        rows = {row["variant_id"]: row for row in table["variants"]}
        self._messages = {False: self._profile_array(rows), True: self._profile_array(rows)}
        self.measured_ms = np.full(len(self.predictor.variant_ids), math.nan)  # median of the recent results
        self.frame_period_ms = math.nan  # the camera's, from the latest result that knew it
        self._recent: dict[int, deque[tuple[float, float]]] = {}  # variant -> (time [s], latency [ms])
        self._raw_latency = np.full(len(self.predictor.variant_ids), math.nan)  # last uncorrected prediction
        self._state: np.ndarray | None = None  # the latest valid resource state, kept when states stop
        self._forecast = math.nan
        self._last_state_s = -math.inf
        # corrections_reset: load drops that ended what the correction had learnt
        names = ("states", "states_rejected", "results", "results_rejected", "profiles", "corrections_reset")
        self.counts = dict.fromkeys(names, 0)
        self._load_peak = 0.0  # the highest load index since the correction was last reset
        self.last_error = ""
        self._predict_ms: deque[float] = deque(maxlen=200)

        self._pub = self.create_publisher(VariantProfileArray, "~/profiles", 10)
        self.create_subscription(ResourceState, "~/resource_state", self._on_state, 10)
        self.create_subscription(ElasticClassification, "~/classification", self._on_result, 10)
        self._timer = self.create_timer(1.0 / float(values["max_rate_hz"]), self._publish_profiles)
        self.serve()
        self.get_logger().info(
            f"{len(rows)} variants from {model_dir}; predictors: {self.predictor.mode} sum of "
            f"{', '.join(f'{k}={r.family}' for k, r in self.predictor.regressors.items())}; "
            f"publishing {self._pub.topic_name}"
        )

    def _profile_array(self, rows: dict[str, dict[str, Any]]) -> VariantProfileArray:
        """One message per kind, built once: only the predictions change between publications."""
        table = [rows[variant_id] for variant_id in self.predictor.variant_ids]
        return VariantProfileArray(
            variant_ids=list(self.predictor.variant_ids),
            exit_indices=[int(row["exit_index"]) for row in table],
            accuracy=[float(row["val_accuracy"]) for row in table],
            params=[int(row["params"]) for row in table],
            flops=[int(row["flops"]) for row in table],
            storage_bytes=[int(row["storage_bytes"]) for row in table],
            memory_accesses=[int(row["memory_accesses"]) for row in table],
            measured_latency_ms=[math.nan] * len(table),
            frame_period_ms=math.nan,
        )

    def _now_s(self) -> float:
        return self.get_clock().now().nanoseconds / 1e9

    def apply(self, values: dict[str, Any]) -> None:
        _validate(values)
        self.correction.quantile = float(values["correction_quantile"])
        self.publish_forecast = bool(values["publish_forecast"])
        self.state_timeout_s = float(values["state_timeout_s"])
        period_ns = int(1e9 / float(values["max_rate_hz"]))
        if period_ns != self._timer.timer_period_ns:
            self._timer.timer_period_ns = period_ns
            self._timer.reset()

    def _on_state(self, msg: ResourceState) -> None:
        self.counts["states"] += 1
        try:
            state = state_of(msg)
        except ValueError as exc:
            self.counts["states_rejected"] += 1
            self.last_error = f"resource state rejected: {exc}"
            self.get_logger().warning(self.last_error, throttle_duration_sec=5.0)
            return
        self._state = state
        if self.resource_aware:  # the reactive mode (AdaptiveNet's monitor alone) senses no load
            self._follow_load(float(state[1]))
        forecast = float(msg.load_index_forecast)
        self._forecast = forecast if math.isfinite(forecast) and 0.0 <= forecast <= 1.0 else math.nan
        self._last_state_s = self._now_s()

    def _follow_load(self, load: float) -> None:
        self._load_peak = max(self._load_peak, load)
        if self._load_peak - load > LOAD_DROP:
            self.correction.forget_measured()
            self.counts["corrections_reset"] += 1
            self._load_peak = load

    def _on_result(self, msg: ElasticClassification) -> None:
        self.counts["results"] += 1
        period = float(msg.frame_period_ms)
        if math.isfinite(period) and period > 0.0:  # passed on to the selector (its default budget)
            self.frame_period_ms = period
        try:
            index = self.predictor.variant_index(msg.variant_id)
        except KeyError:
            self.counts["results_rejected"] += 1
            self.last_error = f"result for unknown variant {msg.variant_id!r}"
            self.get_logger().warning(self.last_error, throttle_duration_sec=5.0)
            return
        latency = float(msg.latency_ms)
        if not (math.isfinite(latency) and latency > 0.0):
            self.counts["results_rejected"] += 1
            self.last_error = f"result with latency_ms {latency}"
            return
        prefix = None
        if msg.deadline_exited:
            try:
                prefix = self.predictor.prefix_index(msg.variant_id, int(msg.exit_index))
            except (ValueError, KeyError) as exc:  # an exit off the variant's path
                self.counts["results_rejected"] += 1
                self.last_error = f"deadline exit: {exc}"
                self.get_logger().warning(self.last_error, throttle_duration_sec=5.0)
                return
        sample = latency_sample(latency, msg.early_exited, msg.deadline_exited, self._raw_latency, index, prefix)
        if sample is None:
            return
        latency = sample
        self._recent.setdefault(index, deque(maxlen=MEASURED_WINDOW)).append((self._now_s(), latency))
        self.correction.update(latency, float(self._raw_latency[index]), index)  # no-op before the first prediction

    def _publish_profiles(self) -> None:
        # When states stop (the monitor died), predictions go on at the last one, so measured
        # latencies still reach the selector; the diagnostics flag the state stale.
        state = self._state if self.resource_aware else self.idle_state
        if state is None:
            return
        start = time.perf_counter()
        states = [state]
        if self.resource_aware and self.publish_forecast and math.isfinite(self._forecast) and not self._state_stale():
            states.append(self.predictor.at_load(state, self._forecast))
        latency = self.predictor.latency_ms(np.vstack(states))
        self._raw_latency = latency[0]
        self._update_measured()
        corrected = self.correction.corrected(latency) if self.correct else latency
        stamp = self.get_clock().now().to_msg()
        for is_forecast, (row, s) in enumerate(zip(corrected, states, strict=True)):
            energy = self.predictor.energy_mj(s)
            msg = self._messages[bool(is_forecast)]
            msg.header.stamp = stamp
            msg.load_index = float(s[1])
            msg.load_is_forecast = bool(is_forecast)
            msg.predicted_latency_ms = float32_array(row)
            msg.predicted_energy_mj = float32_array(energy)
            msg.measured_latency_ms = float32_array(self.measured_ms)
            msg.frame_period_ms = self.frame_period_ms
            self._pub.publish(msg)
            self.counts["profiles"] += 1
        self._predict_ms.append((time.perf_counter() - start) * 1e3)

    def _state_stale(self) -> bool:
        """Resource-aware and no valid state within ``state_timeout_s`` (none at all counts as stale)."""
        return self.resource_aware and self._now_s() - self._last_state_s > self.state_timeout_s

    def _update_measured(self) -> None:
        oldest = self._now_s() - MEASURED_MAX_AGE_S
        for index, recent in list(self._recent.items()):
            fresh = [ms for t, ms in recent if t >= oldest]
            self.measured_ms[index] = median(fresh) if len(fresh) >= MEASURED_MIN_RESULTS else math.nan
            if not fresh:
                del self._recent[index]

    def diagnostic_status(self) -> tuple[bytes, str, dict[str, Any]]:
        age = self._now_s() - self._last_state_s
        if self.resource_aware and self.counts["states"] == 0:
            level, message = WARN, "no resource state yet: nothing published"
        elif self._state_stale():
            level, message = WARN, f"resource state stale ({age:.1f} s old): predicting at the last one"
        elif self.warnings:
            level, message = WARN, self.warnings[0]
        else:
            mode = "" if self.resource_aware else " (reactive: idle state x measured ratio)"
            level, message = OK, f"profiling {len(self.predictor.variant_ids)} variants{mode}"
        values = {
            **self.counts,
            "state_stale": self._state_stale(),
            "last_state_age_s": age,
            "latency_correction_ratio": self.correction.ratio if self.correct else 1.0,  # the tail factor
            "variants_with_measured_offset": len(self.correction.measured_offsets) if self.correct else 0,
            "publish_and_predict_ms_median": median(self._predict_ms) if self._predict_ms else math.nan,
            "predictor_mode": self.predictor.mode,
            "last_error": self.last_error,
        }
        return level, message, values


def main(args: list[str] | None = None, stop: threading.Event | None = None) -> int:
    return spin_node(Profiler, args, stop)


if __name__ == "__main__":
    raise SystemExit(main())
