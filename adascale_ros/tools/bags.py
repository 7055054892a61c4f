"""Labelled camera bags (rosbag2, MCAP storage) written and replayed with ``rosbags``.

``make_camera_bag`` turns a labelled image set into what a robot's camera
would have recorded: ``sensor_msgs/Image`` frames (rgb8, camera-like size,
steady rate) on the camera topic and, on their own topic, one
``adascale_msgs/FrameLabel`` per frame with the same header, so every
classification can be scored. The bags play with the real ``ros2 bag play``
too (the labels need ``adascale_msgs`` built, the frames do not).

``BagReplayer`` publishes a bag's messages as recorded, like ``ros2 bag
play``: serialized CDR straight from the file (never deserialized), timed by
the recording's timestamps divided by a rate factor, from a start offset,
optionally looping. Header stamps are kept as recorded, as ``ros2 bag play``
does; evaluation matches results to labels by them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from adascale_ros.bringup import BAG_CAMERA_TOPIC

if TYPE_CHECKING:
    from adascale_ros.model.datasets import ImageSet

LABELS_TOPIC = "/camera/labels"
FRAME_LABEL_MSGDEF = """std_msgs/Header header
int32 class_id
string label
"""
FRAME_LABEL = "adascale_msgs/msg/FrameLabel"
IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"


def typestore() -> Any:
    """rosbags' ROS 2 kilted type store with adascale_msgs/FrameLabel registered."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    store.register(get_types_from_msg(FRAME_LABEL_MSGDEF, FRAME_LABEL))
    return store


def camera_frame(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """An (H, W) grey or (H, W, 3) RGB uint8 image as a width x height rgb8 camera frame."""
    rgb = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB) if image.ndim == 2 else image
    return np.ascontiguousarray(cv2.resize(rgb, (width, height), interpolation=cv2.INTER_LINEAR))


@dataclass(frozen=True)
class BagSpec:
    width: int = 250  # a TurtleBot 4's OAK-D preview stream is 250 x 250
    height: int = 250
    rate_hz: float = 10.0
    camera_topic: str = BAG_CAMERA_TOPIC
    labels_topic: str = LABELS_TOPIC
    frame_id: str = "camera_optical_frame"
    start_ns: int = 1_700_000_000 * 10**9  # recording time of the first frame

    def __post_init__(self) -> None:
        if self.width < 1 or self.height < 1 or not self.rate_hz > 0:
            raise ValueError(f"frame size and rate must be positive, got {self.width}x{self.height} at {self.rate_hz}")


def make_camera_bag(
    out: Path,
    images: np.ndarray,
    labels: np.ndarray,
    classes: tuple[str, ...],
    spec: BagSpec = BagSpec(),
    progress: Callable[[int], None] | None = None,
) -> int:
    """Write ``images`` (N, H, W[, 3] uint8) and their labels as a rosbag2 MCAP bag at ``out``; return N."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    if out.exists():
        raise ValueError(f"{out}: exists; remove it or choose another --out")
    if len(images) != len(labels) or not len(images):
        raise ValueError(f"{len(images)} images and {len(labels)} labels: need the same, non-zero number")
    store = typestore()
    image_type, label_type = store.types[IMAGE], store.types[FRAME_LABEL]
    header_type, time_type = store.types["std_msgs/msg/Header"], store.types["builtin_interfaces/msg/Time"]
    period_ns = round(1e9 / spec.rate_hz)
    with Writer(out, version=8, storage_plugin=StoragePlugin.MCAP) as writer:
        camera = writer.add_connection(spec.camera_topic, IMAGE, typestore=store)
        truth = writer.add_connection(spec.labels_topic, FRAME_LABEL, typestore=store)
        for index, (image, label) in enumerate(zip(images, labels, strict=True)):
            stamp_ns = spec.start_ns + index * period_ns
            header = header_type(
                stamp=time_type(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9), frame_id=spec.frame_id
            )
            frame = camera_frame(image, spec.width, spec.height)
            msg = image_type(
                header=header, height=spec.height, width=spec.width, encoding="rgb8", is_bigendian=0,
                step=3 * spec.width, data=frame.reshape(-1),
            )  # fmt: skip
            writer.write(camera, stamp_ns, store.serialize_cdr(msg, IMAGE))
            label_msg = label_type(header=header, class_id=int(label), label=classes[int(label)])
            writer.write(truth, stamp_ns, store.serialize_cdr(label_msg, FRAME_LABEL))
            if progress is not None:
                progress(index + 1)
    return len(images)


@dataclass(frozen=True)
class BagMessage:
    topic: str
    msgtype: str
    timestamp_ns: int
    data: bytes


def read_bag(path: Path) -> tuple[dict[str, str], list[BagMessage]]:
    """Every message of a bag in time order, serialized, with the bag's topic -> type map."""
    from rosbags.rosbag2 import Reader

    try:
        with Reader(path) as reader:
            topics = {c.topic: c.msgtype for c in reader.connections}
            messages = [BagMessage(c.topic, c.msgtype, t, bytes(raw)) for c, t, raw in reader.messages()]
    except Exception as exc:  # rosbags raises its own error types for every kind of bad bag
        raise ValueError(f"{path}: cannot read the bag ({type(exc).__name__}: {exc})") from exc
    if not messages:
        raise ValueError(f"{path}: the bag holds no messages")
    return topics, messages


