"""Accuracy of many variants at once, with AdaptiveNet's prefix reuse.

Variants form a tree: all variants that start with the same operators share
the stem and those stages' outputs. ``evaluate_variants`` walks that tree once
per batch, depth first, computing each shared stage output once and every
exit head on it, instead of running each variant from the input
(``reuse=False``, the naive way, kept for comparison and for tests).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tqdm import tqdm

from adascale_ros.model.datasets import ImageSet
from adascale_ros.model.elastic import ElasticNet, MultiExitNet, Variant


@dataclass(frozen=True)
class Normalization:
    """uint8 pixels -> float: x / 255, then per-channel (x - mean) / std."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def fit(cls, images: torch.Tensor) -> Normalization:
        x = images.float().div_(255.0)
        return cls(
            tuple(float(v) for v in x.mean(dim=(0, 2, 3))),
            tuple(max(float(v), 1e-6) for v in x.std(dim=(0, 2, 3))),
        )

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.std).view(1, -1, 1, 1)
        return (images.float() / 255.0 - mean) / std


def batches(data: ImageSet, batch_size: int) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    for start in range(0, len(data), batch_size):
        yield data.images[start : start + batch_size], data.labels[start : start + batch_size]


class _PrefixTree:
    """Variants grouped by the operator prefix they share."""

    def __init__(self, variants: Sequence[Variant]) -> None:
        # children[prefix] = next operators used below it; exits[prefix] = variants ending there.
        self.children: dict[tuple[str, ...], list[str]] = defaultdict(list)
        self.ends: dict[tuple[str, ...], Variant] = {}
        for v in variants:
            ops = v.operators
            self.ends[ops] = v
            for depth in range(len(ops)):
                prefix, op = ops[:depth], ops[depth]
                if op not in self.children[prefix]:
                    self.children[prefix].append(op)


@torch.inference_mode()
def evaluate_variants(
    net: ElasticNet,
    data: ImageSet,
    normalize: Normalization,
    variants: Sequence[Variant] | None = None,
    batch_size: int = 500,
    reuse: bool = True,
    progress: bool = False,
    desc: str = "evaluating",
) -> dict[str, float]:
    """Top-1 accuracy of each variant on ``data``, keyed by variant id."""
    variants = list(variants if variants is not None else net.variants())
    for v in variants:
        net.check_variant(v)
    was_training = net.training
    net.eval()
    correct: dict[str, int] = dict.fromkeys((v.id for v in variants), 0)
    tree = _PrefixTree(variants)

    def walk(features: torch.Tensor, prefix: tuple[str, ...], labels: torch.Tensor) -> None:
        depth = len(prefix)
        for op in tree.children.get(prefix, ()):
            out = net.run_stage(features, depth, op)
            path = (*prefix, op)
            if path in tree.ends:
                logits = net.exits[depth](out)
                correct[tree.ends[path].id] += int((logits.argmax(1) == labels).sum())
            walk(out, path, labels)

    try:
        for images, labels in tqdm(
            batches(data, batch_size), total=-(-len(data) // batch_size), desc=desc, disable=not progress
        ):
            x = normalize(images)
            if reuse:
                walk(net.stem(x), (), labels)
            else:
                for v in variants:
                    correct[v.id] += int((net(x, v).argmax(1) == labels).sum())
    finally:
        net.train(was_training)
    return {vid: hits / len(data) for vid, hits in correct.items()}


def early_exit_accuracy(
    net: MultiExitNet,
    data: ImageSet,
    normalize: Normalization,
    variant: Variant,
    thresholds: Sequence[float],
    batch_size: int = 500,
    inputs: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Accuracy of ``variant`` with confidence early exit at each threshold, and where its inputs answer.

    ``inputs`` turns a batch of uint8 images into the network's input (default: ``normalize``; a
    backbone's resizes them to the variant's resolution first).

    As ``ElasticEngine.run`` decides per input: the first exit on the path whose
    top soft-max score is >= t answers; the variant's own exit answers the rest.
    Returns ``accuracy`` (without early exit) and ``rows``, per threshold its
    ``accuracy`` and ``exit_share`` (the fraction answered by each exit on the path).
    """
    net.check_variant(variant)
    was_training = net.training
    net.eval()
    scores, predictions, labels = [], [], []  # per batch: (exits, n) top score and class
    try:
        with torch.inference_mode():
            for images, batch_labels in batches(data, batch_size):
                x = inputs(images) if inputs is not None else normalize(images)
                probabilities = [torch.softmax(logits, 1) for _, logits in net.iter_exits(x, variant)]
                top = torch.stack([p.max(1).values for p in probabilities])
                scores.append(top)
                predictions.append(torch.stack([p.argmax(1) for p in probabilities]))
                labels.append(batch_labels)
    finally:
        net.train(was_training)
    score, prediction, label = torch.cat(scores, 1), torch.cat(predictions, 1), torch.cat(labels)
    last = score.shape[0] - 1
    rows = []
    for t in thresholds:
        confident = score >= t
        confident[last] = True  # the variant's own exit answers whatever is left
        answered_at = confident.int().argmax(0)  # the first confident exit
        answer = prediction.gather(0, answered_at[None])[0]
        share = torch.bincount(answered_at, minlength=last + 1).double() / len(label)
        rows.append(
            {
                "threshold": float(t),
                "accuracy": float((answer == label).double().mean()),
                "exit_share": [round(float(s), 4) for s in share],
            }
        )
    return {"variant_id": variant.id, "accuracy": float((prediction[last] == label).double().mean()), "rows": rows}


def lowest_threshold(result: dict[str, Any], max_loss: float) -> float | None:
    """The lowest threshold of ``early_exit_accuracy``'s result losing at most ``max_loss`` (a fraction) of
    accuracy against no early exit; None when every one loses more."""
    within = [r["threshold"] for r in result["rows"] if r["accuracy"] >= result["accuracy"] - max_loss]
    return min(within, default=None)
