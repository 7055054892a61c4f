"""Camera bags: ``adascale make-bag`` and ``replay``."""

from __future__ import annotations

import argparse
from pathlib import Path

from adascale_ros.harness.bag_player import SUBSCRIBER_WAIT_S


def add_commands(sub: argparse._SubParsersAction) -> None:
    bag = sub.add_parser("make-bag", help="write a labelled camera bag (rosbag2, MCAP) from a dataset")
    bag.add_argument("--dataset", default="fashion-mnist", help="fashion-mnist, mnist-idx, cifar, image-folder")
    bag.add_argument("--root", help="dataset directory (default: the Debian package's, for fashion-mnist)")
    bag.add_argument("--split", choices=["test", "val", "train"], default="test")
    bag.add_argument("--out", type=Path, required=True)
    bag.add_argument("--limit", type=int, default=300, help="frames (0: the whole split)")
    bag.add_argument("--width", type=int, default=250)
    bag.add_argument("--height", type=int, default=250)
    bag.add_argument("--rate-hz", type=float, default=10.0)
    bag.add_argument("--camera-topic", default="/camera/image_raw")
    bag.set_defaults(func=_cmd_make_bag)

    rep = sub.add_parser("replay", help="play a bag like `ros2 bag play`")
    rep.add_argument("bag", type=Path)
    rep.add_argument("--rate", type=float, default=1.0, help="speed factor")
    rep.add_argument("--loop", action="store_true")
    rep.add_argument("--start-offset", type=float, default=0.0, help="skip this many seconds of the bag")
    rep.add_argument("--topics", nargs="+", help="only these topics (default: all)")
    rep.add_argument("--delay", type=float, default=0.0, help="seconds to wait before playing (as ros2 bag play -d)")
    rep.add_argument(
        "--clock",
        type=float,
        nargs="?",
        const=40.0,
        metavar="HZ",
        help="publish the bag's time on /clock at HZ (default 40), as ros2 bag play --clock, for use_sim_time",
    )
    rep.add_argument(
        "--wait-for-subscribers",
        type=int,
        default=0,
        metavar="N",
        help=f"first wait (up to {SUBSCRIBER_WAIT_S:g} s) until every topic has N subscribers",
    )
    rep.set_defaults(func=_cmd_replay)


def _cmd_make_bag(args: argparse.Namespace) -> int:
    from adascale_ros.harness.bags import BagSpec, make_camera_bag
    from adascale_ros.model.datasets import DatasetSpec, load_splits

    splits = load_splits(DatasetSpec(name=args.dataset, root=args.root))
    part = getattr(splits, args.split)
    count = min(args.limit, len(part)) if args.limit else len(part)
    spec = BagSpec(width=args.width, height=args.height, rate_hz=args.rate_hz, camera_topic=args.camera_topic)
    make_camera_bag(args.out, part.pixels(count), part.labels[:count].numpy(), part.classes, spec)
    print(
        f"{args.out}: {count} {args.dataset} {args.split} frames, {args.width}x{args.height} rgb8 at "
        f"{args.rate_hz:g} Hz on {spec.camera_topic}, labels on {spec.labels_topic} ({count / args.rate_hz:g} s)"
    )
    return 0


def _cmd_replay(args: argparse.Namespace) -> int:
    from adascale_ros.harness.bag_player import play_bag
    from adascale_ros.harness.bags import ReplaySpec
    from adascale_ros.signals import stop_flag

    spec = ReplaySpec(rate=args.rate, loop=args.loop, start_offset_s=args.start_offset)
    if args.clock is not None and not args.clock > 0:
        raise ValueError(f"--clock must be > 0 Hz, got {args.clock}")
    # Our own signal handling: a flag ends the replay, then the context shuts down (exit 0).
    with stop_flag() as stop:
        play_bag(
            args.bag,
            spec,
            topics=args.topics,
            clock_hz=args.clock,
            wait_for_subscribers=args.wait_for_subscribers,
            delay_s=args.delay,
            stop=stop,
            say=lambda line: print(line, flush=True),
        )
    return 0
