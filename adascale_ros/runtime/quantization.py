"""The ONNX modules in 8-bit integers: ONNX Runtime's static quantization, one module at a time.

Weights become int8 per output channel, activations uint8 with the ranges
(min and max) they take on calibration images. Each module (stem, every
stage's blocks, every exit head) is quantized on its own and keeps float
input and output, so the int8 modules make an ``OnnxModules`` like the float
ones: the engine's fused segments, early exit and the deadline guard run them
unchanged. A block of a stage is calibrated on what the pretrained blocks
before it produce, the path every generated branch was distilled against.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from adascale_ros.runtime.onnx_modules import OnnxModules


def quantize_graph(graph: bytes, inputs: Sequence[np.ndarray]) -> bytes:
    """One module (an ONNX graph with one float input) in int8, its activation ranges measured on ``inputs``."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    if not inputs:
        raise ValueError("quantizing needs at least one calibration input")
    model = onnx.load_from_string(graph)
    name = model.graph.input[0].name

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._inputs = iter(inputs)

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self._inputs, None)
            return None if x is None else {name: x}

    root = logging.getLogger()
    # The quantizer warns on the root logger for every module: it advises its optimising pre-pass (without
    # it the int8 modules answer as the float ones do, test_quantization) and lists the integer shape
    # tensors of the padding it leaves alone, as it should. Hundreds of lines that say nothing wrong.
    notes = _QuantizerWarnings()
    root.addFilter(notes)
    with tempfile.TemporaryDirectory(prefix="adascale-quantize-") as tmp:
        source, target = Path(tmp) / "float.onnx", Path(tmp) / "int8.onnx"
        onnx.save(model, source)
        try:
            quantize_static(
                source,
                target,
                Reader(),
                quant_format=QuantFormat.QOperator,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                per_channel=True,
            )
        finally:
            root.removeFilter(notes)
        return target.read_bytes()


class _QuantizerWarnings(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        from_quantizer = "onnxruntime/quantization" in record.pathname.replace("\\", "/")
        return not from_quantizer or record.levelno >= logging.ERROR


def quantize_modules(modules: OnnxModules, images: Iterable[np.ndarray]) -> OnnxModules:
    """Every module in int8, calibrated on ``images`` (network inputs, (1, C, H, W) float32, at any of the
    resolutions the modules take) passed along the pretrained path."""
    import onnxruntime as ort

    def run(graph: bytes, xs: list[np.ndarray]) -> list[np.ndarray]:
        session = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
        return [session.run(None, {session.get_inputs()[0].name: x})[0] for x in xs]

    features = list(images)
    stem = quantize_graph(modules.stem, features)
    features = run(modules.stem, features)
    stages, heads = [], []
    for blocks, head in zip(modules.stages, modules.heads, strict=True):
        stages.append({op: quantize_graph(graph, features) for op, graph in blocks.items()})
        features = run(blocks["pre"] if "pre" in blocks else next(iter(blocks.values())), features)
        heads.append(quantize_graph(head, features))
    return OnnxModules(stem, tuple(stages), tuple(heads))