def bag_frames(path: Path, topic: str, size: int, limit: int | None = None) -> ImageSet:
    """The camera frames of a bag (``sensor_msgs/Image`` or ``CompressedImage`` on ``topic``; the first
    ``limit``), streamed, as RGB area-averaged to ``size`` x ``size`` the way the inference node shrinks
    them: one class, ``UNLABELLED``. A frame that cannot be decoded is skipped (``ValueError`` saying how
    many when no frame is left)."""
    import torch
    from rosbags.rosbag2 import Reader

    from adascale_ros.model.datasets import UNLABELLED, ImageSet
    from adascale_ros.runtime.images import (
        MAX_COMPRESSED_BYTES,
        MAX_IMAGE_PIXELS,
        FrameError,
        compressed_to_array,
        image_to_array,
    )
    from adascale_ros.runtime.preprocess import Preprocessor, shrink_by_area

    to_rgb = Preprocessor(3, size, size, (0.0,) * 3, (1.0,) * 3)
    store = typestore()
    frames, skipped = [], 0
    try:
        with Reader(path) as reader:
            connections = [c for c in reader.connections if c.topic == topic]
            kinds = {c.msgtype for c in connections}
            if not connections or not kinds <= {IMAGE, COMPRESSED_IMAGE}:
                found = ", ".join(f"{c.topic} ({c.msgtype})" for c in reader.connections)
                raise ValueError(f"{path}: no Image or CompressedImage topic {topic} (the bag has {found})")
            for connection, _, raw in reader.messages(connections=connections):
                msg = store.deserialize_cdr(raw, connection.msgtype)
                try:
                    if connection.msgtype == IMAGE:
                        image, encoding = image_to_array(msg, MAX_IMAGE_PIXELS)
                    else:
                        image, encoding = compressed_to_array(msg, MAX_IMAGE_PIXELS, MAX_COMPRESSED_BYTES)
                except FrameError:
                    skipped += 1
                    continue
                pixels = to_rgb.to_uint8(image, encoding)
                frames.append(shrink_by_area(pixels, size, size).transpose(2, 0, 1))
                if limit is not None and len(frames) >= limit:
                    break
    except ValueError:
        raise
    except Exception as exc:  # rosbags raises its own error types for every kind of bad bag
        raise ValueError(f"{path}: cannot read the bag ({type(exc).__name__}: {exc})") from exc
    if not frames:
        raise ValueError(f"{path}: no decodable frames on {topic} ({skipped} skipped)")
    return ImageSet(torch.from_numpy(np.stack(frames)), torch.zeros(len(frames), dtype=torch.int64), UNLABELLED)


def read_labels(path: Path, labels_topic: str = LABELS_TOPIC) -> dict[int, int]:
    """Ground truth of a labelled bag: header stamp [ns] -> class id."""
    store = typestore()
    _, messages = read_bag(path)
    truth = {}
    for m in messages:
        if m.topic == labels_topic:
            label = store.deserialize_cdr(m.data, FRAME_LABEL)
            truth[label.header.stamp.sec * 10**9 + label.header.stamp.nanosec] = int(label.class_id)
    if not truth:
        raise ValueError(f"{path}: no labels on {labels_topic}")
    return truth


@dataclass(frozen=True)
class ReplaySpec:
    rate: float = 1.0  # playback speed factor
    loop: bool = False
    start_offset_s: float = 0.0

    def __post_init__(self) -> None:
        if not self.rate > 0 or self.start_offset_s < 0:
            raise ValueError(f"rate must be > 0 and start offset >= 0, got {self.rate} and {self.start_offset_s}")


def schedule(messages: list[BagMessage], spec: ReplaySpec) -> Iterator[tuple[float, BagMessage]]:
    """(seconds after the start of playback, message), in order; forever with ``loop``."""
    cut = messages[0].timestamp_ns + round(spec.start_offset_s * 1e9)
    chosen = [m for m in messages if m.timestamp_ns >= cut]
    if not chosen:
        raise ValueError(f"start offset {spec.start_offset_s} s is past the end of the bag")
    first = chosen[0].timestamp_ns  # playback starts at once with the first message kept
    span_s = (chosen[-1].timestamp_ns - first) / 1e9 / spec.rate
    gap_s = span_s / max(1, len(chosen) - 1)  # one frame period between the last message and the next loop
    offset = 0.0
    while True:
        for m in chosen:
            yield offset + (m.timestamp_ns - first) / 1e9 / spec.rate, m
        if not spec.loop:
            return
        offset += span_s + gap_s


def replay(
    messages: list[BagMessage],
    publish: Callable[[BagMessage], None],
    spec: ReplaySpec = ReplaySpec(),
    should_stop: Callable[[], bool] = lambda: False,
) -> int:
    """Publish ``messages`` on their recorded schedule; return how many were published."""
    start = time.monotonic()
    count = 0
    for at_s, message in schedule(messages, spec):
        while (wait := start + at_s - time.monotonic()) > 0:
            if should_stop():
                return count
            time.sleep(min(wait, 0.05))
        if should_stop():
            return count
        publish(message)
        count += 1
    return count
