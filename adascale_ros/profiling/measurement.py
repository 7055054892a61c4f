"""On-device calibration: module and whole-variant latency under a sweep of real background load.

For each load level (idle, stress-ng CPU workers at several load percentages,
memory pressure) the calibration runs rounds of about ``round_s``. A round
times every module the variants are made of (stem, each stage's candidate
blocks at their real input shapes, each exit head, and the fixed per-frame
cost: pre-processing one camera frame plus the soft-max) and a share of a
fixed sample of whole variants end to end (the ground truth), each as the
median of ``repeats`` consecutive batch-1 calls, through the same backend the
inference node runs. Around each round the resource readings are taken with
the resource monitor's own sampler.

The calibration loop itself keeps one core busy, which a camera-rate
inference node does not (a few percent of a core). So the CPU utilisation
recorded for a round is the *background* utilisation: the system's, less this
process's own CPU time over the same interval. On the robot the monitor's
reading includes the inference node's small share, which is what this
approximates.

Once per level every module is also timed once right after its caches were
flushed (a write sweep over twice the last-level cache): the cold time t0 next
to the warm median gives the cache-hit estimate of the energy model (eq. 5).
"""

from __future__ import annotations

import gzip
import json
import math
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from adascale_ros.load.stress import StressNg, StressSpec
from adascale_ros.model.elastic import Variant
from adascale_ros.model.metrics import module_keys, resolution_suffix
from adascale_ros.profiling.predictor import STATE_FEATURES
from adascale_ros.resources import ARForecaster, LoadIndexWeights, ResourceSampler
from adascale_ros.resources.load_index import load_index
from adascale_ros.timing import summarize

CALIBRATION_FORMAT = 1
FIXED = "fixed"  # the per-frame cost outside the network's modules


@dataclass(frozen=True)
class LoadLevel:
    name: str
    spec: StressSpec

    @property
    def idle(self) -> bool:
        return self.spec.idle


