"""Fine-tuning an elastic backbone to the user's classes: trunk features, distillation, tuning.

The recipe (AdaptiveNet section 4.2, made to fit a CPU):

1. **Trunk features.** The trunk (the frozen ImageNet stem and first stages)
   computes the same features for an image in every step, so it runs once per
   image and resolution and its output is cached on disk (float16), keyed by the
   trunk's weights, the data and the resolution. Everything after trains from
   the cache; on a CPU that is most of the saving (the trunk holds the
   high-resolution layers).
2. **Branch distillation** (AdaptiveNet eq. 1): every new branch of a stage
   (shrink, merge, slim, pool operators) learns to reproduce the pretrained
   stage's output from the pretrained stage's input; L2 distance, the
   pretrained stages in eval mode as the teacher.
3. **Tuning**: on every step a batch at one resolution (drawn with
   ``resolution_weights``) runs one path, the all-pretrained one with
   probability ``pretrained_path_fraction`` and a uniformly drawn one
   otherwise, and every exit on it is trained: cross-entropy on labels or,
   without labels (``labels: false``), the KL divergence to the top
   variant's softmax computed beforehand (a robot adapting its exits to its
   own images).

Checkpoints (weights, optimiser, step, random state) are written every
``checkpoint_every`` steps and at the end of each phase; a run restarted with
the same output directory resumes from the last one. They are read with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from adascale_ros.model.accuracy import Normalization
from adascale_ros.model.datasets import ImageSet
from adascale_ros.model.elastic_backbone import GENERATED_BRANCHES, ElasticBackbone
from adascale_ros.model.variant import Variant

PHASES = ("distill", "tune")
CHECKPOINT = "checkpoint.pt"
FEATURE_FORMAT = 2  # bumped whenever what the cached trunk features hold changes


@dataclass(frozen=True)
class FineTuneConfig:
    """The ``training`` section of a backbone configuration."""

    labels: bool = True  # False: tune the exits by distillation from the top variant, no labels needed
    distill_epochs: float = 0.5  # passes over the training images
    tune_epochs: float = 3.0
    batch_size: int = 64
    distill_lr: float = 2e-3  # pool operators (new); branches copied from pretrained blocks take pretrained_lr
    lr: float = 1e-3  # new modules (branches, exit heads, classifiers)
    pretrained_lr: float = 3e-4  # the pretrained blocks and head
    weight_decay: float = 1e-4
    train_resolutions: tuple[int, ...] = ()  # default: every resolution of the network
    resolution_weights: tuple[float, ...] = ()  # default: equal
    pretrained_path_fraction: float = 0.3
    label_smoothing: float = 0.1
    # Batch-norm momentum of the new modules (PyTorch's convention; the ImageNet blocks keep their
    # statistics): the backbone's own 0.01 is slow for a few hundred steps.
    bn_momentum: float = 0.1
    checkpoint_every: int = 200  # steps
    table_images: int | None = 2000  # val and test images every variant is scored on (None: all)
    feature_batch: int = 128
    seed: int = 0

    def __post_init__(self) -> None:
        if self.distill_epochs < 0 or self.tune_epochs < 0:
            raise ValueError("distill_epochs and tune_epochs must be >= 0")
        if self.batch_size < 1 or self.checkpoint_every < 1 or self.feature_batch < 1:
            raise ValueError("batch_size, checkpoint_every and feature_batch must be >= 1")
        if min(self.distill_lr, self.lr, self.pretrained_lr) <= 0 or self.weight_decay < 0:
            raise ValueError("learning rates must be > 0 and weight_decay >= 0")
        if self.resolution_weights and len(self.resolution_weights) != len(self.train_resolutions):
            raise ValueError("resolution_weights needs one weight per entry of train_resolutions")
        if any(w < 0 for w in self.resolution_weights) or (
            self.resolution_weights and sum(self.resolution_weights) <= 0
        ):
            raise ValueError("resolution_weights must be >= 0 with a positive sum")
        if not 0.0 <= self.pretrained_path_fraction <= 1.0 or not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError("pretrained_path_fraction must be in [0, 1] and label_smoothing in [0, 1)")
        if not 0.0 < self.bn_momentum <= 1.0:
            raise ValueError("bn_momentum must be in (0, 1]")
        if self.table_images is not None and self.table_images < 1:
            raise ValueError("table_images must be >= 1 (or null for all)")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FineTuneConfig:
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown training settings {sorted(unknown)}")
        data = dict(data)
        for key in ("train_resolutions", "resolution_weights"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def model_input(images: torch.Tensor, resolution: int, normalize: Normalization) -> torch.Tensor:
    """uint8 (N, C, h, w) images to the network's float input at ``resolution``: grey repeated to RGB,
    resized bilinearly (as the inference node's pre-processing does), normalised."""
    x = images.float()  # 0..255: the normalisation divides by 255
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if x.shape[-2:] != (resolution, resolution):
        shrinking = x.shape[-1] > resolution
        x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=shrinking)
    return normalize(x)


