"""Load: ``adascale load`` (drive stress-ng through a trace), ``record-load``, ``forecast-eval``."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_commands(sub: argparse._SubParsersAction) -> None:
    load = sub.add_parser("load", help="drive stress-ng through a load trace, phase by phase")
    load.add_argument("trace", help="a trace YAML, or a shipped one: steady, step, bursty, ramp")
    load.add_argument("--loop", action="store_true", help="start over at the end, until Ctrl-C")
    load.set_defaults(func=_cmd_load)

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


def _cmd_load(args: argparse.Namespace) -> int:
    import time

    from adascale_ros.load.traces import LoadTrace, play_trace, resolve_trace
    from adascale_ros.signals import stop_flag

    trace = LoadTrace.from_yaml(resolve_trace(args.trace))
    print(f"{trace.name}: {trace.description} ({trace.duration_s:g} s{', looping' if args.loop else ''})", flush=True)
    start = time.monotonic()
    # Ctrl-C and SIGTERM end the trace normally: the phase's stress-ng is stopped, exit 0.
    with stop_flag() as stop:
        play_trace(
            trace,
            on_phase=lambda i, p: print(f"[{time.monotonic() - start:7.1f} s] phase {i}: {p.describe()}", flush=True),
            loop=args.loop,
            should_stop=stop.is_set,
        )
    print(f"[{time.monotonic() - start:7.1f} s] {'stopped' if stop.is_set() else 'done'}", flush=True)
    return 0


def _cmd_record_load(args: argparse.Namespace) -> int:
    from adascale_ros.load.recorded import record_load_trace

    record_load_trace(args.out, args.seconds, args.rate_hz, args.bursty, args.seed)
    return 0


def _cmd_forecast_eval(args: argparse.Namespace) -> int:
    from adascale_ros.load.recorded import evaluate_forecasters, read_load_trace

    trace = read_load_trace(args.trace)
    report = evaluate_forecasters(trace, order=args.order, window=args.window, horizon=args.horizon)
    print(report.to_table())
    if args.json:
        args.json.write_text(report.to_json())
    return 0
