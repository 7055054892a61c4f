"""``adascale bench inference``: batch-1 latency per exit, torch eager vs ONNX Runtime, in one run.

For each exit the most accurate variant (validation accuracy) is timed on
both backends, interleaved in rounds so machine noise falls on both alike.
The pre-processing of one 640 x 480 rgb8 camera frame is timed too: it is
part of every frame's latency whatever the backend. So is its shrinking step
alone, ``shrink_by_area`` against OpenCV's INTER_AREA, at three camera sizes,
interleaved like the backends.

``bench_camera_rate`` times what a camera frame meets instead: one frame,
pre-processing included, every ``gap_s`` (66 ms at 15 Hz), so that each
finds the CPU cold; through the engine's fused segments and, interleaved,
module by module (one session call per module and a numpy soft-max, the
engine's path before the segments) and through one fused graph of the whole
variant (what a network without elastic stages would run).

``bench_int8`` (``adascale bench int8``) sets the modules against their int8
copy (``adascale_ros.runtime.quantization``), per variant of the same roles:
accuracy on labelled camera frames and the camera-rate latency, interleaved.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

import cv2
import numpy as np

from adascale_ros.model.directory import card_resolutions, reference_variants
from adascale_ros.model.elastic import Variant
from adascale_ros.model.pipeline import best_per_exit
from adascale_ros.model.saved_model import LoadedModel
from adascale_ros.runtime.engine import BACKENDS, ElasticEngine, OnnxBackend, session_options, softmax
from adascale_ros.runtime.onnx_modules import OnnxModules, export_modules, fuse
from adascale_ros.runtime.preprocess import Preprocessor, shrink_by_area
from adascale_ros.timing import summarize, time_samples


def _summary(samples_ms: list[float]) -> dict[str, float]:
    timing = summarize(samples_ms)
    return {
        "median_ms": round(timing.median_ms, 4),
        "p90_ms": round(timing.p90_ms, 4),
        "min_ms": round(timing.min_ms, 4),
    }


# TurtleBot 4's OAK-D preview, TurtleBot 3's camera, a 720p webcam.
CAMERA_SIZES = ((250, 250), (640, 480), (1280, 720))


def bench_shrink(width: int, height: int, repeats: int = 200, rounds: int = 10) -> list[dict[str, Any]]:
    """Per camera size: median time of INTER_AREA and of ``shrink_by_area``, and their largest difference."""
    rng = np.random.default_rng(2)
    rows = []
    for source_width, source_height in CAMERA_SIZES:
        grey = rng.integers(0, 256, (source_height, source_width), dtype=np.uint8)
        calls = {
            "inter_area": lambda g=grey: cv2.resize(g, (width, height), interpolation=cv2.INTER_AREA),
            "shrink_by_area": lambda g=grey: shrink_by_area(g, width, height),
        }
        samples: dict[str, list[float]] = {name: [] for name in calls}
        for _ in range(rounds):
            for name, call in calls.items():
                samples[name] += time_samples(call, max(1, repeats // rounds))
        figures = {name: _summary(s) for name, s in samples.items()}
        difference = np.abs(calls["inter_area"]().astype(int) - calls["shrink_by_area"]().astype(int)).max()
        rows.append(
            {
                "source": f"{source_width}x{source_height}",
                **figures,
                "speedup": round(figures["inter_area"]["median_ms"] / figures["shrink_by_area"]["median_ms"], 2),
                "max_grey_difference": int(difference),
            }
        )
    return rows


def bench_inference(
    model: LoadedModel, variants_table: dict[str, Any], repeats: int = 200, rounds: int = 10, threads: int = 2
) -> dict[str, Any]:
    engines = {name: ElasticEngine.from_net(model.net, model.input_shape, name, threads) for name in BACKENDS}
    chosen = {
        e: Variant.parse(row["variant_id"])
        for e, row in best_per_exit(variants_table["variants"], "val_accuracy").items()
    }
    rng = np.random.default_rng(0)
    channels = model.input_shape[0]
    inputs = {
        e: rng.standard_normal(
            (1, *model.input_shape) if v.resolution is None else (1, channels, v.resolution, v.resolution)
        ).astype(np.float32)
        for e, v in chosen.items()
    }
    samples: dict[tuple[int, str], list[float]] = {(e, b): [] for e in chosen for b in BACKENDS}
    per_round = max(1, repeats // rounds)
    for _ in range(rounds):
        for exit_index, variant in chosen.items():
            x = inputs[exit_index]
            for name, engine in engines.items():
                engine.run(x, variant)  # warm this path after the other backend ran
                samples[(exit_index, name)] += time_samples(lambda e=engine, v=variant, x=x: e.run(x, v), per_round)
    exits = []
    for exit_index, variant in chosen.items():
        figures = {name: _summary(samples[(exit_index, name)]) for name in BACKENDS}
        speedup = figures["torch"]["median_ms"] / figures["onnxruntime"]["median_ms"]
        exits.append({"exit": exit_index, "variant": variant.id, **figures, "onnx_speedup": round(speedup, 2)})

    preprocess = Preprocessor.from_card(model.card)
    frame = np.random.default_rng(1).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    pre_ms = time_samples(lambda: preprocess(frame, "rgb8"), repeats)
    return {
        "threads": threads,
        "samples_per_backend_and_exit": per_round * rounds,
        "exits": exits,
        "preprocess_640x480_rgb8": _summary(pre_ms),
        "shrink": bench_shrink(preprocess.width, preprocess.height, repeats, rounds),
    }


def run_module_by_module(engine: ElasticEngine, x: np.ndarray, variant: Variant) -> np.ndarray:
    """The variant's probabilities through one backend call per module (no early exit)."""
    features = engine.backend.stem(x)
    for stage, op in enumerate(variant.operators):
        features = engine.backend.stage(stage, op, features)
    return softmax(engine.backend.head(variant.exit_index, features))


