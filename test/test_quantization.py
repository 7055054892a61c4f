"""The ONNX modules in int8: real integer graphs that classify the real images as the float ones do."""

from __future__ import annotations

import contextlib

import numpy as np
import onnx
import pytest
from conftest import REPO_ROOT

from adascale_ros.model.datasets import DatasetSpec, load_splits
from adascale_ros.model.elastic import Variant
from adascale_ros.model.saved_model import load_model
from adascale_ros.runtime.engine import ElasticEngine, OnnxBackend
from adascale_ros.runtime.onnx_modules import export_modules
from adascale_ros.runtime.preprocess import Preprocessor
from adascale_ros.runtime.quantization import quantize_graph, quantize_modules


@pytest.fixture(scope="module")
def modules_and_images():
    model = load_model(REPO_ROOT / "models" / "default")
    splits = load_splits(DatasetSpec(limit_train=600, limit_test=200))
    prepare = Preprocessor.from_card(model.card)
    images = [prepare(image[0].numpy(), "mono8") for image in splits.test.images]
    calibration = [prepare(image[0].numpy(), "mono8") for image in splits.val.images[:32]]
    return model, export_modules(model.net, model.input_shape), calibration, images, splits.test.labels.numpy()


def test_int8_modules_are_integer_graphs_that_answer_as_the_float_ones(modules_and_images):
    model, modules, calibration, images, labels = modules_and_images
    int8 = quantize_modules(modules, calibration)
    assert int8.stage_ops == modules.stage_ops
    for graph in (int8.stem, int8.stages[1]["dws"], int8.heads[3]):
        assert "QLinearConv" in {node.op_type for node in onnx.load_from_string(graph).graph.node}
    engines = {
        name: ElasticEngine(OnnxBackend(m, threads=1), m.stage_ops, model.input_shape, name)
        for name, m in (("float", modules), ("int8", int8))
    }
    for variant_id in ["e0:res", "e2:mbc-dense-res", "e3:fac-res-dws-mbc"]:
        variant = Variant.parse(variant_id)
        answers = {
            name: np.array([engine.run(x, variant).probabilities.argmax() for x in images])
            for name, engine in engines.items()
        }
        assert (answers["int8"] == answers["float"]).mean() >= 0.9, variant_id
        accuracy = {name: (a == labels).mean() for name, a in answers.items()}
        assert accuracy["int8"] >= accuracy["float"] - 0.05, (variant_id, accuracy)


def test_quantizing_needs_calibration_inputs(modules_and_images):
    with pytest.raises(ValueError, match="at least one calibration input"):
        quantize_graph(modules_and_images[1].stem, [])


def test_int8_benchmark_scores_and_times_both_precisions_per_role(modules_and_images):
    from adascale_ros.harness.bags import camera_frame
    from adascale_ros.model.directory import load_variant_table
    from adascale_ros.runtime.benchmark import bench_int8, format_int8

    model, modules, calibration, _, labels = modules_and_images
    splits = load_splits(DatasetSpec(limit_train=600, limit_test=20))
    frames = [camera_frame(image[0].numpy(), 64, 48) for image in splits.test.images]
    table = load_variant_table(REPO_ROOT / "models" / "default")
    int8 = quantize_modules(modules, calibration)
    rows = bench_int8(model, table, modules, int8, frames, labels[:20], 2, 0.001, 1, contextlib.nullcontext())
    assert [row["role"] for row in rows] == ["first exit", "last exit", "top", "largest", "fastest"]
    for row in rows:
        assert set(row["accuracy"]) == {"float", "int8"} and all(0.5 < a <= 1 for a in row["accuracy"].values())
        assert row["speedup"] == pytest.approx(row["float"]["median_ms"] / row["int8"]["median_ms"], abs=1e-3)
        assert 0 < row["int8_loaded"]["median_ms"] and 0 < row["float_loaded"]["median_ms"]
    assert rows[2]["float_over_float_top"] == 1.0
    assert "int8/top" in format_int8(rows, 20, 0.001, 1, "64 x 48")
    assert "under the load `none`" in format_int8(rows, 20, 0.001, 1, "64 x 48", "none")