def _trunk_key(net: ElasticBackbone, data: ImageSet, resolution: int, normalize: Normalization) -> str:
    digest = hashlib.sha256(f"trunk {FEATURE_FORMAT} r{resolution} {normalize.mean} {normalize.std}\n".encode())
    for name, tensor in sorted(net.stem.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    digest.update(data.fingerprint().encode())
    return digest.hexdigest()[:24]


def trunk_features(
    net: ElasticBackbone,
    data: ImageSet,
    resolution: int,
    normalize: Normalization,
    cache_dir: Path,
    batch_size: int = 128,
    progress: bool = True,
    desc: str = "",
) -> np.ndarray:
    """The trunk's float16 output for every image of ``data`` at ``resolution`` (a read-only memory map),
    computed once and cached under ``cache_dir`` (written atomically)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"trunk-{_trunk_key(net, data, resolution, normalize)}.npy"
    if path.exists():
        try:
            return np.load(path, mmap_mode="r")
        except (OSError, ValueError):
            path.unlink(missing_ok=True)  # a damaged entry is computed again
    net.stem.eval()
    with torch.inference_mode():
        shape = net.stem(model_input(data.images[:1], resolution, normalize)).shape[1:]
    run = batched_onnx(net.stem, (3, resolution, resolution))
    partial = path.with_suffix(".partial.npy")
    out = np.lib.format.open_memmap(partial, mode="w+", dtype=np.float16, shape=(len(data), *shape))
    for start in tqdm(range(0, len(data), batch_size), desc=desc or f"trunk @{resolution}", disable=not progress):
        x = model_input(data.images[start : start + batch_size], resolution, normalize)
        out[start : start + len(x)] = run(x.numpy()).astype(np.float16)
    out.flush()
    del out
    os.replace(partial, path)
    return np.load(path, mmap_mode="r")


def batched_onnx(
    module: nn.Module, input_shape: tuple[int, int, int], threads: int | None = None
) -> Callable[[np.ndarray], np.ndarray]:
    """``module`` as an ONNX Runtime function of a float32 batch (any size): 3-6x eager torch's
    throughput for the trunk on a CPU."""
    import onnxruntime as ort

    from adascale_ros.model.onnx_export import export_module

    graph = export_module(module, torch.zeros(2, *input_shape), dynamic_batch=True)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.log_severity_level = 3
    session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"x": np.ascontiguousarray(x, np.float32)})[0]


@dataclass
class PhaseLog:
    phase: str
    step: int
    loss: float
    seconds: float
    resolution: int


@dataclass
class FineTuneResult:
    seconds: dict[str, float] = field(default_factory=dict)
    log: list[PhaseLog] = field(default_factory=list)


class FineTuner:
    """Runs the recipe on one network; ``features[r]`` are the trunk features of the training images at r."""

    def __init__(
        self,
        net: ElasticBackbone,
        config: FineTuneConfig,
        features: dict[int, np.ndarray],
        labels: torch.Tensor | None,
        workdir: Path,
        progress: bool = True,
        log: Callable[[str], None] = print,
    ) -> None:
        self.net, self.config, self.features, self.labels = net, config, features, labels
        self.workdir, self.progress, self.log = workdir, progress, log
        self.resolutions = list(config.train_resolutions or sorted(features))
        missing = [r for r in self.resolutions if r not in features]
        if missing:
            raise ValueError(f"train_resolutions {missing} are not resolutions of the network")
        weights = np.asarray(config.resolution_weights or [1.0] * len(self.resolutions), np.float64)
        self.resolution_p = weights / weights.sum()
        self.num_images = len(next(iter(features.values())))
        if config.labels and labels is None:
            raise ValueError("labels: true needs labelled training images")
        self.generator = torch.Generator().manual_seed(config.seed)
        self.result = FineTuneResult()
        # Modules made from ImageNet weights keep their batch-norm statistics (frozen, "eval" mode):
        # on the new task's images batch statistics differ so much that a copied block trained on
        # them drifts away from the stage it stands in for. New modules learn theirs.
        self.frozen_norms: list[nn.Module] = []
        last_head = f"exits.{len(net.exits) - 1}.0."
        for name, module in net.named_modules():
            if isinstance(module, nn.BatchNorm2d):
                parts = name.split(".")
                pretrained = (parts[0] == "stages" and parts[2] in GENERATED_BRANCHES) or name.startswith(last_head)
                if pretrained:
                    self.frozen_norms.append(module)
                else:
                    module.momentum = config.bn_momentum

    def train_mode(self, modules: Sequence[nn.Module] | None = None) -> None:
        """``modules`` (default: the whole network) in training mode, the frozen statistics kept."""
        for module in [self.net] if modules is None else modules:
            module.train()
        for norm in self.frozen_norms:
            norm.eval()

    # --- batches --------------------------------------------------------------------------------
    def steps(self, epochs: float) -> int:
        return math.ceil(epochs * self.num_images / self.config.batch_size)

    def _batch(self) -> tuple[int, torch.Tensor, torch.Tensor]:
        u = torch.rand((), generator=self.generator).item()
        resolution = self.resolutions[
            min(int(np.searchsorted(np.cumsum(self.resolution_p), u, "right")), len(self.resolutions) - 1)
        ]
        index = torch.randint(self.num_images, (self.config.batch_size,), generator=self.generator).sort().values
        x = torch.from_numpy(np.asarray(self.features[resolution][index.numpy()], np.float32))
        return resolution, index, x

    def _path(self) -> tuple[str, ...]:
        if torch.rand((), generator=self.generator).item() < self.config.pretrained_path_fraction:
            return ("pre",) * len(self.net.stages)
        ops = self.net.stage_operators
        return tuple(ops[s][int(torch.randint(len(ops[s]), (), generator=self.generator))] for s in range(len(ops)))

    # --- checkpoints ----------------------------------------------------------------------------
    def _save(self, phase: str, step: int, optimizer: torch.optim.Optimizer) -> None:
        state = {
            "phase": torch.tensor(PHASES.index(phase)),
            "step": torch.tensor(step),
            "model": self.net.state_dict(),
            "optimizer": optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),  # dropout draws from it
        }
        tmp = self.workdir / (CHECKPOINT + ".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.workdir / CHECKPOINT)

    def _resume(self, phase: str, optimizer: torch.optim.Optimizer) -> int:
        """The step to continue ``phase`` from (0: start it; -1: it is done)."""
        path = self.workdir / CHECKPOINT
        if not path.exists():
            return 0
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            saved_phase = PHASES[int(state["phase"])]
            self.net.load_state_dict(state["model"])
            self.generator.set_state(state["generator"])
            torch.set_rng_state(state["torch_rng"])
        except (RuntimeError, KeyError, ValueError, IndexError, OSError, EOFError) as exc:
            raise ValueError(
                f"{path}: not a checkpoint of this run ({str(exc).splitlines()[0]}); delete it to start over"
            ) from None
        if PHASES.index(saved_phase) > PHASES.index(phase):
            return -1
        if saved_phase != phase:
            return 0
        optimizer.load_state_dict(state["optimizer"])
        self.log(f"resuming {phase} at step {int(state['step'])} from {path}")
        return int(state["step"])

    # --- phases ---------------------------------------------------------------------------------
    def _loop(
        self, phase: str, optimizer: torch.optim.Optimizer, total: int, step_fn: Callable[[], tuple[float, int]]
    ) -> None:
        start = self._resume(phase, optimizer)
        if start < 0 or start >= total:
            return
        base_lrs = [group.setdefault("base_lr", group["lr"]) for group in optimizer.param_groups]

        def set_learning_rate(step: int) -> None:  # cosine decay from each group's base rate to 0
            factor = 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))
            for group, base in zip(optimizer.param_groups, base_lrs, strict=True):
                group["lr"] = base * factor

        began = time.perf_counter()
        bar = tqdm(range(start, total), desc=phase, disable=not self.progress, initial=start, total=total)
        running = None
        for step in bar:
            set_learning_rate(step)
            loss, resolution = step_fn()
            running = loss if running is None else 0.95 * running + 0.05 * loss
            bar.set_postfix(loss=f"{running:.4f}", res=resolution)
            if (step + 1) % self.config.checkpoint_every == 0 or step + 1 == total:
                self.result.log.append(
                    PhaseLog(phase, step + 1, round(running, 5), round(time.perf_counter() - began, 1), resolution)
                )
                self._save(phase, step + 1, optimizer)
        self.result.seconds[phase] = round(time.perf_counter() - began, 1)
        self.log(f"{phase}: {total - start} steps in {self.result.seconds[phase]:.0f} s, loss {running:.4f}")

    def distill(self) -> None:
        """Every new branch learns the pretrained stage's output from its input (AdaptiveNet eq. 1)."""
        net = self.net
        branches = net.new_branches()
        # Branches copied from pretrained blocks start close to their target and move at the
        # pretrained learning rate; the pool operators start from scratch.
        copied = [p for (_, op), m in branches.items() if op in GENERATED_BRANCHES for p in m.parameters()]
        fresh = [p for (_, op), m in branches.items() if op not in GENERATED_BRANCHES for p in m.parameters()]
        groups = [{"params": copied, "lr": self.config.pretrained_lr}, {"params": fresh, "lr": self.config.distill_lr}]
        optimizer = torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=self.config.weight_decay)

        def step() -> tuple[float, int]:
            resolution, _, x = self._batch()
            with torch.no_grad():
                teacher = []
                for blocks in net.stages:
                    blocks["pre"].eval()
                    y = blocks["pre"](x)
                    teacher.append((x, y))
                    x = y
            self.train_mode(list(branches.values()))
            losses = [F.mse_loss(module(teacher[s][0]), teacher[s][1]) for (s, _), module in branches.items()]
            loss = torch.stack(losses).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            return loss.item(), resolution

        self._loop("distill", optimizer, self.steps(self.config.distill_epochs), step)

    def _teacher_probabilities(self, resolution: int, x: torch.Tensor) -> torch.Tensor:
        top = Variant(len(self.net.stages) - 1, ("pre",) * len(self.net.stages), resolution)
        self.net.eval()
        with torch.no_grad():
            features = x
            for s, op in enumerate(top.operators):
                features = self.net.run_stage(features, s, op)
            return F.softmax(self.net.exits[-1](features), dim=1)

    def tune(self) -> None:
        """Every exit on a drawn path, on labels or on the top variant's softmax."""
        net, config = self.net, self.config
        pretrained = {id(p) for blocks in net.stages for p in blocks["pre"].parameters()}
        pretrained |= {id(p) for p in net.exits[-1][0].parameters()}
        trainable = [p for p in net.parameters() if p.requires_grad]
        if not config.labels:  # the teacher (top variant) stays as it is
            frozen = pretrained | {id(p) for p in net.exits[-1].parameters()}
            trainable = [p for p in trainable if id(p) not in frozen]
        groups = [
            {"params": [p for p in trainable if id(p) in pretrained], "lr": config.pretrained_lr},
            {"params": [p for p in trainable if id(p) not in pretrained], "lr": config.lr},
        ]
        optimizer = torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=config.weight_decay)

        def step() -> tuple[float, int]:
            resolution, index, x = self._batch()
            path = self._path()
            target = self.labels[index] if config.labels else self._teacher_probabilities(resolution, x)
            self.train_mode()
            losses = []
            features = x
            for s, op in enumerate(path):
                features = net.run_stage(features, s, op)
                logits = net.exits[s](features)
                if config.labels:
                    losses.append(F.cross_entropy(logits, target, label_smoothing=config.label_smoothing))
                else:
                    losses.append(F.kl_div(F.log_softmax(logits, dim=1), target, reduction="batchmean"))
            loss = torch.stack(losses).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            return loss.item(), resolution

        self._loop("tune", optimizer, self.steps(config.tune_epochs), step)

    def run(self) -> FineTuneResult:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.distill()
        self.tune()
        self.net.eval()
        return self.result


