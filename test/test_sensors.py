"""Sensor readers against the real interfaces where this machine has them, and
against fixture trees of the real sysfs / procfs / NVML formats where it cannot
(Jetson boards, RAPL-capable CPUs, NVIDIA drivers)."""

from __future__ import annotations

import math
from pathlib import Path

import pynvml
import pytest

from adascale_ros.resources import ARForecaster, LoadIndexWeights, ResourceSampler, SensorRoots
from adascale_ros.resources.sensors import (
    CpuFreqReader,
    CpuUtilReader,
    JetsonGpuReader,
    JetsonInaPowerReader,
    NvmlReader,
    RaplPowerReader,
    parse_proc_stat,
    read_memory,
)

# Two snapshots in the kernel's format: user nice system idle iowait irq softirq steal guest guest_nice.
PROC_STAT_1 = """cpu  1000 0 500 8000 500 0 0 0 0 0
cpu0 600 0 300 3900 200 0 0 0 0 0
cpu1 400 0 200 4100 300 0 0 0 0 0
intr 12345 0 0
ctxt 999
"""
# cpu0: +300 busy of +400 ticks; cpu1: +0 busy of +400 ticks (idle +300, iowait +100);
# all: +300 busy of +800.
PROC_STAT_2 = """cpu  1200 0 600 8400 600 0 0 0 50 0
cpu0 800 0 400 4000 200 0 0 0 50 0
cpu1 400 0 200 4400 400 0 0 0 0 0
intr 12400 0 0
ctxt 1010
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# ------------------------------------------------------------------ CPU


def test_proc_stat_parsing_counts_iowait_as_idle_and_ignores_guest():
    agg, cores = parse_proc_stat(PROC_STAT_2)
    assert agg.total == 1200 + 600 + 8400 + 600  # guest (50) is inside user already
    assert agg.busy == 1800
    assert len(cores) == 2


def test_proc_stat_without_aggregate_line_is_an_error():
    with pytest.raises(ValueError):
        parse_proc_stat("intr 1 2 3\n")


def test_cpu_util_from_stat_deltas(tmp_path):
    stat = write(tmp_path / "stat", PROC_STAT_1)
    reader = CpuUtilReader(tmp_path)
    stat.write_text(PROC_STAT_2)
    total, per_core = reader.read()
    assert total == pytest.approx(300 / 800)
    assert per_core == pytest.approx([300 / 400, 0.0])
    # No tick elapsed since the last read: unknown, not idle.
    total, per_core = reader.read()
    assert math.isnan(total) and all(math.isnan(v) for v in per_core)


def test_cpu_util_on_this_machine_is_in_range():
    reader = CpuUtilReader()
    sum(i * i for i in range(200_000))  # let a few ticks pass
    total, per_core = reader.read()
    assert 0.0 <= total <= 1.0 or math.isnan(total)
    assert len(per_core) >= 1


def test_cpu_freq_from_cpufreq_sysfs(tmp_path):
    write(tmp_path / "sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq", "1200000\n")
    write(tmp_path / "sys/devices/system/cpu/cpu1/cpufreq/scaling_cur_freq", "1800000\n")
    reader = CpuFreqReader.open(tmp_path / "sys", tmp_path / "proc")
    assert reader is not None and reader.read() == pytest.approx(1500.0)


def test_cpu_freq_falls_back_to_cpuinfo(tmp_path):
    write(tmp_path / "proc/cpuinfo", "processor\t: 0\ncpu MHz\t\t: 2000.000\n\nprocessor\t: 1\ncpu MHz\t\t: 3000.500\n")
    reader = CpuFreqReader.open(tmp_path / "sys", tmp_path / "proc")
    assert reader is not None and reader.read() == pytest.approx(2500.25)


def test_cpu_freq_absent_gives_no_reader(tmp_path):
    write(tmp_path / "proc/cpuinfo", "processor\t: 0\n")  # e.g. an ARM board without cpufreq
    assert CpuFreqReader.open(tmp_path / "sys", tmp_path / "proc") is None


def test_memory_on_this_machine_is_in_range():
    util, available_mb = read_memory()
    assert 0.0 < util < 1.0
    assert available_mb > 0.0


# ------------------------------------------------------------------ GPU


def make_jetson_orin(sys_root: Path, load_permille: int = 523) -> None:
    """The devfreq and hwmon entries of a Jetson Orin (JetPack 6), as on a real board."""
    platform = sys_root / "devices/platform/bus@0/17000000.gpu"
    write(platform / "of_node/name", "gpu\x00")
    write(platform / "load", f"{load_permille}\n")
    devfreq = sys_root / "class/devfreq/17000000.gpu"
    devfreq.mkdir(parents=True)
    (devfreq / "device").symlink_to(platform)
    write(devfreq / "cur_freq", "918000000\n")
    # A devfreq device that is not the GPU (the EMC) must be passed over.
    emc = sys_root / "devices/platform/bus@0/emc"
    write(emc / "of_node/name", "external-memory-controller\x00")
    (sys_root / "class/devfreq/emc").mkdir(parents=True)
    (sys_root / "class/devfreq/emc/device").symlink_to(emc)
    # INA3221 on hwmon: in mV, curr in mA.
    hwmon = sys_root / "class/hwmon/hwmon1"
    write(hwmon / "name", "ina3221\n")
    for channel, (label, mv, ma) in enumerate(
        [("VDD_IN", 5080, 1500), ("VDD_CPU_GPU_CV", 5080, 400), ("VDD_SOC", 5080, 300)], start=1
    ):
        write(hwmon / f"in{channel}_label", f"{label}\n")
        write(hwmon / f"in{channel}_input", f"{mv}\n")
        write(hwmon / f"curr{channel}_input", f"{ma}\n")
    write(sys_root / "class/hwmon/hwmon0/name", "soc_thermal\n")


def test_jetson_gpu_load_from_devfreq(tmp_path):
    make_jetson_orin(tmp_path)
    reader = JetsonGpuReader.open(tmp_path)
    assert reader is not None
    assert reader.read() == pytest.approx(0.523)


def test_no_jetson_gpu_on_a_plain_tree(tmp_path):
    assert JetsonGpuReader.open(tmp_path) is None


def test_jetson_ina3221_hwmon_uses_board_input_rail(tmp_path):
    make_jetson_orin(tmp_path)
    reader = JetsonInaPowerReader.open(tmp_path)
    assert reader is not None
    assert set(reader.rails) == {"VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"}
    assert reader.read() == pytest.approx(5.080 * 1.5)


def test_jetson_ina3221_legacy_iio_sums_rails_without_input_rail(tmp_path):
    """JetPack 4 (Nano): iio device with rail names and power in mW."""
    iio = tmp_path / "bus/i2c/drivers/ina3221x/6-0040/iio:device0"
    for channel, (name, mw) in enumerate([("POM_5V_GPU", 800), ("POM_5V_CPU", 1200)]):
        write(iio / f"rail_name_{channel}", f"{name}\n")
        write(iio / f"in_power{channel}_input", f"{mw}\n")
    reader = JetsonInaPowerReader.open(tmp_path)
    assert reader is not None and reader.read() == pytest.approx(2.0)


class FixtureNvml:
    """The pynvml calls the reader makes, answering with pynvml's real ctypes structs."""

    NVMLError = pynvml.NVMLError

    def __init__(self, gpus: list[tuple[int, int, int, int | None]] | None, driver: bool = True) -> None:
        self.gpus = gpus or []  # (util %, used bytes, total bytes, power mW or None)
        self.driver = driver
        self.shut_down = False

    def nvmlInit(self) -> None:
        if not self.driver:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_DRIVER_NOT_LOADED)

    def nvmlShutdown(self) -> None:
        self.shut_down = True

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> pynvml.c_nvmlUtilization_t:
        return pynvml.c_nvmlUtilization_t(gpu=self.gpus[handle][0], memory=0)

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> pynvml.c_nvmlMemory_t:
        _, used, total, _ = self.gpus[handle]
        return pynvml.c_nvmlMemory_t(total=total, free=total - used, used=used)

    def nvmlDeviceGetPowerUsage(self, handle: int) -> int:
        power = self.gpus[handle][3]
        if power is None:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return power


