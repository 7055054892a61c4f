"""``adascale calibrate``: measure a model's modules on this device, fit, store, report.

Writes into the model directory:

    profiler/calibration_data.json.gz   what was measured (``--refit`` fits again from it)
    profiler/predictor.json + .npz      the auto-selected predictors
    calibration_report.json + .md       held-out accuracy of every regressor, the auto-selected
                                        set and the ablation without state features
"""

from __future__ import annotations

import itertools
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from adascale_ros.load.stress import StressNg, StressSpec, load_session
from adascale_ros.model.directory import (
    camera_rate_variants,
    card_resolutions,
    load_variant_table,
    reference_variants,
    write_json,
)
from adascale_ros.model.elastic import Variant
from adascale_ros.model.metrics import resolution_suffix
from adascale_ros.model.saved_model import LoadedModel, load_model
from adascale_ros.package_files import shipped_path
from adascale_ros.profiling.energy import EnergyProfile
from adascale_ros.profiling.fitting import fit_and_report, report_markdown
from adascale_ros.profiling.measurement import (
    FIXED,
    CalibrationData,
    CalibrationPlan,
    ModuleCalls,
    default_levels,
    measure_camera_rate,
    run_calibration,
)
from adascale_ros.profiling.predictor import PREDICTOR_DIR, STATE_FEATURES, LatencyPredictor, device_fingerprint
from adascale_ros.runtime.engine import ElasticEngine
from adascale_ros.runtime.preprocess import Preprocessor
from adascale_ros.timing import summarize, time_samples

DATA_FILE = "calibration_data.json.gz"
REPORT = "calibration_report"
DEFAULT_ENERGY_PROFILE = "config/energy/x86_64_generic.yaml"


@dataclass(frozen=True)
class CalibrateOptions:
    quick: bool = False
    seconds_per_level: float | None = None  # default: 20 s, or 2 s with quick
    variants_per_exit: int | None = None  # ground-truth variants per exit; default: the plan's, or 8 with quick
    backend: str = "onnxruntime"
    threads: int = 1
    frame_width: int = 640
    frame_height: int = 480
    energy_profile: Path | None = None
    refit: bool = False  # fit again from the stored dataset, measure nothing
    load_own_session: bool = False  # the load in a session of its own (navigation from another terminal)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.variants_per_exit is not None and self.variants_per_exit < 1:
            raise ValueError(f"variants per exit must be >= 1, got {self.variants_per_exit}")


def engine_calls(
    model: LoadedModel, engine: ElasticEngine, frame: np.ndarray
) -> tuple[ModuleCalls, Callable[[Variant], object]]:
    """Zero-argument calls of every module at its real batch-1 input, and a whole-variant call.

    The whole-variant call is ``variant_call``'s. The fixed module is the part
    of it outside the network, the pre-processing (the soft-max is in the
    exit's segment graph, ``ElasticEngine``).
    """
    preprocess = Preprocessor.from_card(model.card)
    backend = engine.backend
    calls: ModuleCalls = {}
    for resolution in card_resolutions(model.card) or (None,):
        suffix = resolution_suffix(resolution)
        x = preprocess(frame, "rgb8", resolution)
        calls[FIXED + suffix] = lambda r=resolution: preprocess(frame, "rgb8", r)
        features = backend.stem(x)
        calls["stem" + suffix] = lambda x=x: backend.stem(x)
        for stage, blocks in enumerate(model.net.stages):
            for op in blocks:
                calls[f"s{stage}:{op}{suffix}"] = lambda s=stage, o=op, f=features: backend.stage(s, o, f)
            features = backend.stage(stage, next(iter(blocks)), features)
            calls[f"exit{stage}{suffix}"] = lambda s=stage, f=features: backend.head(s, f)

    return calls, variant_call(model, engine, frame)


def variant_call(model: LoadedModel, engine: ElasticEngine, frame: np.ndarray) -> Callable[[Variant], object]:
    """What the inference node times per frame: pre-processing of one rgb8 camera frame, then the variant."""
    preprocess = Preprocessor.from_card(model.card)
    return lambda variant: engine.run(preprocess(frame, "rgb8", variant.resolution), variant)