def run_every_exit(engine: ElasticEngine, x: np.ndarray, variant: Variant) -> np.ndarray:
    """The variant's probabilities through its fused segments, each with its exit head: what a frame that
    no early exit answers pays when every exit on the path is evaluated."""
    features: object = x
    for stage, op in enumerate(variant.operators):
        features, probabilities = engine.backend.segment(stage, op, features, head=True)
    return probabilities


def interleaved_camera_frames(
    paths: dict[str, Callable[[np.ndarray], object]], images: Sequence[np.ndarray], frames: int, gap_s: float
) -> dict[str, list[float]]:
    """Per path, the latency [ms] of ``frames`` camera frames (``images`` in turn), each after a gap of
    ``gap_s`` so that it finds the CPU cold; the paths take turns frame by frame, so machine noise
    falls on all alike."""
    samples: dict[str, list[float]] = {name: [] for name in paths}
    for i in range(frames):
        for name, path in paths.items():
            time.sleep(gap_s)
            start = time.perf_counter()
            path(images[i % len(images)])
            samples[name].append((time.perf_counter() - start) * 1e3)
    return samples


def camera_rate_variants(variants_table: dict[str, Any]) -> dict[str, Variant]:
    """What the camera-rate bench times: the most accurate variant of the first and of the last exit, the
    most accurate variant overall (the top one) and the one of fewest FLOPs (the fastest by design)."""
    best = best_per_exit(variants_table["variants"], "val_accuracy")
    chosen = {
        "first exit": best[min(best)]["variant_id"],
        "last exit": best[max(best)]["variant_id"],
        **reference_variants(variants_table),
    }
    return {role: Variant.parse(vid) for role, vid in chosen.items()}


def whole_graph(modules: OnnxModules, variant: Variant) -> bytes:
    """One fused ONNX graph of a variant: stem, its blocks, its exit head and the soft-max."""
    blocks = [modules.stages[s][op] for s, op in enumerate(variant.operators)]
    return fuse([modules.stem, *blocks, modules.heads[variant.exit_index]], softmax=True)


