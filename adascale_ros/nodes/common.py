"""What every adascale node shares: the entry point, parameters and /diagnostics.

``diagnostic_updater`` is not available everywhere this package runs, so the
small part of it we need (one status per node, published periodically on
``/diagnostics``) lives here.
"""

from __future__ import annotations

import math
import socket
import sys
import threading
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions

from adascale_ros.signals import stop_flag

# DiagnosticStatus levels (single bytes in the generated Python class).
OK = DiagnosticStatus.OK
WARN = DiagnosticStatus.WARN
ERROR = DiagnosticStatus.ERROR


INT64_MAX = 2**63 - 1


@dataclass(frozen=True)
class Param:
    """A declared parameter: default value, description, whether it may change at runtime, and the
    inclusive range of its values (``low``/``high``; None: unbounded on that side), which
    ``ros2 param describe`` shows and rclpy enforces on every set. A node's own validation adds
    what a range cannot say (NaN, an open end, a relation between parameters)."""

    default: Any
    description: str
    read_only: bool = False
    low: float | None = None
    high: float | None = None

    def bounds(self) -> str:
        """The range in words, e.g. "must be in [0, 1]"; the type when the parameter has no range."""
        if self.low is not None and self.high is not None:
            return f"must be in [{self.low:g}, {self.high:g}]"
        if self.low is not None:
            return f"must be >= {self.low:g}"
        if self.high is not None:
            return f"must be <= {self.high:g}"
        return f"must be a {type(self.default).__name__}"

    def descriptor(self) -> ParameterDescriptor:
        descriptor = ParameterDescriptor(description=self.description, read_only=self.read_only)
        if self.low is None and self.high is None:
            return descriptor
        if isinstance(self.default, bool) or not isinstance(self.default, int | float):
            raise TypeError(f"a range needs a numeric parameter, not {type(self.default).__name__}")
        if isinstance(self.default, int):
            low = int(self.low) if self.low is not None else -INT64_MAX - 1
            high = int(self.high) if self.high is not None else INT64_MAX
            descriptor.integer_range = [IntegerRange(from_value=low, to_value=high, step=1)]
        else:
            low = float(self.low) if self.low is not None else -math.inf
            high = float(self.high) if self.high is not None else math.inf
            descriptor.floating_point_range = [FloatingPointRange(from_value=low, to_value=high, step=0.0)]
        return descriptor


def declare_parameters(node: Node, params: Mapping[str, Param]) -> None:
    """Declare every parameter with its descriptor; ``ValueError`` naming the first whose given value is
    outside its range or of the wrong type."""
    for name, spec in params.items():
        try:
            node.declare_parameter(name, spec.default, spec.descriptor())
        except ParameterException as exc:
            raise ValueError(f"{name} {spec.bounds()}: {exc}") from None


def latched_qos() -> QoSProfile:
    """Reliable, transient local, depth 1: a late joiner receives the value in force."""
    return QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


def current_values(node: Node, names: Mapping[str, Any]) -> dict[str, Any]:
    return {name: node.get_parameter(name).value for name in names}


def validating_callback(
    node: Node, names: Mapping[str, Any], apply: Callable[[dict[str, Any]], None]
) -> Callable[[list[Parameter]], SetParametersResult]:
    """Build an on-set-parameters callback that validates the whole new configuration.

    ``apply`` receives every parameter value as it would be after the change;
    it raises ``ValueError`` (or ``TypeError``) to reject the change with that
    message as the reason, and otherwise puts the change into effect.
    """

    def callback(changed: list[Parameter]) -> SetParametersResult:
        values = current_values(node, names)
        values.update({p.name: p.value for p in changed if p.name in names})
        try:
            apply(values)
        except (ValueError, TypeError) as exc:
            node.get_logger().warning(f"rejected parameter change: {exc}")
            return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    return callback


class AdascaleNode(Node):
    """The start-up every adascale node shares.

    The constructor declares the node's parameter table (``Param``, with its
    descriptors), reads the values into ``settings`` and checks them with
    ``check`` (a ``ValueError`` refuses to start). Once the subclass has built
    its state it calls ``serve()``: from then on every parameter change is
    validated as a whole and put into effect by ``apply`` (which raises
    ``ValueError`` to refuse it), and ``diagnostic_status()`` is published on
    /diagnostics at 1 Hz.
    """

    def __init__(
        self,
        kind: str,
        parameters: Mapping[str, Param],
        check: Callable[[dict[str, Any]], None] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(kind, **kwargs)
        self.kind = kind
        self.parameter_table = parameters
        declare_parameters(self, parameters)
        self.settings: dict[str, Any] = current_values(self, parameters)
        if check is not None:
            check(self.settings)

    def model_dir(self) -> str:
        """The ``model_dir`` parameter, or the embedded default model when it is empty."""
        from adascale_ros.bringup import default_model_dir

        return self.settings["model_dir"] or str(default_model_dir())

    def serve(self) -> None:
        self.add_on_set_parameters_callback(validating_callback(self, self.parameter_table, self._change))
        self._diagnostics = DiagnosticsPublisher(self, self.kind, self.diagnostic_status)

    def _change(self, values: dict[str, Any]) -> None:
        self.apply(values)
        self.settings = values  # a new dict: a thread reading the old one keeps a consistent snapshot

    def apply(self, values: dict[str, Any]) -> None:
        """Put a validated change into effect; raise ``ValueError`` to refuse it."""
        raise NotImplementedError

    def diagnostic_status(self) -> tuple[bytes, str, Mapping[str, Any]]:
        """(level, message, values) of the node's status now."""
        raise NotImplementedError


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


def spin_node(
    node_factory: Callable[[], Node], args: list[str] | None = None, stop: threading.Event | None = None
) -> int:
    """Entry point body: init, spin until SIGINT/SIGTERM, shut down cleanly, exit 0.

    SIGINT and SIGTERM only set a flag that the spin loop checks every 0.1 s:
    rclpy's own handler would shut the context down, or raise
    KeyboardInterrupt, wherever the main thread is, including inside native
    code (a message being taken, an ONNX export during start-up), which ends
    the process with an error or an abort instead of a clean stop.

    A node whose configuration is invalid raises ``ValueError`` from its
    constructor, one that needs a package this install lacks ``ImportError``;
    either is reported in one line and the process exits with 2.
    ``stop``: a flag already raised by the caller (``entry``), else one is raised here.
    """
    with nullcontext(stop) if stop is not None else stop_flag() as stop:
        rclpy.init(args=args if args is not None else sys.argv, signal_handler_options=SignalHandlerOptions.NO)
        node = None
        try:
            node = node_factory()
            executor = SingleThreadedExecutor()
            executor.add_node(node)
            while not stop.is_set() and rclpy.ok():
                executor.spin_once(timeout_sec=0.1)
        except ExternalShutdownException:
            pass
        except (ValueError, ImportError, ParameterException) as exc:  # a bad setting or model, a missing package
            print(f"error: {exc}", file=sys.stderr)
            return 2
        finally:
            if node is not None:
                node.destroy_node()
            rclpy.try_shutdown()
    return 0
