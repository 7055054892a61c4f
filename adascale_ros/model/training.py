"""Training the elastic network: AdaScale's multi-stage Algorithm 1, and joint training.

Multi-stage (Algorithm 1). The network is cut at its exits into partitions
p_0 .. p_{n-1}: p_i is stage i's candidate blocks and exit head i (p_0 also
holds the stem). Partitions are trained in order, each until its accuracy
reaches the target or the epoch cap. Two ways to treat earlier partitions:

- ``freeze`` (paper mode a): earlier partitions are fixed (weights and
  any normalisation statistics); only p_i learns.
- ``guarded`` (paper mode b): earlier partitions learn too, but after each
  epoch their exits are re-measured and, if any exit's accuracy dropped
  below its recorded value, their weights are rolled back to the last
  accepted ones; otherwise the new weights and accuracies are accepted.

Operator sampling inside a partition: every step trains *all* candidate
blocks of stage i on the same batch (their losses averaged), on features
from a prefix path whose operators are drawn uniformly at random per step.
So each candidate sees every batch, and learns to accept features from any
earlier operator, which every variant through it needs.

A partition's accuracy is the mean validation accuracy of a fixed, seeded
sample of variants ending at its exit (all of them when few), on a fixed
validation subset, evaluated with prefix reuse.

Joint training: all stages and exits learn together; each step trains
``paths_per_step`` full-depth paths and averages the losses of all exits
along them. ``path_sampling`` picks the paths:

- ``uniform``: every path's operators drawn uniformly at random per stage.
- ``sandwich`` (BigNAS's sandwich rule): the largest path (the candidate
  with the most FLOPs at every stage), the smallest (fewest FLOPs) and
  ``paths_per_step - 2`` uniform random ones. The two ends of the table get
  a step on every batch, where uniform sampling gives the largest path one
  in ``len(operators) ** depth / paths_per_step``.
"""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from adascale_ros.model.accuracy import Normalization, evaluate_variants
from adascale_ros.model.datasets import DatasetSplits, ImageSet
from adascale_ros.model.elastic import ElasticNet, Variant
from adascale_ros.model.metrics import module_table

MODES = ("freeze", "guarded", "joint")
PATH_SAMPLING = ("uniform", "sandwich")


@dataclass(frozen=True)
class TrainingConfig:
    mode: str = "freeze"
    epochs_per_partition: int = 6  # cap per partition (multi-stage)
    target_accuracy: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0)  # per exit; 1.0 = train to the cap
    joint_epochs: int | None = None  # default: the multi-stage budget, partitions x cap
    paths_per_step: int = 2  # joint mode
    path_sampling: str = "uniform"  # joint mode: "uniform" or "sandwich"
    batch_size: int = 128
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    augment_crop: int = 2  # random translation by up to this many pixels (0: off)
    augment_flip: bool = True  # random horizontal flip
    monitor_variants: int = 10  # variants sampled per exit for the partition accuracy
    monitor_images: int = 2000  # validation images used for it
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"training mode must be one of {MODES}, got {self.mode!r}")
        if self.path_sampling not in PATH_SAMPLING:
            raise ValueError(f"path_sampling must be one of {PATH_SAMPLING}, got {self.path_sampling!r}")
        if self.path_sampling == "sandwich" and self.paths_per_step < 2:
            raise ValueError("sandwich path sampling trains the largest and the smallest path: paths_per_step >= 2")
        if self.epochs_per_partition < 1 or self.batch_size < 1 or self.paths_per_step < 1:
            raise ValueError("epochs_per_partition, batch_size and paths_per_step must be >= 1")
        if not all(0.0 <= t <= 1.0 for t in self.target_accuracy):
            raise ValueError(f"target accuracies must be in [0, 1], got {self.target_accuracy}")


@dataclass
class EpochLog:
    partition: int | None  # None in joint mode
    epoch: int
    train_loss: float
    monitor_accuracy: list[float]  # per exit trained so far
    seconds: float
    rolled_back: bool = False


@dataclass
class TrainingResult:
    mode: str
    epochs: int
    seconds: float
    exit_accuracy: list[float]  # final monitor accuracy per exit
    log: list[EpochLog] = field(default_factory=list)


