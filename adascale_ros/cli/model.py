"""The model: ``adascale train``, ``adapt``, ``variants``, ``early-exit``, ``baselines``, ``compare-training``."""

from __future__ import annotations

import argparse
from pathlib import Path

from adascale_ros.cli.options import JSON, NO_PROGRESS


def add_commands(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser(
        "train",
        parents=[NO_PROGRESS],
        help="train the elastic network (or fine-tune a pretrained backbone) and write a model directory",
    )
    train.add_argument("--config", type=Path, required=True, help="YAML with dataset/network/training sections")
    train.add_argument("--out", type=Path, required=True)
    train.add_argument("--mode", choices=["freeze", "guarded", "joint"], help="override training.mode")
    train.add_argument(
        "--init-from",
        type=Path,
        help="start from this model directory's weights (same network and data) and train on by the config",
    )
    train.add_argument(
        "--workdir",
        type=Path,
        help="a backbone's checkpoint and trunk-feature cache (default: <out>.work beside --out); "
        "a rerun with the same one resumes",
    )
    train.set_defaults(func=_cmd_train)

    adapt = sub.add_parser(
        "adapt",
        parents=[NO_PROGRESS],
        help="label-free: tune a backbone model's early exits to unlabelled frames (a folder or a bag) "
        "by distillation from its largest variant",
    )
    adapt.add_argument("model_dir", type=Path, help="a fine-tuned backbone model (adascale train)")
    adapt.add_argument("--frames", type=Path, required=True, help="a folder of images (any depth) or a rosbag2")
    adapt.add_argument("--out", type=Path, required=True, help="the adapted model's directory")
    adapt.add_argument("--topic", default="/camera/image_raw", help="the bag's camera topic (Image or CompressedImage)")
    adapt.add_argument("--epochs", type=float, default=1.0, help="passes over the frames")
    adapt.add_argument("--limit", type=int, help="use only the first N frames")
    adapt.add_argument("--workdir", type=Path, help="checkpoint directory (default: <out>.work); a rerun resumes")
    adapt.set_defaults(func=_cmd_adapt)

    var = sub.add_parser("variants", parents=[JSON], help="print a model's variant table")
    var.add_argument("model_dir", type=Path)
    var.add_argument("--evaluate", action="store_true", help="recompute every accuracy from weights and data")
    var.add_argument(
        "--compare-reuse",
        type=int,
        metavar="IMAGES",
        help="time evaluation with and without prefix reuse on this many test images",
    )
    var.add_argument("--limit", type=int, help="print only the first N rows")
    var.add_argument(
        "--best-on-test",
        action="store_true",
        help="a backbone model: the best variant (validation) of every exit and resolution, on the whole test split",
    )
    var.add_argument("--compare", type=Path, help="with --best-on-test: print this model's best variant per exit too")
    var.set_defaults(func=_cmd_variants)

    ee = sub.add_parser(
        "early-exit", parents=[JSON], help="accuracy and exit shares of confidence early exit per threshold"
    )
    ee.add_argument("model_dir", type=Path)
    ee.add_argument("--variant", help="variant id (default: static-top, the most accurate variant)")
    ee.add_argument("--thresholds", type=float, nargs="+", default=[0.8, 0.9, 0.95, 0.97, 0.98, 0.99, 0.995, 0.999])
    ee.add_argument("--max-loss", type=float, default=0.1, help="accuracy points on val a threshold may lose")
    ee.set_defaults(func=_cmd_early_exit)

    base = sub.add_parser(
        "baselines", parents=[NO_PROGRESS], help="train static baselines and tabulate them beside the elastic exits"
    )
    base.add_argument("model_dir", type=Path, help="a trained elastic model (data and recipe come from its card)")
    base.add_argument("--out", type=Path, help="where to write baselines.json/.md (default: model_dir)")
    base.add_argument(
        "--only",
        nargs="+",
        metavar="NAME",
        help="resnet18 mobilenet_v3_small shufflenet_v2_x1_0 squeezenet1_1 (default: all)",
    )
    base.add_argument("--epochs", type=int, help="default: the elastic network's epoch count")
    base.add_argument("--lr", type=float, help="the baselines' peak learning rate (default: the elastic network's)")
    base.add_argument("--limit-train", type=int, help="train on the first N training images (smoke runs)")
    base.set_defaults(func=_cmd_baselines)

    cmp = sub.add_parser(
        "compare-training", parents=[NO_PROGRESS], help="train one network per training mode and compare"
    )
    cmp.add_argument("--config", type=Path, required=True)
    cmp.add_argument("--out", type=Path, required=True)
    cmp.add_argument("--modes", nargs="+", choices=["freeze", "guarded", "joint"], default=["freeze", "joint"])
    cmp.set_defaults(func=_cmd_compare_training)


def _cmd_train(args: argparse.Namespace) -> int:
    from adascale_ros.model.backbone_pipeline import is_backbone_config
    from adascale_ros.model.pipeline import read_run_config

    if is_backbone_config(read_run_config(args.config)):
        return _train_backbone(args)
    from adascale_ros.model.pipeline import TrainRunConfig, train_model

    config = TrainRunConfig.from_yaml(args.config)
    if args.mode:
        from dataclasses import replace

        config = replace(config, training=replace(config.training, mode=args.mode))
    train_model(config, args.out, progress=not args.no_progress, init_from=args.init_from)
    return 0


def _train_backbone(args: argparse.Namespace) -> int:
    from adascale_ros.model.backbone_pipeline import BackboneRunConfig, finetune_model
    from adascale_ros.model.pipeline import read_run_config

    if args.mode:
        raise ValueError("--mode is for the tiny network; a backbone is tuned on drawn paths")
    try:
        config = BackboneRunConfig.from_dict(read_run_config(args.config))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{args.config}: {exc}") from None
    workdir = args.workdir or args.out.parent / f"{args.out.name}.work"
    from adascale_ros.runtime.onnx_modules import cache_root

    finetune_model(
        config,
        args.out,
        workdir,
        progress=not args.no_progress,
        init_from=args.init_from,
        feature_cache=cache_root() / "features",  # keyed by content: shared by every run and --best-on-test
    )
    return 0


def _cmd_adapt(args: argparse.Namespace) -> int:
    from adascale_ros.harness.bags import bag_frames
    from adascale_ros.model.backbone_pipeline import adapt_model
    from adascale_ros.model.datasets import load_unlabelled_folder
    from adascale_ros.model.directory import card_resolutions
    from adascale_ros.model.saved_model import load_model
    from adascale_ros.runtime.onnx_modules import cache_root

    model = load_model(args.model_dir)
    size = max(card_resolutions(model.card) or (model.card["input"]["height"],))
    if (args.frames / "metadata.yaml").is_file() or args.frames.suffix in (".mcap", ".db3"):
        frames = bag_frames(args.frames, args.topic, size, args.limit)
    else:
        frames = load_unlabelled_folder(args.frames, size, limit=args.limit)
    workdir = args.workdir or args.out.parent / f"{args.out.name}.work"
    card = adapt_model(
        model, frames, args.out, workdir, cache_root() / "features", args.epochs, progress=not args.no_progress
    )
    agreement = card["adapted"]["mean_agreement_per_exit"]
    print("mean agreement with the largest variant on the held-out frames, per exit:")
    for name in ("before", "after"):
        print(f"  {name:<6} " + " / ".join(f"{a:.1%}" for a in agreement[name]))
    return 0


def _cmd_variants(args: argparse.Namespace) -> int:
    import json

    from adascale_ros.model.directory import load_variant_table
    from adascale_ros.model.pipeline import compare_prefix_reuse, format_variant_table, reevaluate
    from adascale_ros.model.saved_model import load_model

    if args.best_on_test:
        from adascale_ros.model.backbone_pipeline import format_best_variants, score_best_variants

        model = load_model(args.model_dir)
        if model.card["network"].get("kind") != "backbone":
            raise ValueError("--best-on-test is for a backbone model (its variants have resolutions)")
        from adascale_ros.runtime.onnx_modules import cache_root

        report = score_best_variants(model, cache_root() / "features", progress=not args.json)
        tiny = load_variant_table(args.compare) if args.compare else None
        print(json.dumps(report, indent=1) if args.json else format_best_variants(report, tiny))
        return 0
    if args.evaluate or args.compare_reuse:
        model = load_model(args.model_dir)
        table = reevaluate(model, progress=not args.json) if args.evaluate else load_variant_table(args.model_dir)
        if args.compare_reuse:
            table["prefix_reuse"] = compare_prefix_reuse(model, args.compare_reuse, progress=not args.json)
    else:
        table = load_variant_table(args.model_dir)
    if args.json:
        print(json.dumps(table, indent=1))
    else:
        print(format_variant_table(table, args.limit))
        if "prefix_reuse" in table:
            print("prefix reuse:", json.dumps(table["prefix_reuse"]))
    return 0


def _cmd_early_exit(args: argparse.Namespace) -> int:
    import json

    from adascale_ros.harness.evaluation import static_variants
    from adascale_ros.model.accuracy import early_exit_accuracy, lowest_threshold
    from adascale_ros.model.backbone_pipeline import card_dataset
    from adascale_ros.model.datasets import load_splits
    from adascale_ros.model.directory import load_variant_table
    from adascale_ros.model.elastic import Variant
    from adascale_ros.model.finetune import model_input
    from adascale_ros.model.saved_model import load_model

    model = load_model(args.model_dir)
    top = static_variants(load_variant_table(args.model_dir))["static-top"]
    variant = Variant.parse(args.variant or top)
    model.net.check_variant(variant)
    splits = load_splits(card_dataset(model.card))
    inputs = None
    if variant.resolution is not None:  # a backbone: RGB at the variant's resolution
        inputs = lambda images: model_input(images, variant.resolution, model.normalize)  # noqa: E731
    report = {
        name: early_exit_accuracy(model.net, data, model.normalize, variant, args.thresholds, inputs=inputs)
        for name, data in (("val", splits.val), ("test", splits.test))
    }
    report["lowest_threshold"] = lowest_threshold(report["val"], args.max_loss / 100)
    report["max_loss_points"] = args.max_loss
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    print(
        f"{variant.id}: accuracy without early exit: val {report['val']['accuracy']:.2%}, "
        f"test {report['test']['accuracy']:.2%}"
    )
    print("| threshold | val accuracy | test accuracy | test share answered per exit |")
    print("|---:|---:|---:|---|")
    for val, test in zip(report["val"]["rows"], report["test"]["rows"], strict=True):
        shares = " / ".join(f"{s:.0%}" for s in test["exit_share"])
        print(f"| {val['threshold']:g} | {val['accuracy']:.2%} | {test['accuracy']:.2%} | {shares} |")
    print(f"lowest threshold within {args.max_loss:g} points on val: {report['lowest_threshold']}")
    return 0


def _cmd_baselines(args: argparse.Namespace) -> int:
    from adascale_ros.model.baselines import BASELINES, markdown_table, run_baselines
    from adascale_ros.model.saved_model import load_model

    model = load_model(args.model_dir)
    names = args.only or BASELINES
    report = run_baselines(
        model,
        args.out or args.model_dir,
        names=names,
        epochs=args.epochs,
        lr=args.lr,
        limit_train=args.limit_train,
        progress=not args.no_progress,
    )
    print(markdown_table(report["rows"]))
    return 0


def _cmd_compare_training(args: argparse.Namespace) -> int:
    from adascale_ros.model.baselines import compare_training
    from adascale_ros.model.pipeline import TrainRunConfig

    report = compare_training(
        TrainRunConfig.from_yaml(args.config), args.modes, args.out, progress=not args.no_progress
    )
    print((args.out / "training_modes.md").read_text(), end="")
    return 0 if report["results"] else 1
