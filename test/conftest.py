"""Shared test set-up: an isolated DDS domain per run, and helpers for ROS processes."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# One random domain per test run, set before rclpy initialises, so parallel
# runs on one machine never see each other's topics; discovery stays on this host.
os.environ["ROS_DOMAIN_ID"] = str(random.Random().randint(1, 101))
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"

REPO_ROOT = Path(__file__).resolve().parent.parent
# The inference node's ONNX module cache: under build/, not the user's ~/.cache.
os.environ.setdefault("ADASCALE_CACHE_DIR", str(REPO_ROOT / "build" / "test-cache"))
# Nodes and commands that name no model run the tiny one (well under a millisecond a frame);
# the robot-scale default's own tests name it, and one checks that it is the default.
os.environ.setdefault("ADASCALE_MODEL_DIR", str(REPO_ROOT / "models" / "default"))
DATA_DIR = Path(__file__).resolve().parent / "data"


@pytest.fixture
def ros_node() -> Iterator[object]:
    """An rclpy node in the test process, torn down afterwards."""
    import rclpy

    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node(f"test_{os.getpid()}_{random.randint(0, 1 << 30)}", context=context)
    try:
        yield node
    finally:
        node.destroy_node()
        rclpy.shutdown(context=context)


def spin_until(node, condition: Callable[[], bool], timeout_s: float) -> bool:
    """Spin ``node`` until ``condition()`` holds or the timeout passes."""
    from rclpy.executors import SingleThreadedExecutor

    executor = SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            if condition():
                return True
            executor.spin_once(timeout_sec=0.05)
        return condition()
    finally:
        executor.remove_node(node)


def call_service(node, send: Callable[[], object], timeout_s: float = 20.0, resend_after_s: float = 4.0):
    """The result of an idempotent service request (``send()`` returns its future), sent again when
    unanswered after ``resend_after_s``: the server can be discovered before it sees the client's
    reply reader, and then its first reply is lost."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        future = send()
        if spin_until(node, future.done, timeout_s=min(resend_after_s, deadline - time.monotonic())):
            return future.result()
    raise AssertionError(f"no reply within {timeout_s} s")


def subscribe_diagnostics(node, node_name: str) -> list:
    """Collect, in the returned list, every /diagnostics status the named adascale node publishes."""
    from diagnostic_msgs.msg import DiagnosticArray

    from adascale_ros.nodes.diagnostics import status_name

    statuses: list = []
    wanted = status_name(node_name)
    node.create_subscription(
        DiagnosticArray, "/diagnostics", lambda m: statuses.extend(s for s in m.status if s.name == wanted), 10
    )
    return statuses


@pytest.fixture
def start_process() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start child processes (python modules) and make sure none outlives the test."""
    started: list[subprocess.Popen[str]] = []

    def start(args: list[str], **kwargs) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            **kwargs,
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)


def rosbags_qos(reliability: str, durability: str = "volatile"):
    """A publisher's QoS as a rosbag2 storage file records it (keep last 10, no deadlines)."""
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    never = QosTime(0, 0)
    return Qos(
        history=QosHistory.KEEP_LAST, depth=10, reliability=QosReliability[reliability.upper()],
        durability=QosDurability[durability.upper()], deadline=never, lifespan=never,
        liveliness=QosLiveliness.AUTOMATIC, liveliness_lease_duration=never, avoid_ros_namespace_conventions=False,
    )  # fmt: skip


def write_robot_recording(out: Path, frames, rate_hz: float, storage: str = "MCAP") -> Path:
    """A camera recording as ``ros2 bag record`` leaves it: rgb8 ``frames`` (N, H, W, 3) from a best-effort
    camera on /camera/image_raw, no labels, in ``storage`` (MCAP or SQLITE3), and a ``metadata.yaml`` whose
    QoS differs from the storage file's, as in rosbag2's own test bags (``ros2 bag play`` reads the file's)."""
    import yaml
    from rosbags.rosbag2 import StoragePlugin, Writer

    from adascale_ros.harness.bags import IMAGE, typestore

    store = typestore()
    header, stamp, image = (
        store.types["std_msgs/msg/Header"],
        store.types["builtin_interfaces/msg/Time"],
        store.types[IMAGE],
    )
    with Writer(out, version=8, storage_plugin=StoragePlugin[storage]) as writer:
        camera = writer.add_connection(
            "/camera/image_raw", IMAGE, typestore=store, offered_qos_profiles=[rosbags_qos("best_effort")]
        )
        for index, pixels in enumerate(frames):
            stamp_ns = 1_800_000_000 * 10**9 + round(index * 1e9 / rate_hz)
            height, width = pixels.shape[:2]
            msg = image(
                header=header(stamp=stamp(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9), frame_id="camera"),
                height=height, width=width, encoding="rgb8", is_bigendian=0, step=3 * width, data=pixels.reshape(-1),
            )  # fmt: skip
            writer.write(camera, stamp_ns, store.serialize_cdr(msg, IMAGE))
    metadata = out / "metadata.yaml"
    info = yaml.safe_load(metadata.read_text())
    for topic in info["rosbag2_bagfile_information"]["topics_with_message_count"]:
        topic["topic_metadata"]["offered_qos_profiles"] = []
    metadata.write_text(yaml.safe_dump(info))
    return out