def augment(images: torch.Tensor, crop: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Random translation (pad by ``crop``, random crop back) and horizontal flip, per image."""
    n, _, h, w = images.shape
    if crop > 0:
        padded = F.pad(images, (crop, crop, crop, crop))
        dx = torch.randint(0, 2 * crop + 1, (n,), generator=generator)
        dy = torch.randint(0, 2 * crop + 1, (n,), generator=generator)
        rows = (dy.view(n, 1) + torch.arange(h)).view(n, 1, h, 1)
        cols = (dx.view(n, 1) + torch.arange(w)).view(n, 1, 1, w)
        images = padded[torch.arange(n).view(n, 1, 1, 1), torch.arange(images.shape[1]).view(1, -1, 1, 1), rows, cols]
    if flip:
        mask = torch.rand(n, generator=generator) < 0.5
        images = torch.where(mask.view(n, 1, 1, 1), images.flip(3), images)
    return images


def make_optimizer(
    params: list[nn.Parameter], config: TrainingConfig, total_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """The training recipe: SGD with Nesterov momentum under a one-cycle learning-rate schedule."""
    optimizer = torch.optim.SGD(
        params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay, nesterov=True
    )
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, total_steps=total_steps, pct_start=0.15
    )
    return optimizer, scheduler


def optimizer_step(
    optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler, loss: torch.Tensor
) -> float:
    """One update from ``loss``; returns its value."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    scheduler.step()
    return loss.item()


class Trainer:
    """Trains an ``ElasticNet`` on ``splits`` with a ``TrainingConfig``."""

    def __init__(
        self,
        net: ElasticNet,
        splits: DatasetSplits,
        config: TrainingConfig,
        normalize: Normalization,
        progress: bool = True,
        log: Callable[[str], None] = print,
    ) -> None:
        self.net = net
        self.splits = splits
        self.config = config
        self.normalize = normalize
        self.progress = progress
        self.log = log
        self.rng = random.Random(config.seed)
        self.generator = torch.Generator().manual_seed(config.seed)
        torch.manual_seed(config.seed)
        monitor_n = min(config.monitor_images, len(splits.val))
        self.monitor_data: ImageSet = splits.val.subset(range(monitor_n))
        self.monitor_variants = self._sample_monitor_variants()

    def _sample_monitor_variants(self) -> list[list[Variant]]:
        rng = random.Random(self.config.seed + 1)
        by_exit: list[list[Variant]] = [[] for _ in range(self.net.num_exits)]
        for v in self.net.variants():
            by_exit[v.exit_index].append(v)
        return [
            vs if len(vs) <= self.config.monitor_variants else rng.sample(vs, self.config.monitor_variants)
            for vs in by_exit
        ]

    def exit_accuracy(self, exits: Sequence[int]) -> list[float]:
        variants = [v for e in exits for v in self.monitor_variants[e]]
        acc = evaluate_variants(self.net, self.monitor_data, self.normalize, variants)
        return [sum(acc[v.id] for v in self.monitor_variants[e]) / len(self.monitor_variants[e]) for e in exits]

    def _batches(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        train = self.splits.train
        order = torch.randperm(len(train), generator=self.generator)
        size = self.config.batch_size
        return [
            (train.images[order[i : i + size]], train.labels[order[i : i + size]]) for i in range(0, len(train), size)
        ]

    def _inputs(self, images: torch.Tensor) -> torch.Tensor:
        c = self.config
        return self.normalize(augment(images, c.augment_crop, c.augment_flip, self.generator))

    def _partition_modules(self, i: int) -> list[nn.Module]:
        return ([self.net.stem] if i == 0 else []) + [self.net.stages[i], self.net.exits[i]]

    # ---------------------------------------------------------- multi-stage

    def train_multistage(self) -> TrainingResult:
        c, net = self.config, self.net
        start, epochs_run, history = time.perf_counter(), 0, []
        accepted: list[float] = []  # recorded accuracy of each trained exit
        ops = net.config.operators
        steps = math.ceil(len(self.splits.train) / c.batch_size)
        for i in range(net.num_exits):
            own = [p for m in self._partition_modules(i) for p in m.parameters()]
            earlier = [p for j in range(i) for m in self._partition_modules(j) for p in m.parameters()]
            guarded = c.mode == "guarded" and i > 0
            for p in earlier:
                p.requires_grad_(guarded)
            optimizer, scheduler = make_optimizer(own + (earlier if guarded else []), c, c.epochs_per_partition * steps)
            snapshot = copy.deepcopy(net.state_dict()) if guarded else None
            target = c.target_accuracy[i] if i < len(c.target_accuracy) else 1.0
            for epoch in range(c.epochs_per_partition):
                t0 = time.perf_counter()
                net.train()
                if not guarded:  # frozen partitions stay in eval mode (dropout off, statistics fixed)
                    for j in range(i):
                        for m in self._partition_modules(j):
                            m.eval()
                total, seen = 0.0, 0
                for images, labels in tqdm(
                    self._batches(), desc=f"p{i} epoch {epoch + 1}", disable=not self.progress, leave=False
                ):
                    x = self._inputs(images)
                    with torch.set_grad_enabled(i == 0 or guarded):  # the stem belongs to partition 0
                        features = net.stem(x)
                    with torch.set_grad_enabled(guarded):
                        for s in range(i):
                            features = net.run_stage(features, s, self.rng.choice(ops))
                    loss = sum(
                        F.cross_entropy(
                            net.exits[i](net.run_stage(features, i, op)), labels, label_smoothing=c.label_smoothing
                        )
                        for op in ops
                    ) / len(ops)
                    total += optimizer_step(optimizer, scheduler, loss) * len(labels)
                    seen += len(labels)
                epochs_run += 1
                acc = self.exit_accuracy(range(i + 1))
                rolled_back = False
                if guarded:
                    if any(a < r for a, r in zip(acc[:i], accepted, strict=True)):
                        self._restore_earlier(snapshot, i)
                        rolled_back = True
                        acc = self.exit_accuracy(range(i + 1))
                    snapshot = copy.deepcopy(net.state_dict())
                    accepted = acc[:i]
                history.append(EpochLog(i, epoch + 1, total / seen, acc, time.perf_counter() - t0, rolled_back))
                self.log(
                    f"partition {i} epoch {epoch + 1}: loss {total / seen:.4f}, exit accuracy "
                    + " ".join(f"{a:.4f}" for a in acc)
                    + (" (earlier partitions rolled back)" if rolled_back else "")
                )
                if acc[i] >= target:
                    break
            accepted = acc[: i + 1]
            for p in earlier:
                p.requires_grad_(True)
        return TrainingResult(c.mode, epochs_run, time.perf_counter() - start, accepted, history)

    def _restore_earlier(self, snapshot: dict[str, torch.Tensor], i: int) -> None:
        """Put back the accepted weights of partitions 0 .. i-1, keeping partition i's new ones."""
        prefixes = tuple(f"stages.{j}." for j in range(i)) + tuple(f"exits.{j}." for j in range(i)) + ("stem.",)
        current = self.net.state_dict()
        current.update({k: v for k, v in snapshot.items() if k.startswith(prefixes)})
        self.net.load_state_dict(current)

    # ---------------------------------------------------------------- joint

    def _sandwich_ends(self) -> list[tuple[str, ...]]:
        """The largest and the smallest full-depth path, by FLOPs of the candidate at each stage."""
        table = module_table(self.net, self.splits.train.shape)
        by_flops = [
            sorted(self.net.config.operators, key=lambda op, s=s: table[f"s{s}:{op}"].flops)
            for s in range(self.net.num_exits)
        ]
        return [tuple(ops[-1] for ops in by_flops), tuple(ops[0] for ops in by_flops)]

    def _joint_paths(self, ends: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
        ops, depth = self.net.config.operators, self.net.num_exits
        random_paths = [
            tuple(self.rng.choice(ops) for _ in range(depth)) for _ in range(self.config.paths_per_step - len(ends))
        ]
        return ends + random_paths

    def train_joint(self, epochs: int) -> TrainingResult:
        c, net = self.config, self.net
        start, history = time.perf_counter(), []
        ends = self._sandwich_ends() if c.path_sampling == "sandwich" else []
        steps = math.ceil(len(self.splits.train) / c.batch_size)
        optimizer, scheduler = make_optimizer(list(net.parameters()), c, epochs * steps)
        acc: list[float] = []
        for epoch in range(epochs):
            t0 = time.perf_counter()
            net.train()
            total, seen = 0.0, 0
            for images, labels in tqdm(
                self._batches(), desc=f"joint epoch {epoch + 1}", disable=not self.progress, leave=False
            ):
                x = self._inputs(images)
                stem = net.stem(x)
                loss = 0.0
                for path in self._joint_paths(ends):
                    features = stem
                    for s, op in enumerate(path):
                        features = net.run_stage(features, s, op)
                        loss = loss + F.cross_entropy(net.exits[s](features), labels, label_smoothing=c.label_smoothing)
                loss = loss / (c.paths_per_step * net.num_exits)
                total += optimizer_step(optimizer, scheduler, loss) * len(labels)
                seen += len(labels)
            acc = self.exit_accuracy(range(net.num_exits))
            history.append(EpochLog(None, epoch + 1, total / seen, acc, time.perf_counter() - t0))
            self.log(
                f"joint epoch {epoch + 1}: loss {total / seen:.4f}, exit accuracy " + " ".join(f"{a:.4f}" for a in acc)
            )
        return TrainingResult("joint", epochs, time.perf_counter() - start, acc, history)

    def train(self) -> TrainingResult:
        if self.config.mode == "joint":
            epochs = self.config.joint_epochs or self.config.epochs_per_partition * self.net.num_exits
            return self.train_joint(epochs)
        return self.train_multistage()
