"""Image conversion, pre-processing, the newest-frame slot and both execution backends."""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import pytest
import torch
from conftest import REPO_ROOT
from sensor_msgs.msg import CompressedImage, Image

from adascale_ros.model.accuracy import Normalization
from adascale_ros.model.elastic import Variant
from adascale_ros.model.saved_model import load_model
from adascale_ros.runtime.engine import ElasticEngine, SegmentTimes, softmax
from adascale_ros.runtime.frames import FramePeriod, LatestSlot
from adascale_ros.runtime.images import (
    MAX_COMPRESSED_BYTES,
    MAX_IMAGE_PIXELS,
    FrameError,
    compressed_to_array,
    frame_to_array,
    image_to_array,
)
from adascale_ros.runtime.overlay import draw_overlay
from adascale_ros.runtime.preprocess import MIN_BLOCK, Preprocessor, shrink_by_area
from adascale_ros.runtime.variant_in_force import VariantInForce

LIMIT = 1 << 20
# A 2 x 3 RGB image with distinct pixels.
RGB = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255]], [[10, 20, 30], [40, 50, 60], [70, 80, 90]]], np.uint8)


def image_msg(array: np.ndarray, encoding: str, pad: int = 0, bigendian: bool = False) -> Image:
    """An Image with rows padded by ``pad`` bytes, written in the given byte order."""
    height, width = array.shape[:2]
    wire = array.astype(array.dtype.newbyteorder(">" if bigendian else "<"))
    rows = wire.reshape(height, -1).view(np.uint8).reshape(height, -1)
    rows = np.concatenate([rows, np.full((height, pad), 0xEE, np.uint8)], axis=1)
    return Image(
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=bigendian,
        step=rows.shape[1],
        data=rows.tobytes(),
    )


ENCODED = {
    "rgb8": RGB,
    "bgr8": RGB[..., ::-1],
    "rgba8": np.dstack([RGB, np.full(RGB.shape[:2], 7, np.uint8)]),
    "bgra8": np.dstack([RGB[..., ::-1], np.full(RGB.shape[:2], 7, np.uint8)]),
    "mono8": np.array([[0, 128, 255], [1, 2, 3]], np.uint8),
    "mono16": np.array([[0, 0x1234, 0xFFFF], [256, 512, 1024]], np.uint16),
}


@pytest.mark.parametrize("encoding", sorted(ENCODED))
@pytest.mark.parametrize("pad", [0, 3])
@pytest.mark.parametrize("bigendian", [False, True])  # means nothing for 8-bit data, but is legal
def test_every_encoding_converts_to_its_pixels(encoding, pad, bigendian):
    expected = np.ascontiguousarray(ENCODED[encoding])
    array, got_encoding = image_to_array(image_msg(expected, encoding, pad, bigendian), LIMIT)
    assert got_encoding == encoding and array.dtype == expected.dtype
    np.testing.assert_array_equal(array, expected)


@pytest.mark.parametrize(
    "encoding, order", [("yuv422_yuy2", "YUYV"), ("yuyv", "YUYV"), ("yuv422", "UYVY"), ("uyvy", "UYVY")]
)
@pytest.mark.parametrize("pad", [0, 4])
def test_packed_yuv422_decodes_to_the_rgb_it_was_made_from(encoding, order, pad):
    # Flat colour pairs survive 4:2:2 chroma sharing; BT.601 limited range, as cameras send it.
    rgb = np.repeat(np.array([[[200, 40, 40], [40, 200, 40]], [[40, 40, 200], [128, 128, 128]]], np.uint8), 2, axis=1)
    bt601 = np.array([[0.257, 0.504, 0.098], [-0.148, -0.291, 0.439], [0.439, -0.368, -0.071]])
    y, u, v = np.moveaxis(np.round(rgb @ bt601.T + [16, 128, 128]).astype(np.uint8), -1, 0)
    packed = np.empty((2, 4, 2), np.uint8)
    chroma = np.where(np.arange(4) % 2 == 0, u, v)  # U for the even pixel of a pair, V for the odd
    packed[..., 0 if order == "YUYV" else 1], packed[..., 1 if order == "YUYV" else 0] = y, chroma
    array, got_encoding = image_to_array(image_msg(packed, encoding, pad), LIMIT)
    assert got_encoding == "rgb8" and array.shape == (2, 4, 3)
    assert np.abs(array.astype(int) - rgb).max() <= 3


