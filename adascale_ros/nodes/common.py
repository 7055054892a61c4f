"""What every adascale node shares: start-up, parameter changes, /diagnostics and the entry point."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from typing import Any

import rclpy
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions

from adascale_ros.nodes.diagnostics import DiagnosticsPublisher
from adascale_ros.nodes.parameters import Param, check_choices, current_values, declare_parameters, validating_callback
from adascale_ros.signals import stop_flag

# The helper nodes' CPU niceness: the inference node's threads (niceness 0) then win a core from
# their bursts (docs/decisions/helper-nodes-yield-the-cpu.md).
HELPER_NICE = 10


def nice_parameter() -> Param:
    """The ``nice`` parameter of a node that yields the CPU to the classifier."""
    return Param(
        HELPER_NICE,
        "CPU niceness of the node's process, 0-19 (higher yields more); never lowers an inherited one.",
        read_only=True,
        low=0,
        high=19,
    )


def raise_niceness(nice: int) -> None:
    """Raise every thread of this process to niceness ``nice`` (Linux niceness is per thread; one that
    is already nicer keeps its own)."""
    tasks = [int(t) for t in os.listdir("/proc/self/task")] if os.path.isdir("/proc/self/task") else [0]
    for task in tasks:
        try:
            if os.getpriority(os.PRIO_PROCESS, task) < nice:
                os.setpriority(os.PRIO_PROCESS, task, nice)
        except ProcessLookupError:  # a thread that ended meanwhile
            continue


def latched_qos() -> QoSProfile:
    """The selection topic's QoS: reliable, transient local, depth 1, so a late joiner receives the variant in force."""
    return QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


class AdascaleNode(Node):
    """The start-up every adascale node shares.

    The constructor declares the node's parameter table (``Param``, with its
    descriptors: rclpy enforces the ranges), reads the values into ``settings``
    and checks the choices and then ``check`` (a ``ValueError`` refuses to start). Once the subclass has built
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
        check_choices(parameters, self.settings)
        if check is not None:
            check(self.settings)
        if "nice" in self.settings:
            raise_niceness(int(self.settings["nice"]))

    def model_dir(self) -> str:
        """The ``model_dir`` parameter, or the embedded default model when it is empty."""
        from adascale_ros.package_files import default_model_dir

        return self.settings["model_dir"] or str(default_model_dir())

    def serve(self) -> None:
        self.add_on_set_parameters_callback(validating_callback(self, self.parameter_table, self._change))
        self._diagnostics = DiagnosticsPublisher(self, self.kind, self.diagnostic_status)

    def _change(self, values: dict[str, Any]) -> None:
        check_choices(self.parameter_table, values)
        self.apply(values)
        self.settings = values  # a new dict: a thread reading the old one keeps a consistent snapshot

    def apply(self, values: dict[str, Any]) -> None:
        """Check a change beyond ranges and choices, and put into effect what ``settings`` alone does not
        (default: nothing); raise ``ValueError`` to refuse it."""

    def diagnostic_status(self) -> tuple[bytes, str, Mapping[str, Any]]:
        """(level, message, values) of the node's status now."""
        raise NotImplementedError


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
