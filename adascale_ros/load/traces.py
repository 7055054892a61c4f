"""Scripted load traces: YAML files of stress-ng phases, and the driver that plays them.

A trace file::

    description: one line on what it exercises
    phases:
      - {duration_s: 10.0}                                    # idle
      - {duration_s: 20.0, cpu_workers: 2, cpu_load_percent: 100}
      - {duration_s: 10.0, vm_workers: 1, vm_bytes: 25%}      # memory pressure

Every phase runs its own stress-ng (``StressNg``), which is stopped before
the next phase starts and on every way out (end, exception, Ctrl-C, SIGTERM),
so no worker outlives the trace.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from adascale_ros.load.stress import StressNg, StressSpec
from adascale_ros.package_files import shipped_path

PHASE_KEYS = {"duration_s", "cpu_workers", "cpu_load_percent", "vm_workers", "vm_bytes"}
_VM_BYTES = re.compile(r"^\d+(\.\d+)?[%bBkKmMgG]?$")


def resolve_trace(name_or_path: str) -> Path:
    """A trace file by path, or by the name of one shipped in config/load_traces/."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return path
    shipped = shipped_path("config/load_traces")
    if not (shipped / f"{name_or_path}.yaml").is_file():
        names = ", ".join(sorted(p.stem for p in shipped.glob("*.yaml")))
        raise ValueError(f"no load trace {name_or_path!r}: give a YAML file or one of {names}")
    return shipped / f"{name_or_path}.yaml"


@dataclass(frozen=True)
class LoadPhase:
    duration_s: float
    spec: StressSpec

    def describe(self) -> str:
        parts = []
        if self.spec.cpu_workers:
            parts.append(f"{self.spec.cpu_workers} CPU worker(s) at {self.spec.cpu_load_percent} %")
        if self.spec.vm_workers:
            parts.append(f"{self.spec.vm_workers} memory worker(s) of {self.spec.vm_bytes}")
        return f"{self.duration_s:g} s " + (", ".join(parts) if parts else "idle")


@dataclass(frozen=True)
class LoadTrace:
    name: str
    description: str
    phases: tuple[LoadPhase, ...]

    @property
    def duration_s(self) -> float:
        return sum(p.duration_s for p in self.phases)

    @classmethod
    def from_yaml(cls, path: Path | str) -> LoadTrace:
        """Read and check a trace; ``ValueError`` naming the file and the phase when it is wrong."""
        path = Path(path)
        try:
            data: Any = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f"{path}: cannot read a load trace ({exc})") from exc
        if not isinstance(data, dict) or not isinstance(data.get("phases"), list) or not data["phases"]:
            raise ValueError(f"{path}: a load trace is a mapping with a non-empty 'phases' list")
        phases = tuple(_phase(path, i, p) for i, p in enumerate(data["phases"]))
        return cls(path.stem, str(data.get("description", "")), phases)

    def phase_at(self, t_s: float) -> int:
        """Index of the phase running ``t_s`` seconds into the trace (the last one after the end)."""
        end = 0.0
        for index, phase in enumerate(self.phases):
            end += phase.duration_s
            if t_s < end:
                return index
        return len(self.phases) - 1


def _phase(path: Path, index: int, raw: Any) -> LoadPhase:
    where = f"{path}: phase {index}"
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a mapping, got {raw!r}")
    unknown = set(raw) - PHASE_KEYS
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)} (known: {sorted(PHASE_KEYS)})")
    try:
        duration = float(raw["duration_s"])
        cpu_workers = int(raw.get("cpu_workers", 0))
        cpu_load = int(raw.get("cpu_load_percent", 100))
        vm_workers = int(raw.get("vm_workers", 0))
    except KeyError as exc:
        raise ValueError(f"{where}: missing {exc}") from exc
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: {exc}") from exc
    vm_bytes = str(raw.get("vm_bytes", "256M"))
    if not (math.isfinite(duration) and duration > 0):
        raise ValueError(f"{where}: duration_s must be > 0, got {raw['duration_s']}")
    if cpu_workers < 0 or vm_workers < 0:
        raise ValueError(f"{where}: worker counts must be >= 0")
    if not 0 <= cpu_load <= 100:
        raise ValueError(f"{where}: cpu_load_percent must be in [0, 100], got {cpu_load}")
    if not _VM_BYTES.match(vm_bytes):
        raise ValueError(f"{where}: vm_bytes must be like 256M or 25%, got {vm_bytes!r}")
    return LoadPhase(duration, StressSpec(cpu_workers, cpu_load, vm_workers, vm_bytes))


def play_trace(
    trace: LoadTrace,
    on_phase: Callable[[int, LoadPhase], None] | None = None,
    loop: bool = False,
    should_stop: Callable[[], bool] = lambda: False,
    own_session: bool = False,
) -> None:
    """Run the trace's phases in order (forever with ``loop``) until done or ``should_stop()``; the load
    in the caller's session, or with ``own_session`` in one of its own (see ``load.stress``)."""
    while True:
        for index, phase in enumerate(trace.phases):
            if on_phase is not None:
                on_phase(index, phase)
            with StressNg(phase.spec, timeout_s=phase.duration_s + 5, own_session=own_session):
                end = time.monotonic() + phase.duration_s
                while time.monotonic() < end:
                    if should_stop():
                        return
                    time.sleep(min(0.1, max(0.0, end - time.monotonic())))
        if not loop:
            return
