"""Running the node graph locally: ``adascale run``."""

from __future__ import annotations

import argparse

from adascale_ros.cli.options import PARAMS_FILE
from adascale_ros.graph.definition import DEFAULT_CAMERA_TOPIC


def add_commands(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser("run", parents=[PARAMS_FILE], help="start the node graph locally and show its status")
    run.add_argument("--duration", type=float, help="stop after this many seconds (default: until Ctrl-C)")
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warn", "error"])
    run.add_argument("--namespace", default="", help="run every node in this namespace (one per robot)")
    run.add_argument(
        "--camera-topic",
        default=DEFAULT_CAMERA_TOPIC,
        help=f"raw image topic; a relative one resolves in the namespace (default: {DEFAULT_CAMERA_TOPIC})",
    )
    run.add_argument(
        "--latency-budget-ms", type=float, help="the selector's latency budget [ms] (default: the parameters file's)"
    )
    run.add_argument(
        "--budget-fraction-of-frame-period",
        type=float,
        help="with no latency budget, this fraction of the camera's frame period is the budget (default: the"
        " parameters file's)",
    )
    run.set_defaults(func=_cmd_run)


def _cmd_run(args: argparse.Namespace) -> int:
    from adascale_ros.graph.definition import node_graph
    from adascale_ros.graph.runner import run_graph
    from adascale_ros.package_files import default_params_file

    params_file = args.params_file or default_params_file()
    specs = node_graph(
        args.camera_topic,
        namespace=args.namespace,
        latency_budget_ms=args.latency_budget_ms,
        budget_fraction_of_frame_period=args.budget_fraction_of_frame_period,
    )
    return run_graph(specs, params_file, args.duration, args.log_level)
