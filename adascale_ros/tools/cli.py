"""The ``adascale`` command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _cmd_run(args: argparse.Namespace) -> int:
    from adascale_ros.bringup import default_params_file, node_graph
    from adascale_ros.tools.runner import run_graph

    params_file = args.params_file or default_params_file()
    return run_graph(node_graph(), params_file, args.duration, args.log_level)


def _cmd_record_load(args: argparse.Namespace) -> int:
    from adascale_ros.tools.load_trace import record_load_trace

    record_load_trace(args.out, args.seconds, args.rate_hz, args.bursty, args.seed)
    return 0


def _cmd_forecast_eval(args: argparse.Namespace) -> int:
    from adascale_ros.tools.load_trace import evaluate_forecasters, read_load_trace

    trace = read_load_trace(args.trace)
    report = evaluate_forecasters(trace, order=args.order, window=args.window, horizon=args.horizon)
    print(report.to_table())
    if args.json:
        args.json.write_text(report.to_json())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="adascale", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="start the node graph locally and show its status")
    run.add_argument("--params-file", type=Path, help="ROS parameters file (default: config/adascale.yaml)")
    run.add_argument("--duration", type=float, help="stop after this many seconds (default: until Ctrl-C)")
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warn", "error"])
    run.set_defaults(func=_cmd_run)

    rec = sub.add_parser("record-load", help="record the load index of this machine to a CSV trace")
    rec.add_argument("--out", type=Path, required=True)
    rec.add_argument("--seconds", type=float, default=60.0)
    rec.add_argument("--rate-hz", type=float, default=10.0)
    rec.add_argument("--bursty", action="store_true", help="drive random stress-ng bursts while recording")
    rec.add_argument("--seed", type=int, default=0)
    rec.set_defaults(func=_cmd_record_load)

    ev = sub.add_parser("forecast-eval", help="score the load forecaster against baselines on a trace")
    ev.add_argument("trace", type=Path)
    ev.add_argument("--order", type=int, default=3)
    ev.add_argument("--window", type=int, default=300)
    ev.add_argument("--horizon", type=int, default=10, help="steps ahead")
    ev.add_argument("--json", type=Path, help="also write the report as JSON here")
    ev.set_defaults(func=_cmd_forecast_eval)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError) as exc:
        print(f"adascale {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
