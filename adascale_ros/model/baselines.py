"""Static baselines (AdaScale Table III on our data) and the training-mode comparison.

``run_baselines`` trains torchvision's ResNet18, MobileNetV3-small,
ShuffleNetV2 (x1.0) and SqueezeNet 1.1 with the elastic network's data,
augmentation, optimiser and epoch budget, and puts each beside every exit of
a trained elastic network: test accuracy, training time, parameters,
storage and batch-1 CPU latency, all measured in the one run.

Adapting the ImageNet definitions to small inputs: the first convolution
takes the dataset's channels and is 3x3; for inputs under 64 px the stem
downsamples once (stride 2, as the elastic network's first stage does) and
the stem's max-pool is dropped, so every network works at the same
resolution after its stem.

``compare_training`` trains the same elastic network with each of the given
modes (Algorithm 1 freeze / guarded, and joint) in one run and reports time
and accuracy of each.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from adascale_ros.model.accuracy import Normalization, batches
from adascale_ros.model.datasets import DatasetSplits, ImageSet, load_splits
from adascale_ros.model.directory import load_variant_table, write_json
from adascale_ros.model.elastic import ElasticNet, Variant
from adascale_ros.model.metrics import size_of
from adascale_ros.model.pipeline import TrainRunConfig, best_per_exit, build_network, evaluate_splits
from adascale_ros.model.saved_model import LoadedModel
from adascale_ros.model.torchvision_compat import import_torchvision
from adascale_ros.model.training import Trainer, TrainingConfig, augment, make_optimizer, optimizer_step
from adascale_ros.timing import time_call

BASELINES = ("resnet18", "mobilenet_v3_small", "shufflenet_v2_x1_0", "squeezenet1_1")


def _stem_conv(conv: nn.Conv2d, in_channels: int, small: bool) -> nn.Conv2d:
    """The first convolution for ``in_channels``; 3x3 stride 2 for small inputs, else as designed."""
    if small:
        return nn.Conv2d(in_channels, conv.out_channels, 3, 2, 1, bias=conv.bias is not None)
    return nn.Conv2d(
        in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=conv.bias is not None
    )


def build_baseline(name: str, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    tv = import_torchvision()
    small = image_size < 64
    if name == "resnet18":
        model = tv.models.resnet18(num_classes=num_classes)
        model.conv1 = _stem_conv(model.conv1, in_channels, small)
        if small:
            model.maxpool = nn.Identity()
    elif name == "mobilenet_v3_small":
        model = tv.models.mobilenet_v3_small(num_classes=num_classes)
        model.features[0][0] = _stem_conv(model.features[0][0], in_channels, small)
    elif name == "shufflenet_v2_x1_0":
        model = tv.models.shufflenet_v2_x1_0(num_classes=num_classes)
        model.conv1[0] = _stem_conv(model.conv1[0], in_channels, small)
        if small:
            model.maxpool = nn.Identity()
    elif name == "squeezenet1_1":
        model = tv.models.squeezenet1_1(num_classes=num_classes)
        model.features[0] = _stem_conv(model.features[0], in_channels, small)
        if small:
            model.features[2] = nn.Identity()  # the stem's max-pool
    else:
        raise ValueError(f"unknown baseline {name!r}; known: {', '.join(BASELINES)}")
    return model


def train_static(
    model: nn.Module,
    splits: DatasetSplits,
    config: TrainingConfig,
    normalize: Normalization,
    epochs: int,
    progress: bool = True,
    desc: str = "",
) -> float:
    """Train a static network with the elastic network's recipe; return the seconds it took."""
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    steps = math.ceil(len(splits.train) / config.batch_size)
    optimizer, scheduler = make_optimizer(list(model.parameters()), config, epochs * steps)
    start = time.perf_counter()
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(splits.train), generator=generator)
        for i in tqdm(
            range(0, len(order), config.batch_size), desc=f"{desc} epoch {epoch + 1}", disable=not progress, leave=False
        ):
            index = order[i : i + config.batch_size]
            images = augment(splits.train.images[index], config.augment_crop, config.augment_flip, generator)
            loss = F.cross_entropy(
                model(normalize(images)), splits.train.labels[index], label_smoothing=config.label_smoothing
            )
            optimizer_step(optimizer, scheduler, loss)
    return time.perf_counter() - start


@torch.inference_mode()
def accuracy(forward: Callable[[torch.Tensor], torch.Tensor], data: ImageSet, normalize: Normalization) -> float:
    hits = sum(int((forward(normalize(x)).argmax(1) == y).sum()) for x, y in batches(data, 500))
    return hits / len(data)


