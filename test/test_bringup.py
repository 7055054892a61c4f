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
from conftest import REPO_ROOT, spin_until

from adascale_ros.graph.definition import MODEL_READERS, node_graph
from adascale_ros.graph.runner import unclean_exits
from adascale_ros.model.directory import card_resolutions, read_model_card
from adascale_ros.package_files import MODEL_DIR_VARIABLE, default_model_dir, default_params_file, tiny_model_dir
from adascale_ros.profiling.predictor import LatencyPredictor, calibrated_threads


def test_graph_nodes_are_runnable_and_configured():
    setup_py = (REPO_ROOT / "setup.py").read_text()
    config = yaml.safe_load(default_params_file().read_text())
    for spec in node_graph():
        assert importlib.util.find_spec(spec.module) is not None, spec.module
        # The console script ros2 run uses is the entry the runner uses, and it runs this module.
        assert re.search(rf"{spec.executable} = adascale_ros.nodes.entry:{spec.executable}\b", setup_py)
        assert spec.name in config, f"config/adascale.yaml has no section for {spec.name}"
        # Every parameter the node declares is set (and documented) there, and nothing else.
        declared = importlib.import_module(spec.module).PARAMETERS
        assert set(config[spec.name]["ros__parameters"]) == set(declared), spec.name


def test_the_default_model_is_the_robot_scale_one_calibrated_and_an_environment_variable_names_another(
    monkeypatch,
):
    monkeypatch.delenv(MODEL_DIR_VARIABLE, raising=False)
    robot = default_model_dir()
    assert robot == REPO_ROOT / "models" / "lite0-fashion-mnist"
    card = read_model_card(robot)
    assert card["network"]["backbone"] == "lite0" and len(card_resolutions(card)) >= 3
    assert len(LatencyPredictor.load(robot).variant_ids) == card["num_variants"]
    # The inference node's threads default (0) runs what calibration timed: 2 threads here, 1 for the tiny model.
    assert calibrated_threads(robot) == 2 and calibrated_threads(tiny_model_dir()) == 1
    monkeypatch.setenv(MODEL_DIR_VARIABLE, "/models/mine")
    assert str(default_model_dir()) == "/models/mine"


def test_node_command_line_carries_params_and_remaps(tmp_path):
    spec = node_graph()[0]
    cmd = spec.command(tmp_path / "p.yaml", "debug")
    assert cmd[cmd.index("--params-file") + 1] == str(tmp_path / "p.yaml")
    assert f"__node:={spec.name}" in cmd and "debug" in cmd


def test_graph_overrides_reach_the_right_nodes():
    specs = {s.name: s for s in node_graph("/oakd/rgb/preview/image_raw", "/models/m", "compressed", True)}
    inference = specs["elastic_inference"]
    assert ("~/image", "/oakd/rgb/preview/image_raw") in inference.remappings
    assert ("~/image/compressed", "/oakd/rgb/preview/image_raw/compressed") in inference.remappings
    assert inference.parameters["input"] == "compressed"
    assert {n for n, s in specs.items() if s.parameters.get("model_dir") == "/models/m"} == set(MODEL_READERS)
    assert all(s.parameters["use_sim_time"] is True for s in specs.values())
    assert "use_sim_time:=true" in inference.command()
    assert all(s.parameters == {} for s in node_graph())  # nothing given: the parameters file decides
    deadline = {s.name: s.parameters for s in node_graph(latency_budget_ms=0, budget_fraction_of_frame_period=0.3)}
    assert deadline.pop("selector") == {"latency_budget_ms": 0.0, "budget_fraction_of_frame_period": 0.3}
    assert all(parameters == {} for parameters in deadline.values())
    with pytest.raises(ValueError, match="raw or compressed"):
        node_graph(image_input="jpeg")


def test_a_namespace_holds_every_node_and_every_topic_between_them():
    for spec in node_graph(namespace="/robot1/"):
        assert spec.namespace == "robot1" and "__ns:=/robot1" in spec.command()
        # Remapped to relative names: they resolve in the node's namespace, not at the root.
        assert all(not dst.startswith("/") for _, dst in spec.remappings), spec.remappings
    assert all(s.namespace == "" and "__ns:=" not in " ".join(s.command()) for s in node_graph())
    for bad in ("1robot", "robot one", "robot//one"):
        with pytest.raises(ValueError, match="invalid namespace"):
            node_graph(namespace=bad)


DISCOVERY_S = 6.0  # two Fast DDS heartbeat periods: a lost discovery message is resent at the next one


