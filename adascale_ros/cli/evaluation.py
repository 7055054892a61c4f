"""Evaluation: ``adascale evaluate``, ``deadline-by-level``, ``results-table``, ``replay-correction``, ``soak``,
``campaign``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from adascale_ros.cli.options import JSON_PROGRESS, LOAD_OWN_SESSION, MODEL_DIR, PARAMS_FILE


def add_commands(sub: argparse._SubParsersAction) -> None:
    evl = sub.add_parser(
        "evaluate",
        parents=[MODEL_DIR, PARAMS_FILE, JSON_PROGRESS, LOAD_OWN_SESSION],
        help="replay a camera bag under a load trace once per policy and score it",
    )
    evl.add_argument(
        "--bag", type=Path, required=True,
        help="a labelled camera bag (adascale make-bag), or any camera recording with --unlabelled",
    )  # fmt: skip
    evl.add_argument("--trace", default="step", help="a trace YAML, or a shipped one (default: step)")
    evl.add_argument(
        "--policies",
        nargs="+",
        default=["adascale", "static-top", "static-smallest", "static-mid", "reactive", "oracle"],
        help="adascale static-top static-smallest static-mid reactive oracle (default: all)",
    )
    evl.add_argument(
        "--arm",
        action="append",
        default=[],
        metavar="LABEL:NODE.PARAM=VALUE[,...]",
        help="also run AdaScale with these node parameters as the policy adascale+LABEL, interleaved with the"
        " others (e.g. noee:elastic_inference.early_exit_threshold=0); repeatable",
    )
    evl.add_argument("--out", type=Path, required=True, help="report folder")
    evl.add_argument(
        "--budget-ms",
        type=_budget,
        default="auto",
        help="latency budget per frame [ms], or auto: 1.25 x static-top's idle p90 at camera rate in the model's"
        " calibration report, fixed before anything runs (default: auto)",
    )
    evl.add_argument("--duration", type=float, help="seconds per policy (default: the trace's duration)")
    evl.add_argument(
        "--repeats", type=int, default=1,
        help="runs per policy, interleaved round by round; the table pools them, the report lists each (default: 1)",
    )  # fmt: skip
    evl.add_argument("--camera-topic", default="/camera/image_raw")
    evl.add_argument(
        "--unlabelled",
        action="store_true",
        help="a recording without labels (e.g. ros2 bag record on the robot): accuracy is agreement with the top "
        "variant's answers, computed offline before the runs",
    )
    evl.add_argument("--rescore", action="store_true", help="score the runs saved in --out again; run nothing")
    evl.set_defaults(func=_cmd_evaluate)

    reach = sub.add_parser(
        "deadline-by-level",
        parents=[MODEL_DIR],
        help="per load level of the model's calibration, which variant timed at camera rate met the deadline",
    )
    reach.add_argument(
        "--budget-ms",
        type=_budget,
        default="auto",
        help="the deadline [ms], or auto: as adascale evaluate's (default: auto)",
    )
    reach.set_defaults(func=_cmd_deadline_by_level)

    table = sub.add_parser(
        "results-table", help="the results table of a saved evaluation report, as the README shows it"
    )
    table.add_argument("report", type=Path, help="an evaluation.json written by adascale evaluate")
    table.set_defaults(func=_cmd_results_table)

    rc = sub.add_parser(
        "replay-correction",
        help="replay an evaluation's recorded results through the profiler's latency correction, other settings",
    )
    rc.add_argument("evaluation", type=Path, help="an adascale evaluate --out folder (its runs/)")
    rc.add_argument("--tail-windows", type=int, nargs="+", default=[30, 100], help="(default: 30 100)")
    rc.add_argument("--window", type=int, default=30, help="results per variant offset (default: 30)")
    rc.add_argument("--quantile", type=float, default=0.9, help="tail quantile (default: 0.9)")
    rc.add_argument("--model-dir", type=Path, help="the model the runs used (default: the embedded default model)")
    rc.set_defaults(func=_cmd_replay_correction)

    soak = sub.add_parser(
        "soak",
        parents=[MODEL_DIR, PARAMS_FILE, JSON_PROGRESS, LOAD_OWN_SESSION],
        help="run the full graph for minutes under a repeating load trace; memory, drift",
    )
    soak.add_argument("--minutes", type=float, default=15.0, help="how long (default: 15)")
    soak.add_argument("--bag", type=Path, default=Path("build/bags/fashion-mnist-test"), help="a labelled camera bag")
    soak.add_argument("--trace", default="bursty", help="a trace YAML, or a shipped one (default: bursty)")
    soak.add_argument("--out", type=Path, default=Path("build/soak"), help="report folder (default: build/soak)")
    soak.add_argument(
        "--budget-ms", type=float, help="latency budget per frame [ms] (default: as adascale evaluate's auto)"
    )
    soak.set_defaults(func=_cmd_soak)

    cam = sub.add_parser(
        "campaign",
        parents=[MODEL_DIR, JSON_PROGRESS],
        help="send malformed messages of every input type to the nodes; count and check",
    )
    cam.add_argument("--messages", type=int, default=1000, help="malformed messages per input type (default: 1000)")
    cam.add_argument("--seed", type=int, default=0, help="hypothesis seed (default: 0)")
    cam.add_argument("--out", type=Path, default=Path("build/campaign"), help="report folder (default: build/campaign)")
    cam.set_defaults(func=_cmd_campaign)


def _budget(value: str) -> float | str:
    """--budget-ms: milliseconds, or auto."""
    if value == "auto":
        return value
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected milliseconds or auto, got {value!r}") from None


def _cmd_deadline_by_level(args: argparse.Namespace) -> int:
    from adascale_ros.harness.evaluation import calibrated_deadline, deadline_by_level
    from adascale_ros.package_files import default_model_dir

    model_dir = args.model_dir or default_model_dir()
    budget, source = (args.budget_ms, "--budget-ms") if args.budget_ms != "auto" else calibrated_deadline(model_dir)
    if not budget > 0:
        raise ValueError(f"--budget-ms must be > 0 ms, got {budget:g}")
    reach = deadline_by_level(model_dir, budget)
    print(f"deadline {budget:g} ms: {source}")
    print()
    print("| load level | most accurate within it at p90 | p90 ms | fastest timed | p90 ms |")
    print("|---|---|---:|---|---:|")
    for row in reach:
        within = ("none", "-") if row.within is None else (f"`{row.within}`", f"{row.within_p90_ms:.2f}")
        print(f"| {row.level} | {within[0]} | {within[1]} | `{row.fastest}` | {row.fastest_p90_ms:.2f} |")
    missed = [row.level for row in reach if row.within is None]
    print()
    if missed:
        print(
            f"At {len(missed)} of {len(reach)} levels ({', '.join(missed)}) no timed variant met {budget:g} ms at p90,"
            " the cheapest that classifies included: under those loads no variant can be expected to keep it"
            " nine frames in ten, whichever the selector picks."
        )
    else:
        print(f"At every level some timed variant met {budget:g} ms at p90.")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import json
    from dataclasses import replace

    from adascale_ros.harness.evaluation import Arm, EvaluationConfig, calibrated_deadline, evaluate, load_runs, score
    from adascale_ros.harness.records import saved_run_config
    from adascale_ros.harness.report import markdown_table, target_line
    from adascale_ros.load.traces import LoadTrace, resolve_trace
    from adascale_ros.package_files import default_model_dir, default_params_file
    from adascale_ros.signals import stop_flag

    if not args.bag.exists():
        raise FileNotFoundError(f"{args.bag}: no such bag (write one with `adascale make-bag`)")
    model_dir = args.model_dir or default_model_dir()
    budget = (args.budget_ms, "--budget-ms") if args.budget_ms != "auto" else calibrated_deadline(model_dir)
    arms = tuple(Arm.parse(text) for text in args.arm)
    config = EvaluationConfig(
        bag=args.bag,
        trace=LoadTrace.from_yaml(resolve_trace(args.trace)),
        policies=tuple(dict.fromkeys([*args.policies, *(arm.policy for arm in arms)])),
        out=args.out,
        model_dir=model_dir,
        params_file=args.params_file or default_params_file(),
        budget_ms=budget[0],
        budget_source=budget[1],
        duration_s=args.duration,
        camera_topic=args.camera_topic,
        repeats=args.repeats,
        unlabelled=args.unlabelled,
        load_own_session=args.load_own_session,
        arms=arms,
    )
    say = (lambda line: print(line, file=sys.stderr, flush=True)) if args.json else print
    if args.rescore:
        saved = saved_run_config(args.out / "runs")
        budgets, repeats = saved["budgets_ms"], saved["repeats"]
        config = replace(config, budget_ms=budgets[0], repeats=repeats)
        report = score(config, load_runs(config), saved["variants"], budgets)
    else:
        with stop_flag() as stop:
            report = evaluate(config, stop, say)
        if report is None:
            return 0
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(markdown_table(report["policies"], report["variants"]))
        for check in report["targets"]:
            print(f"[{'met' if check['passed'] else 'NOT met'}] {target_line(check)}")
        print(f"report: {args.out / 'evaluation.md'} (JSON, plots and per-run records beside it)")
    return 0


def _cmd_results_table(args: argparse.Namespace) -> int:
    import json

    from adascale_ros.harness.report import results_table

    try:
        report = json.loads(args.report.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{args.report}: not an evaluation report ({exc})") from exc
    print(results_table(report, args.report))
    return 0


def _cmd_replay_correction(args: argparse.Namespace) -> int:
    from adascale_ros.harness.correction_replay import (
        evaluation_deadline_ms,
        load_evaluation_runs,
        markdown,
        replay_evaluation,
    )
    from adascale_ros.package_files import default_model_dir
    from adascale_ros.profiling.predictor import LatencyPredictor

    runs = load_evaluation_runs(args.evaluation)
    predictor = LatencyPredictor.load(args.model_dir or default_model_dir())
    deadline = evaluation_deadline_ms(args.evaluation)
    results = replay_evaluation(runs, predictor, args.tail_windows, args.window, args.quantile, deadline)
    print(markdown(results, args.quantile, deadline))
    return 0


def _cmd_soak(args: argparse.Namespace) -> int:
    import json

    from adascale_ros.harness.evaluation import EvaluationConfig, calibrated_deadline
    from adascale_ros.harness.soak import soak
    from adascale_ros.load.traces import LoadTrace, resolve_trace
    from adascale_ros.package_files import default_model_dir, default_params_file
    from adascale_ros.signals import stop_flag

    if not args.bag.exists():
        raise FileNotFoundError(f"{args.bag}: no such bag (write one with `adascale make-bag`)")
    if not args.minutes > 0:
        raise ValueError(f"--minutes must be > 0, got {args.minutes}")
    model_dir = args.model_dir or default_model_dir()
    budget = (args.budget_ms, "--budget-ms") if args.budget_ms is not None else calibrated_deadline(model_dir)
    config = EvaluationConfig(
        bag=args.bag,
        trace=LoadTrace.from_yaml(resolve_trace(args.trace)),
        policies=("adascale",),
        out=args.out,
        model_dir=model_dir,
        params_file=args.params_file or default_params_file(),
        budget_ms=budget[0],
        budget_source=budget[1],
        duration_s=args.minutes * 60.0,
        load_own_session=args.load_own_session,
    )
    say = (lambda line: print(line, file=sys.stderr, flush=True)) if args.json else print
    with stop_flag() as stop:
        report = soak(config, stop, say)
    if report is None:
        print("interrupted: no report written", file=sys.stderr)
        return 0
    print(json.dumps(report.to_json(), indent=1) if args.json else report.markdown())
    return 0 if report.passed else 1


def _cmd_campaign(args: argparse.Namespace) -> int:
    import json

    from adascale_ros.harness.campaign import run_campaign, write_report
    from adascale_ros.package_files import default_model_dir
    from adascale_ros.signals import stop_flag

    if args.messages < 1:
        raise ValueError(f"--messages must be >= 1, got {args.messages}")
    args.out.mkdir(parents=True, exist_ok=True)
    say = (lambda line: print(line, file=sys.stderr, flush=True)) if args.json else print
    log = args.out / "nodes.log"
    with stop_flag() as stop:
        try:
            report = run_campaign(
                args.model_dir or default_model_dir(), args.messages, args.seed, log, say, stop.is_set
            )
        except RuntimeError as exc:
            print(f"adascale campaign: error: {exc} (node output: {log})", file=sys.stderr)
            return 1
    write_report(report, args.out)
    print(json.dumps(report.to_json(), indent=1) if args.json else report.table())
    return 0 if report.passed else 1
