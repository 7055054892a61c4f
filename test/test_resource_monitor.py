"""resource_monitor as a separate process, over real DDS, under real stress-ng load."""

from __future__ import annotations

import math
import statistics

import pytest
import yaml
from conftest import REPO_ROOT, call_service, spin_until
from test_sensors import make_jetson_orin, write

from adascale_ros.graph.definition import RESOURCE_STATE_TOPIC
from adascale_ros.load.stress import StressNg, StressSpec

pytestmark = pytest.mark.ros
MODULE = "adascale_ros.nodes.resource_monitor"


def params_file(tmp_path, **overrides) -> str:
    config = yaml.safe_load((REPO_ROOT / "config" / "adascale.yaml").read_text())
    config["resource_monitor"]["ros__parameters"].update(overrides)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def subscribe_states(node) -> list:
    from adascale_msgs.msg import ResourceState

    states: list = []
    node.create_subscription(ResourceState, RESOURCE_STATE_TOPIC, states.append, 10)
    return states


def collect(node, states: list, seconds: float) -> list:
    del states[:]
    spin_until(node, lambda: False, seconds)
    return list(states)


def test_stress_raises_cpu_utilisation_and_load_index(tmp_path, ros_node, start_process):
    states = subscribe_states(ros_node)
    monitor = start_process(["-m", MODULE, "--ros-args", "--params-file", params_file(tmp_path, rate_hz=10.0)])
    assert spin_until(ros_node, lambda: len(states) >= 5, timeout_s=20.0), "no ResourceState received"

    idle = collect(ros_node, states, 2.0)
    with StressNg(StressSpec(cpu_workers=2, cpu_load_percent=100), timeout_s=30):
        spin_until(ros_node, lambda: False, 1.0)  # let the workers ramp up
        loaded = collect(ros_node, states, 3.0)

    assert len(idle) >= 10 and len(loaded) >= 15  # ~10 Hz
    for s in idle + loaded:
        assert 0.0 <= s.cpu_util <= 1.0 and 0.0 <= s.mem_util <= 1.0 and 0.0 <= s.load_index <= 1.0
        assert len(s.cpu_util_per_core) >= 1
        assert s.mem_available_mb > 0.0
        assert math.isnan(s.gpu_util)  # no GPU here: unknown, never 0
    idle_cpu = statistics.median(s.cpu_util for s in idle)
    loaded_cpu = statistics.median(s.cpu_util for s in loaded)
    idle_load = statistics.median(s.load_index for s in idle)
    loaded_load = statistics.median(s.load_index for s in loaded)
    print(f"cpu_util idle {idle_cpu:.2f} -> loaded {loaded_cpu:.2f}; load_index {idle_load:.2f} -> {loaded_load:.2f}")
    assert loaded_cpu > 0.85 and loaded_cpu > idle_cpu + 0.3
    # The default weights put 0.5 / 0.7 on the CPU when there is no GPU.
    assert loaded_load > idle_load + 0.2
    assert any(math.isfinite(s.load_index_forecast) for s in loaded)
    assert loaded[-1].forecast_horizon_s == pytest.approx(1.0)
    monitor.terminate()
    assert monitor.wait(5) == 0


def test_reads_a_jetson_board_from_its_sysfs_tree(tmp_path, ros_node, start_process):
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus

    make_jetson_orin(tmp_path / "sys", load_permille=640)
    states = subscribe_states(ros_node)
    diagnostics: list = []
    ros_node.create_subscription(DiagnosticArray, "/diagnostics", lambda m: diagnostics.extend(m.status), 10)
    start_process(["-m", MODULE, "--ros-args", "--params-file", params_file(tmp_path, sys_root=str(tmp_path / "sys"))])
    assert spin_until(ros_node, lambda: len(states) >= 2 and diagnostics, timeout_s=20.0)
    s = states[-1]
    assert s.gpu_util == pytest.approx(0.64, abs=1e-6)
    assert s.power_source == "jetson_ina" and s.power_w == pytest.approx(7.62, rel=1e-5)

    status = diagnostics[-1]
    assert status.name == "resource_monitor: resource sensing" and status.level == DiagnosticStatus.OK
    values = {kv.key: kv.value for kv in status.values}
    assert values["sensor.jetson_gpu"] == "True" and values["sensor.rapl"] == "False"
    assert int(values["samples_published"]) >= 1

    # A sensor that starts failing is counted and turns the status to WARN; the node keeps publishing.
    write(tmp_path / "sys/devices/platform/bus@0/17000000.gpu/load", "not a number\n")
    del diagnostics[:], states[:]
    assert spin_until(ros_node, lambda: any(d.level == DiagnosticStatus.WARN for d in diagnostics), timeout_s=5.0)
    warn = next(d for d in diagnostics if d.level == DiagnosticStatus.WARN)
    assert "jetson_gpu" in warn.message
    assert states and math.isnan(states[-1].gpu_util)


