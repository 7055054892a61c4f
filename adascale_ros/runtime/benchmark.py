"""``adascale bench inference``: batch-1 latency per exit, torch eager vs ONNX Runtime, in one run.

For each exit the most accurate variant (validation accuracy) is timed on
both backends, interleaved in rounds so machine noise falls on both alike.
The pre-processing of one 640 x 480 rgb8 camera frame is timed too: it is
part of every frame's latency whatever the backend.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from adascale_ros.model.artifacts import LoadedModel
from adascale_ros.model.elastic import Variant
from adascale_ros.model.pipeline import best_per_exit
from adascale_ros.profiling.timing import summarize
from adascale_ros.runtime.engine import BACKENDS, ElasticEngine
from adascale_ros.runtime.preprocess import Preprocessor


def _summary(samples_ms: list[float]) -> dict[str, float]:
    timing = summarize(samples_ms)
    return {
        "median_ms": round(timing.median_ms, 4),
        "p90_ms": round(timing.p90_ms, 4),
        "min_ms": round(timing.min_ms, 4),
    }


def bench_inference(
    model: LoadedModel, variants_table: dict[str, Any], repeats: int = 200, rounds: int = 10, threads: int = 2
) -> dict[str, Any]:
    engines = {name: ElasticEngine.from_net(model.net, model.input_shape, name, threads) for name in BACKENDS}
    chosen = {
        e: Variant.parse(row["variant_id"])
        for e, row in best_per_exit(variants_table["variants"], "val_accuracy").items()
    }
    x = np.random.default_rng(0).standard_normal((1, *model.input_shape)).astype(np.float32)
    samples: dict[tuple[int, str], list[float]] = {(e, b): [] for e in chosen for b in BACKENDS}
    per_round = max(1, repeats // rounds)
    for _ in range(rounds):
        for exit_index, variant in chosen.items():
            for name, engine in engines.items():
                engine.run(x, variant)  # warm this path after the other backend ran
                for _ in range(per_round):
                    start = time.perf_counter()
                    engine.run(x, variant)
                    samples[(exit_index, name)].append((time.perf_counter() - start) * 1e3)
    exits = []
    for exit_index, variant in chosen.items():
        figures = {name: _summary(samples[(exit_index, name)]) for name in BACKENDS}
        speedup = figures["torch"]["median_ms"] / figures["onnxruntime"]["median_ms"]
        exits.append({"exit": exit_index, "variant": variant.id, **figures, "onnx_speedup": round(speedup, 2)})

    preprocess = Preprocessor.from_card(model.card)
    frame = np.random.default_rng(1).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    pre_ms = []
    for _ in range(repeats):
        start = time.perf_counter()
        preprocess(frame, "rgb8")
        pre_ms.append((time.perf_counter() - start) * 1e3)
    return {
        "threads": threads,
        "samples_per_backend_and_exit": per_round * rounds,
        "exits": exits,
        "preprocess_640x480_rgb8": _summary(pre_ms),
    }


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
    return "\n".join(lines)