def test_nvml_two_gpus():
    nvml = FixtureNvml([(30, 2 << 30, 8 << 30, 50_000), (70, 6 << 30, 8 << 30, 150_000)])
    reader = NvmlReader.open(nvml)
    assert reader is not None
    reading = reader.read()
    assert reading.util == pytest.approx(0.5)
    assert reading.mem_util == pytest.approx(0.5)
    assert reading.power_w == pytest.approx(200.0)
    reader.close()
    assert nvml.shut_down


def test_nvml_power_not_supported_is_nan():
    reader = NvmlReader.open(FixtureNvml([(10, 1, 4, None)]))
    assert reader is not None and math.isnan(reader.read().power_w)


def test_nvml_without_driver_or_gpu_gives_no_reader():
    assert NvmlReader.open(FixtureNvml([(10, 1, 4, 1)], driver=False)) is None
    assert NvmlReader.open(FixtureNvml([])) is None


def test_nvml_real_library_absent_here_gives_no_reader():
    # This machine has nvidia-ml-py but no driver: the real call path must say "unavailable".
    assert NvmlReader.open() is None


# ---------------------------------------------------------------- power


def make_rapl(sys_root: Path, energy_uj: list[int], max_range: int = 262143328850) -> None:
    powercap = sys_root / "class/powercap"
    for package, energy in enumerate(energy_uj):
        zone = powercap / f"intel-rapl:{package}"
        write(zone / "name", f"package-{package}\n")
        write(zone / "energy_uj", f"{energy}\n")
        write(zone / "max_energy_range_uj", f"{max_range}\n")
        # A sub-zone (core) must not be added to its package again.
        write(powercap / f"intel-rapl:{package}:0/energy_uj", "5\n")
        write(powercap / f"intel-rapl:{package}:0/max_energy_range_uj", f"{max_range}\n")


