"""profiler: predicted latency and energy of every variant at the current and the forecast load.

Topics, parameters and diagnostics: docs/nodes/profiler.md. The predictions and AdaptiveNet's
measured/predicted correction live in ``adascale_ros.profiling`` (``OnlineProfiler``, fitted by
``adascale calibrate``); this node converts messages and rate-limits.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from statistics import median
from typing import Any

from adascale_msgs.msg import ElasticClassification, ResourceState, VariantProfileArray
from adascale_ros.model.directory import load_variant_table
from adascale_ros.nodes.common import AdascaleNode, nice_parameter, spin_node
from adascale_ros.nodes.diagnostics import OK, WARN
from adascale_ros.nodes.messages import float32_array, profile_message
from adascale_ros.nodes.parameters import Param
from adascale_ros.profiling.online import OnlineProfiler
from adascale_ros.profiling.predictor import LatencyPredictor, device_fingerprint

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
    "nice": nice_parameter(),
}


def _check(values: dict[str, Any]) -> None:
    """The open ends the ranges cannot say."""
    if not float(values["max_rate_hz"]) > 0.0:
        raise ValueError(f"max_rate_hz must be in (0, 100], got {values['max_rate_hz']}")
    if not float(values["state_timeout_s"]) > 0.0:
        raise ValueError(f"state_timeout_s must be > 0, got {values['state_timeout_s']}")


class ProfilerNode(AdascaleNode):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__("profiler", PARAMETERS, _check, **kwargs)
        values = self.settings
        model_dir = self.model_dir()
        table = load_variant_table(model_dir)
        predictor = LatencyPredictor.load(model_dir)
        self.warnings = predictor.check_against(table, device_fingerprint())
        for warning in self.warnings:
            self.get_logger().warning(warning)
        self.core = OnlineProfiler(
            predictor,
            int(values["correction_window"]),
            float(values["correction_quantile"]),
            int(values["correction_tail_window"]),
            bool(values["resource_aware"]),
            bool(values["publish_forecast"]),
            float(values["state_timeout_s"]),
        )
        rows = {row["variant_id"]: row for row in table["variants"]}
        self._messages = {False: profile_message(predictor, rows), True: profile_message(predictor, rows)}
        self.last_error = ""
        self._predict_ms: deque[float] = deque(maxlen=200)
        self._pub = self.create_publisher(VariantProfileArray, "~/profiles", 10)
        self.create_subscription(ResourceState, "~/resource_state", self._on_state, 10)
        self.create_subscription(ElasticClassification, "~/classification", self._on_result, 10)
        self._timer = self.create_timer(1.0 / float(values["max_rate_hz"]), self._publish_profiles)
        self.serve()
        self.get_logger().info(
            f"{len(rows)} variants from {model_dir}; predictors: {predictor.mode} sum of "
            f"{', '.join(f'{k}={r.family}' for k, r in predictor.regressors.items())}; "
            f"publishing {self._pub.topic_name}"
        )

    def _now_s(self) -> float:
        return self.get_clock().now().nanoseconds / 1e9

    def apply(self, values: dict[str, Any]) -> None:
        _check(values)
        self.core.correction.quantile = float(values["correction_quantile"])
        self.core.publish_forecast = bool(values["publish_forecast"])
        self.core.state_timeout_s = float(values["state_timeout_s"])
        period_ns = int(1e9 / float(values["max_rate_hz"]))
        if period_ns != self._timer.timer_period_ns:
            self._timer.timer_period_ns = period_ns
            self._timer.reset()

    def _rejected(self, reason: str) -> None:
        self.last_error = reason
        self.get_logger().warning(reason, throttle_duration_sec=5.0)

    def _on_state(self, msg: ResourceState) -> None:
        reading = (float(msg.load_index), float(msg.cpu_util), float(msg.mem_available_mb), float(msg.cpu_freq_mhz))
        try:
            self.core.on_state(reading, float(msg.load_index_forecast), self._now_s())
        except ValueError as exc:
            self._rejected(f"resource state rejected: {exc}")

    def _on_result(self, msg: ElasticClassification) -> None:
        try:
            self.core.on_result(
                msg.variant_id,
                float(msg.latency_ms),
                int(msg.exit_index),
                bool(msg.early_exited),
                bool(msg.deadline_exited),
                float(msg.frame_period_ms),
                self._now_s(),
            )
        except ValueError as exc:
            self._rejected(str(exc))

    def _publish_profiles(self) -> None:
        start = time.perf_counter()
        stamp = self.get_clock().now().to_msg()
        profiles = self.core.profiles(self._now_s())
        for profile in profiles:
            msg = self._messages[profile.is_forecast]
            msg.header.stamp = stamp
            msg.load_index = profile.load_index
            msg.load_is_forecast = profile.is_forecast
            msg.predicted_latency_ms = float32_array(profile.latency_ms)
            msg.predicted_energy_mj = float32_array(profile.energy_mj)
            msg.measured_latency_ms = float32_array(self.core.measured_ms)
            msg.frame_period_ms = self.core.frame_period_ms
            self._pub.publish(msg)
        if profiles:
            self._predict_ms.append((time.perf_counter() - start) * 1e3)

    def diagnostic_status(self) -> tuple[bytes, str, dict[str, Any]]:
        core, now = self.core, self._now_s()
        if core.resource_aware and core.counts["states"] == 0:
            level, message = WARN, "no resource state yet: nothing published"
        elif core.state_stale(now):
            age = now - core.last_state_s
            level, message = WARN, f"resource state stale ({age:.1f} s old): predicting at the last one"
        elif self.warnings:
            level, message = WARN, self.warnings[0]
        else:
            mode = "" if core.resource_aware else " (reactive: idle state x measured ratio)"
            level, message = OK, f"profiling {len(core.predictor.variant_ids)} variants{mode}"
        values = {
            **core.status_values(now),
            "publish_and_predict_ms_median": median(self._predict_ms) if self._predict_ms else math.nan,
            "last_error": self.last_error,
        }
        return level, message, values


def main(args: list[str] | None = None, stop: threading.Event | None = None) -> int:
    return spin_node(ProfilerNode, args, stop)


if __name__ == "__main__":
    raise SystemExit(main())
