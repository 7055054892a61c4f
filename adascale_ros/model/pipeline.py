"""``adascale train`` and ``adascale variants``: from a YAML configuration to a model directory."""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import yaml

from adascale_ros.model.accuracy import Normalization, evaluate_variants
from adascale_ros.model.datasets import DatasetSpec, DatasetSplits, ImageSet, load_splits
from adascale_ros.model.directory import load_variant_table
from adascale_ros.model.elastic import ElasticConfig, ElasticNet, MultiExitNet
from adascale_ros.model.metrics import module_table, variant_metrics
from adascale_ros.model.saved_model import LoadedModel, load_model, save_model
from adascale_ros.model.training import Trainer, TrainingConfig, TrainingResult


def read_run_config(path: Path) -> dict[str, Any]:
    """A training configuration file as a mapping; ``ValueError`` naming the file otherwise."""
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: unreadable YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping with dataset/network/training sections")
    return data


@dataclass(frozen=True)
class TrainRunConfig:
    dataset: DatasetSpec = field(default_factory=DatasetSpec)
    network: ElasticConfig = field(default_factory=ElasticConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)

    @classmethod
    def from_yaml(cls, path: Path) -> TrainRunConfig:
        data = read_run_config(path)
        try:
            return cls.from_dict(data)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: {exc}") from exc

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainRunConfig:
        unknown = set(data) - {"dataset", "network", "training"}
        if unknown:
            raise ValueError(f"unknown sections {sorted(unknown)}")
        training = dict(data.get("training") or {})
        if "target_accuracy" in training:
            training["target_accuracy"] = tuple(training["target_accuracy"])
        return cls(
            dataset=DatasetSpec(**(data.get("dataset") or {})),
            network=ElasticConfig.from_dict(data.get("network") or {}),
            training=TrainingConfig(**training),
        )

    def to_dict(self) -> dict[str, Any]:
        return {"dataset": asdict(self.dataset), "network": self.network.to_dict(), "training": asdict(self.training)}


def build_network(config: TrainRunConfig, splits: DatasetSplits) -> ElasticNet:
    channels, _, _ = splits.train.shape
    network = ElasticConfig.from_dict(
        {**config.network.to_dict(), "in_channels": channels, "num_classes": len(splits.classes)}
    )
    torch.manual_seed(config.training.seed)
    return ElasticNet(network)


def variant_table(
    net: ElasticNet,
    input_shape: tuple[int, int, int],
    accuracy: dict[str, dict[str, float]],
) -> dict[str, Any]:
    """The variants.json content: one entry per variant, and the module metrics they sum from."""
    modules = module_table(net, input_shape)
    rows = []
    for v in net.variants():
        row: dict[str, Any] = {"variant_id": v.id, "exit_index": v.exit_index, "operators": list(v.operators)}
        row.update({name: acc[v.id] for name, acc in accuracy.items()})
        row.update(variant_metrics(v, modules))
        rows.append(row)
    return {"variants": rows, "modules": [m.to_dict() for m in modules.values()]}


def evaluate_splits(
    net: ElasticNet, splits: dict[str, ImageSet], normalize: Normalization, progress: bool
) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """Accuracy of every variant on each named split, and the seconds each took (prefix reuse)."""
    accuracy, seconds = {}, {}
    for name, data in splits.items():
        start = time.perf_counter()
        accuracy[name] = evaluate_variants(net, data, normalize, progress=progress, desc=f"variants on {name}")
        seconds[name] = time.perf_counter() - start
    return accuracy, seconds


# Input sizes change no weight of a fully convolutional network: a model can be tuned on at others.
WEIGHT_FREE_NETWORK_FIELDS = ("resolutions",)


