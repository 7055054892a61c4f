"""``adascale train`` for a pretrained backbone: from a YAML configuration to a model directory.

A configuration whose ``network`` names a ``backbone`` comes here (the tiny
network's goes to ``pipeline``)::

    dataset:  {name: fashion-mnist, val_fraction: 0.1}   # or image-folder / cifar, as for the tiny network
    network:  {backbone: lite0, resolutions: [128, 160, 224], pool_operators: [dws]}
    training: {tune_epochs: 3, ...}                       # FineTuneConfig

The model directory has the same files as the tiny network's (weights,
model card, variant table); the card's ``network.kind`` is ``backbone`` and
its ``input`` is the largest resolution (each variant's own is in its id).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adascale_ros.model.accuracy import Normalization
from adascale_ros.model.datasets import DatasetSpec, DatasetSplits, ImageSet, load_splits
from adascale_ros.model.directory import load_variant_table
from adascale_ros.model.elastic_backbone import LITE_MEAN, LITE_STD, BackboneConfig, ElasticBackbone
from adascale_ros.model.finetune import (
    FineTuneConfig,
    FineTuner,
    evaluate_backbone_variants,
    exit_accuracy,
    first_images,
    trunk_features,
)
from adascale_ros.model.metrics import module_table, resolution_suffix, variant_metrics
from adascale_ros.model.pipeline import best_per_exit, dataset_summary, provenance, trained_splits, warm_start
from adascale_ros.model.saved_model import LoadedModel, save_model
from adascale_ros.model.variant import Variant


@dataclass(frozen=True)
class BackboneRunConfig:
    dataset: DatasetSpec = field(default_factory=DatasetSpec)
    network: BackboneConfig = field(default_factory=BackboneConfig)
    training: FineTuneConfig = field(default_factory=FineTuneConfig)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BackboneRunConfig:
        unknown = set(data) - {"dataset", "network", "training"}
        if unknown:
            raise ValueError(f"unknown sections {sorted(unknown)}")
        network = dict(data.get("network") or {})
        unknown_network = set(network) - set(BackboneConfig.__dataclass_fields__)
        if unknown_network:
            raise ValueError(f"unknown network settings {sorted(unknown_network)}")
        return cls(
            dataset=DatasetSpec(**(data.get("dataset") or {})),
            network=BackboneConfig.from_dict(network),
            training=FineTuneConfig.from_dict(data.get("training") or {}),
        )

    def to_dict(self) -> dict[str, Any]:
        return {"dataset": asdict(self.dataset), "network": self.network.to_dict(), "training": self.training.to_dict()}


def is_backbone_config(data: dict[str, Any]) -> bool:
    """Whether a training configuration describes a pretrained backbone (its network names one)."""
    return isinstance(data.get("network"), dict) and "backbone" in data["network"]


def card_dataset(card: dict[str, Any]) -> DatasetSpec:
    """The dataset a model card's training configuration names (a backbone's or the tiny network's)."""
    if is_backbone_config(card["config"]):
        return BackboneRunConfig.from_dict(card["config"]).dataset
    from adascale_ros.model.pipeline import TrainRunConfig

    return TrainRunConfig.from_dict(card["config"]).dataset


def variant_table(net: ElasticBackbone, accuracy: dict[str, dict[str, float]]) -> dict[str, Any]:
    """variants.json: every variant with its accuracies and intrinsic metrics at its resolution."""
    modules = {}
    for r in net.config.resolutions:
        modules |= module_table(net, (3, r, r), resolution_suffix(r))
    rows = []
    for v in net.variants():
        row: dict[str, Any] = {
            "variant_id": v.id,
            "exit_index": v.exit_index,
            "operators": list(v.operators),
            "resolution": v.resolution,
        }
        row.update({name: acc[v.id] for name, acc in accuracy.items()})
        row.update(variant_metrics(v, modules))
        rows.append(row)
    return {"variants": rows, "modules": [m.to_dict() for m in modules.values()]}


