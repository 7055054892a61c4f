"""The ``adascale`` command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from adascale_ros.bringup import DEFAULT_CAMERA_TOPIC


def _cmd_run(args: argparse.Namespace) -> int:
    from adascale_ros.bringup import default_params_file, node_graph
    from adascale_ros.tools.runner import run_graph

    params_file = args.params_file or default_params_file()
    specs = node_graph(
        args.camera_topic,
        namespace=args.namespace,
        latency_budget_ms=args.latency_budget_ms,
        budget_fraction_of_frame_period=args.budget_fraction_of_frame_period,
    )
    return run_graph(specs, params_file, args.duration, args.log_level)


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


def _cmd_train(args: argparse.Namespace) -> int:
    from adascale_ros.model.backbone_pipeline import is_backbone_config
    from adascale_ros.model.pipeline import read_run_config

    if is_backbone_config(read_run_config(args.config)):
        return _train_backbone(args)
    from adascale_ros.model.pipeline import TrainRunConfig, train_model

    config = TrainRunConfig.from_yaml(args.config)
    if args.mode:
        from dataclasses import replace

        config = replace(config, training=replace(config.training, mode=args.mode))
    train_model(config, args.out, progress=not args.no_progress, init_from=args.init_from)
    return 0


def _train_backbone(args: argparse.Namespace) -> int:
    from adascale_ros.model.backbone_pipeline import BackboneRunConfig, finetune_model
    from adascale_ros.model.pipeline import read_run_config

    if args.mode:
        raise ValueError("--mode is for the tiny network; a backbone is tuned on drawn paths")
    try:
        config = BackboneRunConfig.from_dict(read_run_config(args.config))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{args.config}: {exc}") from None
    workdir = args.workdir or args.out.parent / f"{args.out.name}.work"
    from adascale_ros.runtime.onnx_modules import cache_root

    finetune_model(
        config,
        args.out,
        workdir,
        progress=not args.no_progress,
        init_from=args.init_from,
        feature_cache=cache_root() / "features",  # keyed by content: shared by every run and --best-on-test
    )
    return 0


def _cmd_adapt(args: argparse.Namespace) -> int:
    from adascale_ros.model.artifacts import load_model
    from adascale_ros.model.backbone_pipeline import adapt_model
    from adascale_ros.model.datasets import load_unlabelled_folder
    from adascale_ros.model.files import card_resolutions
    from adascale_ros.runtime.onnx_modules import cache_root
    from adascale_ros.tools.bags import bag_frames

    model = load_model(args.model_dir)
    size = max(card_resolutions(model.card) or (model.card["input"]["height"],))
    if (args.frames / "metadata.yaml").is_file() or args.frames.suffix in (".mcap", ".db3"):
        frames = bag_frames(args.frames, args.topic, size, args.limit)
    else:
        frames = load_unlabelled_folder(args.frames, size, limit=args.limit)
    workdir = args.workdir or args.out.parent / f"{args.out.name}.work"
    card = adapt_model(
        model, frames, args.out, workdir, cache_root() / "features", args.epochs, progress=not args.no_progress
    )
    agreement = card["adapted"]["mean_agreement_per_exit"]
    print("mean agreement with the largest variant on the held-out frames, per exit:")
    for name in ("before", "after"):
        print(f"  {name:<6} " + " / ".join(f"{a:.1%}" for a in agreement[name]))
    return 0


def _cmd_variants(args: argparse.Namespace) -> int:
    import json

    from adascale_ros.model.artifacts import load_model
    from adascale_ros.model.files import load_variant_table
    from adascale_ros.model.pipeline import compare_prefix_reuse, format_variant_table, reevaluate

    if args.best_on_test:
        from adascale_ros.model.backbone_pipeline import format_best_variants, score_best_variants

        model = load_model(args.model_dir)
        if model.card["network"].get("kind") != "backbone":
            raise ValueError("--best-on-test is for a backbone model (its variants have resolutions)")
        from adascale_ros.runtime.onnx_modules import cache_root

        report = score_best_variants(model, cache_root() / "features", progress=not args.json)
        tiny = load_variant_table(args.compare) if args.compare else None
        print(json.dumps(report, indent=1) if args.json else format_best_variants(report, tiny))
        return 0
    if args.evaluate or args.compare_reuse:
        model = load_model(args.model_dir)
        table = reevaluate(model, progress=not args.json) if args.evaluate else load_variant_table(args.model_dir)
        if args.compare_reuse:
            table["prefix_reuse"] = compare_prefix_reuse(model, args.compare_reuse, progress=not args.json)
    else:
        table = load_variant_table(args.model_dir)
    if args.json:
        print(json.dumps(table, indent=1))
    else:
        print(format_variant_table(table, args.limit))
        if "prefix_reuse" in table:
            print("prefix reuse:", json.dumps(table["prefix_reuse"]))
    return 0


def _cmd_early_exit(args: argparse.Namespace) -> int:
    import json

    from adascale_ros.model.artifacts import load_model
    from adascale_ros.model.backbone_pipeline import card_dataset
    from adascale_ros.model.datasets import load_splits
    from adascale_ros.model.elastic import Variant
    from adascale_ros.model.evaluation import early_exit_accuracy, lowest_threshold
    from adascale_ros.model.files import load_variant_table
    from adascale_ros.model.finetune import model_input
    from adascale_ros.tools.evaluate import static_variants

    model = load_model(args.model_dir)
    top = static_variants(load_variant_table(args.model_dir))["static-top"]
    variant = Variant.parse(args.variant or top)
    model.net.check_variant(variant)
    splits = load_splits(card_dataset(model.card))
    inputs = None
    if variant.resolution is not None:  # a backbone: RGB at the variant's resolution
        inputs = lambda images: model_input(images, variant.resolution, model.normalize)  # noqa: E731
    report = {
        name: early_exit_accuracy(model.net, data, model.normalize, variant, args.thresholds, inputs=inputs)
        for name, data in (("val", splits.val), ("test", splits.test))
    }
    report["lowest_threshold"] = lowest_threshold(report["val"], args.max_loss / 100)
    report["max_loss_points"] = args.max_loss
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    print(
        f"{variant.id}: accuracy without early exit: val {report['val']['accuracy']:.2%}, "
        f"test {report['test']['accuracy']:.2%}"
    )
    print("| threshold | val accuracy | test accuracy | test share answered per exit |")
    print("|---:|---:|---:|---|")
    for val, test in zip(report["val"]["rows"], report["test"]["rows"], strict=True):
        shares = " / ".join(f"{s:.0%}" for s in test["exit_share"])
        print(f"| {val['threshold']:g} | {val['accuracy']:.2%} | {test['accuracy']:.2%} | {shares} |")
    print(f"lowest threshold within {args.max_loss:g} points on val: {report['lowest_threshold']}")
    return 0


def _cmd_baselines(args: argparse.Namespace) -> int:
    from adascale_ros.model.artifacts import load_model
    from adascale_ros.model.baselines import BASELINES, markdown_table, run_baselines

    model = load_model(args.model_dir)
    names = args.only or BASELINES
    report = run_baselines(
        model,
        args.out or args.model_dir,
        names=names,
        epochs=args.epochs,
        lr=args.lr,
        limit_train=args.limit_train,
        progress=not args.no_progress,
    )
    print(markdown_table(report["rows"]))
    return 0


def _cmd_compare_training(args: argparse.Namespace) -> int:
    from adascale_ros.model.baselines import compare_training
    from adascale_ros.model.pipeline import TrainRunConfig

    report = compare_training(
        TrainRunConfig.from_yaml(args.config), args.modes, args.out, progress=not args.no_progress
    )
    print((args.out / "training_modes.md").read_text(), end="")
    return 0 if report["results"] else 1


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


def _cmd_make_bag(args: argparse.Namespace) -> int:
    from adascale_ros.model.datasets import DatasetSpec, load_splits
    from adascale_ros.tools.bags import BagSpec, make_camera_bag

    splits = load_splits(DatasetSpec(name=args.dataset, root=args.root))
    part = getattr(splits, args.split)
    count = min(args.limit, len(part)) if args.limit else len(part)
    images = part.images[:count].numpy()  # (N, C, H, W)
    images = images[:, 0] if images.shape[1] == 1 else images.transpose(0, 2, 3, 1)
    spec = BagSpec(width=args.width, height=args.height, rate_hz=args.rate_hz, camera_topic=args.camera_topic)
    make_camera_bag(args.out, images, part.labels[:count].numpy(), part.classes, spec)
    print(
        f"{args.out}: {count} {args.dataset} {args.split} frames, {args.width}x{args.height} rgb8 at "
        f"{args.rate_hz:g} Hz on {spec.camera_topic}, labels on {spec.labels_topic} ({count / args.rate_hz:g} s)"
    )
    return 0


SUBSCRIBER_WAIT_S = 30.0


def _cmd_replay(args: argparse.Namespace) -> int:
    import importlib
    import time

    import rclpy
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from rclpy.signals import SignalHandlerOptions

    from adascale_ros.signals import stop_flag
    from adascale_ros.tools.bags import ReplaySpec, bag_messages, bag_topics, replay, replay_offer

    spec = ReplaySpec(rate=args.rate, loop=args.loop, start_offset_s=args.start_offset)
    if args.clock is not None and not args.clock > 0:
        raise ValueError(f"--clock must be > 0 Hz, got {args.clock}")
    topics = bag_topics(args.bag)
    if args.topics:
        missing = set(args.topics) - set(topics)
        if missing:
            raise ValueError(f"{args.bag}: no topics {sorted(missing)}; it has {sorted(topics)}")
        topics = {t: topics[t] for t in args.topics}
    if not topics:
        raise ValueError(f"{args.bag}: the bag has no topics")
    # Our own signal handling: a flag ends the replay, then the context shuts down (exit 0).
    with stop_flag() as stop:
        rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
        node = rclpy.create_node("adascale_replay")
        try:
            publishers, offers = {}, []
            for topic in topics.values():
                package, _, name = topic.msgtype.split("/")
                message_class = getattr(importlib.import_module(f"{package}.msg"), name)
                reliability, durability = replay_offer(topic)
                qos = QoSProfile(
                    depth=10,
                    reliability=ReliabilityPolicy[reliability.upper()],
                    durability=DurabilityPolicy[durability.upper()],
                )
                publishers[topic.name] = node.create_publisher(message_class, topic.name, qos)
                offers.append(f"{topic.name} ({reliability})")
            clock = None
            if args.clock:
                from rosgraph_msgs.msg import Clock

                clock_publisher = node.create_publisher(
                    Clock, "/clock", QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
                )

                def clock(bag_ns: int) -> None:
                    msg = Clock()
                    msg.clock.sec, msg.clock.nanosec = divmod(bag_ns, 10**9)
                    clock_publisher.publish(msg)

            print(f"{args.bag}: {', '.join(sorted(offers))} at x{args.rate:g}", flush=True)
            deadline = time.monotonic() + SUBSCRIBER_WAIT_S
            while (
                not stop.is_set()
                and time.monotonic() < deadline
                and any(p.get_subscription_count() < args.wait_for_subscribers for p in publishers.values())
            ):
                time.sleep(0.05)
            stop.wait(args.delay)  # discovery: let subscribers match before the first message
            count = replay(
                lambda: bag_messages(args.bag, publishers),
                lambda m: publishers[m.topic].publish(m.data),
                spec,
                stop.is_set,
                clock=clock,
                clock_hz=args.clock or 40.0,
            )
            print(f"published {count} messages{' (stopped)' if stop.is_set() else ''}", flush=True)
        finally:
            node.destroy_node()
            rclpy.try_shutdown()
    return 0


def _cmd_results_table(args: argparse.Namespace) -> int:
    import json

    from adascale_ros.tools.scoring import results_table

    try:
        report = json.loads(args.report.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{args.report}: not an evaluation report ({exc})") from exc
    print(results_table(report, args.report))
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import json
    from dataclasses import replace

    from adascale_ros.bringup import default_model_dir, default_params_file
    from adascale_ros.load.traces import LoadTrace, resolve_trace
    from adascale_ros.signals import stop_flag
    from adascale_ros.tools.evaluate import EvaluationConfig, calibrated_deadline, evaluate, load_runs, score
    from adascale_ros.tools.scoring import markdown_table, target_line

    if not args.bag.exists():
        raise FileNotFoundError(f"{args.bag}: no such bag (write one with `adascale make-bag`)")
    model_dir = args.model_dir or default_model_dir()
    budget = (args.budget_ms, "--budget-ms") if args.budget_ms != "auto" else calibrated_deadline(model_dir)
    config = EvaluationConfig(
        bag=args.bag,
        trace=LoadTrace.from_yaml(resolve_trace(args.trace)),
        policies=tuple(dict.fromkeys(args.policies)),
        out=args.out,
        model_dir=model_dir,
        params_file=args.params_file or default_params_file(),
        budget_ms=budget[0],
        budget_source=budget[1],
        duration_s=args.duration,
        camera_topic=args.camera_topic,
        repeats=args.repeats,
        unlabelled=args.unlabelled,
    )
    say = (lambda line: print(line, file=sys.stderr, flush=True)) if args.json else print
    if args.rescore:
        saved = json.loads((args.out / "runs" / "config.json").read_text())
        # The budgets (one per round) and the number of repeats the runs were made with; records
        # from before per-round budgets hold one budget for every round.
        repeats = int(saved.get("repeats", 1))
        budgets = (
            [float(b) for b in saved["budgets_ms"]] if "budgets_ms" in saved else [float(saved["budget_ms"])] * repeats
        )
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


def _cmd_replay_correction(args: argparse.Namespace) -> int:
    from adascale_ros.bringup import default_model_dir
    from adascale_ros.profiling.predictor import LatencyPredictor
    from adascale_ros.tools.correction_replay import load_evaluation_runs, markdown, replay_evaluation

    runs = load_evaluation_runs(args.evaluation)
    predictor = LatencyPredictor.load(args.model_dir or default_model_dir())
    results = replay_evaluation(runs, predictor, args.tail_windows, args.window, args.quantile)
    print(markdown(results, args.quantile))
    return 0


def _cmd_soak(args: argparse.Namespace) -> int:
    import json

    from adascale_ros.bringup import default_model_dir, default_params_file
    from adascale_ros.load.traces import LoadTrace, resolve_trace
    from adascale_ros.signals import stop_flag
    from adascale_ros.tools.evaluate import EvaluationConfig, calibrated_deadline
    from adascale_ros.tools.soak import soak

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

    from adascale_ros.bringup import default_model_dir
    from adascale_ros.signals import stop_flag
    from adascale_ros.tools.campaign import run_campaign, write_report

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


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from adascale_ros.profiling.calibrate import REPORT, CalibrateOptions, calibrate_model
    from adascale_ros.signals import stop_on_sigterm

    options = CalibrateOptions(
        quick=args.quick,
        seconds_per_level=args.seconds_per_level,
        backend=args.backend,
        threads=args.threads,
        energy_profile=args.energy_profile,
        refit=args.refit,
    )
    with stop_on_sigterm():
        _, report = calibrate_model(args.model_dir, options, progress=not args.no_progress)
    print((args.model_dir / f"{REPORT}.md").read_text(), end="")
    timing = report["prediction_ms"]
    print(f"predicting all {timing['variants']} variants at two loads: median {timing['median_ms']} ms")
    return 0


def _predictor_state(predictor, args: argparse.Namespace):  # noqa: ANN001, ANN202
    """The state to predict at: the readings given, the calibration's typical ones for the rest.

    With only a load index, the CPU utilisation follows the load as calibrated
    (the profiler's forecast-load rule).
    """
    import numpy as np

    if not 0.0 <= args.load_index <= 1.0:
        raise ValueError(f"--load-index must be in [0, 1], got {args.load_index}")
    given = np.array([args.cpu_util, np.nan, args.mem_available_mb, args.cpu_freq_mhz], np.float64)
    base = np.where(np.isfinite(given), given, predictor.state_mean)
    if args.cpu_util is None:
        return predictor.at_load(base, args.load_index)
    base[1] = args.load_index
    return base


def format_load_sweep(predictor, table: dict, steps: int, limit: int | None) -> str:  # noqa: ANN001
    """Predicted latency of the most accurate variant of each exit along a load sweep 0 -> 1, and whether
    any variant of the table is predicted faster at a higher load."""
    import numpy as np

    from adascale_ros.model.pipeline import best_per_exit

    loads, latency = predictor.load_sweep(steps)
    lines = [f"{'variant':<32}" + "".join(f"{f'load {x:.2f}':>11}" for x in loads)]
    chosen = [row["variant_id"] for row in best_per_exit(table["variants"], "val_accuracy").values()]
    for variant_id in chosen[:limit] if limit else chosen:
        row = latency[:, predictor.variant_index(variant_id)]
        lines.append(f"{variant_id:<32}" + "".join(f"{ms:>11.3f}" for ms in row))
    drops = np.diff(latency, axis=0) / latency[:-1]
    falling = int((drops < -1e-9).any(axis=0).sum())
    lines.append(
        f"{falling} of {latency.shape[1]} variants predicted faster somewhere up the sweep"
        f" (largest step down {max(0.0, -float(drops.min())):.2%}); slowdown at load 1 vs 0: median "
        f"{float(np.median(latency[-1] / latency[0])):.2f}x"
    )
    return "\n".join(lines)


def _cmd_predict(args: argparse.Namespace) -> int:
    from adascale_ros.model.files import load_variant_table
    from adascale_ros.profiling.calibrate import predictions_json
    from adascale_ros.profiling.predictor import LatencyPredictor, device_fingerprint

    table = load_variant_table(args.model_dir)
    predictor = LatencyPredictor.load(args.model_dir)
    for warning in predictor.check_against(table, device_fingerprint()):
        print(f"adascale predict: warning: {warning}", file=sys.stderr)
    if args.sweep:
        print(format_load_sweep(predictor, table, args.sweep, args.limit))
        return 0
    if args.load_index is None:
        raise ValueError("give --load-index (or --sweep)")
    state = _predictor_state(predictor, args)
    text = predictions_json(predictor, state, table)
    if args.json:
        print(text)
    else:
        import json

        rows = sorted(json.loads(text)["variants"], key=lambda r: r["predicted_latency_ms"])
        print(f"{'variant':<28}{'exit':>5}{'accuracy':>10}{'latency ms':>12}{'energy mJ':>11}")
        for r in rows[: args.limit] if args.limit else rows:
            print(
                f"{r['variant_id']:<28}{r['exit_index']:>5}{r['accuracy']:>10.4f}"
                f"{r['predicted_latency_ms']:>12.4f}{r['predicted_energy_mj']:>11.4f}"
            )
    return 0


def _cmd_bench_selector(args: argparse.Namespace) -> int:
    import json

    from adascale_ros.bringup import default_model_dir
    from adascale_ros.model.files import load_variant_table
    from adascale_ros.selection.benchmark import bench_selector, format_report
    from adascale_ros.selection.tables import VariantEntry

    table = load_variant_table(args.model_dir or default_model_dir())
    entries = [VariantEntry.from_row(row) for row in table["variants"]]
    report = bench_selector(entries, decisions=args.decisions, synthetic=args.synthetic)
    print(json.dumps(report, indent=1) if args.json else format_report(report))
    return 0


def _cmd_bench_profiler(args: argparse.Namespace) -> int:
    import json

    from adascale_ros.bringup import default_model_dir
    from adascale_ros.profiling.calibrate import prediction_time_ms
    from adascale_ros.profiling.predictor import LatencyPredictor

    timing = prediction_time_ms(LatencyPredictor.load(args.model_dir or default_model_dir()), args.repeats)
    timing["target_ms"] = 5.0
    timing["meets_target"] = timing["median_ms"] < 5.0
    if args.json:
        print(json.dumps(timing, indent=1))
    else:
        print(
            f"predicting all {timing['variants']} variants at the current and the forecast load "
            f"(latency and energy): median {timing['median_ms']} ms, p90 {timing['p90_ms']} ms "
            f"(target < 5 ms: {'met' if timing['meets_target'] else 'NOT met'})"
        )
    return 0


def _cmd_bench_inference(args: argparse.Namespace) -> int:
    import json

    from adascale_ros.bringup import default_model_dir
    from adascale_ros.model.artifacts import load_model
    from adascale_ros.model.files import load_variant_table
    from adascale_ros.runtime.benchmark import bench_camera_rate, bench_inference, format_report

    model_dir = args.model_dir or default_model_dir()
    model, table = load_model(model_dir), load_variant_table(model_dir)
    report = bench_inference(model, table, args.repeats, threads=args.threads)
    if args.camera_rate_frames > 0:
        report["camera_rate_gap_s"] = gap_s = args.camera_gap_ms / 1e3
        report["camera_rate_frame"] = "640 x 480"
        report["camera_rate_spinning"] = args.ort_spinning
        report["camera_rate"] = bench_camera_rate(
            model, table, args.camera_rate_frames, gap_s, args.threads, spinning=args.ort_spinning
        )
    print(json.dumps(report, indent=1) if args.json else format_report(report))
    return 0


def _budget(value: str) -> float | str:
    """--budget-ms: milliseconds, or auto."""
    if value == "auto":
        return value
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected milliseconds or auto, got {value!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="adascale", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="start the node graph locally and show its status")
    run.add_argument("--params-file", type=Path, help="ROS parameters file (default: config/adascale.yaml)")
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

    train = sub.add_parser(
        "train", help="train the elastic network (or fine-tune a pretrained backbone) and write a model directory"
    )
    train.add_argument("--config", type=Path, required=True, help="YAML with dataset/network/training sections")
    train.add_argument("--out", type=Path, required=True)
    train.add_argument("--mode", choices=["freeze", "guarded", "joint"], help="override training.mode")
    train.add_argument(
        "--init-from",
        type=Path,
        help="start from this model directory's weights (same network and data) and train on by the config",
    )
    train.add_argument(
        "--workdir",
        type=Path,
        help="a backbone's checkpoint and trunk-feature cache (default: <out>.work beside --out); "
        "a rerun with the same one resumes",
    )
    train.add_argument("--no-progress", action="store_true")
    train.set_defaults(func=_cmd_train)

    adapt = sub.add_parser(
        "adapt",
        help="label-free: tune a backbone model's early exits to unlabelled frames (a folder or a bag) "
        "by distillation from its largest variant",
    )
    adapt.add_argument("model_dir", type=Path, help="a fine-tuned backbone model (adascale train)")
    adapt.add_argument("--frames", type=Path, required=True, help="a folder of images (any depth) or a rosbag2")
    adapt.add_argument("--out", type=Path, required=True, help="the adapted model's directory")
    adapt.add_argument("--topic", default="/camera/image_raw", help="the bag's camera topic (Image or CompressedImage)")
    adapt.add_argument("--epochs", type=float, default=1.0, help="passes over the frames")
    adapt.add_argument("--limit", type=int, help="use only the first N frames")
    adapt.add_argument("--workdir", type=Path, help="checkpoint directory (default: <out>.work); a rerun resumes")
    adapt.add_argument("--no-progress", action="store_true")
    adapt.set_defaults(func=_cmd_adapt)

    var = sub.add_parser("variants", help="print a model's variant table")
    var.add_argument("model_dir", type=Path)
    var.add_argument("--json", action="store_true")
    var.add_argument("--evaluate", action="store_true", help="recompute every accuracy from weights and data")
    var.add_argument(
        "--compare-reuse",
        type=int,
        metavar="IMAGES",
        help="time evaluation with and without prefix reuse on this many test images",
    )
    var.add_argument("--limit", type=int, help="print only the first N rows")
    var.add_argument(
        "--best-on-test",
        action="store_true",
        help="a backbone model: the best variant (validation) of every exit and resolution, on the whole test split",
    )
    var.add_argument("--compare", type=Path, help="with --best-on-test: print this model's best variant per exit too")
    var.set_defaults(func=_cmd_variants)

    ee = sub.add_parser("early-exit", help="accuracy and exit shares of confidence early exit per threshold")
    ee.add_argument("model_dir", type=Path)
    ee.add_argument("--variant", help="variant id (default: static-top, the most accurate variant)")
    ee.add_argument("--thresholds", type=float, nargs="+", default=[0.8, 0.9, 0.95, 0.97, 0.98, 0.99, 0.995, 0.999])
    ee.add_argument("--max-loss", type=float, default=0.1, help="accuracy points on val a threshold may lose")
    ee.add_argument("--json", action="store_true")
    ee.set_defaults(func=_cmd_early_exit)

    base = sub.add_parser("baselines", help="train static baselines and tabulate them beside the elastic exits")
    base.add_argument("model_dir", type=Path, help="a trained elastic model (data and recipe come from its card)")
    base.add_argument("--out", type=Path, help="where to write baselines.json/.md (default: model_dir)")
    base.add_argument(
        "--only",
        nargs="+",
        metavar="NAME",
        help="resnet18 mobilenet_v3_small shufflenet_v2_x1_0 squeezenet1_1 (default: all)",
    )
    base.add_argument("--epochs", type=int, help="default: the elastic network's epoch count")
    base.add_argument("--lr", type=float, help="the baselines' peak learning rate (default: the elastic network's)")
    base.add_argument("--limit-train", type=int, help="train on the first N training images (smoke runs)")
    base.add_argument("--no-progress", action="store_true")
    base.set_defaults(func=_cmd_baselines)

    cmp = sub.add_parser("compare-training", help="train one network per training mode and compare")
    cmp.add_argument("--config", type=Path, required=True)
    cmp.add_argument("--out", type=Path, required=True)
    cmp.add_argument("--modes", nargs="+", choices=["freeze", "guarded", "joint"], default=["freeze", "joint"])
    cmp.add_argument("--no-progress", action="store_true")
    cmp.set_defaults(func=_cmd_compare_training)

    bag = sub.add_parser("make-bag", help="write a labelled camera bag (rosbag2, MCAP) from a dataset")
    bag.add_argument("--dataset", default="fashion-mnist", help="fashion-mnist, mnist-idx, cifar, image-folder")
    bag.add_argument("--root", help="dataset directory (default: the Debian package's, for fashion-mnist)")
    bag.add_argument("--split", choices=["test", "val", "train"], default="test")
    bag.add_argument("--out", type=Path, required=True)
    bag.add_argument("--limit", type=int, default=300, help="frames (0: the whole split)")
    bag.add_argument("--width", type=int, default=250)
    bag.add_argument("--height", type=int, default=250)
    bag.add_argument("--rate-hz", type=float, default=10.0)
    bag.add_argument("--camera-topic", default="/camera/image_raw")
    bag.set_defaults(func=_cmd_make_bag)

    rep = sub.add_parser("replay", help="play a bag like `ros2 bag play`")
    rep.add_argument("bag", type=Path)
    rep.add_argument("--rate", type=float, default=1.0, help="speed factor")
    rep.add_argument("--loop", action="store_true")
    rep.add_argument("--start-offset", type=float, default=0.0, help="skip this many seconds of the bag")
    rep.add_argument("--topics", nargs="+", help="only these topics (default: all)")
    rep.add_argument("--delay", type=float, default=0.0, help="seconds to wait before playing (as ros2 bag play -d)")
    rep.add_argument(
        "--clock",
        type=float,
        nargs="?",
        const=40.0,
        metavar="HZ",
        help="publish the bag's time on /clock at HZ (default 40), as ros2 bag play --clock, for use_sim_time",
    )
    rep.add_argument(
        "--wait-for-subscribers",
        type=int,
        default=0,
        metavar="N",
        help=f"first wait (up to {SUBSCRIBER_WAIT_S:g} s) until every topic has N subscribers",
    )
    rep.set_defaults(func=_cmd_replay)

    load = sub.add_parser("load", help="drive stress-ng through a load trace, phase by phase")
    load.add_argument("trace", help="a trace YAML, or a shipped one: steady, step, bursty, ramp")
    load.add_argument("--loop", action="store_true", help="start over at the end, until Ctrl-C")
    load.set_defaults(func=_cmd_load)

    table = sub.add_parser(
        "results-table", help="the results table of a saved evaluation report, as the README shows it"
    )
    table.add_argument("report", type=Path, help="an evaluation.json written by adascale evaluate")
    table.set_defaults(func=_cmd_results_table)

    evl = sub.add_parser("evaluate", help="replay a camera bag under a load trace once per policy and score it")
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
    evl.add_argument("--model-dir", type=Path, help="default: the embedded default model")
    evl.add_argument("--params-file", type=Path, help="ROS parameters file (default: config/adascale.yaml)")
    evl.add_argument("--camera-topic", default="/camera/image_raw")
    evl.add_argument(
        "--unlabelled",
        action="store_true",
        help="a recording without labels (e.g. ros2 bag record on the robot): accuracy is agreement with the top "
        "variant's answers, computed offline before the runs",
    )
    evl.add_argument("--rescore", action="store_true", help="score the runs saved in --out again; run nothing")
    evl.add_argument("--json", action="store_true", help="print the report as JSON (progress goes to stderr)")
    evl.set_defaults(func=_cmd_evaluate)

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

    soak = sub.add_parser("soak", help="run the full graph for minutes under a repeating load trace; memory, drift")
    soak.add_argument("--minutes", type=float, default=15.0, help="how long (default: 15)")
    soak.add_argument("--bag", type=Path, default=Path("build/bags/fashion-mnist-test"), help="a labelled camera bag")
    soak.add_argument("--trace", default="bursty", help="a trace YAML, or a shipped one (default: bursty)")
    soak.add_argument("--out", type=Path, default=Path("build/soak"), help="report folder (default: build/soak)")
    soak.add_argument(
        "--budget-ms", type=float, help="latency budget per frame [ms] (default: as adascale evaluate's auto)"
    )
    soak.add_argument("--model-dir", type=Path, help="default: the embedded default model")
    soak.add_argument("--params-file", type=Path, help="ROS parameters file (default: config/adascale.yaml)")
    soak.add_argument("--json", action="store_true", help="print the report as JSON (progress goes to stderr)")
    soak.set_defaults(func=_cmd_soak)

    cam = sub.add_parser("campaign", help="send malformed messages of every input type to the nodes; count and check")
    cam.add_argument("--messages", type=int, default=1000, help="malformed messages per input type (default: 1000)")
    cam.add_argument("--seed", type=int, default=0, help="hypothesis seed (default: 0)")
    cam.add_argument("--out", type=Path, default=Path("build/campaign"), help="report folder (default: build/campaign)")
    cam.add_argument("--model-dir", type=Path, help="default: the embedded default model")
    cam.add_argument("--json", action="store_true", help="print the report as JSON (progress goes to stderr)")
    cam.set_defaults(func=_cmd_campaign)

    cal = sub.add_parser("calibrate", help="measure module latencies under stress-ng load and fit the predictors")
    cal.add_argument("model_dir", type=Path)
    cal.add_argument("--quick", action="store_true", help="two load levels, 2 s each (CI)")
    cal.add_argument("--seconds-per-level", type=float, help="default: 20 (2 with --quick)")
    cal.add_argument("--backend", choices=["onnxruntime", "torch"], default="onnxruntime")
    cal.add_argument("--threads", type=int, default=1, help="intra-op threads, as the inference node's")
    cal.add_argument("--energy-profile", type=Path, help="default: config/energy/x86_64_generic.yaml")
    cal.add_argument("--refit", action="store_true", help="fit again from the stored dataset; measure nothing")
    cal.add_argument("--no-progress", action="store_true")
    cal.set_defaults(func=_cmd_calibrate)

    pre = sub.add_parser("predict", help="predicted latency and energy of every variant at a load")
    pre.add_argument("model_dir", type=Path)
    pre.add_argument("--load-index", type=float, help="the load index to predict at (or --sweep)")
    pre.add_argument(
        "--sweep", type=int, metavar="STEPS", help="the best variant per exit at STEPS load indices from 0 to 1 instead"
    )
    pre.add_argument("--cpu-util", type=float, help="background CPU utilisation; default: follows the load index")
    pre.add_argument("--mem-available-mb", type=float)
    pre.add_argument("--cpu-freq-mhz", type=float)
    pre.add_argument("--limit", type=int, help="print only the N fastest")
    pre.add_argument("--json", action="store_true")
    pre.set_defaults(func=_cmd_predict)

    bench = sub.add_parser("bench", help="overhead benchmarks").add_subparsers(dest="target", required=True)
    sel = bench.add_parser("selector", help="decision time of the selector: B+ tree vs sorted array vs linear scan")
    sel.add_argument("--model-dir", type=Path, help="default: the embedded default model")
    sel.add_argument("--decisions", type=int, default=2000, help="decisions timed per method and table")
    sel.add_argument("--synthetic", type=int, default=10_000, help="variants in the synthetic table")
    sel.add_argument("--json", action="store_true")
    sel.set_defaults(func=_cmd_bench_selector)
    prof = bench.add_parser("profiler", help="time to predict every variant at the current and forecast load")
    prof.add_argument("--model-dir", type=Path, help="default: the embedded default model")
    prof.add_argument("--repeats", type=int, default=500)
    prof.add_argument("--json", action="store_true")
    prof.set_defaults(func=_cmd_bench_profiler)
    inf = bench.add_parser("inference", help="batch-1 latency per exit: torch eager vs ONNX Runtime")
    inf.add_argument("--model-dir", type=Path, help="default: the embedded default model")
    inf.add_argument("--repeats", type=int, default=200, help="timed runs per exit and backend")
    inf.add_argument("--threads", type=int, default=2, help="intra-op threads of both backends")
    inf.add_argument(
        "--camera-rate-frames",
        type=int,
        default=60,
        help="camera frames per variant and path (fused segments, module by module, one whole graph); 0: skip",
    )
    inf.add_argument("--camera-gap-ms", type=float, default=66.0, help="time between camera frames (66: 15 Hz)")
    inf.add_argument(
        "--ort-spinning",
        action="store_true",
        help="camera rate with ONNX Runtime's idle workers spinning (its default; the engine lets them sleep)",
    )
    inf.add_argument("--json", action="store_true")
    inf.set_defaults(func=_cmd_bench_inference)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError) as exc:  # includes ModelLoadError and DatasetError
        print(f"adascale {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"adascale {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
