"""Elastic execution: run exactly the selected variant's stages and exit, on torch or ONNX Runtime.

Both backends hold every module of the network in memory (stem, each
stage's candidate blocks, each exit head), so switching variants is a change
of path through modules already loaded, never a load.

ONNX Runtime backend: each module is exported once (about 25 small graphs
for the default network, a second with the TorchScript-based exporter, see
``onnx_modules``: a restart reads them from a cache) and gets its own
``InferenceSession``. Exporting per module rather than per variant keeps one
copy of each weight and makes the 780 variants of the default model free to
switch between. What a frame runs is one *segment* per stage on its path:
the stage's block, fused (``onnx_modules.fuse``) with the stem at stage 0 and
with the stage's exit head where that exit is evaluated. A session call costs
tens of microseconds on a warm CPU but 0.1-0.25 ms on the cold one a camera
frame meets every 100 ms, so a variant of exit k makes k + 1 calls, not
k + 3 (plus one per earlier exit with early exit on). The segments are built
from the cached module graphs at start-up (about 25 more sessions, a second
copy of the weights); the unfused modules stay, for calibration's per-module
timing.

Confidence early exit (AdaScale's per-input early termination): with a
threshold t, every exit on the selected path before the selected one is
evaluated, and the first whose top softmax score is >= t answers; the later
stages are never computed.

Deadline guard (anytime inference): given the instant a frame's answer is
due, the engine compares, before each stage after the first, the time left
with that stage's recent duration (an exponential average of what it took on
the frames before, so it follows the load); when the stage would overrun, the
exit of the stage before answers (its head run then, if early exit did not
already), and the stage's estimate decays, so that a stage once slow is tried
again. A multi-exit network always has an answer in hand, and a late one
is worth less to a robot than an earlier, shallower one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from adascale_ros.model.directory import card_resolutions, read_model_card
from adascale_ros.model.variant import Variant
from adascale_ros.runtime.onnx_modules import OnnxModules, export_modules, fuse, load_cached, store

if TYPE_CHECKING:
    from adascale_ros.model.elastic import ElasticNet

BACKENDS = ("torch", "onnxruntime")


@dataclass(frozen=True)
class Inference:
    exit_index: int
    early_exited: bool  # answered before the variant's own exit (confidence or deadline)
    probabilities: np.ndarray  # softmax over classes, shape (num_classes,)
    deadline_exited: bool = False  # the deadline guard stopped the path

    def top_k(self, k: int) -> tuple[list[int], list[float]]:
        order = np.argsort(-self.probabilities, kind="stable")[:k]
        return [int(i) for i in order], [float(self.probabilities[i]) for i in order]


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max())
    return shifted / shifted.sum()


class Backend(Protocol):
    name: str

    # One module each (calibration times them one by one).
    def stem(self, x: np.ndarray) -> object: ...
    def stage(self, index: int, op: str, x: object) -> object: ...
    def head(self, index: int, x: object) -> np.ndarray: ...

    def segment(self, index: int, op: str, x: object, head: bool) -> tuple[object, np.ndarray | None]:
        """Stage ``index``'s block (after the stem, at stage 0, whose ``x`` is the image) and, with
        ``head``, the stage's exit: (features, softmax probabilities or None). What ``ElasticEngine.run`` calls."""
        ...


class TorchBackend:
    """Eager torch, the reference. Features stay torch tensors between modules."""

    name = "torch"

    def __init__(self, net: ElasticNet, threads: int) -> None:
        import torch

        self._torch = torch
        self.net = net.eval()
        torch.set_num_threads(threads)

    def stem(self, x: np.ndarray) -> Any:
        with self._torch.inference_mode():
            return self.net.stem(self._torch.from_numpy(x))

    def stage(self, index: int, op: str, x: Any) -> Any:
        with self._torch.inference_mode():
            return self.net.run_stage(x, index, op)

    def head(self, index: int, x: Any) -> np.ndarray:
        with self._torch.inference_mode():
            return self.net.exits[index](x)[0].numpy()

    def segment(self, index: int, op: str, x: Any, head: bool) -> tuple[Any, np.ndarray | None]:
        features = self.stage(index, op, self.stem(x) if index == 0 else x)
        return features, softmax(self.head(index, features)) if head else None