def test_big_endian_mono16():
    expected = ENCODED["mono16"]
    array, _ = image_to_array(image_msg(expected, "mono16", pad=2, bigendian=True), LIMIT)
    np.testing.assert_array_equal(array, expected)


@pytest.mark.parametrize(
    "change, kind",
    [
        (dict(encoding="nv21"), "encoding"),
        (dict(encoding="32FC1"), "encoding"),
        (dict(encoding="yuv422_yuy2"), "size"),  # 3 pixels wide: YUV 4:2:2 comes in pairs
        (dict(step=5), "step"),  # less than 3 pixels x 3 bytes
        (dict(data=bytes(10)), "size"),  # truncated
        (dict(height=0, data=b""), "size"),
        (dict(height=2000, width=2000, step=6000, data=bytes(12_000_000)), "too_large"),
    ],
)
def test_malformed_images_are_rejected_by_kind(change, kind):
    msg = image_msg(RGB, "rgb8")
    for name, value in change.items():
        setattr(msg, name, value)
    with pytest.raises(FrameError) as err:
        image_to_array(msg, LIMIT)
    assert err.value.kind == kind


def compressed_msg(bgr: np.ndarray, fmt: str) -> CompressedImage:
    ok, data = cv2.imencode(f".{fmt}", bgr)
    assert ok
    return CompressedImage(format=fmt, data=data.tobytes())


def test_compressed_png_is_lossless_and_jpeg_close():
    bgr = np.ascontiguousarray(np.kron(RGB[..., ::-1], np.ones((8, 8, 1), np.uint8)))  # 16 x 24, flat blocks
    array, encoding = compressed_to_array(compressed_msg(bgr, "png"), LIMIT, LIMIT)
    assert encoding == "bgr8"
    np.testing.assert_array_equal(array, bgr)
    array, _ = compressed_to_array(compressed_msg(bgr, "jpeg"), LIMIT, LIMIT)
    assert np.abs(array.astype(int) - bgr).mean() < 12
    grey = np.arange(64, dtype=np.uint8).reshape(8, 8)
    array, encoding = compressed_to_array(compressed_msg(grey, "png"), LIMIT, LIMIT)
    assert encoding == "mono8"
    np.testing.assert_array_equal(array, grey)


@pytest.mark.parametrize(
    "msg, kind",
    [
        (CompressedImage(format="jpeg", data=b""), "size"),
        (CompressedImage(format="jpeg", data=b"\xff\xd8 not really a jpeg"), "decode"),
        (CompressedImage(format="png", data=bytes(range(256)) * 4), "decode"),
        (CompressedImage(format="tiff", data=b"II*\x00"), "format"),
        (CompressedImage(format="png", data=bytes(LIMIT + 1)), "too_large"),
    ],
)
def test_bad_compressed_frames_are_rejected_by_kind(msg, kind):
    with pytest.raises(FrameError) as err:
        compressed_to_array(msg, LIMIT, LIMIT)
    assert err.value.kind == kind


