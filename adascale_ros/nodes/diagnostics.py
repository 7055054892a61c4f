"""One status per node on /diagnostics, named as diagnostic_updater names them.

``diagnostic_updater`` is not available everywhere this package runs, so the
small part of it we need (one status per node, published periodically) lives here.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node

# DiagnosticStatus levels (single bytes in the generated Python class).
OK = DiagnosticStatus.OK
WARN = DiagnosticStatus.WARN
ERROR = DiagnosticStatus.ERROR


# diagnostic_updater names a status "<node name>: <task>"; each adascale node has one task, named
# after its part of AdaScale, so a status is ours whatever the node was renamed to.
TASKS = {
    "resource_monitor": "resource sensing",
    "profiler": "performance profiling",
    "selector": "variant selection",
    "elastic_inference": "elastic inference",
}


def status_name(node_name: str, kind: str | None = None) -> str:
    """The status name of the node ``node_name`` of kind ``kind`` (default: the node's name)."""
    return f"{node_name}: {TASKS[kind or node_name]}"


def diagnostic_status(node: Node, kind: str, level: bytes, message: str, values: Mapping[str, Any]) -> DiagnosticStatus:
    return DiagnosticStatus(
        level=level,
        name=status_name(node.get_name(), kind),
        message=message,
        hardware_id=socket.gethostname(),
        values=[KeyValue(key=k, value=str(v)) for k, v in values.items()],
    )


def statuses_by_node(array: DiagnosticArray) -> dict[str, dict[str, str]]:
    """The adascale statuses of a /diagnostics message: node name -> its values, its message as "message"
    and its level (0 OK, 1 WARN, 2 ERROR) as "level"."""
    ours = {f": {task}" for task in TASKS.values()}
    return {
        status.name.rsplit(": ", 1)[0]: {"message": status.message, "level": str(ord(status.level))}
        | {kv.key: kv.value for kv in status.values}
        for status in array.status
        if any(status.name.endswith(suffix) for suffix in ours)
    }


class DiagnosticsPublisher:
    """Publishes one node's status on ``/diagnostics`` every ``period_s``; ``kind`` is a key of ``TASKS``."""

    def __init__(
        self,
        node: Node,
        kind: str,
        status: Callable[[], tuple[bytes, str, Mapping[str, Any]]],
        period_s: float = 1.0,
    ) -> None:
        if kind not in TASKS:
            raise ValueError(f"unknown node kind {kind!r}: one of {sorted(TASKS)}")
        self._node = node
        self._kind = kind
        self._status = status
        self._pub = node.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._timer = node.create_timer(period_s, self.publish)

    def publish(self) -> None:
        level, message, values = self._status()
        array = DiagnosticArray()
        array.header.stamp = self._node.get_clock().now().to_msg()
        array.status = [diagnostic_status(self._node, self._kind, level, message, values)]
        self._pub.publish(array)
