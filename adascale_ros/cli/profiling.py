"""Latency profiling: ``adascale calibrate``, ``predict``, ``bench``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from adascale_ros.cli.options import JSON, LOAD_OWN_SESSION, MODEL_DIR, NO_PROGRESS


def add_commands(sub: argparse._SubParsersAction) -> None:
    cal = sub.add_parser(
        "calibrate",
        parents=[NO_PROGRESS, LOAD_OWN_SESSION],
        help="measure module latencies under stress-ng load and fit the predictors",
    )
    cal.add_argument("model_dir", type=Path)
    cal.add_argument("--quick", action="store_true", help="two load levels, 2 s each (CI)")
    cal.add_argument("--seconds-per-level", type=float, help="default: 20 (2 with --quick)")
    cal.add_argument(
        "--variants-per-exit",
        type=int,
        help="whole variants measured per exit as the predictor's ground truth (default: 10, 8 with --quick);"
        " fewer gives each more samples in the same time",
    )
    cal.add_argument("--backend", choices=["onnxruntime", "torch"], default="onnxruntime")
    cal.add_argument("--threads", type=int, default=1, help="intra-op threads, as the inference node's")
    cal.add_argument("--energy-profile", type=Path, help="default: config/energy/x86_64_generic.yaml")
    cal.add_argument("--refit", action="store_true", help="fit again from the stored dataset; measure nothing")
    cal.set_defaults(func=_cmd_calibrate)

    pre = sub.add_parser("predict", parents=[JSON], help="predicted latency and energy of every variant at a load")
    pre.add_argument("model_dir", type=Path)
    pre.add_argument("--load-index", type=float, help="the load index to predict at (or --sweep)")
    pre.add_argument(
        "--sweep", type=int, metavar="STEPS", help="the best variant per exit at STEPS load indices from 0 to 1 instead"
    )
    pre.add_argument("--cpu-util", type=float, help="background CPU utilisation; default: follows the load index")
    pre.add_argument("--mem-available-mb", type=float)
    pre.add_argument("--cpu-freq-mhz", type=float)
    pre.add_argument("--limit", type=int, help="print only the N fastest")
    pre.set_defaults(func=_cmd_predict)

    bench = sub.add_parser("bench", help="overhead benchmarks").add_subparsers(dest="target", required=True)
    sel = bench.add_parser(
        "selector",
        parents=[MODEL_DIR, JSON],
        help="decision time of the selector: shipped index vs B+ tree vs sorted array vs linear scan",
    )
    sel.add_argument("--decisions", type=int, default=2000, help="decisions timed per method and table")
    sel.add_argument("--synthetic", type=int, default=10_000, help="variants in the synthetic table")
    sel.set_defaults(func=_cmd_bench_selector)
    prof = bench.add_parser(
        "profiler", parents=[MODEL_DIR, JSON], help="time to predict every variant at the current and forecast load"
    )
    prof.add_argument("--repeats", type=int, default=500)
    prof.set_defaults(func=_cmd_bench_profiler)
    inf = bench.add_parser(
        "inference", parents=[MODEL_DIR, JSON], help="batch-1 latency per exit: torch eager vs ONNX Runtime"
    )
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
    inf.set_defaults(func=_cmd_bench_inference)
    q8 = bench.add_parser(
        "int8",
        parents=[MODEL_DIR, JSON],
        help="the modules in int8 (static quantization) against float: accuracy and camera-rate latency",
    )
    q8.add_argument("--calibration-images", type=int, default=64, help="validation images the ranges come from")
    q8.add_argument("--test-images", type=int, default=1000, help="test images each variant is scored on")
    q8.add_argument("--camera-rate-frames", type=int, default=40, help="camera frames per variant and precision")
    q8.add_argument("--camera-gap-ms", type=float, default=66.0, help="time between camera frames (66: 15 Hz)")
    q8.add_argument("--threads", type=int, default=2, help="intra-op threads, as the inference node's")
    q8.add_argument("--trace", help="also time under this trace's (a YAML or a shipped one's) load, in this session")
    q8.add_argument("--phase", type=int, default=1, help="with --trace: which of its phases' load (default: 1)")
    q8.set_defaults(func=_cmd_bench_int8)
    ses = bench.add_parser(
        "load-session",
        parents=[MODEL_DIR, JSON],
        help="camera-rate latency of the top variant under a trace phase's load, in this session and in its own",
    )
    ses.add_argument("--trace", default="step", help="a trace YAML, or a shipped one (default: step)")
    ses.add_argument("--phase", type=int, default=1, help="which of its phases' load (default: 1)")
    ses.add_argument("--frames", type=int, default=60, help="camera frames per placement and round")
    ses.add_argument("--rounds", type=int, default=2, help="rounds of idle, this session, own session")
    ses.add_argument("--threads", type=int, default=2, help="intra-op threads, as the inference node's")
    ses.set_defaults(func=_cmd_bench_load_session)


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from adascale_ros.profiling.calibration import REPORT, CalibrateOptions, calibrate_model
    from adascale_ros.signals import stop_on_sigterm

    options = CalibrateOptions(
        quick=args.quick,
        seconds_per_level=args.seconds_per_level,
        variants_per_exit=args.variants_per_exit,
        backend=args.backend,
        threads=args.threads,
        energy_profile=args.energy_profile,
        refit=args.refit,
        load_own_session=args.load_own_session,
    )
    with stop_on_sigterm():
        _, report = calibrate_model(args.model_dir, options, progress=not args.no_progress)
    print((args.model_dir / f"{REPORT}.md").read_text(), end="")
    timing = report["prediction_ms"]
    print(f"predicting all {timing['variants']} variants at two loads: median {timing['median_ms']} ms")
    return 0


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
    from adascale_ros.model.directory import load_variant_table
    from adascale_ros.profiling.calibration import predictions_json
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
    state = predictor.state_at(args.load_index, args.cpu_util, args.mem_available_mb, args.cpu_freq_mhz)
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

    from adascale_ros.model.directory import load_variant_table
    from adascale_ros.package_files import default_model_dir
    from adascale_ros.selection.benchmark import bench_selector, format_report
    from adascale_ros.selection.tables import VariantEntry

    table = load_variant_table(args.model_dir or default_model_dir())
    entries = [VariantEntry.from_row(row) for row in table["variants"]]
    report = bench_selector(entries, decisions=args.decisions, synthetic=args.synthetic)
    print(json.dumps(report, indent=1) if args.json else format_report(report))
    return 0


def _cmd_bench_profiler(args: argparse.Namespace) -> int:
    import json

    from adascale_ros.package_files import default_model_dir
    from adascale_ros.profiling.calibration import prediction_time_ms
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

    from adascale_ros.model.directory import load_variant_table
    from adascale_ros.model.saved_model import load_model
    from adascale_ros.package_files import default_model_dir
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


def _cmd_bench_int8(args: argparse.Namespace) -> int:
    import json

    from adascale_ros.harness.bags import camera_frame
    from adascale_ros.model.backbone_pipeline import card_dataset
    from adascale_ros.model.datasets import ImageSet, load_splits
    from adascale_ros.model.directory import card_resolutions, load_variant_table
    from adascale_ros.model.saved_model import load_model
    from adascale_ros.package_files import default_model_dir
    from adascale_ros.runtime.benchmark import bench_int8, format_int8
    from adascale_ros.runtime.onnx_modules import export_modules
    from adascale_ros.runtime.preprocess import Preprocessor
    from adascale_ros.runtime.quantization import quantize_modules

    if min(args.calibration_images, args.test_images, args.camera_rate_frames) < 1:
        raise ValueError("--calibration-images, --test-images and --camera-rate-frames must be >= 1")
    load, load_name = None, ""
    if args.trace:
        from adascale_ros.load.stress import StressNg
        from adascale_ros.load.traces import LoadTrace, resolve_trace

        trace = LoadTrace.from_yaml(resolve_trace(args.trace))
        if not 0 <= args.phase < len(trace.phases) or trace.phases[args.phase].spec.idle:
            raise ValueError(f"--phase must be a loaded phase of {trace.name} (0 to {len(trace.phases) - 1})")
        spec = trace.phases[args.phase].spec
        load, load_name = StressNg(spec), "stress-ng " + " ".join(spec.args())
    model_dir = args.model_dir or default_model_dir()
    model, table = load_model(model_dir), load_variant_table(model_dir)
    splits = load_splits(card_dataset(model.card))
    width, height = 640, 480

    def frames(images: ImageSet, count: int) -> list[Any]:  # rgb8 camera frames
        return [camera_frame(image, width, height) for image in images.pixels(count)]

    preprocess = Preprocessor.from_card(model.card)
    resolutions = card_resolutions(model.card) or (None,)
    calibration = [
        preprocess(frame, "rgb8", resolutions[i % len(resolutions)])
        for i, frame in enumerate(frames(splits.val, args.calibration_images))
    ]
    modules = export_modules(model.net, model.input_shape)
    int8 = quantize_modules(modules, calibration)
    test = frames(splits.test, args.test_images)
    gap_s = args.camera_gap_ms / 1e3
    labels = splits.test.labels[: len(test)].tolist()
    rows = bench_int8(model, table, modules, int8, test, labels, args.camera_rate_frames, gap_s, args.threads, load)
    if args.json:
        report = {"test_frames": len(test), "gap_s": gap_s, "threads": args.threads, "load": load_name, "rows": rows}
        print(json.dumps(report, indent=1))
    else:
        print(format_int8(rows, len(test), gap_s, args.threads, f"{width} x {height}", load_name))
    return 0


def _cmd_bench_load_session(args: argparse.Namespace) -> int:
    import json

    from adascale_ros.load.traces import LoadTrace, resolve_trace
    from adascale_ros.model.directory import load_variant_table
    from adascale_ros.model.saved_model import load_model
    from adascale_ros.package_files import default_model_dir
    from adascale_ros.profiling.calibration import compare_load_sessions, format_load_sessions

    trace = LoadTrace.from_yaml(resolve_trace(args.trace))
    if not 0 <= args.phase < len(trace.phases) or trace.phases[args.phase].spec.idle:
        raise ValueError(f"--phase must be a loaded phase of {trace.name} (0 to {len(trace.phases) - 1})")
    model_dir = args.model_dir or default_model_dir()
    spec = trace.phases[args.phase].spec
    report = compare_load_sessions(
        load_model(model_dir),
        load_variant_table(model_dir),
        spec,
        args.frames,
        threads=args.threads,
        rounds=args.rounds,
    )
    print(json.dumps(report, indent=1) if args.json else format_load_sessions(report))
    return 0