def test_preprocessing_matches_training_normalisation():
    normalize = Normalization((0.3,), (0.4,))
    pre = Preprocessor(1, 28, 28, normalize.mean, normalize.std)
    digit = np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)
    expected = normalize(torch.from_numpy(digit)[None, None]).numpy()
    # The same picture as a 224 x 224 colour camera frame (nearest upscale, grey in R=G=B).
    camera = np.repeat(np.kron(digit, np.ones((8, 8), np.uint8))[..., None], 3, axis=2)
    for encoding, frame in [("mono8", digit), ("rgb8", camera), ("bgra8", cv2.cvtColor(camera, cv2.COLOR_RGB2BGRA))]:
        x = pre(frame, encoding)
        assert x.shape == (1, 1, 28, 28) and x.dtype == np.float32
        np.testing.assert_allclose(x, expected, atol=1e-5)
    # mono16 carries the same picture in its high byte.
    np.testing.assert_allclose(pre(digit.astype(np.uint16) << 8, "mono16"), expected, atol=1e-5)
    # A 3-channel model gets RGB in R, G, B order, each channel with its own mean and std.
    mean, std = np.array([0.1, 0.5, 0.9], np.float32), np.array([0.5, 0.25, 2.0], np.float32)
    rgb_model = Preprocessor(3, 2, 3, mean, std)
    x = rgb_model(RGB[..., ::-1].copy(), "bgr8")
    np.testing.assert_allclose(x[0].transpose(1, 2, 0), (RGB / 255.0 - mean) / std, atol=1e-5)


@pytest.mark.parametrize("width, height", [(250, 250), (640, 480), (1280, 720), (300, 1000)])
@pytest.mark.parametrize("content", ["noise", "checkerboard"])
def test_shrink_by_area_stays_within_two_grey_levels_of_inter_area(width, height, content):
    # Pixel noise and a one-pixel checkerboard are the worst case for any resampling
    # shortcut: a bilinear pre-shrink instead of the slight enlargement is 86 levels off.
    if content == "noise":
        frame = np.random.default_rng(width).integers(0, 256, (height, width), dtype=np.uint8)
    else:
        frame = (np.indices((height, width)).sum(axis=0) % 2 * 255).astype(np.uint8)
    exact = cv2.resize(frame, (28, 28), interpolation=cv2.INTER_AREA).astype(int)
    fast = shrink_by_area(frame, 28, 28)
    assert fast.shape == (28, 28) and fast.dtype == np.uint8
    assert np.abs(fast.astype(int) - exact).max() <= 2


def test_shrink_by_area_is_exact_inter_area_for_small_frames_and_whole_blocks():
    rng = np.random.default_rng(0)
    for size in (29, 55, 28 * (MIN_BLOCK - 1), 28 * 9):  # under MIN_BLOCK pixels per output, or a whole multiple
        frame = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        np.testing.assert_array_equal(
            shrink_by_area(frame, 28, 28), cv2.resize(frame, (28, 28), interpolation=cv2.INTER_AREA)
        )


def test_frame_period_is_the_median_interval_and_ignores_a_lost_frame():
    period = FramePeriod(window=5)
    assert math.isnan(period.period_ms())
    period.add(0.0)
    assert math.isnan(period.period_ms())  # one arrival is no interval
    for t in (0.066, 0.133, 0.266, 0.333):  # a 15 Hz camera, one frame lost on the way
        period.add(t)
    assert period.period_ms() == pytest.approx(66.5, abs=0.6)
    for t in (0.366, 0.399, 0.432, 0.465):  # now 30 Hz: the window forgets the old rate
        period.add(t)
    assert period.period_ms() == pytest.approx(33.0, abs=0.1)
    with pytest.raises(ValueError, match="window"):
        FramePeriod(window=1)


def test_latest_slot_keeps_only_the_newest():
    slot: LatestSlot[int] = LatestSlot()
    assert slot.put(1) is False
    assert slot.put(2) is True and slot.put(3) is True
    assert slot.take(0.01) == 3 and slot.dropped == 2
    assert slot.take(0.01) is None
    got = []
    consumer = threading.Thread(target=lambda: got.append(slot.take(5.0)))
    consumer.start()
    slot.put(4)
    consumer.join(2.0)
    assert got == [4]
    slot.close()
    assert slot.take(5.0) is None and slot.closed


