"""Entry points of the nodes (console scripts and the runner's ``python -m``).

The stop flag is raised before anything heavy is imported: importing a node
module loads rclpy, and the inference node torch and ONNX Runtime, which
takes seconds. A SIGINT or SIGTERM arriving then would otherwise end the
process with a traceback (or a signal exit code) instead of exit 0.
"""

from __future__ import annotations

import importlib
import os
import sys

from adascale_ros.signals import stop_flag

# Each node's console script and module; the graph definition names its nodes' modules from here.
NODE_MODULES = {
    name: f"adascale_ros.nodes.{name}" for name in ("resource_monitor", "profiler", "selector", "elastic_inference")
}


def run(executable: str, args: list[str] | None = None) -> int:
    """Import the node's module under the stop flag, then spin it until a signal (exit 0)."""
    with stop_flag() as stop:
        module = importlib.import_module(NODE_MODULES[executable])
        if stop.is_set():
            return 0
        return module.main(args, stop)


def exit_now(code: int) -> None:
    """End the process without the interpreter's teardown.

    Tearing down torch and ONNX Runtime takes about a second on a small
    machine, which is most of a node's time to stop. By the time ``run``
    returns, the node is destroyed and rclpy shut down (its log files
    flushed); nothing of ours is left to finalise.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def resource_monitor() -> None:
    exit_now(run("resource_monitor"))


def profiler() -> None:
    exit_now(run("profiler"))


def selector() -> None:
    exit_now(run("selector"))


def elastic_inference() -> None:
    exit_now(run("elastic_inference"))


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in NODE_MODULES:
        sys.exit(f"usage: python -m adascale_ros.nodes.entry {{{','.join(NODE_MODULES)}}} [--ros-args ...]")
    exit_now(run(sys.argv[1]))