@pytest.mark.ros
def test_two_namespaced_graphs_on_one_domain_share_no_topic(ros_node, tmp_path):
    """Two robots' graphs, both running: each answers its own camera and publishes only under its namespace."""
    from sensor_msgs.msg import Image

    from adascale_msgs.msg import ElasticClassification
    from adascale_ros.graph.runner import GraphProcesses

    robots = ("robot1", "robot2")
    graphs = [GraphProcesses(node_graph(namespace=r), default_params_file()) for r in robots]
    logs = {r: open(tmp_path / f"{r}.log", "w") for r in robots}
    results: dict[str, list] = {r: [] for r in robots}
    for r in robots:
        ros_node.create_subscription(
            ElasticClassification, f"/{r}/elastic_inference/classification", results[r].append, 10
        )
    camera = ros_node.create_publisher(Image, "/robot1/camera/image_raw", 10)  # only robot1 has a camera
    frame = Image(height=28, width=28, encoding="mono8", step=28, data=bytes(range(28)) * 28)
    ros_node.create_timer(0.1, lambda: camera.publish(frame))
    try:
        for graph, r in zip(graphs, robots, strict=True):
            graph.start(logs[r])
        assert spin_until(ros_node, lambda: len(results["robot1"]) >= 5, 90.0), (tmp_path / "robot1.log").read_text()
        # This process discovers each node's endpoints on their own (up to a heartbeat, 3 s, and more under
        # load): results from robot1's inference say nothing of its monitor yet. Wait for the counts below.
        shared = ("resource_monitor/state", "profiler/profiles", "selector/selection")
        spin_until(
            ros_node,
            lambda: (
                all(ros_node.count_publishers(f"/{r}/{t}") == 1 for r in robots for t in shared)
                and all(ros_node.count_subscribers(f"/{r}/profiler/profiles") == 1 for r in robots)
            ),
            DISCOVERY_S,
        )
        topics = {name for name, _ in ros_node.get_topic_names_and_types()}
        ours = {t for t in topics if any(f"/{spec.name}/" in t for spec in node_graph())}
        assert ours and all(t.startswith(("/robot1/", "/robot2/")) for t in ours), sorted(ours)
        for r in robots:
            for topic in shared:
                assert ros_node.count_publishers(f"/{r}/{topic}") == 1, (r, topic)
            assert ros_node.count_subscribers(f"/{r}/profiler/profiles") == 1  # its own selector only
        assert not results["robot2"] and all(not graph.exited() for graph in graphs)
    finally:
        for graph in graphs:
            assert not unclean_exits(graph.stop())
        for log in logs.values():
            log.close()


LAUNCH_FILES = {  # relative camera topics resolve in the robot's namespace; a bag names its topic in full
    "adascale.launch.py": "camera/image_raw",
    "turtlebot3.launch.py": "camera/image_raw",
    "turtlebot4.launch.py": "oakd/rgb/preview/image_raw",
    "replay.launch.py": "/camera/image_raw",
}


@pytest.mark.parametrize("name", LAUNCH_FILES)
def test_launch_files_compile(name):
    compile((REPO_ROOT / "launch" / name).read_text(), name, "exec")


@pytest.mark.parametrize("name", LAUNCH_FILES)
def test_launch_files_build_the_same_graph(name):
    pytest.importorskip("launch_ros", reason="launch_ros is not installed (only on a full ROS 2 install)")
    from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction
    from launch.utilities import perform_substitutions
    from launch_ros.actions import Node

    from launch import LaunchContext

    spec = importlib.util.spec_from_file_location("adascale_launch", REPO_ROOT / "launch" / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    context = LaunchContext()
    required = set()
    for entity in description.entities:
        if isinstance(entity, DeclareLaunchArgument):
            if entity.default_value is None:
                required.add(entity.name)
            else:
                context.launch_configurations[entity.name] = perform_substitutions(context, entity.default_value)
    assert context.launch_configurations["camera_topic"] == LAUNCH_FILES[name]
    assert required == ({"bag"} if name == "replay.launch.py" else set())  # no bag plays '' by default
    if name == "replay.launch.py":
        context.launch_configurations["bag"] = "/bags/b"
    actions = [a for e in description.entities if isinstance(e, OpaqueFunction) for a in e.execute(context)]
    nodes = [a for a in actions if isinstance(a, Node)]
    assert len(nodes) == len(node_graph())
    assert (name == "replay.launch.py") == any(isinstance(a, ExecuteProcess) for a in actions)


@pytest.mark.ros
@pytest.mark.parametrize("how", ["duration", "sigterm", "sigint"])
def test_adascale_run_shows_status_and_stops_cleanly(how, start_process):
    # Three nodes start (one imports torch and exports ONNX): on a loaded machine the
    # first status line can take several seconds, so signal only once it is shown.
    args = ["-m", "adascale_ros.cli.main", "run"] + (["--duration", "15"] if how == "duration" else [])
    runner = start_process(args, start_new_session=True)
    status = re.compile(r"^load \d\.\d\d \(forecast", re.MULTILINE)
    out = ""
    if how != "duration":
        deadline = time.monotonic() + 30.0
        while not status.search(out) and time.monotonic() < deadline and runner.poll() is None:
            out += runner.stdout.readline()
        runner.send_signal(signal.SIGTERM if how == "sigterm" else signal.SIGINT)
    sent = time.monotonic()
    rest, _ = runner.communicate(timeout=20)
    out += rest
    assert runner.returncode == 0, out
    if how != "duration":
        print(f"adascale run after {how}: exit 0 in {time.monotonic() - sent:.2f} s")
        assert time.monotonic() - sent <= 2.0
    assert "[resource_monitor]" in out  # node output forwarded with its prefix
    assert status.search(out), out
    leftover = subprocess.run(["pgrep", "-f", "adascale_ros.nodes.resource_monitor"], capture_output=True)
    assert leftover.returncode == 1, "a node outlived the runner"