def same_weights(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two networks' card entries describe the same weights (resolutions aside)."""
    return all(a.get(k) == b.get(k) for k in set(a) | set(b) if k not in WEIGHT_FREE_NETWORK_FIELDS)


def warm_start(net: MultiExitNet, splits: DatasetSplits, model_dir: Path) -> dict[str, Any]:
    """Copy a trained model's weights into ``net``; returns what the new card says of it.

    ``ValueError`` unless that model has the same network, input resolutions aside, and was
    trained on the same data (same fingerprint, so the same training / validation split): its
    validation accuracy must stay a held-out figure.
    """
    start = load_model(model_dir)
    if not same_weights(start.net.config.to_dict(), net.config.to_dict()):
        raise ValueError(f"--init-from {model_dir}: its network differs from the configuration's")
    if start.card["dataset"]["fingerprint"] != splits.fingerprint():
        raise ValueError(f"--init-from {model_dir}: trained on other data (dataset fingerprint differs)")
    net.load_state_dict(start.net.state_dict())
    card = start.card
    return {
        "name": card["name"],
        "created": card.get("created"),
        "config": card["config"],
        "training": {k: v for k, v in card["training"].items() if k in ("recipe", "mode", "epochs", "seconds")},
        **({"init_from": card["init_from"]} if "init_from" in card else {}),
    }


def train_model(
    config: TrainRunConfig,
    out: Path,
    progress: bool = True,
    log: Callable[[str], None] = print,
    init_from: Path | None = None,
) -> dict[str, Any]:
    """Train (from ``init_from``'s weights when given), evaluate every variant, and write the model
    directory. Returns the model card."""
    splits = load_splits(config.dataset)
    log(
        f"{splits.name}: {len(splits.train)} train, {len(splits.val)} val, {len(splits.test)} test, "
        f"{len(splits.classes)} classes, images {splits.train.shape}"
    )
    normalize = Normalization.fit(splits.train.images)
    net = build_network(config, splits)
    parent = warm_start(net, splits, init_from) if init_from is not None else None
    if parent is not None:
        log(f"starting from the weights of {init_from} ({parent['training']['epochs']} epochs)")
    result: TrainingResult = Trainer(net, splits, config.training, normalize, progress, log).train()
    log(f"trained ({result.mode}) in {result.seconds:.0f} s, {result.epochs} epochs")
    accuracy, eval_seconds = evaluate_splits(net, {"val": splits.val, "test": splits.test}, normalize, progress)
    table = variant_table(net, splits.train.shape, {"accuracy": accuracy["test"], "val_accuracy": accuracy["val"]})
    channels, height, width = splits.train.shape
    card = {
        "name": out.name,
        "classes": list(splits.classes),
        "input": {"channels": channels, "height": height, "width": width, "dtype": "uint8"},
        "normalization": asdict(normalize),
        "preprocessing": "x = (pixels / 255 - mean) / std per channel, at input height x width",
        "network": net.config.to_dict(),
        "num_variants": len(table["variants"]),
        "config": config.to_dict(),
        "dataset": dataset_summary(splits),
        "seed": config.training.seed,
        "training": {
            "mode": result.mode,
            "epochs": result.epochs,
            "seconds": round(result.seconds, 1),
            "monitor_exit_accuracy": result.exit_accuracy,
            "log": [asdict(e) for e in result.log],
        },
        **({"init_from": parent} if parent is not None else {}),
        "evaluation_seconds_prefix_reuse": {k: round(v, 1) for k, v in eval_seconds.items()},
        **provenance(),
    }
    save_model(out, net, card, table)
    log(f"wrote {out}: {len(table['variants'])} variants")
    return card


def dataset_summary(splits: DatasetSplits) -> dict[str, Any]:
    """What a model card says of the data: name, fingerprint and split sizes."""
    return {
        "name": splits.name,
        "fingerprint": splits.fingerprint(),
        "train": len(splits.train),
        "val": len(splits.val),
        "test": len(splits.test),
    }


def provenance() -> dict[str, Any]:
    """What a model card says of where and when it was made."""
    return {
        "torch": torch.__version__,
        "machine": platform.machine(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def best_per_exit(rows: list[dict[str, Any]], key: str = "accuracy") -> dict[int, dict[str, Any]]:
    best: dict[int, dict[str, Any]] = {}
    for row in rows:
        e = row["exit_index"]
        if e not in best or row[key] > best[e][key]:
            best[e] = row
    return dict(sorted(best.items()))


def format_variant_table(table: dict[str, Any], limit: int | None = None) -> str:
    rows = table["variants"]
    lines = [
        f"{'variant':<28}{'exit':>5}{'test acc':>10}{'val acc':>9}{'params':>10}{'MFLOPs':>9}"
        f"{'storage kB':>12}{'mem acc MB':>12}"
    ]
    for row in rows if limit is None else rows[:limit]:
        lines.append(
            f"{row['variant_id']:<28}{row['exit_index']:>5}{row['accuracy']:>10.4f}{row['val_accuracy']:>9.4f}"
            f"{row['params']:>10}{row['flops'] / 1e6:>9.2f}{row['storage_bytes'] / 1e3:>12.1f}"
            f"{row['memory_accesses'] / 1e6:>12.2f}"
        )
    lines.append(f"{len(rows)} variants; best per exit (test):")
    for e, row in best_per_exit(rows).items():
        lines.append(f"  exit {e}: {row['variant_id']} {row['accuracy']:.4f} (val {row['val_accuracy']:.4f})")
    return "\n".join(lines)


def trained_splits(model: LoadedModel, spec: DatasetSpec) -> DatasetSplits:
    """The dataset ``spec`` names, loaded; ``ValueError`` unless it is the data the model was trained on
    (the card's fingerprint), so no accuracy is measured on another split."""
    splits = load_splits(spec)
    if splits.fingerprint() != model.card["dataset"]["fingerprint"]:
        raise ValueError(f"{spec.name}: the data differ from what {model.directory} was trained on (fingerprint)")
    return splits


def reevaluate(model: LoadedModel, progress: bool = True) -> dict[str, Any]:
    """Recompute every accuracy in variants.json from the weights and the card's dataset."""
    splits = trained_splits(model, TrainRunConfig.from_dict(model.card["config"]).dataset)
    accuracy, _ = evaluate_splits(model.net, {"val": splits.val, "test": splits.test}, model.normalize, progress)
    table = load_variant_table(model.directory)
    for row in table["variants"]:
        row["accuracy"] = accuracy["test"][row["variant_id"]]
        row["val_accuracy"] = accuracy["val"][row["variant_id"]]
    return table


def compare_prefix_reuse(model: LoadedModel, images: int, progress: bool = True) -> dict[str, Any]:
    """Time evaluating every variant with and without prefix reuse on the first ``images`` test images."""
    data = load_splits(TrainRunConfig.from_dict(model.card["config"]).dataset).test
    data = data.subset(range(min(images, len(data))))
    timings, results = {}, {}
    for reuse in (True, False):
        start = time.perf_counter()
        results[reuse] = evaluate_variants(
            model.net,
            data,
            model.normalize,
            reuse=reuse,
            progress=progress,
            desc="with reuse" if reuse else "without reuse",
        )
        timings[reuse] = time.perf_counter() - start
    return {
        "images": len(data),
        "variants": len(results[True]),
        "seconds_with_reuse": round(timings[True], 2),
        "seconds_without_reuse": round(timings[False], 2),
        "speedup": round(timings[False] / timings[True], 2),
        "identical_accuracies": results[True] == results[False],
    }
