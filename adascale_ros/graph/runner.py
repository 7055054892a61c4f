"""``adascale run``: the local runner.

Starts the node graph of ``adascale_ros.graph.definition`` as separate processes that
talk over DDS (as ``ros2 launch`` would), forwards their output with a
``[node]`` prefix, prints a live status line, and stops every child on Ctrl-C,
SIGTERM, the end of ``--duration``, or the death of a node.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from adascale_ros.graph.definition import RESOURCE_STATE_TOPIC, SELECTION_TOPIC, NodeSpec
from adascale_ros.signals import stop_flag

# Grace before SIGKILL. Nodes end in well under 2 s on their own; four nodes
# stopping at once on a busy 2-core machine have been seen to need more.
STOP_TIMEOUT_S = 5.0


class GraphProcesses:
    """The graph's nodes as child processes, each in its own process group."""

    def __init__(self, specs: Sequence[NodeSpec], params_file: Path | None, log_level: str = "info") -> None:
        self.specs = list(specs)
        self.params_file = params_file
        self.log_level = log_level
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._threads: list[threading.Thread] = []

    def start(self, out: IO[str] = sys.stdout) -> None:
        for spec in self.specs:
            proc = subprocess.Popen(
                spec.command(self.params_file, self.log_level),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                # A group of its own, so our signal handling decides when it stops (a terminal's Ctrl-C
                # reaches only the foreground group), in this session, as ``ros2 launch`` keeps its nodes.
                process_group=0,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
            self.processes[spec.name] = proc
            thread = threading.Thread(target=_forward, args=(spec.name, proc.stdout, out), daemon=True)
            thread.start()
            self._threads.append(thread)

    def exited(self) -> dict[str, int]:
        """Nodes that have ended, with their exit codes."""
        return {n: p.returncode for n, p in self.processes.items() if p.poll() is not None}

    def cpu_seconds(self) -> dict[str, float]:
        """User + system CPU time each running node has used so far [s] (psutil; children not included)."""
        import psutil

        seconds = {}
        for name, proc in self.processes.items():
            try:
                times = psutil.Process(proc.pid).cpu_times()
            except psutil.Error:  # ended: its time is lost with it
                continue
            seconds[name] = times.user + times.system
        return seconds

    def stop(self) -> dict[str, int]:
        """SIGINT every node, escalate to SIGKILL after the timeout; return exit codes."""
        for proc in self.processes.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for proc in self.processes.values():
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for thread in self._threads:
            thread.join(timeout=1.0)
        return {n: p.returncode for n, p in self.processes.items()}


def unclean_exits(codes: dict[str, int]) -> dict[str, int]:
    """Nodes that did not end with exit 0 (a node stopped by a signal, even while starting, exits 0)."""
    return {n: c for n, c in codes.items() if c != 0}


def unexpected_errors(names: Sequence[str], log_text: str, diagnostics: dict[str, dict[str, str]]) -> dict[str, str]:
    """Nodes that raised: tracebacks in their output as ``GraphProcesses`` forwards it, and frames that
    failed with an unexpected error (``skipped.internal`` in their latest diagnostics). Others are left out."""
    found = {}
    for name in names:
        tracebacks = log_text.count(f"[{name}] Traceback")
        internal = int(float(diagnostics.get(name, {}).get("skipped.internal", 0)))
        if tracebacks or internal:
            found[name] = f"{tracebacks} tracebacks, {internal} frames failed with an unexpected error"
    return found


def _forward(name: str, stream: IO[bytes] | None, out: IO[str]) -> None:
    if stream is None:
        return
    for raw in iter(stream.readline, b""):
        out.write(f"[{name}] {raw.decode(errors='replace').rstrip()}\n")
        out.flush()


def _fmt(value: float, spec: str = ".2f") -> str:
    return format(value, spec) if math.isfinite(value) else "n/a"


def status_line(state, selection=None) -> str:  # noqa: ANN001 - ResourceState, VariantSelection
    """One line of what the graph is doing, for the terminal."""
    line = (
        f"load {_fmt(state.load_index)} (forecast {_fmt(state.load_index_forecast)} "
        f"in {_fmt(state.forecast_horizon_s, '.1f')} s) | cpu {_fmt(state.cpu_util)} "
        f"mem {_fmt(state.mem_util)} gpu {_fmt(state.gpu_util)} | "
        f"{_fmt(state.cpu_freq_mhz, '.0f')} MHz | power {_fmt(state.power_w, '.1f')} W"
    )
    if selection is not None:
        budget = selection.latency_budget_ms
        line += (
            f" | variant {selection.variant_id} (predicted {_fmt(selection.predicted_latency_ms)} ms,"
            f" budget {_fmt(budget) if budget != math.inf else 'none'})"
        )
    return line


def run_graph(
    specs: Sequence[NodeSpec],
    params_file: Path | None,
    duration_s: float | None,
    log_level: str = "info",
    status_period_s: float = 1.0,
) -> int:
    """Run the graph until interrupted or ``duration_s``; return the exit code."""
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    from adascale_msgs.msg import ResourceState, VariantSelection
    from adascale_ros.nodes.common import latched_qos

    graph = GraphProcesses(specs, params_file, log_level)
    # The runner handles SIGINT/SIGTERM itself: a flag ends the loop below, so the
    # context is never shut down under a spin_once in progress.
    with stop_flag() as stop:
        rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
        # In the graph's namespace, so that the topic names below resolve to its topics.
        node = rclpy.create_node("adascale_run", namespace=f"/{specs[0].namespace}" if specs else None)
        latest: deque[ResourceState] = deque(maxlen=1)
        node.create_subscription(ResourceState, RESOURCE_STATE_TOPIC, lambda m: latest.append(m), 10)
        selection: deque[VariantSelection] = deque(maxlen=1)
        node.create_subscription(VariantSelection, SELECTION_TOPIC, lambda m: selection.append(m), latched_qos())
        graph.start()
        failed: dict[str, int] = {}
        deadline = math.inf if duration_s is None else time.monotonic() + duration_s
        next_status = time.monotonic() + status_period_s
        try:
            while not stop.is_set() and time.monotonic() < deadline:
                rclpy.spin_once(node, timeout_sec=0.1)
                failed = graph.exited()
                if failed:
                    break
                if time.monotonic() >= next_status:
                    next_status += status_period_s
                    if latest:
                        print(status_line(latest[-1], selection[-1] if selection else None), flush=True)
                    else:
                        print("waiting for the first resource state ...", flush=True)
        finally:
            codes = graph.stop()
            node.destroy_node()
            rclpy.try_shutdown()
    if failed:
        print(f"stopped: node(s) exited early: {failed}", file=sys.stderr)
        return 1
    bad = unclean_exits(codes)
    if bad:
        print(f"node(s) did not exit cleanly: {bad}", file=sys.stderr)
        return 1
    return 0