def calibrate_model(
    model_dir: Path, options: CalibrateOptions, progress: bool = True
) -> tuple[LatencyPredictor, dict[str, Any]]:
    model_dir = Path(model_dir)
    table = load_variant_table(model_dir)
    data_path = model_dir / PREDICTOR_DIR / DATA_FILE
    if options.refit:
        data = CalibrationData.load(data_path)
    else:
        data = measure(model_dir, options, progress)
        data_path.parent.mkdir(parents=True, exist_ok=True)
        data.save(data_path)
    profile = EnergyProfile.from_yaml(options.energy_profile or shipped_path(DEFAULT_ENERGY_PROFILE))
    meta = {
        "backend": data.device["backend"],
        "threads": data.device["threads"],
        "frame": data.device["frame"],
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "quick": data.device.get("quick", False),
    }
    started = time.perf_counter()
    predictor, report = fit_and_report(data, table, profile, meta, seed=options.seed)
    report["fit_seconds"] = round(time.perf_counter() - started, 1)
    report["prediction_ms"] = prediction_time_ms(predictor)
    predictor.save(model_dir)
    write_json(model_dir / f"{REPORT}.json", _finite(report))
    (model_dir / f"{REPORT}.md").write_text(report_markdown(report))
    return predictor, report


def measure(model_dir: Path, options: CalibrateOptions, progress: bool) -> CalibrationData:
    model = load_model(model_dir)
    engine = ElasticEngine.from_net(model.net, model.input_shape, options.backend, options.threads)
    frame = np.random.default_rng(options.seed).integers(
        0, 256, (options.frame_height, options.frame_width, 3), dtype=np.uint8
    )
    calls, run_variant = engine_calls(model, engine, frame)
    table = load_variant_table(model_dir)
    references, camera = reference_variants(table), camera_rate_variants(table)
    levels = default_levels(options.quick)
    seconds = options.seconds_per_level or (2.0 if options.quick else 20.0)
    plan = CalibrationPlan(
        levels=levels,
        seconds_per_level=seconds,
        settle_s=0.5 if options.quick else 1.0,
        variants_per_exit=options.variants_per_exit or (8 if options.quick else CalibrationPlan.variants_per_exit),
        seed=options.seed,
        always=tuple(Variant.parse(v) for v in dict.fromkeys(references.values())),
        camera_variants=tuple(Variant.parse(v) for v in camera.values()),
        camera_frames=5 if options.quick else 30,
        load_own_session=options.load_own_session,
    )
    device = {
        **device_fingerprint(),
        "backend": options.backend,
        "threads": options.threads,
        "frame": f"{options.frame_width}x{options.frame_height} rgb8",
        "quick": options.quick,
        "load_session": load_session(options.load_own_session),
        "reference_variants": references,
        "camera_rate_variants": camera,
    }
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=round(seconds * len(levels)), unit="s", desc="calibrating", leave=False)

    def advance(done_s: float) -> None:
        if bar is not None:
            bar.update(max(0, round(done_s) - bar.n))

    try:
        return run_calibration(plan, calls, run_variant, model.net.variants(), device, progress=advance)
    finally:
        if bar is not None:
            bar.close()


def prediction_time_ms(predictor: LatencyPredictor, repeats: int = 200) -> dict[str, float]:
    """Median and p90 time to predict every variant at the current and the forecast load [ms]."""
    state = np.nan_to_num(predictor.state_mean, nan=0.0)
    forecast_loads = itertools.cycle((0.5, 0.9))  # a new forecast each time: nothing cached

    def predict() -> None:
        states = np.vstack([state, predictor.at_load(state, next(forecast_loads))])
        predictor.latency_ms(states)
        predictor.energy_mj(states[0])
        predictor.energy_mj(states[1])

    timing = summarize(time_samples(predict, repeats))
    return {
        "variants": len(predictor.variant_ids),
        "median_ms": round(timing.median_ms, 3),
        "p90_ms": round(timing.p90_ms, 3),
    }