def evaluate_backbone_variants(
    net: ElasticBackbone,
    features: dict[int, np.ndarray],
    labels: torch.Tensor,
    batch_size: int = 256,
    progress: bool = True,
    desc: str = "variants",
    only: Sequence[Variant] | None = None,
) -> dict[str, float]:
    """Accuracy of every variant (or of ``only`` those), from trunk features, computing each path prefix
    once per batch (prefix reuse): a stage's output feeds every branch of the next stage and its own exit."""
    net.eval()
    stage_ops = net.stage_operators
    correct: dict[str, int] = {}
    wanted = None if only is None else {v.id for v in only}
    prefixes = (
        None
        if only is None
        else {(v.resolution, v.operators[:k]) for v in only for k in range(1, len(v.operators) + 1)}
    )

    def walk(x: torch.Tensor, prefix: tuple[str, ...], resolution: int, y: torch.Tensor) -> None:
        stage = len(prefix)
        if stage == len(stage_ops):
            return
        for op in stage_ops[stage]:
            path = (*prefix, op)
            if prefixes is not None and (resolution, path) not in prefixes:
                continue
            out = net.run_stage(x, stage, op)
            vid = Variant(stage, path, resolution).id
            if wanted is None or vid in wanted:
                correct[vid] = correct.get(vid, 0) + int((net.exits[stage](out).argmax(1) == y).sum())
            walk(out, path, resolution, y)

    total = len(labels)
    batches = [(r, s) for r in sorted(features) for s in range(0, total, batch_size)]
    with torch.inference_mode():
        for resolution, start in tqdm(batches, desc=desc, disable=not progress):
            x = torch.from_numpy(np.asarray(features[resolution][start : start + batch_size], np.float32))
            walk(x, (), resolution, labels[start : start + batch_size])
    return {vid: count / total for vid, count in correct.items()}


def first_images(data: ImageSet, limit: int | None) -> ImageSet:
    """The first ``limit`` images (all with None)."""
    return data if limit is None or limit >= len(data) else data.subset(range(limit))


def exit_accuracy(accuracy: dict[str, float], net: ElasticBackbone) -> dict[str, list[float]]:
    """Per resolution, the all-pretrained path's accuracy at each exit."""
    return {
        str(r): [round(accuracy[Variant(k, ("pre",) * (k + 1), r).id], 4) for k in range(net.num_exits)]
        for r in net.config.resolutions
    }