def finetune_model(
    config: BackboneRunConfig,
    out: Path,
    workdir: Path,
    progress: bool = True,
    log: Callable[[str], None] = print,
    init_from: Path | None = None,
    feature_cache: Path | None = None,
) -> dict[str, Any]:
    """Run the recipe (``finetune``), score every variant and write the model directory; resumes from
    ``workdir``'s checkpoint. Trunk features are cached in ``feature_cache`` (default: ``workdir/features``),
    keyed by content, so runs that share it compute them once. ``init_from``: a model directory of the
    same network and data whose weights replace the ImageNet ones before the recipe runs (more tuning
    on a fresh schedule). Returns the model card."""
    began = time.perf_counter()
    splits: DatasetSplits = load_splits(config.dataset)
    log(
        f"{splits.name}: {len(splits.train)} train, {len(splits.val)} val, {len(splits.test)} test, "
        f"{len(splits.classes)} classes, images {splits.train.shape}"
    )
    network = BackboneConfig.from_dict({**config.network.to_dict(), "num_classes": len(splits.classes)})
    torch.manual_seed(config.training.seed)
    net = ElasticBackbone(network, pretrained=True)
    parent = warm_start(net, splits, init_from) if init_from is not None else None
    if parent is not None:
        log(f"starting from the weights of {init_from} ({parent['training']['seconds']:.0f} s of training)")
    normalize = Normalization(LITE_MEAN, LITE_STD)
    cache = feature_cache or workdir / "features"
    features = FeatureCache(net, normalize, cache, config.training.feature_batch, progress)

    feature_began = time.perf_counter()
    train_features = features(splits.train, "train")
    feature_seconds = time.perf_counter() - feature_began
    labels = splits.train.labels if config.training.labels else None
    result = FineTuner(net, config.training, train_features, labels, workdir, progress, log).run()

    scored = scored_splits(splits, config.training.table_images)
    accuracy, eval_seconds = score_variants(net, scored, features, progress)
    table = variant_table(net, accuracy)
    size = network.max_resolution
    card = {
        "name": out.name,
        "classes": list(splits.classes),
        "input": {"channels": 3, "height": size, "width": size, "dtype": "uint8"},
        "normalization": asdict(normalize),
        "preprocessing": "RGB (grey repeated), resized to the variant's resolution, x = (pixels / 255 - mean) / std",
        "network": network.to_dict(),
        "num_variants": len(table["variants"]),
        "config": config.to_dict(),
        "dataset": {**dataset_summary(splits), "scored": {name: len(data) for name, data in scored.items()}},
        "seed": config.training.seed,
        "training": {
            "recipe": "trunk features cached; branch distillation; tuning of every exit on drawn paths",
            "labels": config.training.labels,
            "seconds": round(time.perf_counter() - began, 1),
            "feature_seconds": round(feature_seconds, 1),
            "phase_seconds": result.seconds,
            "exit_accuracy_val": exit_accuracy(accuracy["val_accuracy"], net),
            "log": [asdict(e) for e in result.log],
        },
        **({"init_from": parent} if parent is not None else {}),
        "evaluation_seconds_prefix_reuse": eval_seconds,
        "threads": torch.get_num_threads(),
        **provenance(),
    }
    save_model(out, net, card, table)
    log(f"wrote {out}: {len(table['variants'])} variants")
    return card


@dataclass
class FeatureCache:
    """The trunk's features of an image set at every resolution of ``net``, computed once (``trunk_features``)."""

    net: ElasticBackbone
    normalize: Normalization
    directory: Path
    batch_size: int = 128
    progress: bool = True

    def __call__(self, data: ImageSet, name: str) -> dict[int, Any]:
        return {
            r: trunk_features(
                self.net, data, r, self.normalize, self.directory, self.batch_size, self.progress, f"trunk {name} @{r}"
            )
            for r in self.net.config.resolutions
        }


def scored_splits(splits: DatasetSplits, table_images: int | None) -> dict[str, ImageSet]:
    """The images the variant table's accuracies are measured on: the first ``table_images`` of
    validation (``val_accuracy``) and of test (``accuracy``)."""
    return {"val_accuracy": first_images(splits.val, table_images), "accuracy": first_images(splits.test, table_images)}


