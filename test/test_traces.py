"""Load traces: the shipped files, validation with a reason, and `adascale load` driving real stress-ng."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
from conftest import REPO_ROOT

from adascale_ros.load.traces import LoadTrace, play_trace

SHIPPED = sorted((REPO_ROOT / "config" / "load_traces").glob("*.yaml"))


def stress_ng_running() -> bool:
    return subprocess.run(["pgrep", "-x", "stress-ng"], capture_output=True).returncode == 0


def test_shipped_traces_load():
    assert {p.stem for p in SHIPPED} >= {"steady", "step", "bursty", "ramp"}
    for path in SHIPPED:
        trace = LoadTrace.from_yaml(path)
        assert trace.phases and trace.description and trace.duration_s > 0
    step = LoadTrace.from_yaml(REPO_ROOT / "config/load_traces/step.yaml")
    assert [p.spec.idle for p in step.phases] == [True, False, True]
    assert step.phase_at(0.0) == 0 and step.phase_at(20.0) == 1 and step.phase_at(1e9) == 2


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("phases: []", "non-empty 'phases'"),
        ("phases:\n  - {cpu_workers: 1}", "missing 'duration_s'"),
        ("phases:\n  - {duration_s: 0}", "duration_s must be > 0"),
        ("phases:\n  - {duration_s: .nan}", "duration_s must be > 0"),
        ("phases:\n  - {duration_s: 1, cpu_load_percent: 150}", "cpu_load_percent"),
        ("phases:\n  - {duration_s: 1, cpu_workers: -2}", "worker counts"),
        ("phases:\n  - {duration_s: 1, vm_bytes: lots}", "vm_bytes"),
        ("phases:\n  - {duration_s: 1, gpu_workers: 1}", "unknown keys"),
        ("phases:\n  - {duration_s: one}", "phase 0"),
        ("phases: [", "cannot read"),
    ],
)
def test_malformed_traces_are_refused_with_the_reason(tmp_path, text, reason):
    path = tmp_path / "trace.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=reason):
        LoadTrace.from_yaml(path)


def test_play_trace_runs_stress_ng_only_during_its_phases(tmp_path):
    path = tmp_path / "short.yaml"
    path.write_text("phases:\n  - {duration_s: 1.0, cpu_workers: 1, cpu_load_percent: 50}\n  - {duration_s: 1.0}\n")
    seen = []

    def on_phase(index, phase):
        seen.append(index)

    def should_stop():
        if seen == [0] and not hasattr(should_stop, "checked"):
            time.sleep(0.3)
            should_stop.checked = stress_ng_running()
        return False

    play_trace(LoadTrace.from_yaml(path), on_phase=on_phase, should_stop=should_stop)
    assert seen == [0, 1] and should_stop.checked
    assert not stress_ng_running()


def test_adascale_load_stops_cleanly_on_sigint_and_sigterm(tmp_path, start_process):
    path = tmp_path / "blip.yaml"
    path.write_text("phases:\n  - {duration_s: 0.5}\n  - {duration_s: 30.0, cpu_workers: 1}\n")
    for sig in (signal.SIGINT, signal.SIGTERM):
        proc = start_process(["-m", "adascale_ros.cli.main", "load", str(path), "--loop"])
        assert proc.stdout.readline().startswith("blip: ")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "phase 1" not in proc.stdout.readline():
            pass  # wait for the loaded phase
        time.sleep(0.5)
        assert stress_ng_running()
        started = time.monotonic()
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=10)
        assert proc.returncode == 0 and "stopped" in out, out
        assert time.monotonic() - started < 2.0
        assert not stress_ng_running()


@pytest.mark.parametrize("own_session", [False, True])
def test_stress_ng_runs_in_a_group_of_its_own_and_in_the_session_asked_for(own_session):
    from adascale_ros.load.stress import StressNg, StressSpec

    with StressNg(StressSpec(cpu_workers=1, cpu_load_percent=10), timeout_s=30, own_session=own_session) as load:
        pid = load.process.pid
        assert os.getpgid(pid) == pid  # stop() signals the group; a terminal's Ctrl-C does not reach it
        assert (os.getsid(pid) == pid) is own_session  # a session leader only when asked
        assert (os.getsid(pid) == os.getsid(0)) is not own_session
    assert load.process is None
