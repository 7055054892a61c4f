"""adascale_msgs: importable from the venv, and every message survives a trip
through DDS from another process unchanged."""

import math

import pytest
from conftest import spin_until
from msg_examples import examples
from publish_examples import LATCHED


def test_fields_and_defaults():
    from adascale_msgs.msg import ResourceState, VariantProfileArray

    state = ResourceState()
    assert {"load_index", "load_index_forecast", "cpu_util_per_core", "power_source"} <= set(
        state.get_fields_and_field_types()
    )
    state.cpu_util = float("nan")  # NaN is the documented "unknown"
    assert math.isnan(state.cpu_util)
    assert VariantProfileArray.get_fields_and_field_types()["flops"] == "sequence<uint64>"


@pytest.mark.ros
def test_every_message_round_trips_between_processes(ros_node, start_process):
    from conftest import REPO_ROOT

    expected = examples()
    received: dict[str, object] = {}
    for name, msg in expected.items():
        ros_node.create_subscription(
            type(msg), f"/examples/{name}", lambda m, name=name: received.setdefault(name, m), LATCHED
        )
    publisher = start_process([str(REPO_ROOT / "test" / "publish_examples.py")])
    try:
        assert spin_until(ros_node, lambda: len(received) == len(expected), timeout_s=20.0), (
            f"received only {sorted(received)}"
        )
    finally:
        publisher.terminate()
    for name, msg in expected.items():
        assert received[name] == msg, name
