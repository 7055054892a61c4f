"""Readers of the device's shared resources: CPU, memory, GPU and power.

Each reader reads one real interface of the kernel or driver (``/proc/stat``,
``/sys/class/powercap``, Jetson devfreq and INA3221 hwmon trees, NVML). Roots
are parameters so tests can point a reader at a fixture tree of the real
format. A reader that finds nothing to read is *unavailable* (``open`` returns
``None``); a reading that fails or has no meaning yet is NaN, never 0.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import psutil

NAN = float("nan")
Clock = Callable[[], float]


def _read_text(path: Path) -> str:
    # sysfs strings from device-tree nodes end in NUL; strip it with the newline.
    return path.read_text().strip().strip("\x00").strip()


def _read_number(path: Path) -> float:
    return float(_read_text(path))


# --------------------------------------------------------------------- CPU


@dataclass(frozen=True)
class CpuTimes:
    """Busy and total jiffies of one ``/proc/stat`` cpu line."""

    busy: int
    total: int


def parse_proc_stat(text: str) -> tuple[CpuTimes, list[CpuTimes]]:
    """Parse ``/proc/stat``: the aggregate ``cpu`` line and the ``cpuN`` lines.

    Idle time is ``idle + iowait``; the total is the sum of the first eight
    fields (user .. steal). ``guest`` and ``guest_nice`` are already counted
    in ``user`` and ``nice`` by the kernel, so they are left out.
    """
    aggregate: CpuTimes | None = None
    cores: list[CpuTimes] = []
    for line in text.splitlines():
        if not line.startswith("cpu"):
            continue
        name, *fields = line.split()
        values = [int(v) for v in fields[:8]]
        if len(values) < 4:
            raise ValueError(f"malformed /proc/stat line: {line!r}")
        idle = values[3] + (values[4] if len(values) > 4 else 0)
        total = sum(values)
        times = CpuTimes(busy=total - idle, total=total)
        if name == "cpu":
            aggregate = times
        else:
            cores.append(times)
    if aggregate is None:
        raise ValueError("no aggregate 'cpu' line in /proc/stat")
    return aggregate, cores


def _busy_fraction(before: CpuTimes, after: CpuTimes) -> float:
    elapsed = after.total - before.total
    if elapsed <= 0:  # no tick elapsed, or a counter reset (CPU hot-unplug)
        return NAN
    return min(1.0, max(0.0, (after.busy - before.busy) / elapsed))


class CpuUtilReader:
    """CPU utilisation from ``/proc/stat`` deltas (total and per core).

    The first snapshot is taken at construction, so the first ``read`` gives
    the utilisation since then.
    """

    def __init__(self, proc_root: str | Path = "/proc") -> None:
        self._path = Path(proc_root) / "stat"
        self._last = parse_proc_stat(self._path.read_text())

    def read(self) -> tuple[float, list[float]]:
        """Return (total busy fraction, per-core busy fractions) since the last read."""
        now = parse_proc_stat(self._path.read_text())
        (agg0, cores0), (agg1, cores1) = self._last, now
        self._last = now
        if len(cores0) != len(cores1):  # a core went on/offline: skip per-core once
            return _busy_fraction(agg0, agg1), []
        return _busy_fraction(agg0, agg1), [_busy_fraction(a, b) for a, b in zip(cores0, cores1, strict=True)]


class CpuFreqReader:
    """Mean current CPU frequency in MHz.

    Reads cpufreq's ``scaling_cur_freq`` (kHz) of every core; where cpufreq is
    absent (many VMs), falls back to the ``cpu MHz`` lines of ``/proc/cpuinfo``.
    """

    def __init__(self, sys_root: str | Path = "/sys", proc_root: str | Path = "/proc") -> None:
        cpu_dir = Path(sys_root) / "devices/system/cpu"
        self._freq_files = sorted(cpu_dir.glob("cpu[0-9]*/cpufreq/scaling_cur_freq"))
        self._cpuinfo = Path(proc_root) / "cpuinfo"

    @classmethod
    def open(cls, sys_root: str | Path = "/sys", proc_root: str | Path = "/proc") -> CpuFreqReader | None:
        reader = cls(sys_root, proc_root)
        return reader if reader._freq_files or reader._cpuinfo_mhz() else None

    def _cpuinfo_mhz(self) -> list[float]:
        try:
            text = self._cpuinfo.read_text()
        except OSError:
            return []
        return [float(m) for m in re.findall(r"^cpu MHz\s*:\s*([0-9.]+)", text, re.MULTILINE)]

    def read(self) -> float:
        if self._freq_files:
            khz = [_read_number(f) for f in self._freq_files]
            return sum(khz) / len(khz) / 1000.0
        mhz = self._cpuinfo_mhz()
        return sum(mhz) / len(mhz) if mhz else NAN


# ------------------------------------------------------------------ memory


def read_memory() -> tuple[float, float]:
    """Return (fraction of memory in use, MiB available) from psutil."""
    vm = psutil.virtual_memory()
    return 1.0 - vm.available / vm.total, vm.available / 2**20


# --------------------------------------------------------------------- GPU

# Device-tree names of the integrated GPUs of Jetson TX1/Nano, TX2, Xavier, Orin, Thor.
JETSON_GPU_NAMES = frozenset({"gm20b", "gp10b", "gv11b", "ga10b", "gb10b", "gpu"})


class JetsonGpuReader:
    """Integrated-GPU load of a Jetson from its devfreq device's ``load`` file.

    ``load`` is in tenths of a percent (0..1000). Jetson memory is shared with
    the CPU, so there is no separate GPU memory utilisation here.
    """

    def __init__(self, load_file: Path) -> None:
        self.load_file = load_file

    @classmethod
    def open(cls, sys_root: str | Path = "/sys") -> JetsonGpuReader | None:
        for devfreq in sorted((Path(sys_root) / "class/devfreq").glob("*")):
            name_file = devfreq / "device/of_node/name"
            load_file = devfreq / "device/load"
            try:
                if _read_text(name_file) in JETSON_GPU_NAMES and load_file.is_file():
                    return cls(load_file)
            except OSError:
                continue
        return None

    def read(self) -> float:
        return min(1.0, _read_number(self.load_file) / 1000.0)


@dataclass(frozen=True)
class GpuReading:
    util: float
    mem_util: float
    power_w: float


class NvmlReader:
    """NVIDIA GPU utilisation, memory and power through NVML (``nvidia-ml-py``).

    Over several GPUs: mean utilisation, memory used over memory total, and
    summed power. Power is NaN on boards whose driver does not report it.
    """

    def __init__(self, nvml: ModuleType | Any, handles: Sequence[Any]) -> None:
        self._nvml = nvml
        self._handles = list(handles)

    @classmethod
    def open(cls, nvml: ModuleType | Any | None = None) -> NvmlReader | None:
        """Initialise NVML; ``None`` when the library, the driver or a GPU is missing."""
        if nvml is None:
            try:
                import pynvml as nvml  # the module nvidia-ml-py installs
            except ImportError:
                return None
        try:
            nvml.nvmlInit()
            count = nvml.nvmlDeviceGetCount()
            handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        except nvml.NVMLError:
            return None
        return cls(nvml, handles) if handles else None

    def read(self) -> GpuReading:
        nvml = self._nvml
        utils, used, total, power_mw = [], 0, 0, []
        for handle in self._handles:
            utils.append(nvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100.0)
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            used += memory.used
            total += memory.total
            try:
                power_mw.append(nvml.nvmlDeviceGetPowerUsage(handle))
            except nvml.NVMLError:  # "not supported" on some boards
                pass
        return GpuReading(
            util=sum(utils) / len(utils),
            mem_util=used / total if total else NAN,
            power_w=sum(power_mw) / 1000.0 if len(power_mw) == len(self._handles) else NAN,
        )

    def close(self) -> None:
        try:
            self._nvml.nvmlShutdown()
        except self._nvml.NVMLError:
            pass


# ------------------------------------------------------------------- power


class RaplPowerReader:
    """CPU package power from the powercap RAPL energy counters.

    Sums the top-level zones (``intel-rapl:N``, one per package; AMD exposes
    the same interface). Power is the energy delta over the time between two
    reads, with counter wrap-around at ``max_energy_range_uj`` handled.
    """

    _ZONE = re.compile(r"^intel-rapl:\d+$")

    def __init__(self, zones: Sequence[Path], clock: Clock = time.monotonic) -> None:
        self._zones = list(zones)
        self._ranges = [_read_number(z / "max_energy_range_uj") for z in self._zones]
        self._clock = clock
        self._last = self._snapshot()

    @classmethod
    def open(cls, sys_root: str | Path = "/sys", clock: Clock = time.monotonic) -> RaplPowerReader | None:
        powercap = Path(sys_root) / "class/powercap"
        zones = sorted(p for p in powercap.glob("intel-rapl:*") if cls._ZONE.match(p.name))
        try:
            return cls(zones, clock) if zones else None
        except (OSError, ValueError):  # energy_uj is root-only on recent kernels
            return None

    def _snapshot(self) -> tuple[float, list[float]]:
        return self._clock(), [_read_number(z / "energy_uj") for z in self._zones]

    def read(self) -> float:
        (t0, e0), (t1, e1) = self._last, self._snapshot()
        self._last = (t1, e1)
        if t1 <= t0:
            return NAN
        joules = 0.0
        for before, after, wrap in zip(e0, e1, self._ranges, strict=True):
            delta = after - before
            joules += (delta + wrap if delta < 0 else delta) / 1e6
        return joules / (t1 - t0)


class JetsonInaPowerReader:
    """Board power of a Jetson from its INA3221 power monitors.

    JetPack 5/6 expose them as hwmon devices named ``ina3221`` with
    ``inN_label``, ``inN_input`` (mV) and ``currN_input`` (mA). JetPack 4
    exposes ``iio:device*`` with ``rail_name_N`` and ``in_power N_input`` (mW).
    The board input rail (``VDD_IN`` / ``POM_5V_IN``) is the total when it is
    there; otherwise the rails are summed.
    """

    TOTAL_RAILS = ("VDD_IN", "POM_5V_IN")

    def __init__(self, rails: dict[str, Callable[[], float]]) -> None:
        self.rails = rails

    @classmethod
    def open(cls, sys_root: str | Path = "/sys") -> JetsonInaPowerReader | None:
        root = Path(sys_root)
        rails: dict[str, Callable[[], float]] = {}
        for hwmon in sorted((root / "class/hwmon").glob("hwmon*")):
            try:
                if _read_text(hwmon / "name") != "ina3221":
                    continue
            except OSError:
                continue
            for label_file in sorted(hwmon.glob("in*_label")):
                channel = label_file.name[2 : -len("_label")]
                volts, amps = hwmon / f"in{channel}_input", hwmon / f"curr{channel}_input"
                if volts.is_file() and amps.is_file():
                    rails[_read_text(label_file)] = lambda v=volts, a=amps: _read_number(v) * _read_number(a) / 1e6
        for iio in sorted((root / "bus/i2c/drivers/ina3221x").glob("*/iio:device*")):
            for name_file in sorted(iio.glob("rail_name_*")):
                power = iio / f"in_power{name_file.name.rsplit('_', 1)[1]}_input"
                if power.is_file():
                    rails[_read_text(name_file)] = lambda p=power: _read_number(p) / 1000.0
        return cls(rails) if rails else None

    def read(self) -> float:
        for total in self.TOTAL_RAILS:
            if total in self.rails:
                return self.rails[total]()
        return sum(read() for read in self.rails.values())


def finite_or_nan(value: float) -> float:
    """Map inf and out-of-type readings to NaN so they can never pose as data."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return NAN
    return value if math.isfinite(value) else NAN