def bench_camera_rate(
    model: LoadedModel,
    variants_table: dict[str, Any],
    frames: int = 60,
    gap_s: float = 0.066,
    threads: int = 2,
    frame_size: tuple[int, int] = (640, 480),
    spinning: bool = False,
) -> list[dict[str, Any]]:
    """Per variant of ``camera_rate_variants``: latency of an rgb8 camera frame every ``gap_s``,
    pre-processing included, through the engine's fused segments, module by module, and one fused
    graph of the whole variant, interleaved. ``spinning``: ONNX Runtime's idle workers spin (its
    default) instead of sleeping (the engine's setting)."""
    import onnxruntime as ort

    modules = export_modules(model.net, model.input_shape)
    engine = ElasticEngine(OnnxBackend(modules, threads, spinning), modules.stage_ops, model.input_shape, "bench",
                           card_resolutions(model.card))  # fmt: skip
    preprocess = Preprocessor.from_card(model.card)
    rng = np.random.default_rng(3)
    width, height = frame_size
    images = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(8)]
    options = session_options(threads, spinning)
    rows = []
    for role, variant in camera_rate_variants(variants_table).items():
        whole = ort.InferenceSession(whole_graph(modules, variant), options, providers=["CPUExecutionProvider"])
        whole_input = whole.get_inputs()[0].name
        paths = {
            "segments": lambda image, v=variant: engine.run(preprocess(image, "rgb8", v.resolution), v),
            "modules": lambda image, v=variant: run_module_by_module(
                engine, preprocess(image, "rgb8", v.resolution), v
            ),
            "whole_graph": lambda image, v=variant, session=whole, name=whole_input: session.run(
                None, {name: preprocess(image, "rgb8", v.resolution)}
            ),
            "every_exit": lambda image, v=variant: run_every_exit(engine, preprocess(image, "rgb8", v.resolution), v),
        }
        for path in paths.values():
            path(images[0])  # warm
        samples = interleaved_camera_frames(paths, images, frames, gap_s)
        figures = {name: {**_summary(v), "mean_ms": round(float(np.mean(v)), 4)} for name, v in samples.items()}
        rows.append(
            {
                "role": role,
                "exit": variant.exit_index,
                "variant": variant.id,
                **figures,
                "segments_over_modules": round(figures["segments"]["mean_ms"] / figures["modules"]["mean_ms"], 3),
                "segments_over_whole_graph": round(
                    figures["segments"]["median_ms"] / figures["whole_graph"]["median_ms"], 3
                ),
                "every_exit_over_segments": round(
                    figures["every_exit"]["median_ms"] / figures["segments"]["median_ms"], 3
                ),
            }
        )
    top, largest = (next(row for row in rows if row["role"] == role) for role in ("top", "largest"))
    for row in rows:
        row["median_over_top"] = round(row["segments"]["median_ms"] / top["segments"]["median_ms"], 3)
        row["median_over_largest"] = round(row["segments"]["median_ms"] / largest["segments"]["median_ms"], 3)
    return rows


def format_camera_rate(
    rows: list[dict[str, Any]], gap_s: float, threads: int, frame: str, spinning: bool = False
) -> str:
    idle_workers = "spinning" if spinning else "sleeping"
    lines = [
        f"a {frame} rgb8 frame every {gap_s * 1e3:g} ms (pre-processing included), onnxruntime, {threads} thread(s)"
        f" (idle workers {idle_workers}):"
    ]
    lines.append(
        "role        variant                         segments median (p90)  modules median  whole graph median"
        "  segments/whole  median/top  median/largest  every exit head median (p90)  every exit/segments"
    )
    for row in rows:
        seg, mod, whole, every = row["segments"], row["modules"], row["whole_graph"], row["every_exit"]
        lines.append(
            f"{row['role']:<11} {row['variant']:<31} {seg['median_ms']:>8.3f} ({seg['p90_ms']:.3f})"
            f"     {mod['median_ms']:>9.3f}     {whole['median_ms']:>9.3f}"
            f"            {row['segments_over_whole_graph']:>5.2f}x     {row['median_over_top']:>5.2f}"
            f"       {row['median_over_largest']:>5.2f}"
            f"          {every['median_ms']:>8.3f} ({every['p90_ms']:.3f})"
            f"               {row['every_exit_over_segments']:>5.2f}x"
        )
    return "\n".join(lines)


def format_report(report: dict[str, Any]) -> str:
    lines = ["exit  variant                      torch ms (p90)      onnxruntime ms (p90)  speedup"]
    for row in report["exits"]:
        t, o = row["torch"], row["onnxruntime"]
        lines.append(
            f"{row['exit']:>4}  {row['variant']:<28} {t['median_ms']:>7.3f} ({t['p90_ms']:.3f})"
            f"     {o['median_ms']:>7.3f} ({o['p90_ms']:.3f})     {row['onnx_speedup']:>5.2f}x"
        )
    pre = report["preprocess_640x480_rgb8"]
    lines.append(f"pre-processing of a 640 x 480 rgb8 frame: {pre['median_ms']:.3f} ms (p90 {pre['p90_ms']:.3f})")
    lines.append("shrinking a grey frame   INTER_AREA ms   shrink_by_area ms  speedup  max difference (grey levels)")
    for row in report["shrink"]:
        lines.append(
            f"{row['source']:>24}   {row['inter_area']['median_ms']:>9.3f}"
            f"       {row['shrink_by_area']['median_ms']:>9.3f}"
            f"        {row['speedup']:>5.2f}x  {row['max_grey_difference']}"
        )
    if "camera_rate" in report:
        lines.append(
            format_camera_rate(
                report["camera_rate"],
                report["camera_rate_gap_s"],
                report["threads"],
                report["camera_rate_frame"],
                report.get("camera_rate_spinning", False),
            )
        )
    return "\n".join(lines)


