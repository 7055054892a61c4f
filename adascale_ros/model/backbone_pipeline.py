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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from adascale_ros.model.artifacts import LoadedModel, save_model
from adascale_ros.model.datasets import DatasetSpec, DatasetSplits, ImageSet, load_splits
from adascale_ros.model.elastic_backbone import LITE_MEAN, LITE_STD, BackboneConfig, ElasticBackbone
from adascale_ros.model.evaluation import Normalization
from adascale_ros.model.files import load_variant_table
from adascale_ros.model.finetune import (
    FineTuneConfig,
    FineTuner,
    evaluate_backbone_variants,
    exit_accuracy,
    first_images,
    trunk_features,
)
from adascale_ros.model.metrics import module_table, resolution_suffix, variant_metrics
from adascale_ros.model.pipeline import best_per_exit, dataset_summary, provenance
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
) -> dict[str, Any]:
    """Run the recipe (``finetune``), score every variant and write the model directory; resumes from
    ``workdir``'s checkpoint and feature cache. Returns the model card."""
    began = time.perf_counter()
    splits: DatasetSplits = load_splits(config.dataset)
    log(
        f"{splits.name}: {len(splits.train)} train, {len(splits.val)} val, {len(splits.test)} test, "
        f"{len(splits.classes)} classes, images {splits.train.shape}"
    )
    network = BackboneConfig.from_dict({**config.network.to_dict(), "num_classes": len(splits.classes)})
    torch.manual_seed(config.training.seed)
    net = ElasticBackbone(network, pretrained=True)
    normalize = Normalization(LITE_MEAN, LITE_STD)
    cache = workdir / "features"

    def features(data: ImageSet, name: str) -> dict[int, Any]:
        return {
            r: trunk_features(
                net, data, r, normalize, cache, config.training.feature_batch, progress, f"trunk {name} @{r}"
            )
            for r in network.resolutions
        }

    feature_began = time.perf_counter()
    train_features = features(splits.train, "train")
    feature_seconds = time.perf_counter() - feature_began
    labels = splits.train.labels if config.training.labels else None
    result = FineTuner(net, config.training, train_features, labels, workdir, progress, log).run()

    scored = {"val_accuracy": first_images(splits.val, config.training.table_images)}
    scored["accuracy"] = first_images(splits.test, config.training.table_images)
    accuracy, eval_seconds = {}, {}
    for name, data in scored.items():
        start = time.perf_counter()
        accuracy[name] = evaluate_backbone_variants(
            net, features(data, name), data.labels, progress=progress, desc=name
        )
        eval_seconds[name] = round(time.perf_counter() - start, 1)
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
        "evaluation_seconds_prefix_reuse": eval_seconds,
        "threads": torch.get_num_threads(),
        **provenance(),
    }
    save_model(out, net, card, table)
    log(f"wrote {out}: {len(table['variants'])} variants")
    return card


def best_variants(rows: list[dict[str, Any]], key: str = "val_accuracy") -> dict[tuple[int, int], dict[str, Any]]:
    """(exit, resolution) -> the row of the variant with the highest ``key`` there."""
    best: dict[tuple[int, int], dict[str, Any]] = {}
    for row in rows:
        cell = (row["exit_index"], row["resolution"])
        if cell not in best or row[key] > best[cell][key]:
            best[cell] = row
    return dict(sorted(best.items()))


def score_best_variants(
    model: LoadedModel, workdir: Path, progress: bool = True, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """The most accurate variant (on validation) of every exit and resolution, scored on the whole test split
    of the card's dataset; rows give its FLOPs and its table accuracy too."""
    config = BackboneRunConfig.from_dict(model.card["config"])
    splits = load_splits(config.dataset)
    if splits.fingerprint() != model.card["dataset"]["fingerprint"]:
        raise ValueError(f"{config.dataset.name}: the data differ from what {model.directory} was trained on")
    net = model.net
    table = load_variant_table(model.directory)
    chosen = best_variants(table["variants"])
    features = {
        r: trunk_features(
            net, splits.test, r, model.normalize, workdir / "features", progress=progress, desc=f"test @{r}"
        )
        for r in net.config.resolutions
    }
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