def default_levels(quick: bool = False) -> list[LoadLevel]:
    """The load sweep. One worker per core at 100 % is the heaviest CPU level."""
    cores = os.cpu_count() or 1
    if quick:
        return [LoadLevel("idle", StressSpec()), LoadLevel(f"cpu{cores}x100", StressSpec(cores, 100))]
    half = max(1, cores // 2)
    levels = [LoadLevel("idle", StressSpec())]
    for workers in sorted({half, cores}):
        for percent in (30, 60, 100):
            levels.append(LoadLevel(f"cpu{workers}x{percent}", StressSpec(workers, percent)))
    levels.append(LoadLevel("vm1", StressSpec(vm_workers=1, vm_bytes="25%")))
    levels.append(LoadLevel(f"cpu{half}x60+vm1", StressSpec(half, 60, vm_workers=1, vm_bytes="25%")))
    # A robot mapping: every core busy and a sweep through memory (the shipped step trace's load).
    levels.append(LoadLevel(f"cpu{cores}x100+vm1", StressSpec(cores, 100, vm_workers=1, vm_bytes="25%")))
    return levels


@dataclass(frozen=True)
class ModuleInfo:
    """A module's sampling parameters, from the model's variants.json module table."""

    key: str
    kind: str
    in_channels: int
    in_hw: int
    out_channels: int
    out_hw: int
    params: int
    flops: int
    memory_accesses: int

    @classmethod
    def from_table(cls, row: dict[str, Any]) -> ModuleInfo:
        c_in, h_in, w_in = row["in_shape"]
        c_out, h_out, w_out = row["out_shape"] if len(row["out_shape"]) == 3 else (row["out_shape"][0], 1, 1)
        return cls(
            row["key"], row["kind"], c_in, h_in * w_in, c_out, h_out * w_out,
            row["params"], row["flops"], row["memory_accesses"],
        )  # fmt: skip

    @classmethod
    def fixed(cls, key: str = FIXED, resolution: int | None = None) -> ModuleInfo:
        """Pre-processing; at an input resolution its output size is what tells one from another."""
        out_channels, out_hw = (3, resolution * resolution) if resolution else (0, 0)
        return cls(key, FIXED, 0, 0, out_channels, out_hw, 0, 0, 0)

    def features(self) -> list[float]:
        """The regressors' sampling parameters, in ``MODULE_FEATURES`` order."""
        return [float(getattr(self, name)) for name in MODULE_FEATURES]


MODULE_FEATURES = ("in_channels", "in_hw", "out_channels", "out_hw", "params", "flops", "memory_accesses")


def module_infos(variants_table: dict[str, Any]) -> dict[str, ModuleInfo]:
    infos = {row["key"]: ModuleInfo.from_table(row) for row in variants_table["modules"]}
    # One fixed cost per input resolution (pre-processing resizes to it); module keys end with it.
    suffixes = {key[key.index("@") :] if "@" in key else "" for key in infos}
    for suffix in suffixes:
        infos[FIXED + suffix] = ModuleInfo.fixed(FIXED + suffix, int(suffix[1:]) if suffix else None)
    return infos


def variant_module_keys(variant: Variant) -> list[str]:
    """Modules a variant runs, the fixed per-frame cost included (AdaptiveNet's additive model)."""
    return [FIXED + resolution_suffix(variant.resolution), *module_keys(variant)]


@dataclass
class CalibrationData:
    """What one calibration measured; columns of equal length per table."""

    device: dict[str, Any]
    levels: list[dict[str, Any]]
    modules: dict[str, list] = field(default_factory=dict)  # key, level, round, latency_ms, *STATE_FEATURES
    variants: dict[str, list] = field(default_factory=dict)  # variant_id, level, round, latency_ms, *STATE
    cache: dict[str, list] = field(default_factory=dict)  # key, level, cold_ms, warm_ms, load_index
    energy: dict[str, list] = field(default_factory=dict)  # variant_id, energy_mj (where a power sensor exists)
    # The reference variants one camera frame at a time (``CalibrationPlan.camera_gap_s`` apart), as the
    # inference node runs them: variant_id, level, latency_ms, cpu_ms. Absent from datasets made before it
    # (cpu_ms from those made before it was measured).
    camera_rate: dict[str, list] = field(default_factory=dict)

    def save(self, path: Path) -> None:
        data = {"format_version": CALIBRATION_FORMAT, **asdict(self)}
        with gzip.open(path, "wt") as f:
            json.dump(data, f)

    @classmethod
    def load(cls, path: Path) -> CalibrationData:
        try:
            with gzip.open(path, "rt") as f:
                data = json.load(f)
        except (OSError, EOFError, ValueError) as exc:
            raise ValueError(f"{path}: not a calibration dataset ({exc})") from exc
        if data.get("format_version") != CALIBRATION_FORMAT:
            raise ValueError(f"{path}: calibration format {data.get('format_version')}, expected {CALIBRATION_FORMAT}")
        data.pop("format_version")
        return cls(**data)

    def table(self, name: str) -> dict[str, np.ndarray]:
        return {k: np.asarray(v) for k, v in getattr(self, name).items()}


def _append(table: dict[str, list], **row: Any) -> None:
    for k, v in row.items():
        table.setdefault(k, []).append(v)


def last_level_cache_bytes(sys_root: Path = Path("/sys")) -> int:
    """Size of the largest CPU cache sysfs reports (32 MiB when unknown)."""
    sizes = []
    for f in (sys_root / "devices/system/cpu/cpu0/cache").glob("index*/size"):
        text = f.read_text().strip().upper()
        scale = {"K": 2**10, "M": 2**20}.get(text[-1:], 1)
        try:
            sizes.append(int(text.rstrip("KM")) * scale)
        except ValueError:
            continue
    return max(sizes, default=32 * 2**20)


class CacheFlusher:
    """Evicts the CPU caches by writing a buffer twice the last-level cache."""

    def __init__(self) -> None:
        self._buffer = np.zeros(2 * last_level_cache_bytes() // 8, np.float64)

    def __call__(self) -> None:
        self._buffer += 1.0


def measure_throughput(seconds: float = 0.3) -> dict[str, float]:
    """Device throughput for the theoretical latency estimate: float32 GFLOP/s and copy GB/s."""
    a = np.random.default_rng(0).standard_normal((256, 256)).astype(np.float32)
    flops = 2 * 256**3
    matmul = summarize([_time_ms(lambda: a @ a) for _ in range(max(5, int(seconds / 0.002)))])
    src = np.ones(8 * 2**20, np.float64)  # 64 MiB
    dst = np.empty_like(src)
    copy = summarize([_time_ms(lambda: np.copyto(dst, src)) for _ in range(5)])
    return {"gflops": flops / (matmul.median_ms * 1e6), "copy_gbs": 2 * src.nbytes / (copy.median_ms * 1e6)}


def _time_ms(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def _median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # the first call after another module pays for its cache misses; time the steady state
    return summarize([_time_ms(fn) for _ in range(repeats)]).median_ms


class StateProbe:
    """Resource readings over an interval, with this process's own CPU time taken out."""

    def __init__(self, weights: LoadIndexWeights) -> None:
        self.weights = weights
        self.sampler = ResourceSampler(weights, ARForecaster(), period_s=0.1)
        self.cores = os.cpu_count() or 1
        self._start()

    def _start(self) -> None:
        self.sampler.sample()
        self._wall, self._cpu = time.monotonic(), time.process_time()

    def read(self) -> dict[str, float]:
        """State since the previous ``read`` (or construction); starts the next interval."""
        wall, cpu = time.monotonic() - self._wall, time.process_time() - self._cpu
        s = self.sampler.sample()
        self._wall, self._cpu = time.monotonic(), time.process_time()
        own = cpu / (wall * self.cores) if wall > 0 else 0.0
        background = min(1.0, max(0.0, s.cpu_util - own)) if math.isfinite(s.cpu_util) else math.nan
        return {
            "cpu_util": background,
            "load_index": load_index(background, s.gpu_util, s.mem_util, self.weights),
            "mem_available_mb": s.mem_available_mb,
            "cpu_freq_mhz": s.cpu_freq_mhz,
            "power_w": s.power_w,
        }

    def close(self) -> None:
        self.sampler.close()


def ground_truth_variants(
    variants: list[Variant], per_exit: int, seed: int = 0, always: Sequence[Variant] = ()
) -> list[Variant]:
    """A fixed random sample of whole variants, the same number from every exit, plus ``always``."""
    rng = random.Random(seed)
    sample: list[Variant] = []
    for exit_index in sorted({v.exit_index for v in variants}):
        at_exit = [v for v in variants if v.exit_index == exit_index]
        sample += rng.sample(at_exit, min(per_exit, len(at_exit)))
    return sample + [v for v in always if v not in sample]


@dataclass(frozen=True)
class CalibrationPlan:
    levels: list[LoadLevel]
    seconds_per_level: float
    settle_s: float = 1.0
    round_s: float = 0.2
    repeats: int = 7
    variants_per_exit: int = 10
    seed: int = 0
    always: tuple[Variant, ...] = ()  # measured whole at every level besides the sample (the top variant)
    camera_frames: int = 30  # per camera-rate variant and level, one camera frame at a time
    camera_variants: tuple[Variant, ...] = ()  # timed at camera rate (default: ``always``)
    camera_gap_s: float = 1 / 15  # between those frames: a 15 Hz camera
    load_own_session: bool = False  # stress-ng in a session of its own rather than this one (load.stress)


ModuleCalls = dict[str, Callable[[], object]]
VariantCall = Callable[[Variant], object]


def measure_camera_rate(
    variants: Sequence[Variant], run_variant: VariantCall, plan: CalibrationPlan, level: str, table: dict[str, list]
) -> None:
    """Time each of ``variants`` on ``plan.camera_frames`` frames ``plan.camera_gap_s`` apart.

    Back to back (the module and whole-variant timings) the caches stay warm and
    the inference threads awake; a frame that comes after a camera's gap finds
    neither, and under load it competes with the load's threads for a core it
    has to wake up on. That is the latency a deadline is about. ``cpu_ms`` is the
    CPU time the process spent on the frame, all its threads together: where
    the latency grows under load and it does not, the frame waited for a core.
    """
    for variant in variants:
        run_variant(variant)  # its sessions warm, as the inference node warms a variant it switches to
        for _ in range(plan.camera_frames):
            time.sleep(plan.camera_gap_s)
            cpu_start, start = time.process_time(), time.perf_counter()
            run_variant(variant)
            latency_ms, cpu_ms = (time.perf_counter() - start) * 1e3, (time.process_time() - cpu_start) * 1e3
            _append(table, variant_id=variant.id, level=level, latency_ms=latency_ms, cpu_ms=cpu_ms)


def run_calibration(
    plan: CalibrationPlan,
    module_calls: ModuleCalls,
    run_variant: VariantCall,
    variants: list[Variant],
    device: dict[str, Any],
    weights: LoadIndexWeights | None = None,
    progress: Callable[[float], None] | None = None,
) -> CalibrationData:
    """Measure every module and a fixed sample of whole variants at every load level of ``plan``.

    ``module_calls`` maps module keys to zero-argument calls of one module at
    its batch-1 input; ``run_variant`` runs one whole variant on one frame.
    ``progress`` receives the seconds of measuring done so far.
    stress-ng stops at the end of each level, also on an exception or Ctrl-C.
    """
    data = CalibrationData(device={**device, "throughput": measure_throughput()}, levels=[])
    truth = ground_truth_variants(variants, plan.variants_per_exit, plan.seed, plan.always)
    references = [v for v in truth if v in plan.always]
    camera = list(plan.camera_variants) or references
    rng = random.Random(plan.seed)
    flush = CacheFlusher()
    probe = StateProbe(weights or LoadIndexWeights())
    keys = list(module_calls)
    done_s = 0.0
    round_index = 0
    try:
        for level in plan.levels:
            data.levels.append({"name": level.name, "idle": level.idle, "stress_ng": level.spec.args()})
            timeout_s = plan.settle_s + plan.seconds_per_level + 30
            with StressNg(level.spec, timeout_s=timeout_s, own_session=plan.load_own_session):
                time.sleep(plan.settle_s)
                warm: dict[str, list[float]] = {k: [] for k in keys}
                cold = {}
                for key in keys:  # eq. 5's cold time: one call right after a cache flush
                    module_calls[key]()
                    flush()
                    cold[key] = _time_ms(module_calls[key])
                probe.read()
                # Every level walks the whole-variant sample from the reference variants on, so each
                # level measures them (their slowdown per level) and as much of the rest as time allows.
                rest = [v for v in truth if v not in plan.always]
                rng.shuffle(rest)
                order, cursor = references + rest, 0
                level_end = time.monotonic() + plan.seconds_per_level
                while time.monotonic() < level_end:
                    round_start = time.monotonic()
                    timings: list[tuple[str, float]] = []
                    rng.shuffle(keys)
                    for key in keys:
                        timings.append((key, _median_ms(module_calls[key], plan.repeats)))
                    # Whole variants get at least the time the modules took: with modules of milliseconds
                    # a round's module timings alone outlast round_s, and the ground truth would starve.
                    truths: list[tuple[str, float]] = []
                    truth_s = max(plan.round_s, time.monotonic() - round_start)
                    truth_start = time.monotonic()
                    while not truths or time.monotonic() - truth_start < truth_s:
                        variant = order[cursor % len(order)]
                        cursor += 1
                        truths.append((variant.id, _median_ms(lambda v=variant: run_variant(v), plan.repeats)))
                    state = probe.read()
                    state_row = {f: state[f] for f in STATE_FEATURES}
                    for key, ms in timings:
                        warm[key].append(ms)
                        _append(data.modules, key=key, level=level.name, round=round_index, latency_ms=ms, **state_row)
                    for variant_id, ms in truths:
                        _append(
                            data.variants, variant_id=variant_id, level=level.name, round=round_index,
                            latency_ms=ms, **state_row,
                        )  # fmt: skip
                    round_index += 1
                    if progress is not None:
                        level_left = max(0.0, level_end - time.monotonic())
                        progress(done_s + plan.seconds_per_level - level_left)
                measure_camera_rate(camera, run_variant, plan, level.name, data.camera_rate)
                done_s += plan.seconds_per_level
                level_load = float(np.nanmean(data.modules["load_index"][-len(keys) :]))
                for key in keys:
                    _append(
                        data.cache, key=key, level=level.name, cold_ms=cold[key],
                        warm_ms=float(np.median(warm[key])), load_index=level_load,
                    )  # fmt: skip
        if probe.sampler.sources["rapl"] or probe.sampler.sources["jetson_ina"]:
            measure_energy(truth, run_variant, probe, data)
    finally:
        probe.close()
    return data


def measure_energy(
    truth: list[Variant], run_variant: VariantCall, probe: StateProbe, data: CalibrationData, seconds: float = 0.5
) -> None:
    """Energy per inference from a power sensor: (power while running - idle power) x latency."""
    time.sleep(seconds)
    probe.read()
    time.sleep(seconds)
    idle_w = probe.read()["power_w"]
    for variant in truth[:: max(1, len(truth) // 24)]:
        count, start = 0, time.monotonic()
        probe.read()
        while time.monotonic() - start < seconds:
            run_variant(variant)
            count += 1
        busy_w = probe.read()["power_w"]
        latency_s = (time.monotonic() - start) / count
        if math.isfinite(busy_w) and math.isfinite(idle_w):
            _append(data.energy, variant_id=variant.id, energy_mj=max(0.0, busy_w - idle_w) * latency_s * 1e3)