def bench_int8(
    model: LoadedModel,
    variants_table: dict[str, Any],
    modules: OnnxModules,
    int8: OnnxModules,
    test_frames: Sequence[np.ndarray],
    test_labels: Sequence[int],
    frames: int = 40,
    gap_s: float = 0.066,
    threads: int = 2,
    load: AbstractContextManager[Any] | None = None,
) -> list[dict[str, Any]]:
    """Per variant of ``camera_rate_variants``, the float modules against their int8 copy: accuracy on
    labelled rgb8 camera frames, and the latency of one such frame every ``gap_s`` through the engine's
    fused segments, pre-processing included, the two interleaved. With ``load`` (a context that runs a
    load while it is open, ``load.stress.StressNg``) the latency is timed under it too
    (``float_loaded``, ``int8_loaded``)."""
    resolutions = card_resolutions(model.card)
    engines = {
        precision: ElasticEngine(OnnxBackend(m, threads), m.stage_ops, model.input_shape, precision, resolutions)
        for precision, m in (("float", modules), ("int8", int8))
    }
    preprocess = Preprocessor.from_card(model.card)
    inputs: dict[int | None, list[np.ndarray]] = {}
    labels = np.asarray(test_labels)
    rows = []
    for role, variant in camera_rate_variants(variants_table).items():
        if variant.resolution not in inputs:
            inputs[variant.resolution] = [preprocess(frame, "rgb8", variant.resolution) for frame in test_frames]
        xs = inputs[variant.resolution]
        accuracy = {
            precision: float(np.mean(np.array([engine.run(x, variant).probabilities.argmax() for x in xs]) == labels))
            for precision, engine in engines.items()
        }
        paths = {
            precision: lambda image, e=engine, v=variant: e.run(preprocess(image, "rgb8", v.resolution), v)
            for precision, engine in engines.items()
        }
        figures = {p: _summary(ms) for p, ms in interleaved_camera_frames(paths, test_frames, frames, gap_s).items()}
        if load is not None:
            with load:
                time.sleep(1.0)  # the load's workers up
                loaded = interleaved_camera_frames(paths, test_frames, frames, gap_s)
            figures |= {f"{precision}_loaded": _summary(ms) for precision, ms in loaded.items()}
        rows.append(
            {
                "role": role,
                "variant": variant.id,
                "accuracy": {precision: round(a, 4) for precision, a in accuracy.items()},
                **figures,
                "speedup": round(figures["float"]["median_ms"] / figures["int8"]["median_ms"], 3),
            }
        )
    top = next(row for row in rows if row["role"] == "top")["float"]["median_ms"]
    for row in rows:
        row["int8_over_float_top"] = round(row["int8"]["median_ms"] / top, 3)
        row["float_over_float_top"] = round(row["float"]["median_ms"] / top, 3)
    return rows


def format_int8(
    rows: list[dict[str, Any]], test_frames: int, gap_s: float, threads: int, frame: str, load: str = ""
) -> str:
    lines = [
        f"float against int8 modules: accuracy on {test_frames} labelled {frame} rgb8 test frames; latency of one"
        f" such frame every {gap_s * 1e3:g} ms (pre-processing included, fused segments), {threads} thread(s):",
        "role        variant                         float acc  int8 acc   float median (p90)   int8 median (p90)"
        "  speedup  float/top  int8/top",
    ]
    for row in rows:
        f, q = row["float"], row["int8"]
        lines.append(
            f"{row['role']:<11} {row['variant']:<31} {row['accuracy']['float'] * 100:>7.2f} %"
            f" {row['accuracy']['int8'] * 100:>7.2f} %  {f['median_ms']:>8.3f} ({f['p90_ms']:.3f})"
            f"  {q['median_ms']:>8.3f} ({q['p90_ms']:.3f})    {row['speedup']:>5.2f}x"
            f"     {row['float_over_float_top']:>5.2f}     {row['int8_over_float_top']:>5.2f}"
        )
    lines.append("float/top and int8/top: the median over the float top variant's median")
    if load and all("float_loaded" in row for row in rows):
        lines.append(f"under the load `{load}`, the same frames:")
        lines.append("role        variant                         float median (p90)   int8 median (p90)")
        for row in rows:
            f, q = row["float_loaded"], row["int8_loaded"]
            lines.append(
                f"{row['role']:<11} {row['variant']:<31} {f['median_ms']:>8.3f} ({f['p90_ms']:.3f})"
                f"  {q['median_ms']:>8.3f} ({q['p90_ms']:.3f})"
            )
    return "\n".join(lines)