def session_options(threads: int, spinning: bool = False) -> Any:
    """ONNX Runtime settings of every batch-1 session the engine (or a benchmark beside it) runs.

    Each session owns its intra-op pool and a variant runs several sessions one after another, so
    workers sleep when idle: one spinning after its session finished holds a core the next
    session's workers need (docs/decisions/timing-a-backbone.md). ``spinning``: ONNX Runtime's
    default, for comparison (``adascale bench inference --ort-spinning``).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return options


class OnnxBackend:
    """ONNX Runtime on the CPU, one session per module and per segment; features stay numpy arrays."""

    name = "onnxruntime"

    def __init__(self, modules: OnnxModules, threads: int, spinning: bool = False) -> None:
        import onnxruntime as ort

        options = session_options(threads, spinning)

        def session(graph: bytes) -> ort.InferenceSession:
            return ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])

        def named(graph: bytes) -> tuple[ort.InferenceSession, str]:  # the fused graphs' input names are prefixed
            fused = session(graph)
            return fused, fused.get_inputs()[0].name

        self._stem = session(modules.stem)
        self._stages = [{op: session(g) for op, g in blocks.items()} for blocks in modules.stages]
        self._heads = [session(g) for g in modules.heads]
        # The segments (module docstring): per stage and operator, without and with the exit head.
        self._segments: list[dict[str, tuple[ort.InferenceSession, str]]] = []
        self._segments_with_head: list[dict[str, tuple[ort.InferenceSession, str]]] = []
        for index, (blocks, head) in enumerate(zip(modules.stages, modules.heads, strict=True)):
            first = [modules.stem] if index == 0 else []
            self._segments.append(
                {op: named(fuse([*first, g])) if first else (self._stages[index][op], "x") for op, g in blocks.items()}
            )
            self._segments_with_head.append(
                {op: named(fuse([*first, g, head], keep_features=True, softmax=True)) for op, g in blocks.items()}
            )

    def stem(self, x: np.ndarray) -> np.ndarray:
        return self._stem.run(None, {"x": x})[0]

    def stage(self, index: int, op: str, x: np.ndarray) -> np.ndarray:
        return self._stages[index][op].run(None, {"x": x})[0]

    def head(self, index: int, x: np.ndarray) -> np.ndarray:
        return self._heads[index].run(None, {"x": x})[0][0]

    def segment(self, index: int, op: str, x: np.ndarray, head: bool) -> tuple[np.ndarray, np.ndarray | None]:
        if not head:
            graph, name = self._segments[index][op]
            return graph.run(None, {name: x})[0], None
        graph, name = self._segments_with_head[index][op]
        features, probabilities = graph.run(None, {name: x})
        return features, probabilities[0]


class SegmentTimes:
    """Recent duration of each segment, (stage, op, resolution, with its exit head or not) -> exponential
    average [ms]: the deadline guard's estimate."""

    def __init__(self, smoothing: float = 0.2) -> None:
        if not 0.0 < smoothing <= 1.0:
            raise ValueError(f"smoothing must be in (0, 1], got {smoothing}")
        self.smoothing = smoothing
        self._ms: dict[tuple[int, str, int | None, bool], float] = {}

    def expected_ms(self, stage: int, op: str, resolution: int | None = None, head: bool = True) -> float | None:
        return self._ms.get((stage, op, resolution, head))

    def record(self, stage: int, op: str, ms: float, resolution: int | None = None, head: bool = True) -> None:
        key = (stage, op, resolution, head)
        previous = self._ms.get(key)
        self._ms[key] = ms if previous is None else previous + self.smoothing * (ms - previous)

    def decay(self, stage: int, op: str, resolution: int | None = None, head: bool = True) -> None:
        """The guard skipped this segment on its estimate: multiply the estimate by 1 - smoothing.

        A skipped segment is not timed, so without this one slow run (a cold first frame, a load that
        has ended) would keep it skipped for good; decayed, it runs again once it seems to fit, and
        that run measures it afresh."""
        key = (stage, op, resolution, head)
        if key in self._ms:
            self._ms[key] *= 1.0 - self.smoothing


def _check(backend: str, threads: int) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")


