"""resource_monitor: publishes what the device can afford right now.

Publications
  ~/state        adascale_msgs/ResourceState at ``rate_hz`` (reliable, depth 10)
  /diagnostics   diagnostic_msgs/DiagnosticArray at 1 Hz

All sensing, the load index and the forecast live in
``adascale_ros.resources``; this node only schedules, converts and publishes.
"""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Any

from adascale_msgs.msg import ResourceState
from adascale_ros.nodes.common import AdascaleNode, nice_parameter, spin_node
from adascale_ros.nodes.diagnostics import OK, WARN
from adascale_ros.nodes.messages import resource_state_message
from adascale_ros.nodes.parameters import Param
from adascale_ros.resources import (
    ARForecaster,
    LoadIndexWeights,
    ResourceSample,
    ResourceSampler,
    SensorRoots,
)

PARAMETERS: dict[str, Param] = {
    "rate_hz": Param(10.0, "Sampling and publishing rate [Hz], above 0.", low=0.0, high=100.0),
    "frame_id": Param("", "frame_id written into every ResourceState header."),
    "cpu_weight": Param(0.5, "Weight of CPU utilisation in the load index.", low=0.0),
    "gpu_weight": Param(0.3, "Weight of GPU utilisation in the load index.", low=0.0),
    "memory_weight": Param(0.2, "Weight of memory utilisation in the load index.", low=0.0),
    "forecast_order": Param(3, "Order p of the autoregressive load forecaster.", low=1),
    "forecast_window": Param(300, "Samples in the forecaster's sliding fit window (>= 2p + 2)."),
    "forecast_horizon_s": Param(1.0, "How far ahead the load index is forecast [s], above 0.", low=0.0),
    "proc_root": Param("/proc", "Where procfs is mounted.", read_only=True),
    "sys_root": Param("/sys", "Where sysfs is mounted.", read_only=True),
    "use_nvml": Param(True, "Read NVIDIA GPUs through NVML when a driver is present.", read_only=True),
    "nice": nice_parameter(),
}

MAX_RATE_HZ = 100.0


def _weights(values: dict[str, Any]) -> LoadIndexWeights:
    return LoadIndexWeights(
        cpu=float(values["cpu_weight"]),
        gpu=float(values["gpu_weight"]),
        memory=float(values["memory_weight"]),
    )


def _period(values: dict[str, Any]) -> float:
    rate = float(values["rate_hz"])
    if not (0.0 < rate <= MAX_RATE_HZ):
        raise ValueError(f"rate_hz must be in (0, {MAX_RATE_HZ:g}], got {rate}")
    return 1.0 / rate


def _forecaster(values: dict[str, Any]) -> ARForecaster:
    horizon_s = float(values["forecast_horizon_s"])
    if not (math.isfinite(horizon_s) and horizon_s > 0.0):
        raise ValueError(f"forecast_horizon_s must be > 0, got {horizon_s}")
    steps = max(1, round(horizon_s / _period(values)))
    return ARForecaster(
        order=int(values["forecast_order"]),
        window=int(values["forecast_window"]),
        horizon=steps,
    )


class ResourceMonitorNode(AdascaleNode):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__("resource_monitor", PARAMETERS, **kwargs)
        values = self.settings
        period = _period(values)
        self.sampler = ResourceSampler(
            weights=_weights(values),
            forecaster=_forecaster(values),
            period_s=period,
            roots=SensorRoots(
                proc=Path(values["proc_root"]),
                sys=Path(values["sys_root"]),
                use_nvml=bool(values["use_nvml"]),
            ),
        )
        self.samples_published = 0
        self._last_sample = ResourceSample()
        self._errors_reported = 0
        self._pub = self.create_publisher(ResourceState, "~/state", 10)
        self._timer = self.create_timer(period, self._tick)
        self.serve()
        found = ", ".join(name for name, ok in self.sampler.sources.items() if ok) or "none"
        self.get_logger().info(
            f"publishing {self._pub.topic_name} at {1 / period:g} Hz; optional sensors found: {found}"
        )

    def apply(self, values: dict[str, Any]) -> None:
        period = _period(values)
        weights = _weights(values)
        forecaster = _forecaster(values)
        # Everything validated: put it into effect. The forecaster restarts its
        # history only when its shape changed.
        self.sampler.weights = weights
        old = self.sampler.forecaster
        if (old.order, old.window, old.horizon) != (forecaster.order, forecaster.window, forecaster.horizon):
            self.sampler.forecaster = forecaster
        if period != self.sampler.period_s:
            self.sampler.period_s = period
            self._timer.cancel()
            self.destroy_timer(self._timer)
            self._timer = self.create_timer(period, self._tick)

    def _tick(self) -> None:
        sample = self.sampler.sample()
        msg = resource_state_message(sample, ResourceState())
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.header.frame_id = self.get_parameter("frame_id").value
        self._pub.publish(msg)
        self._last_sample = sample
        self.samples_published += 1

    def diagnostic_status(self) -> tuple[bytes, str, dict[str, Any]]:
        errors = sum(self.sampler.errors.values())
        new_errors = errors - self._errors_reported
        self._errors_reported = errors
        s = self._last_sample
        if new_errors:
            level, message = WARN, f"{new_errors} sensor read errors: {self.sampler.last_error}"
        elif not math.isfinite(s.load_index):
            level, message = WARN, "load index unknown"
        else:
            level, message = OK, f"load index {s.load_index:.2f}"
        values: dict[str, Any] = {
            "samples_published": self.samples_published,
            "load_index": s.load_index,
            "load_index_forecast": s.load_index_forecast,
            "forecast_fitted": self.sampler.forecaster.fitted,
            "read_errors": errors,
        }
        values.update({f"sensor.{name}": ok for name, ok in self.sampler.sources.items()})
        values.update({f"read_errors.{name}": n for name, n in self.sampler.errors.items()})
        return level, message, values

    def destroy_node(self) -> None:
        if hasattr(self, "sampler"):  # not when the constructor failed before making it
            self.sampler.close()
        super().destroy_node()


def main(args: list[str] | None = None, stop: threading.Event | None = None) -> int:
    return spin_node(ResourceMonitorNode, args, stop)


if __name__ == "__main__":
    raise SystemExit(main())
