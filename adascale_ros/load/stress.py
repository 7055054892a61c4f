"""Real background load from ``stress-ng``, with no process left behind.

``StressNg`` starts stress-ng in a process group of its own and, on exit from
the ``with`` block (normal, exception or Ctrl-C), signals the whole group and
waits for it, so no worker survives the caller.

Where the load runs decides what it does to a periodic task such as the
inference node. Linux's autogroup scheduler shares the CPU fairly between
sessions first, then between the threads of a session: load in a session of
its own barely delays a node that wakes for a few milliseconds per camera
frame (the node's session always gets its share at once), while load in the
node's session competes with it thread for thread. By default stress-ng stays
in the caller's session, as a robot's navigation does when one launch file
(or one service) starts it with the classifier; ``own_session`` puts it in a
session of its own, as navigation started from another terminal.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from dataclasses import dataclass
from types import TracebackType

# Where the load ran, as reports say it; keys as the reports store them ("load_session"). Reports from
# before the choice existed ran it in a session of its own.
LOAD_SESSIONS = {
    "shared": "the load ran in the session of what it slowed, as navigation started by the same launch file",
    "own": "the load ran in a session of its own, as navigation started from another terminal",
}


def load_session(own_session: bool) -> str:
    """The key of ``LOAD_SESSIONS`` for a load in its own session or not."""
    return "own" if own_session else "shared"


class StressNgMissing(RuntimeError):
    pass


@dataclass(frozen=True)
class StressSpec:
    """One load phase: CPU workers at a load percentage, plus optional memory pressure."""

    cpu_workers: int = 0
    cpu_load_percent: int = 100
    vm_workers: int = 0
    vm_bytes: str = "256M"

    def args(self) -> list[str]:
        args: list[str] = []
        if self.cpu_workers > 0:
            args += ["--cpu", str(self.cpu_workers), "--cpu-load", str(self.cpu_load_percent)]
        if self.vm_workers > 0:
            args += ["--vm", str(self.vm_workers), "--vm-bytes", self.vm_bytes, "--vm-keep"]
        return args

    @property
    def idle(self) -> bool:
        return self.cpu_workers <= 0 and self.vm_workers <= 0


def stress_ng_path() -> str:
    path = shutil.which("stress-ng")
    if path is None:
        raise StressNgMissing("stress-ng is not installed (Debian package 'stress-ng'; `make setup` installs it)")
    return path


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


class StressNg:
    """Run one ``StressSpec`` for the duration of a ``with`` block."""

    def __init__(self, spec: StressSpec, timeout_s: float | None = None, own_session: bool = False) -> None:
        self.spec = spec
        self.timeout_s = timeout_s
        self.own_session = own_session
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> StressNg:
        if self.spec.idle:
            return self
        cmd = [stress_ng_path(), *self.spec.args(), "--quiet"]
        if self.timeout_s is not None:  # a backstop should the parent die without cleanup
            cmd += ["--timeout", f"{max(1, round(self.timeout_s))}s"]
        # A group of its own either way, so that stop() reaches every worker and a terminal's Ctrl-C none.
        group = {"start_new_session": True} if self.own_session else {"process_group": 0}
        self.process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **group)
        return self

    def stop(self) -> None:
        proc, self.process = self.process, None
        if proc is None:
            return
        # stress-ng forwards SIGTERM to its workers; SIGKILL to the group then
        # takes any worker that outlived its parent.
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(3.0)
        except subprocess.TimeoutExpired:
            pass
        _signal_group(proc.pid, signal.SIGKILL)
        proc.wait()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