def batch1_latency_ms(forward: Callable[[torch.Tensor], torch.Tensor], shape: Sequence[int], repeats: int) -> float:
    x = torch.zeros(1, *shape)
    with torch.inference_mode():
        return time_call(lambda: forward(x), repeats=repeats, warmup=max(3, repeats // 10)).median_ms


def run_baselines(
    model: LoadedModel,
    out: Path,
    names: Sequence[str] = BASELINES,
    epochs: int | None = None,
    lr: float | None = None,
    latency_repeats: int = 50,
    limit_train: int | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train each baseline and write ``baselines.json`` and ``baselines.md`` into ``out``.

    The baselines use the elastic network's recipe (optimiser, schedule,
    augmentation), at its peak learning rate unless ``lr`` is given: a rate
    tuned for the elastic network (GroupNorm, many losses averaged per
    step) can be too high for a single BatchNorm network.
    """
    if lr is not None and not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"--lr must be > 0, got {lr}")
    card = model.card
    run = TrainRunConfig.from_dict(card["config"])
    spec = replace(run.dataset, limit_train=limit_train) if limit_train else run.dataset
    splits = load_splits(spec)
    normalize = model.normalize
    shape = splits.train.shape
    epochs = epochs or card["training"]["epochs"]
    recipe = replace(run.training, lr=lr) if lr is not None else run.training
    rows: list[dict[str, Any]] = []
    table = load_variant_table(model.directory)
    for exit_index, row in best_per_exit(table["variants"], key="val_accuracy").items():
        variant = Variant.parse(row["variant_id"])
        params, storage = size_of(model.net.modules_of(variant))
        rows.append(
            {
                "model": f"AdaScale exit {exit_index} ({variant.id})",
                "accuracy": row["accuracy"],  # test accuracy, from these weights (re-checked by --evaluate)
                "train_seconds": card["training"]["seconds"],
                "params": params,
                "storage_bytes": storage,
                "latency_ms": batch1_latency_ms(lambda x, v=variant: model.net(x, v), shape, latency_repeats),
            }
        )
    # Build them all first: an unknown name fails before any training.
    baselines = {name: build_baseline(name, shape[0], len(splits.classes), shape[1]) for name in names}
    for name, net in baselines.items():
        seconds = train_static(net, splits, recipe, normalize, epochs, progress, desc=name)
        net.eval()
        params, storage = size_of([net])
        rows.append(
            {
                "model": name,
                "accuracy": accuracy(net, splits.test, normalize),
                "train_seconds": round(seconds, 1),
                "params": params,
                "storage_bytes": storage,
                "latency_ms": batch1_latency_ms(net, shape, latency_repeats),
            }
        )
        log(f"{name}: test accuracy {rows[-1]['accuracy']:.4f}, {seconds:.0f} s")
    report = {
        "dataset": card["dataset"]["name"],
        "epochs": epochs,
        "baseline_lr": recipe.lr,
        "elastic_lr": run.training.lr,
        "train_images": len(splits.train),
        "torch_threads": torch.get_num_threads(),
        "rows": rows,
    }
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "baselines.json", report)
    caption = (
        f"{report['dataset']}, {report['train_images']} training images, {epochs} epochs each; "
        f"peak learning rate {recipe.lr:g} for the baselines, {run.training.lr:g} for the elastic network; "
        f"batch-1 latency in torch eager mode on {report['torch_threads']} threads."
    )
    (out / "baselines.md").write_text(caption + "\n\n" + markdown_table(report["rows"]) + "\n")
    return report


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    lines = [
        "| model | test accuracy | training time (s) | params | storage (kB) | batch-1 latency (ms) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['accuracy']:.4f} | {r['train_seconds']:.0f} | {r['params']:,} | "
            f"{r['storage_bytes'] / 1e3:.1f} | {r['latency_ms']:.2f} |"
        )
    return "\n".join(lines)


def compare_training(
    config: TrainRunConfig,
    modes: Sequence[str],
    out: Path,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train the same network once per mode, from the same initial weights; report time and accuracy."""
    splits = load_splits(config.dataset)
    normalize = Normalization.fit(splits.train.images)
    budget = config.training.epochs_per_partition * config.network.num_stages
    results = []
    for mode in modes:
        training = replace(config.training, mode=mode, joint_epochs=budget)
        net = build_network(replace(config, training=training), splits)  # seeded: same initial weights
        result = Trainer(net, splits, training, normalize, progress, log).train()
        test_acc = _best_test_accuracy_per_exit(net, splits, normalize)
        results.append(
            {
                "mode": mode,
                "epochs": result.epochs,
                "seconds": round(result.seconds, 1),
                "monitor_exit_accuracy": result.exit_accuracy,
                "best_test_accuracy_per_exit": test_acc,
                "log": [asdict(e) for e in result.log],
            }
        )
        log(f"{mode}: {result.epochs} epochs in {result.seconds:.0f} s; best test accuracy per exit {test_acc}")
    report = {"config": config.to_dict(), "epoch_budget": budget, "results": results}
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "training_modes.json", report)
    lines = [
        "| mode | epochs | training time (s) | "
        + " | ".join(f"exit {e} best test acc" for e in range(config.network.num_stages))
        + " |",
        "|---|---:|---:|" + "---:|" * config.network.num_stages,
    ]
    for r in results:
        lines.append(
            f"| {r['mode']} | {r['epochs']} | {r['seconds']:.0f} | "
            + " | ".join(f"{a:.4f}" for a in r["best_test_accuracy_per_exit"])
            + " |"
        )
    (out / "training_modes.md").write_text("\n".join(lines) + "\n")
    return report


def _best_test_accuracy_per_exit(net: ElasticNet, splits: DatasetSplits, normalize: Normalization) -> list[float]:
    """Test accuracy, per exit, of the variant with the best validation accuracy."""
    accuracy, _ = evaluate_splits(net, {"val": splits.val, "test": splits.test}, normalize, progress=False)
    rows = [
        {"exit_index": v.exit_index, "val_accuracy": accuracy["val"][v.id], "accuracy": accuracy["test"][v.id]}
        for v in net.variants()
    ]
    return [row["accuracy"] for row in best_per_exit(rows, key="val_accuracy").values()]