def test_rapl_power_from_energy_deltas_with_wraparound(tmp_path):
    now = [100.0]
    make_rapl(tmp_path, [1_000_000, 262143328850 - 1_000_000], max_range=262143328850)
    reader = RaplPowerReader.open(tmp_path, clock=lambda: now[0])
    assert reader is not None
    now[0] = 102.0
    # Package 0: +10 J; package 1 wrapped: +1 J to the top, then +2 J = 3 J; 13 J / 2 s.
    write(tmp_path / "class/powercap/intel-rapl:0/energy_uj", "11000000\n")
    write(tmp_path / "class/powercap/intel-rapl:1/energy_uj", "2000000\n")
    assert reader.read() == pytest.approx(6.5)


def test_rapl_unreadable_counter_gives_no_reader(tmp_path):
    make_rapl(tmp_path, [1])
    write(tmp_path / "class/powercap/intel-rapl:0/energy_uj", "")  # as a non-root read fails
    assert RaplPowerReader.open(tmp_path) is None


# -------------------------------------------------------------- sampler


def sampler_for(tmp_path: Path, **roots) -> ResourceSampler:
    write(tmp_path / "proc/stat", PROC_STAT_1)
    return ResourceSampler(
        LoadIndexWeights(cpu=0.5, gpu=0.3, memory=0.2),
        ARForecaster(order=1, window=4, horizon=2),
        period_s=0.1,
        roots=SensorRoots(proc=tmp_path / "proc", sys=tmp_path / "sys", use_nvml=False, **roots),
    )


def test_sampler_on_a_jetson_tree(tmp_path):
    make_jetson_orin(tmp_path / "sys", load_permille=800)
    sampler = sampler_for(tmp_path)
    assert sampler.sources["jetson_gpu"] and sampler.sources["jetson_ina"]
    assert not sampler.sources["rapl"] and not sampler.sources["nvml"]
    write(tmp_path / "proc/stat", PROC_STAT_2)
    s = sampler.sample()
    assert s.cpu_util == pytest.approx(300 / 800)
    assert s.gpu_util == pytest.approx(0.8)
    assert math.isnan(s.gpu_mem_util)  # unified memory: not a separate quantity
    assert s.power_source == "jetson_ina" and s.power_w == pytest.approx(7.62)
    expected = (0.5 * s.cpu_util + 0.3 * 0.8 + 0.2 * s.mem_util) / 1.0
    assert s.load_index == pytest.approx(expected)
    assert s.forecast_horizon_s == pytest.approx(0.2)


def test_sampler_counts_a_failing_sensor_and_reports_nan(tmp_path):
    make_jetson_orin(tmp_path / "sys")
    sampler = sampler_for(tmp_path)
    write(tmp_path / "sys/devices/platform/bus@0/17000000.gpu/load", "garbage\n")
    s = sampler.sample()
    assert math.isnan(s.gpu_util)
    assert sampler.errors["jetson_gpu"] == 1
    assert "jetson_gpu" in sampler.last_error
    # The load index still stands on what is known.
    assert math.isfinite(s.load_index)


def test_sampler_without_optional_sensors_reports_nan_not_zero(tmp_path):
    s = sampler_for(tmp_path).sample()
    for unknown in (s.gpu_util, s.gpu_mem_util, s.power_w, s.cpu_freq_mhz):
        assert math.isnan(unknown)
    assert s.power_source == ""
