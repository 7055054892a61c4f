"""One sample of every resource reading, the load index and its forecast.

``ResourceSampler`` is the resource-availability awareness block without ROS:
it owns the readers that exist on this device, takes a ``ResourceSample`` on
demand, computes the load index and feeds the forecaster. A reader that fails
gives NaN for its quantities and its failure is counted, so a flaky sensor
never stops the monitor and never reads as "idle".
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from adascale_ros.resources.forecaster import ARForecaster
from adascale_ros.resources.load_index import LoadIndexWeights, load_index
from adascale_ros.resources.sensors import (
    CpuFreqReader,
    CpuUtilReader,
    JetsonGpuReader,
    JetsonInaPowerReader,
    NvmlReader,
    RaplPowerReader,
    finite_or_nan,
    read_memory,
)

NAN = float("nan")
T = TypeVar("T")


@dataclass
class ResourceSample:
    """Mirror of ``adascale_msgs/ResourceState`` (see its field docs); NaN = unknown."""

    cpu_util: float = NAN
    cpu_util_per_core: list[float] = field(default_factory=list)
    cpu_freq_mhz: float = NAN
    gpu_util: float = NAN
    gpu_mem_util: float = NAN
    mem_util: float = NAN
    mem_available_mb: float = NAN
    power_w: float = NAN
    power_source: str = ""
    load_index: float = NAN
    load_index_forecast: float = NAN
    forecast_horizon_s: float = NAN


@dataclass(frozen=True)
class SensorRoots:
    """Where the kernel interfaces are mounted; tests point these at fixtures."""

    proc: Path = Path("/proc")
    sys: Path = Path("/sys")
    use_nvml: bool = True


class ResourceSampler:
    """Reads every available sensor into a ``ResourceSample``.

    Parameters
    ----------
    weights:
        Load-index weights (eq. 2).
    forecaster:
        Fed with every finite load index; its forecast goes into the sample.
    period_s:
        Sampling period, to express the forecast horizon in seconds.
    roots:
        Kernel interface roots.
    """

    def __init__(
        self,
        weights: LoadIndexWeights,
        forecaster: ARForecaster,
        period_s: float,
        roots: SensorRoots = SensorRoots(),
    ) -> None:
        self.weights = weights
        self.forecaster = forecaster
        self.period_s = period_s
        self.errors: Counter[str] = Counter()
        self.last_error: str = ""
        self._cpu = CpuUtilReader(roots.proc)
        self._cpu_freq = CpuFreqReader.open(roots.sys, roots.proc)
        self._nvml = NvmlReader.open() if roots.use_nvml else None
        self._jetson_gpu = JetsonGpuReader.open(roots.sys)
        self._rapl = RaplPowerReader.open(roots.sys)
        self._jetson_power = JetsonInaPowerReader.open(roots.sys)

    @property
    def sources(self) -> dict[str, bool]:
        """Which optional readers this device has."""
        return {
            "cpu_freq": self._cpu_freq is not None,
            "nvml": self._nvml is not None,
            "jetson_gpu": self._jetson_gpu is not None,
            "rapl": self._rapl is not None,
            "jetson_ina": self._jetson_power is not None,
        }

    def _guard(self, source: str, read: Callable[[], T], default: T) -> T:
        """Run one reader; on failure count it, remember why, and return ``default``."""
        try:
            return read()
        except Exception as exc:
            self.errors[source] += 1
            self.last_error = f"{source}: {type(exc).__name__}: {exc}"
            return default

    def sample(self) -> ResourceSample:
        s = ResourceSample()
        cpu, per_core = self._guard("cpu", self._cpu.read, (NAN, []))
        s.cpu_util = finite_or_nan(cpu)
        s.cpu_util_per_core = [finite_or_nan(v) for v in per_core]
        if self._cpu_freq is not None:
            s.cpu_freq_mhz = finite_or_nan(self._guard("cpu_freq", self._cpu_freq.read, NAN))
        mem_util, mem_available = self._guard("memory", read_memory, (NAN, NAN))
        s.mem_util, s.mem_available_mb = finite_or_nan(mem_util), finite_or_nan(mem_available)

        power: dict[str, float] = {}
        if self._nvml is not None:
            gpu = self._guard("nvml", self._nvml.read, None)
            if gpu is not None:
                s.gpu_util, s.gpu_mem_util = finite_or_nan(gpu.util), finite_or_nan(gpu.mem_util)
                power["nvml"] = finite_or_nan(gpu.power_w)
        if self._jetson_gpu is not None and not math.isfinite(s.gpu_util):
            s.gpu_util = finite_or_nan(self._guard("jetson_gpu", self._jetson_gpu.read, NAN))
        if self._rapl is not None:
            power["rapl"] = finite_or_nan(self._guard("rapl", self._rapl.read, NAN))
        if self._jetson_power is not None:
            power["jetson_ina"] = finite_or_nan(self._guard("jetson_ina", self._jetson_power.read, NAN))
        known_power = {name: watts for name, watts in power.items() if math.isfinite(watts)}
        if known_power:
            s.power_w = sum(known_power.values())
            s.power_source = "+".join(sorted(known_power))

        s.load_index = load_index(s.cpu_util, s.gpu_util, s.mem_util, self.weights)
        self.forecaster.update(s.load_index)
        s.load_index_forecast = self.forecaster.forecast()
        s.forecast_horizon_s = self.forecaster.horizon * self.period_s
        return s

    def close(self) -> None:
        if self._nvml is not None:
            self._nvml.close()
