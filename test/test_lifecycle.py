"""Start-up and shutdown of every node as its own process.

A missing or corrupt model directory, or a bad parameter, is refused at
start-up with a one-line reason and exit 2; SIGINT and SIGTERM end every node
within 2 s with exit 0, also while it is still starting.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import threading
import time

import pytest
from conftest import REPO_ROOT

from adascale_ros.graph.definition import ENTRY_MODULE, node_graph

pytestmark = pytest.mark.ros


def wait_for_line(proc: subprocess.Popen, text: str, timeout_s: float) -> None:
    """Read the process's output until a line contains ``text``."""
    found = threading.Event()

    def read() -> None:
        for line in proc.stdout:
            if text in line:
                found.set()
                return

    threading.Thread(target=read, daemon=True).start()
    assert found.wait(timeout_s), f"no output line with {text!r}"


@pytest.mark.parametrize("executable", [spec.executable for spec in node_graph()])
def test_each_node_ends_within_2s_with_exit_0_on_sigint_and_sigterm(executable, start_process):
    for sig in (signal.SIGINT, signal.SIGTERM):
        node = start_process(["-m", ENTRY_MODULE, executable])
        wait_for_line(node, f"[{executable}]", 30.0)  # its first log line: set up and spinning
        time.sleep(0.5)
        node.send_signal(sig)
        sent = time.monotonic()
        code = node.wait(10)
        took = time.monotonic() - sent
        out = node.stdout.read()
        print(f"{executable} {sig.name}: exit {code} after {took:.2f} s")
        assert code == 0 and "Traceback" not in out, out
        assert took <= 2.0


@pytest.mark.parametrize("executable", ["resource_monitor", "elastic_inference"])
def test_a_signal_during_start_up_still_ends_with_exit_0(executable, start_process):
    # 0.3 s in, the process is importing rclpy (and torch, for inference) or building the engine.
    node = start_process(["-m", ENTRY_MODULE, executable])
    time.sleep(0.3)
    node.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    code = node.wait(20)
    out = node.stdout.read()
    print(f"{executable} SIGTERM during start-up: exit {code} after {time.monotonic() - sent:.2f} s")
    assert code == 0 and "Traceback" not in out, out


def broken_model(tmp_path, what: str):
    """A copy of the default model with one part missing or corrupt."""
    model = tmp_path / what
    if what == "missing":
        return model
    shutil.copytree(REPO_ROOT / "models" / "default", model)
    if what == "corrupt_table":
        (model / "variants.json").write_text('{"variants": [')
    elif what == "truncated_weights":
        data = (model / "weights.pt").read_bytes()
        (model / "weights.pt").write_bytes(data[: len(data) // 3])
    elif what == "corrupt_predictor":
        (model / "profiler" / "predictor.npz").write_bytes(b"not an npz archive")
    return model


def refused_start(start_process, executable: str, parameter: str, value: str) -> str:
    """Start a node with one parameter set; it must refuse to start (exit 2) without a traceback. Its output."""
    node = start_process(["-m", ENTRY_MODULE, executable, "--ros-args", "-p", f"{parameter}:={value}"])
    out, _ = node.communicate(timeout=60)
    assert node.returncode == 2 and "Traceback" not in out, out
    return out


@pytest.mark.parametrize(
    "executable, what, reason",
    [
        ("profiler", "missing", "variants.json: not found"),
        ("profiler", "corrupt_table", "variants.json: unreadable JSON"),
        ("profiler", "corrupt_predictor", "predictor.npz"),
        ("selector", "missing", "variants.json: not found"),
        ("selector", "corrupt_table", "variants.json: unreadable JSON"),
        ("elastic_inference", "missing", "not a model directory"),
        ("elastic_inference", "corrupt_table", "variants.json: unreadable JSON"),
        ("elastic_inference", "truncated_weights", "weights.pt: not a readable weights file"),
    ],
)
def test_a_broken_model_directory_is_refused_with_the_reason(executable, what, reason, tmp_path, start_process):
    out = refused_start(start_process, executable, "model_dir", str(broken_model(tmp_path, what)))
    assert out.strip().splitlines()[-1].startswith("error: "), out
    assert reason in out


@pytest.mark.parametrize(
    "executable, parameter, value",
    [
        ("resource_monitor", "rate_hz", "0.0"),
        ("profiler", "correction_quantile", "1.5"),
        ("selector", "latency_budget_ms", "-1.0"),
        ("selector", "republish_period_s", "-1.0"),
        ("elastic_inference", "top_k", "0"),
        ("elastic_inference", "selection_timeout_s", "-1.0"),
        ("elastic_inference", "input", "bogus"),  # not one of its choices
        ("profiler", "max_rate_hz", "0.0"),  # in its range [0, 100], but the open end says > 0
    ],
)
def test_a_bad_parameter_is_refused_at_start_up_by_name(executable, parameter, value, start_process):
    out = refused_start(start_process, executable, parameter, value)
    assert f"error: {parameter}" in out