class ElasticEngine:
    """Runs one pre-processed frame through one variant, with optional confidence early exit.

    Build one with ``from_net`` (a network in memory) or ``from_model_dir`` (a
    model directory, through the ONNX module cache: no torch when it hits).
    A network with elastic resolution lists its ``resolutions``; a frame then
    comes pre-processed at its variant's (``Variant.resolution``).
    """

    def __init__(
        self,
        backend: Backend,
        stage_ops: Sequence[Sequence[str]],
        input_shape: tuple[int, int, int],
        source: str = "",
        resolutions: Sequence[int] = (),
    ) -> None:
        self.backend = backend
        self.stage_ops = tuple(tuple(ops) for ops in stage_ops)
        self.source = source  # where the modules came from, for the log
        self.resolutions = tuple(resolutions)
        channels = input_shape[0]
        sizes = {r: (channels, r, r) for r in self.resolutions} if self.resolutions else {None: input_shape}
        self._blank = {r: np.zeros((1, *shape), np.float32) for r, shape in sizes.items()}
        self.segment_times = SegmentTimes()  # learnt from guarded frames only
        for shape in sizes.values():
            self._warm_up(shape)

    @classmethod
    def from_net(
        cls,
        net: ElasticNet,
        input_shape: tuple[int, int, int],
        backend: str = "onnxruntime",
        threads: int = 2,
        source: str = "",
    ) -> ElasticEngine:
        _check(backend, threads)
        stage_ops = [tuple(blocks) for blocks in net.stages]
        resolutions = tuple(getattr(net.config, "resolutions", ()))
        if backend == "torch":
            return cls(TorchBackend(net, threads), stage_ops, input_shape, source, resolutions)
        modules = export_modules(net, input_shape)
        return cls(OnnxBackend(modules, threads), stage_ops, input_shape, source, resolutions)

    @classmethod
    def from_model_dir(
        cls, model_dir: Path, input_shape: tuple[int, int, int], backend: str = "onnxruntime", threads: int = 2
    ) -> ElasticEngine:
        """The onnxruntime backend reads the cached ONNX modules of this model, exporting (and caching)
        them on a miss; the torch backend loads the weights. ``ModelLoadError`` for a broken directory."""
        _check(backend, threads)
        model_dir = Path(model_dir)
        resolutions = card_resolutions(read_model_card(model_dir))
        if backend == "onnxruntime" and (modules := load_cached(model_dir)) is not None:
            try:
                backend_ = OnnxBackend(modules, threads)
                return cls(backend_, modules.stage_ops, input_shape, "ONNX modules from the cache", resolutions)
            except Exception:  # ONNX Runtime's own error types: a damaged entry, exported again below
                pass
        from adascale_ros.model.saved_model import load_model

        model = load_model(model_dir)
        if backend == "torch":
            return cls.from_net(model.net, input_shape, backend, threads, "torch weights")
        modules = export_modules(model.net, input_shape)
        cached = store(model_dir, modules)
        source = f"ONNX modules exported{f' and cached in {cached}' if cached else ' (cache not writable)'}"
        return cls(OnnxBackend(modules, threads), modules.stage_ops, input_shape, source, resolutions)

    def _warm_up(self, input_shape: tuple[int, int, int], runs: int = 2) -> None:
        """Run every module and segment a few times, so the first frame after a switch is not also its first run."""
        image = np.zeros((1, *input_shape), np.float32)
        features = self.backend.stem(image)
        for stage, ops in enumerate(self.stage_ops):
            for op in ops:
                for _ in range(runs):
                    out = self.backend.stage(stage, op, features)
                    for head in (False, True):
                        self.backend.segment(stage, op, image if stage == 0 else features, head)
            for _ in range(runs):
                self.backend.head(stage, out)
            features = out

    def warm(self, variant: Variant) -> None:
        """Run ``variant``'s whole path once on a blank frame, so its first real frame finds the path's
        weights and code in the caches: at camera rate that first frame after a switch missed its
        deadline about 4 times as often as the frames after it."""
        self.run(self._blank[variant.resolution], variant)

    def check_variant(self, variant_id: str) -> Variant:
        """Parse and check a variant id against this network; ``ValueError`` with the reason if it does not fit."""
        variant = Variant.parse(variant_id)
        if not 0 <= variant.exit_index < len(self.stage_ops):
            raise ValueError(f"variant {variant}: no exit {variant.exit_index} (exits 0..{len(self.stage_ops) - 1})")
        unknown = [op for stage, op in enumerate(variant.operators) if op not in self.stage_ops[stage]]
        if unknown:
            raise ValueError(f"variant {variant}: unknown operators {unknown}")
        if variant.resolution not in self._blank:
            sizes = list(self.resolutions) or "none (one input size)"
            raise ValueError(f"variant {variant}: resolution {variant.resolution} not among the network's: {sizes}")
        return variant

    def run(
        self,
        x: np.ndarray,
        variant: Variant,
        early_exit_threshold: float = math.inf,
        deadline_s: float | None = None,
    ) -> Inference:
        """Classify a (1, C, H, W) float32 array; ``early_exit_threshold`` > 1 (or inf) disables early exit.

        ``deadline_s``, a ``time.perf_counter()`` instant, turns on the deadline guard: the first stage
        always runs; a later one runs only if its recent duration fits before the deadline.
        """
        features: object = x
        last, early_exit, guarded = variant.exit_index, early_exit_threshold <= 1.0, deadline_s is not None
        answer: np.ndarray | None = None  # the exit of the stage before, when it was evaluated
        for stage, op in enumerate(variant.operators):
            head = early_exit or stage == last
            if guarded and stage > 0:
                expected_ms = self.segment_times.expected_ms(stage, op, variant.resolution, head)
                if expected_ms is not None and time.perf_counter() + expected_ms / 1e3 > deadline_s:
                    self.segment_times.decay(stage, op, variant.resolution, head)
                    if answer is None:
                        answer = softmax(self.backend.head(stage - 1, features))
                    return Inference(stage - 1, True, answer, deadline_exited=True)
            started = time.perf_counter()
            features, probabilities = self.backend.segment(stage, op, features, head=head)
            if guarded:
                spent_ms = (time.perf_counter() - started) * 1e3
                self.segment_times.record(stage, op, spent_ms, variant.resolution, head)
            answer = probabilities
            if probabilities is None:
                continue
            if stage == last:
                return Inference(stage, False, probabilities)
            if probabilities.max() >= early_exit_threshold:
                return Inference(stage, True, probabilities)
        raise AssertionError("unreachable: the loop returns at the variant's exit")
