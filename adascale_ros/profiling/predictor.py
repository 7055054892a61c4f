"""Latency and energy of every variant at a device state: the profiler's predictions (numpy only).

A variant's latency is the sum of its modules' predicted latencies (the
fixed per-frame cost included; AdaptiveNet's additive model), computed for all
variants at once as one product with the variant-by-module incidence matrix.
In ``scaled`` mode that sum is combined with a theoretical estimate
(FLOPs / measured GFLOP/s + bytes / measured GB/s), a constant and a
load-dependent share of the sum (``scaled_terms``), by coefficients fitted on
measured whole variants; calibration keeps whichever mode predicts better.

The forecast load has no per-resource readings of its own, so the state at
another load index moves the CPU utilisation along the line fitted between
the two in the calibration data and keeps the rest.

Stored in ``<model_dir>/profiler/``: ``predictor.json`` (names, choices,
fingerprints) and ``predictor.npz`` (arrays, read with ``allow_pickle=False``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import zipfile
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from adascale_ros.model.directory import ModelLoadError, read_json, write_json
from adascale_ros.model.variant import Variant
from adascale_ros.profiling.energy import EnergyProfile, energy_mj
from adascale_ros.profiling.regressors import REGRESSORS, FittedRegressor

PREDICTOR_FORMAT = 1
PREDICTOR_DIR = "profiler"
STATE_FEATURES = ("cpu_util", "load_index", "mem_available_mb", "cpu_freq_mhz")
MODES = ("additive", "scaled")
ADDITIVE = np.array([1.0, 0.0, 0.0, 0.0])


def scaled_terms(additive: np.ndarray, theoretical: np.ndarray, cpu_util: np.ndarray) -> np.ndarray:
    """The scaled mode's terms, last axis: sum of modules, theoretical estimate, 1, background CPU x sum.

    The last term lets the gap between a whole variant and its separately
    timed modules (caches cooled by other work between modules) grow with load.
    """
    additive, theoretical, cpu_util = np.broadcast_arrays(additive, theoretical, cpu_util)
    return np.stack([additive, theoretical, np.ones_like(additive), cpu_util * additive], axis=-1)


def table_fingerprint(variants_table: dict[str, Any]) -> str:
    """Identifies the network a predictor was calibrated for: its module table and variant ids."""
    content = {"modules": variants_table["modules"], "variants": [v["variant_id"] for v in variants_table["variants"]]}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


def device_fingerprint() -> dict[str, Any]:
    """What identifies the machine a calibration is valid for."""
    cpu_model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"machine": platform.machine(), "cpu_model": cpu_model, "cores": os.cpu_count() or 1}


def move_to_load(state: np.ndarray, load_index: float, cpu_per_load: np.ndarray) -> np.ndarray:
    """``state`` moved to another load index: CPU utilisation along the line ``cpu = s * load + i``
    (slope >= 0, so a higher load never means less CPU use), the other readings kept."""
    moved = np.array(state, np.float64)
    current = moved[1]
    slope = max(0.0, float(cpu_per_load[0]))
    if math.isfinite(current) and math.isfinite(moved[0]):
        moved[0] = min(1.0, max(0.0, moved[0] + slope * (load_index - current)))
    else:
        moved[0] = min(1.0, max(0.0, slope * load_index + float(cpu_per_load[1])))
    moved[1] = load_index
    return moved


@dataclass
class LatencyPredictor:
    module_keys: list[str]
    module_kinds: list[str]
    module_features: np.ndarray  # (K, F) sampling parameters
    module_memory: np.ndarray  # (K,) memory accesses [bytes]
    regressors: dict[str, FittedRegressor]  # by module kind
    use_state: bool
    state_mean: np.ndarray  # (4,) stands in for unknown (NaN) readings
    variant_ids: list[str]
    incidence: np.ndarray  # (V, K) 1 where the variant runs the module
    theoretical_ms: np.ndarray  # (V,)
    mode: str = "additive"
    scale: np.ndarray = field(default_factory=lambda: ADDITIVE.copy())  # coefficients of scaled_terms
    cpu_per_load: np.ndarray = field(default_factory=lambda: np.array([1.0, 0.0]))  # cpu = s*load + i
    hit_rate: np.ndarray | None = None  # (K, 2): eps = h0 + h1 * load_index
    energy_profile: EnergyProfile | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        kinds = np.asarray(self.module_kinds)
        self._by_kind = {kind: np.flatnonzero(kinds == kind) for kind in dict.fromkeys(self.module_kinds)}
        self._index = {v: i for i, v in enumerate(self.variant_ids)}
        self.variant_memory = self.incidence @ self.module_memory  # (V,) memory accesses per variant [bytes]

    # -- states ---------------------------------------------------------------------------------

    def impute(self, states: np.ndarray) -> np.ndarray:
        """Unknown readings (NaN) take the calibration's mean (0 where it never read one)."""
        fill = np.nan_to_num(self.state_mean, nan=0.0)
        return np.where(np.isfinite(states), states, fill)

    def at_load(self, state: np.ndarray, load_index: float) -> np.ndarray:
        """``state`` moved to another load index (the forecast): CPU utilisation follows the fitted line."""
        return move_to_load(state, load_index, self.cpu_per_load)

    def state_at(
        self,
        load_index: float,
        cpu_util: float | None = None,
        mem_available_mb: float | None = None,
        cpu_freq_mhz: float | None = None,
    ) -> np.ndarray:
        """The state at ``load_index`` with the readings given and the calibration's typical ones for the
        rest; without a CPU utilisation, it follows the load index as calibrated (the forecast-load rule)."""
        if not 0.0 <= load_index <= 1.0:
            raise ValueError(f"the load index must be in [0, 1], got {load_index}")
        given = np.array([cpu_util, np.nan, mem_available_mb, cpu_freq_mhz], np.float64)  # None -> NaN
        state = np.where(np.isfinite(given), given, self.state_mean)
        if cpu_util is None:
            return self.at_load(state, load_index)
        state[1] = load_index
        return state

    def load_sweep(self, steps: int = 21, state: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(loads, latency): every variant's predicted latency, (steps, V), at load indices 0 -> 1 from
        ``state`` (default: the calibration's typical one), moved as the forecast load moves it."""
        base = self.impute(self.state_mean if state is None else state)
        loads = np.linspace(0.0, 1.0, steps)
        return loads, self.latency_ms(np.array([self.at_load(base, load) for load in loads]))

    def idle_state(self) -> np.ndarray:
        """The calibration's mean state moved to load 0: where AdaptiveNet's reactive mode predicts."""
        return self.at_load(self.impute(self.state_mean), 0.0)

    def variant_index(self, variant_id: str) -> int:
        try:
            return self._index[variant_id]
        except KeyError:
            raise KeyError(f"unknown variant {variant_id!r}") from None

    def prefix_index(self, variant_id: str, exit_index: int) -> int:
        """Index of ``variant_id``'s prefix to ``exit_index``: the path a frame that exited there ran.
        ``ValueError`` for an exit not on the path, ``KeyError`` for an unknown variant."""
        return self.variant_index(Variant.parse(variant_id).prefix(exit_index).id)

    # -- predictions ----------------------------------------------------------------------------

    def module_latency_ms(self, states: np.ndarray) -> np.ndarray:
        """(S, K) latency of every module at each of S states (rows of STATE_FEATURES)."""
        states = self.impute(np.atleast_2d(states))
        out = np.empty((len(states), len(self.module_keys)))
        for kind, modules in self._by_kind.items():
            feats = np.repeat(self.module_features[modules], len(states), axis=0)
            if self.use_state:
                feats = np.hstack([feats, np.tile(states, (len(modules), 1))])
            out[:, modules] = self.regressors[kind].predict(feats).reshape(len(modules), len(states)).T
        return out

    def latency_ms(self, states: np.ndarray) -> np.ndarray:
        """(S, V) latency of every variant at each state."""
        states = np.atleast_2d(states)
        additive = self.module_latency_ms(states) @ self.incidence.T
        if self.mode == "additive":
            return additive
        cpu = self.impute(states)[:, :1] if self.use_state else np.zeros((len(states), 1))
        return scaled_terms(additive, self.theoretical_ms[None, :], cpu) @ self.scale

    def hit_rates(self, load_index: float) -> np.ndarray:
        """(V,) cache-hit rate of each variant: module rates weighted by their memory accesses."""
        if self.hit_rate is None:
            return np.zeros(len(self.variant_ids))
        load = load_index if math.isfinite(load_index) else float(self.state_mean[1])
        module_eps = np.clip(self.hit_rate[:, 0] + self.hit_rate[:, 1] * np.nan_to_num(load), 0.0, 1.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            eps = (self.incidence @ (module_eps * self.module_memory)) / self.variant_memory
        return np.nan_to_num(eps)

    def energy_mj(self, state: np.ndarray) -> np.ndarray:
        """(V,) eq. 3 energy of every variant at one state; NaN without an energy profile."""
        if self.energy_profile is None:
            return np.full(len(self.variant_ids), math.nan)
        return energy_mj(self.variant_memory, self.hit_rates(float(state[1])), self.energy_profile, float(state[3]))

    def predict(self, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(latency_ms, energy_mj), each (V,), at one state."""
        return self.latency_ms(state[None, :])[0], self.energy_mj(state)

    # -- storage --------------------------------------------------------------------------------

    def save(self, model_dir: Path) -> Path:
        directory = Path(model_dir) / PREDICTOR_DIR
        directory.mkdir(parents=True, exist_ok=True)
        arrays = {
            "module_features": self.module_features,
            "module_memory": self.module_memory,
            "state_mean": self.state_mean,
            "incidence": self.incidence.astype(np.uint8),
            "theoretical_ms": self.theoretical_ms,
            "scale": self.scale,
            "cpu_per_load": self.cpu_per_load,
        }
        if self.hit_rate is not None:
            arrays["hit_rate"] = self.hit_rate
        for kind, regressor in self.regressors.items():
            arrays.update(regressor.to_arrays(f"reg.{kind}."))
        np.savez_compressed(directory / "predictor.npz", **arrays)
        write_json(
            directory / "predictor.json",
            {
                "format_version": PREDICTOR_FORMAT,
                "module_keys": self.module_keys,
                "module_kinds": self.module_kinds,
                "variant_ids": self.variant_ids,
                "families": {kind: r.family for kind, r in self.regressors.items()},
                "use_state": self.use_state,
                "mode": self.mode,
                "energy_profile": self.energy_profile.to_dict() if self.energy_profile else None,
                "meta": self.meta,
            },
        )
        return directory

    @classmethod
    def load(cls, model_dir: Path) -> LatencyPredictor:
        """Load a stored predictor; ``ModelLoadError`` with a one-line reason when it cannot be."""
        directory = Path(model_dir) / PREDICTOR_DIR
        if not (directory / "predictor.json").is_file():
            raise ModelLoadError(f"{directory}: no latency predictor; run `adascale calibrate {model_dir}` first")
        header = read_json(directory / "predictor.json")
        if not isinstance(header, dict) or header.get("format_version") != PREDICTOR_FORMAT:
            version = header.get("format_version") if isinstance(header, dict) else None
            raise ModelLoadError(
                f"{directory}/predictor.json: format {version}, expected {PREDICTOR_FORMAT}; "
                f"re-run `adascale calibrate {model_dir}`"
            )
        try:
            with np.load(directory / "predictor.npz", allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except FileNotFoundError as exc:
            raise ModelLoadError(f"{directory}: missing predictor.npz; run `adascale calibrate {model_dir}`") from exc
        except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
            # NumPy's own message for a non-archive suggests unpickling it: never.
            raise ModelLoadError(
                f"{directory}/predictor.npz: not an .npz archive of plain arrays; "
                f"re-run `adascale calibrate {model_dir}`"
            ) from exc
        try:
            families = header["families"]
            unknown = set(families.values()) - set(REGRESSORS)
            if unknown:
                raise ValueError(f"unknown regressor families {sorted(unknown)}")
            regressors = {
                kind: FittedRegressor.from_arrays(family, arrays, f"reg.{kind}.") for kind, family in families.items()
            }
            profile = header.get("energy_profile")
            predictor = cls(
                module_keys=list(header["module_keys"]),
                module_kinds=list(header["module_kinds"]),
                module_features=arrays["module_features"],
                module_memory=arrays["module_memory"],
                regressors=regressors,
                use_state=bool(header["use_state"]),
                state_mean=arrays["state_mean"],
                variant_ids=list(header["variant_ids"]),
                incidence=arrays["incidence"].astype(np.float64),
                theoretical_ms=arrays["theoretical_ms"],
                mode=header["mode"],
                scale=arrays["scale"],
                cpu_per_load=arrays["cpu_per_load"],
                hit_rate=arrays.get("hit_rate"),
                energy_profile=EnergyProfile(**profile) if profile else None,
                meta=dict(header.get("meta", {})),
            )
            predictor.latency_ms(predictor.state_mean[None, :])  # every array has the shape it must have
        except FileNotFoundError as exc:
            raise ModelLoadError(f"{directory}: missing {Path(exc.filename).name}; run `adascale calibrate`") from exc
        except (KeyError, ValueError, TypeError, IndexError, OSError, zipfile.BadZipFile) as exc:
            raise ModelLoadError(f"{directory}: corrupt predictor ({type(exc).__name__}: {exc})") from exc
        return predictor

    def check_against(self, variants_table: dict[str, Any], device: dict[str, Any]) -> list[str]:
        """Warnings when this predictor was built for another network or another machine."""
        warnings = []
        if self.meta.get("model_fingerprint") != table_fingerprint(variants_table):
            warnings.append("predictor was calibrated for another network; predictions do not describe this model")
        elif self.variant_ids != [v["variant_id"] for v in variants_table["variants"]]:
            warnings.append("predictor's variant list differs from the model's")
        calibrated_on = self.meta.get("device", {})
        for key in ("machine", "cpu_model", "cores"):
            if calibrated_on.get(key) != device.get(key):
                warnings.append(
                    f"predictor was calibrated on another machine ({key}: {calibrated_on.get(key)!r}, "
                    f"here {device.get(key)!r}); run `adascale calibrate` on this one"
                )
                break
        return warnings


def calibrated_threads(model_dir: Path) -> int | None:
    """The intra-op threads the model's predictor was calibrated with; None when it has none (or no record)."""
    try:
        threads = read_json(Path(model_dir) / PREDICTOR_DIR / "predictor.json")["meta"]["threads"]
    except (ModelLoadError, KeyError, TypeError):
        return None
    return threads if isinstance(threads, int) and threads >= 1 else None


def latency_sample(
    latency_ms: float,
    early_exited: bool,
    deadline_exited: bool,
    raw_latency_ms: np.ndarray,
    variant_index: int,
    prefix_index: int | None,
) -> float | None:
    """What one result says about its variant's full-path latency [ms], or None when nothing.

    A confidence early exit ran a shorter path the input chose: no sample. A deadline exit is
    censored: the guard stopped the path because the rest would overrun, so the frame counts
    at its latency plus the stages it skipped, as ``raw_latency_ms`` (the last uncorrected
    prediction) prices them (variant minus its prefix to the exit that answered,
    ``prefix_index``). Leaving those frames out would drop exactly the slow ones and make
    the measured latency run low. None when the skipped stages cannot be priced yet.
    """
    if not deadline_exited:
        return None if early_exited else latency_ms
    if prefix_index is None:
        return None
    skipped = float(raw_latency_ms[variant_index]) - float(raw_latency_ms[prefix_index])
    return latency_ms + max(0.0, skipped) if math.isfinite(skipped) else None


class LatencyCorrection:
    """AdaptiveNet's latency monitor: corrections learnt from measured latencies, per module and tail-aware.

    A variant's raw prediction L is corrected to (L + offset) * tail:

    - offset [ms]: a variant with ``variant_min_samples`` results or more has its own, the median of
      measured - predicted over its last ``window`` results; any other variant gets a per-frame offset
      every variant shares plus the sum of per-module offsets, fitted (least squares, the module terms
      ridge-penalised) to the measured variants' offsets through the variant-module ``incidence``
      matrix, so a variant that shares blocks with measured ones shares their correction, and what no
      block explains is paid by every frame. Without ``incidence`` only measured variants are corrected.
    - tail: the ``quantile`` of the last ``tail_window`` (default: ``window``) ratios measured /
      corrected prediction, 1 until ``min_samples`` are in; only results of variants with their own
      offset count (all results when no variant is given), so it is the spread about a known centre.
    - expiry: a variant's own offset is dropped once ``offset_max_age`` results of other variants have
      arrived since its last one; it goes back to the transferred offset.
    - floor: every variant is priced at least at the latest measured one's price (the variant of
      the newest result that had its own offset) plus the difference of their raw predictions
      times the tail: a variant that computes ``d`` ms more costs at least ``d * tail`` more, one
      that computes ``d`` ms less saves at most that. The last results are the freshest measure of
      the load; an offset learnt at another moment, or transferred, must not make a variant look
      cheaper now than its work says.

    Why each part exists: docs/decisions/latency-correction.md.

    As a scikit-learn estimator: the settings are the constructor's arguments, each result is learnt by
    ``partial_fit``, and what it learnt ends in an underscore (``ratio_``, ``measured_offsets_``,
    ``samples_``, ``n_updates_``).
    """

    def __init__(
        self,
        window: int = 30,
        quantile: float = 0.9,
        low: float = 0.25,
        high: float = 4.0,
        min_samples: int = 20,
        incidence: np.ndarray | None = None,
        variant_min_samples: int = 5,
        ridge: float = 0.1,
        tail_window: int | None = None,
        offset_max_age: int = 600,
    ) -> None:
        tail_window = window if tail_window is None else tail_window
        if window < 1 or tail_window < 1:
            raise ValueError(f"window and tail_window must be >= 1, got {window} and {tail_window}")
        if offset_max_age < 1:
            raise ValueError(f"offset_max_age must be >= 1, got {offset_max_age}")
        self.offset_max_age = offset_max_age
        if not 0.0 <= quantile <= 1.0:
            raise ValueError(f"quantile must be in [0, 1], got {quantile}")
        self.quantile, self.low, self.high = quantile, low, high
        self.window = window
        self.min_samples = min(min_samples, tail_window)
        self.variant_min_samples = min(variant_min_samples, window)
        self.incidence = None if incidence is None else np.asarray(incidence, np.float64)
        self.ridge = ridge
        self.samples_: deque[float] = deque(maxlen=tail_window)  # measured / corrected, variants with own offsets
        self._own: dict[int, deque[float]] = {}  # variant index -> its last measured - predicted [ms]
        self.measured_offsets_: dict[int, float] = {}  # variant index -> median of those
        self._last_update: dict[int, int] = {}  # variant index -> self.n_updates_ at its last result
        self._offsets: np.ndarray | None = None  # every variant's offset, as last fitted
        self._refit = True  # a measured offset changed since
        self.ratio_ = 1.0  # the tail
        self.n_updates_ = 0

    def partial_fit(self, measured_ms: float, predicted_ms: float, variant: int | None = None) -> bool:
        """Fold in one result (of ``variant``, if known) against its raw prediction.

        False, and nothing changes, for a non-finite or non-positive pair.
        """
        if not (math.isfinite(measured_ms) and math.isfinite(predicted_ms) and measured_ms > 0 and predicted_ms > 0):
            return False
        if variant is None or variant in self.measured_offsets_:
            # The ratio is against the prediction the selector acted on: with the offset known then.
            expected = float(self._with_offset(predicted_ms, self._offset_of(variant)))
            self.samples_.append(min(self.high, max(self.low, measured_ms / expected)))
            if len(self.samples_) >= self.min_samples:
                self.ratio_ = float(np.quantile(self.samples_, self.quantile))
        self.n_updates_ += 1
        if variant is not None:
            self._expire()
            self._last_update[variant] = self.n_updates_
            own = self._own.setdefault(variant, deque(maxlen=self.window))
            own.append(measured_ms - predicted_ms)
            if len(own) >= self.variant_min_samples:
                self.measured_offsets_[variant] = float(np.median(own))
                self._refit = True
        return True

    def forget_measured(self) -> None:
        """Drop every variant's own offset and the tail: the load they were learnt under has ended, and
        the raw predictions stand until the variants run again."""
        self.samples_.clear()
        self.ratio_ = 1.0
        self._own.clear()
        self._last_update.clear()
        if self.measured_offsets_:
            self.measured_offsets_.clear()
            self._refit = True

    def _expire(self) -> None:
        """Forget the offsets of variants without a result in the last ``offset_max_age`` updates."""
        oldest = self.n_updates_ - self.offset_max_age
        for variant in [v for v, at in self._last_update.items() if at < oldest]:
            del self._last_update[variant], self._own[variant]
            if self.measured_offsets_.pop(variant, None) is not None:
                self._refit = True

    def offsets(self, count: int) -> np.ndarray:
        """(count,) offset of each variant [ms]: its own when measured, else its modules' fitted ones."""
        if self._refit or self._offsets is None or len(self._offsets) != count:
            self._offsets, self._refit = self._fit(count), False
        return self._offsets

    def corrected(self, raw_ms: np.ndarray) -> np.ndarray:
        """Raw predictions of every variant (last axis) corrected: (raw + offset) * tail, floored by the
        latest measured variant's price."""
        raw_ms = np.asarray(raw_ms, np.float64)
        corrected = self._with_offset(raw_ms, self.offsets(raw_ms.shape[-1])) * self.ratio_
        # The newest variant with an offset of its own: one just switched to prices nothing until it has one.
        latest = max(self.measured_offsets_, key=self._last_update.__getitem__, default=None)
        if latest is None or latest >= raw_ms.shape[-1]:
            return corrected
        floor = corrected[..., latest : latest + 1] + (raw_ms - raw_ms[..., latest : latest + 1]) * self.ratio_
        return np.maximum(corrected, floor)

    def _with_offset(self, raw_ms: np.ndarray | float, offset: np.ndarray | float) -> np.ndarray:
        # A negative offset never takes a prediction below ``low`` times the raw one.
        return np.maximum(raw_ms + offset, self.low * raw_ms)

    def _offset_of(self, variant: int | None) -> float:
        if variant is None:
            return 0.0
        if variant in self.measured_offsets_:
            return self.measured_offsets_[variant]
        if self._offsets is not None and variant < len(self._offsets):
            return float(self._offsets[variant])
        return 0.0

    def _fit(self, count: int) -> np.ndarray:
        offsets = np.zeros(count)
        measured = sorted(i for i in self.measured_offsets_ if i < count)
        if not measured:
            return offsets
        own = np.array([self.measured_offsets_[i] for i in measured])
        if self.incidence is not None and len(self.incidence) == count:
            # Column 0 is the per-frame offset, unpenalised; the Gram matrix stays positive definite.
            a = np.hstack([np.ones((len(measured), 1)), self.incidence[measured]])
            penalty = self.ridge * np.eye(a.shape[1])
            penalty[0, 0] = 0.0
            coefficients = np.linalg.solve(a.T @ a + penalty, a.T @ own)
            offsets = coefficients[0] + self.incidence @ coefficients[1:]
        offsets[measured] = own
        return offsets