def test_overlay_is_enlarged_bgr8():
    canvas = draw_overlay(np.zeros((28, 28), np.uint8), "mono8", ["coat 0.93", "exit 1 e1:res-fac"])
    assert canvas.shape == (320, 320, 3) and canvas.dtype == np.uint8 and canvas.any()


@pytest.fixture(scope="module")
def default_model():
    return load_model(REPO_ROOT / "models" / "default")


def test_backends_agree_and_run_only_the_variant(default_model):
    model = default_model
    torch_engine = ElasticEngine.from_net(model.net, model.input_shape, "torch", threads=1)
    onnx_engine = ElasticEngine.from_net(model.net, model.input_shape, "onnxruntime", threads=1)
    x = np.random.default_rng(1).standard_normal((1, *model.input_shape)).astype(np.float32)
    for variant_id in ["e0:res", "e1:dws-fac", "e2:mbc-dense-res", "e3:fac-res-dws-mbc"]:
        variant = Variant.parse(variant_id)
        a, b = torch_engine.run(x, variant), onnx_engine.run(x, variant)
        assert a.exit_index == b.exit_index == variant.exit_index
        np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-4)
        with torch.inference_mode():
            reference = torch.softmax(model.net(torch.from_numpy(x), variant), dim=1)[0].numpy()
        np.testing.assert_allclose(a.probabilities, reference, atol=1e-5)
    with pytest.raises(ValueError, match="no exit 7"):
        onnx_engine.check_variant("e7:res-res-res-res-res-res-res-res")
    with pytest.raises(ValueError, match="malformed"):
        onnx_engine.check_variant("e1:res/fac")


def test_onnx_export_of_a_batchnorm_network_uses_its_running_statistics():
    from adascale_ros.model.elastic import ElasticConfig, ElasticNet

    net = ElasticNet(
        ElasticConfig(stem_channels=8, stage_channels=(8, 16), stage_strides=(2, 2), head_channels=16, norm="batch")
    )
    with torch.no_grad():  # statistics unlike a fresh BatchNorm's (mean 0, variance 1)
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    net.eval()
    engine = ElasticEngine.from_net(net, (1, 28, 28), "onnxruntime", threads=1)
    x = np.random.default_rng(2).standard_normal((1, 1, 28, 28)).astype(np.float32)
    for variant_id in ["e0:dense", "e1:res-mbc", "e1:fac-dws"]:
        variant = Variant.parse(variant_id)
        with torch.inference_mode():
            reference = torch.softmax(net(torch.from_numpy(x), variant), dim=1)[0].numpy()
        np.testing.assert_allclose(engine.run(x, variant).probabilities, reference, atol=1e-5)