def test_a_parameter_range_is_numeric_and_bounded_on_the_sides_given():
    from adascale_ros.nodes.parameters import INT64_MAX, Param

    fraction = Param(0.5, "a fraction", low=0.0, high=1.0).descriptor().floating_point_range[0]
    assert (fraction.from_value, fraction.to_value, fraction.step) == (0.0, 1.0, 0.0)
    count = Param(3, "a count", low=1).descriptor().integer_range[0]
    assert (count.from_value, count.to_value) == (1, INT64_MAX)
    assert not Param(1.0, "free").descriptor().floating_point_range
    for bad in ("text", True):
        with pytest.raises(TypeError, match="numeric"):
            Param(bad, "not a number", low=0).descriptor()


def test_a_parameter_with_choices_lists_them_and_refuses_others():
    from adascale_ros.nodes.parameters import Param, check_choices

    table = {"input": Param("raw", "where frames come from", choices=("raw", "compressed")), "n": Param(1, "free")}
    assert table["input"].descriptor().additional_constraints == "one of: raw, compressed"
    check_choices(table, {"input": "compressed", "n": 7})
    with pytest.raises(ValueError, match="input must be one of raw, compressed, got 'jpeg'"):
        check_choices(table, {"input": "jpeg", "n": 7})


def test_parameters_are_validated_at_runtime(tmp_path, ros_node, start_process):
    from rclpy.parameter import Parameter
    from rclpy.parameter_client import AsyncParameterClient

    states = subscribe_states(ros_node)
    start_process(["-m", MODULE, "--ros-args", "--params-file", params_file(tmp_path)])
    client = AsyncParameterClient(ros_node, "resource_monitor")
    assert client.wait_for_services(timeout_sec=20.0)

    def set_params(*params: Parameter):
        return call_service(ros_node, lambda: client.set_parameters_atomically(list(params))).result

    bad_rate = set_params(Parameter("rate_hz", value=-1.0))
    assert not bad_rate.successful and "rate_hz" in bad_rate.reason
    # All three weights at zero in one atomic change: the whole change is refused.
    bad_weights = set_params(
        Parameter("cpu_weight", value=0.0), Parameter("gpu_weight", value=0.0), Parameter("memory_weight", value=0.0)
    )
    assert not bad_weights.successful and "weight" in bad_weights.reason
    got = call_service(ros_node, lambda: client.get_parameters(["cpu_weight"]))
    assert got.values[0].double_value == 0.5
    bad_window = set_params(Parameter("forecast_window", value=3))
    assert not bad_window.successful and "window" in bad_window.reason
    read_only = set_params(Parameter("sys_root", value="/tmp"))
    assert not read_only.successful
    # Ranges are in the descriptors: `ros2 param describe` shows them and rclpy refuses a value outside.
    described = call_service(ros_node, lambda: client.describe_parameters(["cpu_weight", "forecast_order"]))
    weight, order = described.descriptors
    assert weight.floating_point_range[0].from_value == 0.0 and order.integer_range[0].from_value == 1
    negative = set_params(Parameter("cpu_weight", value=-0.5))
    assert not negative.successful, negative.reason

    faster = set_params(Parameter("rate_hz", value=20.0))
    assert faster.successful
    assert spin_until(ros_node, lambda: len(states) >= 3, timeout_s=10.0)
    assert collect(ros_node, states, 0.0) == []  # drains
    received = collect(ros_node, states, 2.0)
    assert len(received) >= 30  # ~40 at 20 Hz; 10 Hz would give ~20
    # The forecast horizon in seconds is unchanged, now 20 steps of 50 ms.
    assert received[-1].forecast_horizon_s == pytest.approx(1.0)


def test_invalid_params_file_refuses_to_start_with_the_reason(tmp_path, start_process):
    monitor = start_process(["-m", MODULE, "--ros-args", "--params-file", params_file(tmp_path, rate_hz=0.0)])
    out, _ = monitor.communicate(timeout=20)
    assert monitor.returncode == 2
    assert "rate_hz must be in" in out
    # A value outside a parameter's range is refused by rclpy at declaration: one line, no traceback.
    monitor = start_process(["-m", MODULE, "--ros-args", "-p", "cpu_weight:=-1.0"])
    out, _ = monitor.communicate(timeout=20)
    assert monitor.returncode == 2 and "cpu_weight out of range" in out and "Traceback" not in out