def score_variants(
    net: ElasticBackbone, scored: dict[str, ImageSet], features: FeatureCache, progress: bool = True
) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """Accuracy of every variant on each named image set (prefix reuse), and the seconds each took."""
    accuracy, seconds = {}, {}
    for name, data in scored.items():
        start = time.perf_counter()
        accuracy[name] = evaluate_backbone_variants(
            net, features(data, name), data.labels, progress=progress, desc=name
        )
        seconds[name] = round(time.perf_counter() - start, 1)
    return accuracy, seconds


def adapt_model(
    model: LoadedModel,
    frames: ImageSet,
    out: Path,
    workdir: Path,
    feature_cache: Path,
    epochs: float = 1.0,
    held_out: float = 0.1,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Label-free adaptation: tune a fine-tuned backbone's exits and branches on unlabelled ``frames`` by
    distillation from the all-pretrained path to the last exit at each resolution (which stays as it is;
    at the largest resolution it is the model's largest variant), and write a new model directory.

    Its variant table is scored again on the labelled validation and test images the model was trained
    on (``ValueError`` before any training when they cannot be loaded: a table never carries accuracies
    of other weights), plus ``agreement``: how often each variant answers as the largest one does on the
    held-out share of the frames. The card's ``adapted`` section gives the mean agreement per exit on those
    frames before and after. Resumes from ``workdir``'s checkpoint."""
    began = time.perf_counter()
    if model.card["network"].get("kind") != "backbone":
        raise ValueError(f"{model.directory}: label-free adaptation needs a backbone model (adascale train)")
    config = BackboneRunConfig.from_dict(model.card["config"])
    splits = trained_splits(model, config.dataset)
    holdout = max(1, round(held_out * len(frames)))
    if len(frames) - holdout < 2:
        raise ValueError(f"{len(frames)} frames: too few to adapt on and hold some out (at least {holdout + 2})")
    order = torch.randperm(len(frames), generator=torch.Generator().manual_seed(config.training.seed))
    held, train = frames.subset(order[:holdout]), frames.subset(order[holdout:])
    net = model.net
    training = replace(config.training, labels=False, distill_epochs=0.0, tune_epochs=epochs)
    features = FeatureCache(net, model.normalize, feature_cache, training.feature_batch, progress)
    held_features = features(held, "held-out frames")
    largest = Variant(net.num_exits - 1, ("pre",) * net.num_exits, net.config.max_resolution)
    teacher = variant_predictions(net, held_features[largest.resolution], largest)
    before = evaluate_backbone_variants(net, held_features, teacher, progress=progress, desc="agreement before")
    log(f"adapting {model.directory.name} on {len(train)} frames ({len(held)} held out), {epochs:g} epochs")
    result = FineTuner(net, training, features(train, "frames"), None, workdir, progress, log).run()
    agreement = evaluate_backbone_variants(net, held_features, teacher, progress=progress, desc="agreement after")
    accuracy, eval_seconds = score_variants(net, scored_splits(splits, training.table_images), features, progress)
    table = variant_table(net, {**accuracy, "agreement": agreement})
    card = {
        **{k: v for k, v in model.card.items() if k not in ("format_version", "init_from")},
        "name": out.name,
        "adapted": {
            "from": {"name": model.card["name"], "created": model.card.get("created")},
            "recipe": "label-free: every exit and branch tuned to the largest variant's soft-max on the frames",
            "frames": len(frames),
            "frames_fingerprint": frames.fingerprint(),
            "held_out": len(held),
            "epochs": epochs,
            "seconds": round(time.perf_counter() - began, 1),
            "phase_seconds": result.seconds,
            "mean_agreement_per_exit": {
                "before": mean_per_exit(before, net.num_exits),
                "after": mean_per_exit(agreement, net.num_exits),
            },
            "log": [asdict(e) for e in result.log],
        },
        "evaluation_seconds_prefix_reuse": eval_seconds,
        **provenance(),
    }
    save_model(out, net, card, table)
    log(f"wrote {out}: {len(table['variants'])} variants")
    return card


def variant_predictions(net: ElasticBackbone, features: Any, variant: Variant, batch_size: int = 256) -> torch.Tensor:
    """The class ``variant`` answers for each image, from the trunk features at its resolution."""
    net.eval()
    answers = []
    with torch.inference_mode():
        for start in range(0, len(features), batch_size):
            x = torch.from_numpy(np.asarray(features[start : start + batch_size], np.float32))
            for stage, op in enumerate(variant.operators):
                x = net.run_stage(x, stage, op)
            answers.append(net.exits[variant.exit_index](x).argmax(1))
    return torch.cat(answers)


def mean_per_exit(scores: dict[str, float], num_exits: int) -> list[float]:
    """The mean of ``scores`` (variant id -> value) over the variants of each exit."""
    by_exit: list[list[float]] = [[] for _ in range(num_exits)]
    for vid, value in scores.items():
        by_exit[Variant.parse(vid).exit_index].append(value)
    return [round(float(np.mean(values)), 4) for values in by_exit]


def best_variants(rows: list[dict[str, Any]], key: str = "val_accuracy") -> dict[tuple[int, int], dict[str, Any]]:
    """(exit, resolution) -> the row of the variant with the highest ``key`` there."""
    best: dict[tuple[int, int], dict[str, Any]] = {}
    for row in rows:
        cell = (row["exit_index"], row["resolution"])
        if cell not in best or row[key] > best[cell][key]:
            best[cell] = row
    return dict(sorted(best.items()))


def score_best_variants(
    model: LoadedModel, feature_cache: Path, progress: bool = True, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """The most accurate variant (on validation) of every exit and resolution, scored on the whole test split
    of the card's dataset; rows give its FLOPs and its table accuracy too."""
    splits = trained_splits(model, BackboneRunConfig.from_dict(model.card["config"]).dataset)
    net = model.net
    table = load_variant_table(model.directory)
    chosen = best_variants(table["variants"])
    features = FeatureCache(net, model.normalize, feature_cache, progress=progress)(splits.test, "test")
    variants = [Variant.parse(row["variant_id"]) for row in chosen.values()]
    accuracy = evaluate_backbone_variants(
        net, features, splits.test.labels, progress=progress, desc="test", only=variants
    )
    rows = [
        {
            "exit": exit_index,
            "resolution": resolution,
            "variant_id": row["variant_id"],
            "val_accuracy": row["val_accuracy"],
            "test_accuracy": accuracy[row["variant_id"]],
            "mflops": round(row["flops"] / 1e6, 1),
        }
        for (exit_index, resolution), row in chosen.items()
    ]
    return {"test_images": len(splits.test), "rows": rows}


def format_best_variants(report: dict[str, Any], tiny: dict[str, Any] | None = None) -> str:
    lines = [f"best variant (validation) per exit and resolution, accuracy on all {report['test_images']} test images:"]
    lines.append("exit  resolution  variant                          test acc  val acc   MFLOPs")
    for row in report["rows"]:
        lines.append(
            f"{row['exit']:>4}  {row['resolution']:>10}  {row['variant_id']:<32} {row['test_accuracy']:>7.2%}"
            f"  {row['val_accuracy']:>7.2%}  {row['mflops']:>7.1f}"
        )
    top = max(report["rows"], key=lambda row: row["test_accuracy"])
    first = max((row for row in report["rows"] if row["exit"] == 0), key=lambda row: row["test_accuracy"])
    lines.append(f"best: {top['variant_id']} {top['test_accuracy']:.2%}")
    lines.append(f"best first exit: {first['variant_id']} {first['test_accuracy']:.2%}")
    if tiny is not None:
        lines.append("the tiny model (models/default), best variant per exit on the test split:")
        for exit_index, row in best_per_exit(tiny["variants"]).items():
            lines.append(
                f"  exit {exit_index}: {row['variant_id']} {row['accuracy']:.2%} ({row['flops'] / 1e6:.1f} MFLOPs)"
            )
    return "\n".join(lines)