def test_onnx_modules_are_cached_by_content_and_read_back_without_torch(default_model, tmp_path, monkeypatch):
    monkeypatch.setenv("ADASCALE_CACHE_DIR", str(tmp_path / "cache"))
    model_dir = tmp_path / "model"
    shutil.copytree(REPO_ROOT / "models" / "default", model_dir, ignore=shutil.ignore_patterns("profiler"))
    shape = default_model.input_shape
    exported = ElasticEngine.from_model_dir(model_dir, shape, "onnxruntime", threads=1)
    assert exported.source.startswith("ONNX modules exported and cached")
    cached = ElasticEngine.from_model_dir(model_dir, shape, "onnxruntime", threads=1)
    assert cached.source == "ONNX modules from the cache"
    assert cached.stage_ops == exported.stage_ops == tuple(tuple(blocks) for blocks in default_model.net.stages)
    x = np.random.default_rng(3).standard_normal((1, *shape)).astype(np.float32)
    reference = ElasticEngine.from_net(default_model.net, shape, "onnxruntime", threads=1)
    for variant_id in ["e0:res", "e3:fac-res-dws-mbc"]:
        variant = Variant.parse(variant_id)
        np.testing.assert_array_equal(cached.run(x, variant).probabilities, reference.run(x, variant).probabilities)
    # A cache hit in a fresh process never imports torch.
    probe = (
        "import sys; from pathlib import Path; from adascale_ros.runtime.engine import ElasticEngine; "
        f"e = ElasticEngine.from_model_dir(Path({str(model_dir)!r}), {shape}, 'onnxruntime', 1); "
        "print(e.source, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "ONNX modules from the cache False"
    # New weights are another key; a damaged entry is exported again (and repaired).
    (entry,) = (tmp_path / "cache" / "onnx").iterdir()
    (entry / "stage1.res.onnx").write_bytes(b"damaged")
    repaired = ElasticEngine.from_model_dir(model_dir, shape, "onnxruntime", threads=1)
    assert repaired.source.startswith("ONNX modules exported")
    assert (
        ElasticEngine.from_model_dir(model_dir, shape, "onnxruntime", threads=1).source == "ONNX modules from the cache"
    )


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_confidence_early_exit(default_model, backend):
    model = default_model
    engine = ElasticEngine.from_net(model.net, model.input_shape, backend, threads=1)
    variant = Variant.parse("e3:res-mbc-fac-fac")
    x = np.random.default_rng(2).standard_normal((1, *model.input_shape)).astype(np.float32)
    full = engine.run(x, variant)
    assert full.exit_index == 3 and not full.early_exited
    # Threshold 0: the first exit on the path always answers.
    first = engine.run(x, variant, early_exit_threshold=0.0)
    assert first.exit_index == 0 and first.early_exited
    with torch.inference_mode():
        exit0 = torch.softmax(model.net(torch.from_numpy(x), Variant(0, ("res",))), dim=1)[0].numpy()
    np.testing.assert_allclose(first.probabilities, exit0, atol=1e-5 if backend == "torch" else 1e-4)
    # Just above exit 0's confidence, exit 0 may not answer.
    later = engine.run(x, variant, early_exit_threshold=float(exit0.max()) + 1e-6)
    assert later.exit_index > 0


def test_segment_times_follow_recent_durations():
    times = SegmentTimes(smoothing=0.5)
    assert times.expected_ms(1, "res") is None
    times.record(1, "res", 2.0)
    times.record(1, "res", 4.0)
    assert times.expected_ms(1, "res") == pytest.approx(3.0)
    assert times.expected_ms(1, "dws") is None
    assert times.expected_ms(1, "res", head=False) is None  # with and without the exit head apart
    with pytest.raises(ValueError, match="smoothing"):
        SegmentTimes(smoothing=0.0)


def test_deadline_guard_answers_with_the_exit_before_the_stage_that_would_overrun(default_model):
    import time

    model = default_model
    engine = ElasticEngine.from_net(model.net, model.input_shape, "onnxruntime", threads=1)
    variant = Variant.parse("e3:res-mbc-fac-fac")
    x = np.random.default_rng(5).standard_normal((1, *model.input_shape)).astype(np.float32)
    # No stage timed yet: nothing to judge by, the whole path runs (and is timed, headless but the last).
    first = engine.run(x, variant, deadline_s=time.perf_counter() - 1.0)
    assert first.exit_index == 3 and not first.deadline_exited
    times = engine.segment_times
    assert all(times.expected_ms(s, op, head=s == 3) > 0 for s, op in enumerate(variant.operators))
    # Time to spare: the same answer as without the guard.
    relaxed = engine.run(x, variant, deadline_s=time.perf_counter() + 10.0)
    assert relaxed.exit_index == 3 and not relaxed.early_exited and not relaxed.deadline_exited
    np.testing.assert_allclose(relaxed.probabilities, engine.run(x, variant).probabilities, atol=1e-6)
    # Past the deadline: stage 0 always runs, and its exit answers (its head run then).
    late = engine.run(x, variant, deadline_s=time.perf_counter() - 1.0)
    assert late.exit_index == 0 and late.early_exited and late.deadline_exited
    np.testing.assert_allclose(late.probabilities, engine.run(x, variant.prefix(0)).probabilities, atol=1e-6)
    # Room for two stages by their recorded durations: exit 1 answers.
    spent = times.expected_ms(0, "res", head=False) + times.expected_ms(1, "mbc", head=False)
    times.record(2, "fac", 1e6, head=False)  # stage 2 "takes" 1000 s from now on
    middle = engine.run(x, variant, deadline_s=time.perf_counter() + 10 * spent / 1e3)
    assert middle.exit_index == 1 and middle.deadline_exited
    np.testing.assert_allclose(middle.probabilities, engine.run(x, variant.prefix(1)).probabilities, atol=1e-6)
    # Warming a path (no deadline) leaves the learnt durations alone.
    before = times.expected_ms(0, "res", head=False)
    engine.warm(variant)
    assert times.expected_ms(0, "res", head=False) == before


def test_a_stage_the_guard_skipped_is_tried_again_once_its_estimate_has_decayed(default_model):
    """One slow run (a cold first frame, a load that ended) must not keep a stage skipped for good."""
    import time

    model = default_model
    engine = ElasticEngine.from_net(model.net, model.input_shape, "onnxruntime", threads=1)
    variant = Variant.parse("e3:res-mbc-fac-fac")
    x = np.random.default_rng(5).standard_normal((1, *model.input_shape)).astype(np.float32)
    engine.run(x, variant, deadline_s=time.perf_counter() + 1.0)  # every stage timed
    engine.segment_times.record(2, "fac", 1e4, head=False)  # stage 2 "took" 10 s once
    exits = [engine.run(x, variant, deadline_s=time.perf_counter() + 1.0).exit_index for _ in range(40)]
    assert exits[0] == 1 and exits[-1] == 3  # skipped at first, run again once its estimate fits
    assert engine.segment_times.expected_ms(2, "fac", head=False) < 1e3  # and measured afresh


def test_fused_segment_is_its_modules_in_one_graph(default_model):
    """A block fused with its exit head (and the soft-max) gives what the modules give one by one."""
    import onnx
    import onnxruntime as ort

    from adascale_ros.runtime.onnx_modules import export_modules, fuse

    model = default_model
    modules = export_modules(model.net, model.input_shape)
    fused = ort.InferenceSession(fuse([modules.stem, modules.stages[0]["fac"], modules.heads[0]], True, True))
    assert [o.name for o in fused.get_outputs()][1] == "probabilities"
    domains = [opset.domain for opset in onnx.load_from_string(fuse([modules.stem, modules.heads[0]])).opset_import]
    assert len(domains) == len(set(domains))  # one opset import per domain, as ONNX requires
    engine = ElasticEngine.from_net(model.net, model.input_shape, "onnxruntime", threads=1)
    x = np.random.default_rng(4).standard_normal((1, *model.input_shape)).astype(np.float32)
    features, probabilities = fused.run(None, {fused.get_inputs()[0].name: x})
    block = engine.backend.stage(0, "fac", engine.backend.stem(x))
    np.testing.assert_allclose(features, block, atol=1e-6)
    np.testing.assert_allclose(probabilities[0], softmax(engine.backend.head(0, block)), atol=1e-6)
    assert fused.run(None, {fused.get_inputs()[0].name: x})[1].sum() == pytest.approx(1.0, abs=1e-5)


def test_camera_rate_benchmark_compares_segments_with_modules(default_model):
    from adascale_ros.model.directory import load_variant_table
    from adascale_ros.runtime.benchmark import (
        bench_camera_rate,
        format_camera_rate,
        run_every_exit,
        run_module_by_module,
    )

    table = load_variant_table(REPO_ROOT / "models" / "default")
    rows = bench_camera_rate(default_model, table, frames=3, gap_s=0.001, threads=1)
    assert [row["role"] for row in rows] == ["first exit", "last exit", "top", "largest", "fastest"]
    assert [row["exit"] for row in rows][:2] == [0, 3]
    for row in rows:
        for path in ("segments", "modules", "whole_graph", "every_exit"):
            assert 0 < row[path]["min_ms"] <= row[path]["median_ms"] <= row[path]["p90_ms"]
        assert row["segments_over_modules"] == pytest.approx(
            row["segments"]["mean_ms"] / row["modules"]["mean_ms"], abs=1e-3
        )
        assert row["segments_over_whole_graph"] == pytest.approx(
            row["segments"]["median_ms"] / row["whole_graph"]["median_ms"], abs=1e-3
        )
    assert rows[2]["median_over_top"] == 1.0
    assert "every 1 ms" in format_camera_rate(rows, 0.001, 1, "640 x 480")
    # The module-by-module path computes what the segments compute.
    engine = ElasticEngine.from_net(default_model.net, default_model.input_shape, "onnxruntime", threads=1)
    x = np.random.default_rng(5).standard_normal((1, *default_model.input_shape)).astype(np.float32)
    variant = Variant.parse("e2:mbc-dense-res")
    by_modules = run_module_by_module(engine, x, variant)
    np.testing.assert_allclose(by_modules, engine.run(x, variant).probabilities, atol=1e-6)
    # So does the path with every exit's head on the way.
    np.testing.assert_allclose(run_every_exit(engine, x, variant), by_modules, atol=1e-6)


def test_inference_benchmark_times_both_backends_per_exit(default_model):
    from adascale_ros.model.directory import load_variant_table
    from adascale_ros.runtime.benchmark import bench_inference, format_report

    report = bench_inference(default_model, load_variant_table(REPO_ROOT / "models" / "default"), repeats=4, rounds=2)
    assert [row["exit"] for row in report["exits"]] == [0, 1, 2, 3]
    for row in report["exits"]:
        for backend in ("torch", "onnxruntime"):
            assert 0 < row[backend]["min_ms"] <= row[backend]["median_ms"] <= row[backend]["p90_ms"]
        assert row["onnx_speedup"] > 0
    assert [row["source"] for row in report["shrink"]] == ["250x250", "640x480", "1280x720"]
    for row in report["shrink"]:
        assert row["speedup"] > 0 and row["max_grey_difference"] <= 2
    assert "speedup" in format_report(report) and "shrink_by_area" in format_report(report)


def test_a_variant_resolution_is_prepared_as_training_prepared_it():
    from adascale_ros.model.elastic_backbone import LITE_MEAN, LITE_STD
    from adascale_ros.model.finetune import model_input

    pre = Preprocessor(3, 224, 224, LITE_MEAN, LITE_STD)
    digit = np.random.default_rng(1).integers(0, 256, (28, 28), dtype=np.uint8)
    for size in (128, 160):
        x = pre(digit, "mono8", size)
        assert x.shape == (1, 3, size, size)
        expected = model_input(torch.from_numpy(digit)[None, None], size, Normalization(LITE_MEAN, LITE_STD)).numpy()
        # OpenCV's and torch's bilinear enlargement agree to within a grey level or so.
        assert np.abs(x - expected).max() < 2.5 / 255 / LITE_STD[0]
    assert pre(digit, "mono8").shape == (1, 3, 224, 224)


def test_inference_stats_say_what_is_missing_and_count_across_threads():
    from adascale_ros.runtime.stats import ERROR, NO_FRAME_WARN_S, OK, WARN, InferenceStats, Situation

    stats = InferenceStats(now_s=0.0)
    waiting = Situation("e0:pre", "/camera/image_raw", selection_in_force=False, dropped=0)
    level, message, _ = stats.status(NO_FRAME_WARN_S + 0.5, waiting)
    assert level == WARN and message == "no camera frame on /camera/image_raw for 4 s"
    threads = [
        threading.Thread(target=lambda: [stats.frame_received(4.0 + i / 1e4) for i in range(500)]) for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats.frame_processed(5.0, early_exited=True, deadline_exited=False)
    level, message, values = stats.status(5.0, waiting)
    assert (level, message) == (WARN, "no selection yet: running the safe default e0:pre")
    assert values["frames_received"] == 2000 and values["early_exits"] == 1 and values["latency_p50_ms"] == 5.0
    running = Situation("e2:pre-pre-pre", "/camera/image_raw", selection_in_force=True, dropped=3)
    level, message, values = stats.status(6.0, running)
    assert (level, message, values["frames_dropped"]) == (OK, "running e2:pre-pre-pre", 3)
    stats.frame_skipped("internal")  # the model failed and nothing was processed since the last status
    level, message, values = stats.status(6.5, running)
    assert level == ERROR and "fails on every frame" in message and values["skipped.internal"] == 1
    stats.frame_skipped("decode")
    stats.frame_processed(4.0, early_exited=False, deadline_exited=False)
    level, message, _ = stats.status(7.0, running)
    assert level == WARN and message.startswith("1 frames skipped")


def test_latest_slot_serves_until_closed_and_reports_what_raised():
    slot: LatestSlot[object] = LatestSlot()
    done, skipped = [], []

    def process(item: object) -> None:
        if item == "bad frame":
            raise FrameError("decode", "cannot decode")
        if item == "bug":
            raise KeyError("x")
        done.append(item)

    worker = threading.Thread(target=slot.serve, args=(process, lambda kind, msg: skipped.append((kind, msg))))
    worker.start()
    for handled, item in enumerate(("bad frame", "bug", 1), start=1):
        slot.put(item)
        deadline = time.monotonic() + 5.0  # one at a time, so none replaces another in the slot
        while len(done) + len(skipped) < handled and time.monotonic() < deadline:
            time.sleep(0.005)
    slot.close()
    worker.join(2.0)
    assert not worker.is_alive()
    assert done == [1]
    assert skipped == [("decode", "cannot decode"), ("internal", "KeyError: 'x'")]


def test_the_variant_in_force_switches_on_selections_and_falls_back_when_they_stop():
    safe, chosen = Variant.parse("e0:res"), Variant.parse("e3:dense-res-res-res")
    in_force = VariantInForce(safe)
    assert in_force.current.variant == safe and not in_force.selected and math.isnan(in_force.age_s(5.0))
    previous = in_force.select(chosen, 0.4, 12.0, now_s=10.0)
    assert previous.variant == safe and in_force.selected
    assert (in_force.current.variant, in_force.current.load_index, in_force.current.latency_budget_ms) == (
        chosen,
        0.4,
        12.0,
    )
    in_force.select(chosen, 0.4, 0.0, now_s=11.0)  # a budget that is not a positive number is none
    assert math.isnan(in_force.current.latency_budget_ms) and in_force.age_s(12.5) == 1.5
    assert not in_force.expire(now_s=13.9, timeout_s=3.0) and not in_force.expire(now_s=100.0, timeout_s=0.0)
    assert in_force.expire(now_s=14.0, timeout_s=3.0)
    assert in_force.current.variant == safe and not in_force.selected and math.isnan(in_force.current.load_index)
    assert not in_force.expire(now_s=20.0, timeout_s=3.0)  # the safe default never expires


def test_frame_to_array_decodes_raw_and_compressed_frames_alike():
    rgb = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    raw = Image(height=4, width=6, encoding="rgb8", step=18, data=rgb.tobytes())
    array, encoding = frame_to_array(raw, MAX_IMAGE_PIXELS, MAX_COMPRESSED_BYTES)
    assert encoding == "rgb8" and np.array_equal(array, rgb)
    png = CompressedImage(format="png", data=cv2.imencode(".png", rgb[..., ::-1])[1].tobytes())
    array, encoding = frame_to_array(png, MAX_IMAGE_PIXELS, MAX_COMPRESSED_BYTES)
    assert encoding == "bgr8" and np.array_equal(array, rgb[..., ::-1])
    with pytest.raises(FrameError):
        frame_to_array(png, MAX_IMAGE_PIXELS, max_compressed_bytes=10)
