"""AdaScale's energy model (eq. 3-5), with coefficients from a per-device profile.

    E = M_cpu * P_cpu * eps / f_cpu  +  M_gpu * P_gpu / f_gpu  +  M_mem * P_mem * (1 - eps) / f_mem     (3)

M are the memory accesses (eq. 4, bytes, from the model's module table), P the
power of each unit [W] and f its clock [Hz]: P / f is energy per clock, and one
byte per clock turns accesses into joules. On the CPU backend every access
goes through the CPU (M_cpu = M_mem = M, M_gpu = 0); the accesses served by
the caches (share eps) are charged at the CPU's rate, the misses at DRAM's.

Cache-hit rate from access timing (eq. 5). The paper writes
delta = 1 - (t0 - t_avg) / t0 with t0 the first (cold) access time and t_avg
the steady-state time. We use eps = (t0 - t_avg) / t0, the share of the cold
time the warm caches save: it is 0 when warm runs are no faster than cold ones
(every access missed, nothing to gain) and grows towards 1 as the caches serve
more, which is what a hit rate must do; the printed form reads the other way.

Where a power sensor exists (RAPL, Jetson INA rails), calibration measures the
energy of some variants and ``fit_power_coefficients`` fits P_cpu and P_mem to
them (non-negative least squares); otherwise the profile's values stand.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml


@dataclass(frozen=True)
class EnergyProfile:
    """Power [W] and clock [MHz] of a device's units; ``cpu_mhz`` is used when the CPU clock cannot be read."""

    name: str
    cpu_w: float
    gpu_w: float
    mem_w: float
    cpu_mhz: float
    gpu_mhz: float
    mem_mhz: float
    source: str = "profile"  # "profile", or the power sensor the coefficients were fitted to

    def __post_init__(self) -> None:
        for key, value in asdict(self).items():
            if key in ("name", "source"):
                continue
            if not (math.isfinite(value) and value >= 0.0):
                raise ValueError(f"energy profile {self.name!r}: {key} must be finite and >= 0, got {value}")
        if min(self.cpu_mhz, self.mem_mhz) <= 0.0:
            raise ValueError(f"energy profile {self.name!r}: cpu_mhz and mem_mhz must be > 0")

    @classmethod
    def from_yaml(cls, path: Path) -> EnergyProfile:
        try:
            data: Any = yaml.safe_load(Path(path).read_text())
            return cls(**data)
        except (OSError, yaml.YAMLError, TypeError) as exc:
            raise ValueError(f"{path}: not an energy profile ({exc})") from exc

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def cache_hit_rate(cold_ms: np.ndarray, warm_ms: np.ndarray) -> np.ndarray:
    """eps = (t0 - t_avg) / t0 per sample, in [0, 1] (see the module docstring for eq. 5)."""
    cold = np.asarray(cold_ms, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        eps = (cold - np.asarray(warm_ms, np.float64)) / cold
    return np.clip(np.nan_to_num(eps, nan=0.0), 0.0, 1.0)


def energy_mj(
    memory_accesses: np.ndarray, hit_rate: np.ndarray, profile: EnergyProfile, cpu_mhz: float = math.nan
) -> np.ndarray:
    """Eq. 3 on the CPU backend, in mJ; ``cpu_mhz`` is the current clock when known."""
    f_cpu = (cpu_mhz if math.isfinite(cpu_mhz) and cpu_mhz > 0 else profile.cpu_mhz) * 1e6
    m = np.asarray(memory_accesses, np.float64)
    eps = np.asarray(hit_rate, np.float64)
    joules = m * profile.cpu_w * eps / f_cpu + m * profile.mem_w * (1.0 - eps) / (profile.mem_mhz * 1e6)
    return joules * 1e3


def fit_power_coefficients(
    memory_accesses: np.ndarray,
    hit_rate: np.ndarray,
    measured_mj: np.ndarray,
    profile: EnergyProfile,
    source: str,
    cpu_mhz: float = math.nan,
) -> EnergyProfile:
    """P_cpu and P_mem that best explain measured energies (non-negative least squares)."""
    from scipy.optimize import nnls

    m = np.asarray(memory_accesses, np.float64)
    eps = np.asarray(hit_rate, np.float64)
    f_cpu = (cpu_mhz if math.isfinite(cpu_mhz) and cpu_mhz > 0 else profile.cpu_mhz) * 1e6
    design = np.column_stack([m * eps / f_cpu, m * (1.0 - eps) / (profile.mem_mhz * 1e6)]) * 1e3
    (cpu_w, mem_w), _ = nnls(design, np.asarray(measured_mj, np.float64))
    values = profile.to_dict() | {"cpu_w": float(cpu_w), "mem_w": float(mem_w), "source": source}
    return EnergyProfile(**values)
