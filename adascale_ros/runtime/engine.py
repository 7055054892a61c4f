"""Elastic execution: run exactly the selected variant's stages and exit, on torch or ONNX Runtime.

Both backends hold every module of the network in memory (stem, each
stage's candidate blocks, each exit head), so switching variants is a change
of path through modules already loaded, never a load.

ONNX Runtime backend: each module is exported once, in memory, when the
engine is built (about 25 small graphs for the default network, a few
seconds with the TorchScript-based exporter), and gets its own
``InferenceSession``. Exporting per module rather than per variant keeps one
copy of each weight and makes the 780 variants of the default model free to
switch between; the price is one session call per module (tens of
microseconds each), small beside the blocks themselves.

Confidence early exit (AdaScale's per-input early termination): with a
threshold t, every exit on the selected path before the selected one is
evaluated, and the first whose top softmax score is >= t answers; the later
stages are never computed.
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from adascale_ros.model.elastic import ElasticNet, Variant

BACKENDS = ("torch", "onnxruntime")
ONNX_OPSET = 17


@dataclass(frozen=True)
class Inference:
    exit_index: int
    early_exited: bool
    probabilities: np.ndarray  # softmax over classes, shape (num_classes,)

    def top_k(self, k: int) -> tuple[list[int], list[float]]:
        order = np.argsort(-self.probabilities, kind="stable")[:k]
        return [int(i) for i in order], [float(self.probabilities[i]) for i in order]


class Backend(Protocol):
    name: str

    def stem(self, x: np.ndarray) -> object: ...
    def stage(self, index: int, op: str, x: object) -> object: ...
    def head(self, index: int, x: object) -> np.ndarray: ...


class TorchBackend:
    """Eager torch, the reference. Features stay torch tensors between modules."""

    name = "torch"

    def __init__(self, net: ElasticNet, threads: int) -> None:
        self.net = net.eval()
        torch.set_num_threads(threads)

    @torch.inference_mode()
    def stem(self, x: np.ndarray) -> torch.Tensor:
        return self.net.stem(torch.from_numpy(x))

    @torch.inference_mode()
    def stage(self, index: int, op: str, x: torch.Tensor) -> torch.Tensor:
        return self.net.run_stage(x, index, op)

    @torch.inference_mode()
    def head(self, index: int, x: torch.Tensor) -> np.ndarray:
        return self.net.exits[index](x)[0].numpy()


def _export(module: torch.nn.Module, example: torch.Tensor) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript-based exporter is deprecated in favour of torch.export,
        # which takes ~30x longer per module and needs onnxscript.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (example,),
            buffer,
            dynamo=False,
            opset_version=ONNX_OPSET,
            input_names=["x"],
            output_names=["y"],
        )
    return buffer.getvalue()


class OnnxBackend:
    """ONNX Runtime on the CPU, one session per module; features stay numpy arrays."""

    name = "onnxruntime"

    def __init__(self, net: ElasticNet, input_shape: tuple[int, int, int], threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3

        def session(module: torch.nn.Module, example: torch.Tensor) -> ort.InferenceSession:
            return ort.InferenceSession(_export(module, example), options, providers=["CPUExecutionProvider"])

        net = net.eval()
        with torch.inference_mode():
            x = torch.zeros(1, *input_shape)
            self._stem = session(net.stem, x)
            x = net.stem(x)
            self._stages: list[dict[str, ort.InferenceSession]] = []
            self._heads = []
            for index, blocks in enumerate(net.stages):
                self._stages.append({op: session(block, x) for op, block in blocks.items()})
                x = next(iter(blocks.values()))(x)  # every block of a stage has the same output shape
                self._heads.append(session(net.exits[index], x))

    def stem(self, x: np.ndarray) -> np.ndarray:
        return self._stem.run(None, {"x": x})[0]

    def stage(self, index: int, op: str, x: np.ndarray) -> np.ndarray:
        return self._stages[index][op].run(None, {"x": x})[0]

    def head(self, index: int, x: np.ndarray) -> np.ndarray:
        return self._heads[index].run(None, {"x": x})[0][0]


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max())
    return shifted / shifted.sum()


class ElasticEngine:
    """Runs one pre-processed frame through one variant, with optional confidence early exit."""

    def __init__(
        self, net: ElasticNet, input_shape: tuple[int, int, int], backend: str = "onnxruntime", threads: int = 2
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.net = net
        self.backend: Backend = (
            TorchBackend(net, threads) if backend == "torch" else OnnxBackend(net, input_shape, threads)
        )
        self._warm_up(input_shape)

    def _warm_up(self, input_shape: tuple[int, int, int], runs: int = 2) -> None:
        """Run every module a few times, so the first frame after a switch is not also a module's first run."""
        features = self.backend.stem(np.zeros((1, *input_shape), np.float32))
        for stage, ops in enumerate(self.net.stages):
            for op in ops:
                for _ in range(runs):
                    out = self.backend.stage(stage, op, features)
            for _ in range(runs):
                self.backend.head(stage, out)
            features = out

    def check_variant(self, variant_id: str) -> Variant:
        """Parse and check a variant id against this network; ``ValueError`` with the reason if it does not fit."""
        variant = Variant.parse(variant_id)
        self.net.check_variant(variant)
        return variant

    def run(self, x: np.ndarray, variant: Variant, early_exit_threshold: float = math.inf) -> Inference:
        """Classify a (1, C, H, W) float32 array; ``early_exit_threshold`` > 1 (or inf) disables early exit."""
        features = self.backend.stem(x)
        last = variant.exit_index
        for stage, op in enumerate(variant.operators):
            features = self.backend.stage(stage, op, features)
            if stage < last and early_exit_threshold > 1.0:
                continue
            probabilities = softmax(self.backend.head(stage, features))
            if stage == last or probabilities.max() >= early_exit_threshold:
                return Inference(stage, stage < last, probabilities)
        raise AssertionError("unreachable: the loop returns at the variant's exit")
