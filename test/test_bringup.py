"""The node graph definition, the launch file built from it, and the local runner."""

from __future__ import annotations

import importlib
import importlib.util
import re
import signal
import subprocess
import time

import pytest
import yaml
from conftest import REPO_ROOT

from adascale_ros.bringup import default_params_file, node_graph


def test_graph_nodes_are_runnable_and_configured():
    setup_py = (REPO_ROOT / "setup.py").read_text()
    config = yaml.safe_load(default_params_file().read_text())
    for spec in node_graph():
        assert importlib.util.find_spec(spec.module) is not None, spec.module
        # The console script ros2 run uses points at the module the runner uses.
        assert re.search(rf"{spec.executable} = {re.escape(spec.module)}:main", setup_py), spec.executable
        assert spec.name in config, f"config/adascale.yaml has no section for {spec.name}"
        # Every parameter the node declares is set (and documented) there, and nothing else.
        declared = importlib.import_module(spec.module).PARAMETERS
        assert set(config[spec.name]["ros__parameters"]) == set(declared), spec.name


def test_node_command_line_carries_params_and_remaps(tmp_path):
    spec = node_graph()[0]
    cmd = spec.command(tmp_path / "p.yaml", "debug")
    assert cmd[cmd.index("--params-file") + 1] == str(tmp_path / "p.yaml")
    assert f"__node:={spec.name}" in cmd and "debug" in cmd


def test_launch_file_builds_the_same_graph():
    pytest.importorskip("launch_ros", reason="launch_ros is not installed (only on a full ROS 2 install)")
    spec = importlib.util.spec_from_file_location("adascale_launch", REPO_ROOT / "launch" / "adascale.launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from launch_ros.actions import Node

    description = module.generate_launch_description()
    launched = [e for e in description.entities if isinstance(e, Node)]
    assert len(launched) == len(node_graph())


@pytest.mark.ros
@pytest.mark.parametrize("how", ["duration", "sigterm", "sigint"])
def test_adascale_run_shows_status_and_stops_cleanly(how, start_process):
    # Three nodes start (one imports torch and exports ONNX): on a loaded machine the
    # first status line can take several seconds, so signal only once it is shown.
    args = ["-m", "adascale_ros.tools.cli", "run"] + (["--duration", "15"] if how == "duration" else [])
    runner = start_process(args, start_new_session=True)
    status = re.compile(r"^load \d\.\d\d \(forecast", re.MULTILINE)
    out = ""
    if how != "duration":
        deadline = time.monotonic() + 30.0
        while not status.search(out) and time.monotonic() < deadline and runner.poll() is None:
            out += runner.stdout.readline()
        runner.send_signal(signal.SIGTERM if how == "sigterm" else signal.SIGINT)
    rest, _ = runner.communicate(timeout=20)
    out += rest
    assert runner.returncode == 0, out
    assert "[resource_monitor]" in out  # node output forwarded with its prefix
    assert status.search(out), out
    leftover = subprocess.run(["pgrep", "-f", "adascale_ros.nodes.resource_monitor"], capture_output=True)
    assert leftover.returncode == 1, "a node outlived the runner"