def _finite(value: Any) -> Any:
    """JSON has no NaN: unknown numbers become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, np.generic):
        return _finite(value.item())
    return value


def predictions_json(predictor: LatencyPredictor, state: np.ndarray, table: dict[str, Any]) -> str:
    latency, energy = predictor.predict(state)
    rows = {v["variant_id"]: v for v in table["variants"]}
    return json.dumps(
        _finite(
            {
                "state": dict(zip(STATE_FEATURES, state.tolist(), strict=True)),
                "mode": predictor.mode,
                "variants": [
                    {
                        "variant_id": vid,
                        "exit_index": rows[vid]["exit_index"],
                        "accuracy": rows[vid]["val_accuracy"],
                        "predicted_latency_ms": round(float(latency[i]), 4),
                        "predicted_energy_mj": round(float(energy[i]), 4),
                    }
                    for i, vid in enumerate(predictor.variant_ids)
                ],
            }
        ),
        indent=1,
    )


def compare_load_sessions(
    model: LoadedModel,
    variants_table: dict[str, Any],
    spec: StressSpec,
    frames: int = 60,
    gap_s: float = 0.066,
    threads: int = 2,
    rounds: int = 2,
) -> dict[str, Any]:
    """Camera-rate latency of the top variant idle and under ``spec``'s load run in this process's session
    and in a session of its own, alternating (``rounds`` of each, ``frames`` frames ``gap_s`` apart per
    round, timed as the calibration times them), with each placement's median over the idle median. What
    Linux's autogroup scheduler does to a load that a camera-rate classifier shares the CPU with
    (``load.stress``)."""
    engine = ElasticEngine.from_net(model.net, model.input_shape, "onnxruntime", threads)
    run_variant = variant_call(model, engine, np.random.default_rng(3).integers(0, 256, (480, 640, 3), np.uint8))
    variant = Variant.parse(reference_variants(variants_table)["top"])
    plan = CalibrationPlan(levels=[], seconds_per_level=0.0, camera_frames=frames, camera_gap_s=gap_s)
    table: dict[str, list] = {}
    for _ in range(rounds):
        measure_camera_rate([variant], run_variant, plan, "idle", table)
        for placement in ("shared", "own"):
            with StressNg(spec, timeout_s=frames * gap_s * 3 + 30, own_session=placement == "own"):
                time.sleep(1.0)  # the workers up
                measure_camera_rate([variant], run_variant, plan, placement, table)
    levels, latency, cpu = np.array(table["level"]), np.array(table["latency_ms"]), np.array(table["cpu_ms"])
    placements = ("idle", "shared", "own")
    idle = float(np.median(latency[levels == "idle"]))

    def summary(name: str) -> dict[str, float]:
        timing = summarize(latency[levels == name].tolist())
        return {
            "median_ms": round(timing.median_ms, 4),
            "p90_ms": round(timing.p90_ms, 4),
            "slowdown": round(timing.median_ms / idle, 3),
            "cpu_median_ms": round(float(np.median(cpu[levels == name])), 4),
        }

    return {
        "variant": variant.id,
        "load": " ".join(spec.args()),
        "threads": threads,
        "frames": frames * rounds,
        "gap_ms": gap_s * 1e3,
        "placements": {name: summary(name) for name in placements},
    }


def format_load_sessions(report: dict[str, Any]) -> str:
    lines = [
        f"{report['variant']} at camera rate ({report['frames']} frames {report['gap_ms']:.0f} ms apart per placement,"
        f" {report['threads']} threads), load `stress-ng {report['load']}`:",
        "",
        "| load | median ms | p90 ms | median / idle | CPU median ms |",
        "|---|---:|---:|---:|---:|",
    ]
    names = {"idle": "none", "shared": "in this session", "own": "in a session of its own"}
    for name, row in report["placements"].items():
        lines.append(
            f"| {names[name]} | {row['median_ms']:.2f} | {row['p90_ms']:.2f} | {row['slowdown']:.2f}x"
            f" | {row['cpu_median_ms']:.2f} |"
        )
    lines += ["", "CPU median: the process's CPU time per frame, its threads together."]
    return "\n".join(lines)
