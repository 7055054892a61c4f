"""Camera bags (rosbag2) written, read and replayed with ``rosbags``.

``make_camera_bag`` turns a labelled image set into what a robot's camera
would have recorded: ``sensor_msgs/Image`` frames (rgb8, camera-like size,
steady rate) on the camera topic and, on their own topic, one
``adascale_msgs/FrameLabel`` per frame with the same header, so every
classification can be scored. The bags play with the real ``ros2 bag play``
too (the labels need ``adascale_msgs`` built, the frames do not).

Any bag ``ros2 bag record`` wrote reads too, MCAP or SQLite 3: each storage
file is read on its own, with the topics and publisher QoS it holds, as
``ros2 bag play`` reads it, and messages stream from the file as they are
consumed. ``replay`` publishes them as recorded, like ``ros2 bag play``:
serialized CDR straight from the file (never deserialized), timed by the
recording's timestamps divided by a rate factor, from a start offset,
optionally looping, optionally with the bag's time on ``/clock``. Header stamps
are kept as recorded; evaluation matches results to labels by them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from adascale_ros.graph.definition import BAG_CAMERA_TOPIC

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


@dataclass(frozen=True)
class BagTopic:
    name: str
    msgtype: str
    offered_qos: tuple[Any, ...]  # rosbags ``Qos`` of each publisher recorded, as the storage file holds them


def replay_offer(topic: BagTopic) -> tuple[str, str]:
    """(reliability, durability) to publish ``topic`` with, as ``ros2 bag play`` chooses: what every
    recorded publisher offered when they agree, else (or when nothing was recorded) reliable, volatile."""
    offers = {(q.reliability.name.lower(), q.durability.name.lower()) for q in topic.offered_qos}
    if len(offers) == 1:
        reliability, durability = offers.pop()
        if reliability in ("reliable", "best_effort") and durability in ("volatile", "transient_local"):
            return reliability, durability
    return "reliable", "volatile"


def storage_files(path: Path) -> list[Path] | None:
    """The storage files a bag is read from: a bag directory's (``.mcap`` or ``.db3``), in the order its
    ``metadata.yaml`` lists them, or the storage file itself. None for a compressed bag, which is read
    through its metadata. ``ValueError`` when there is no bag at ``path``."""
    import yaml

    if path.is_file():
        return [path]
    metadata = path / "metadata.yaml"
    if not metadata.is_file():
        raise ValueError(f"{path}: not a rosbag2 bag (no such directory, or no metadata.yaml in it)")
    try:
        info = yaml.safe_load(metadata.read_text())["rosbag2_bagfile_information"]
        names = [PurePath(name).name for name in info["relative_file_paths"]]
    except (yaml.YAMLError, KeyError, TypeError) as exc:
        raise ValueError(f"{metadata}: not rosbag2 metadata ({type(exc).__name__}: {exc})") from exc
    if str(info.get("compression_mode") or "none").lower() != "none":
        return None
    return [path / name for name in names]


@contextmanager
def _open_storages(path: Path) -> Iterator[list[Any]]:
    """Open rosbags readers of the bag's storage files. Each file is read on its own: the topics and
    their QoS come from the file, as ``ros2 bag play`` reads them. (rosbags' directory reader also
    needs ``metadata.yaml`` to repeat each topic's QoS exactly, and reads nothing when it does not,
    as in rosbag2's own test bags.)"""
    from rosbags.rosbag2 import Reader

    files = storage_files(path)
    readers = [Reader(f) for f in files] if files is not None else [Reader(path)]
    opened = []
    try:
        for reader in readers:
            reader.open()
            opened.append(reader)
        yield opened
    finally:
        for reader in opened:
            reader.close()


def _bag_error(path: Path, exc: Exception) -> ValueError:
    return ValueError(f"{path}: cannot read the bag ({type(exc).__name__}: {exc})")


def bag_topics(path: Path) -> dict[str, BagTopic]:
    """The topics of a bag: name -> type and the QoS its publishers offered when it was recorded."""
    try:
        with _open_storages(path) as readers:
            topics: dict[str, BagTopic] = {}
            for connection in (c for reader in readers for c in reader.connections):
                offers = tuple(getattr(connection.ext, "offered_qos_profiles", ()))
                known = topics.get(connection.topic)
                if known is not None:
                    offers = known.offered_qos + tuple(q for q in offers if q not in known.offered_qos)
                topics[connection.topic] = BagTopic(connection.topic, connection.msgtype, offers)
            return topics
    except ValueError:
        raise
    except Exception as exc:  # rosbags raises its own error types for every kind of bad bag
        raise _bag_error(path, exc) from exc


def bag_messages(path: Path, topics: Collection[str] | None = None) -> Iterator[BagMessage]:
    """The messages of a bag (on ``topics``, default all), serialized, in time order, read as they are
    consumed: a bag larger than memory plays."""
    try:
        with _open_storages(path) as readers:
            for reader in readers:
                connections = [c for c in reader.connections if topics is None or c.topic in topics]
                if not connections:
                    continue
                for connection, timestamp, raw in reader.messages(connections=connections):
                    yield BagMessage(connection.topic, connection.msgtype, timestamp, bytes(raw))
    except ValueError:
        raise
    except Exception as exc:  # rosbags raises its own error types for every kind of bad bag
        raise _bag_error(path, exc) from exc


def bag_frames(path: Path, topic: str, size: int, limit: int | None = None) -> ImageSet:
    """The camera frames of a bag (``sensor_msgs/Image`` or ``CompressedImage`` on ``topic``; the first
    ``limit``), streamed, as RGB area-averaged to ``size`` x ``size`` the way the inference node shrinks
    them: one class, ``UNLABELLED``. A frame that cannot be decoded is skipped (``ValueError`` saying how
    many when no frame is left)."""
    import torch

    from adascale_ros.model.datasets import UNLABELLED, ImageSet
    from adascale_ros.runtime.preprocess import Preprocessor, shrink_by_area

    to_rgb = Preprocessor(3, size, size, (0.0,) * 3, (1.0,) * 3)
    frames, skipped = [], 0
    for _, decoded in camera_images(path, topic):
        if decoded is None:
            skipped += 1
            continue
        pixels = to_rgb.to_uint8(*decoded)
        frames.append(shrink_by_area(pixels, size, size).transpose(2, 0, 1))
        if limit is not None and len(frames) >= limit:
            break
    if not frames:
        raise ValueError(f"{path}: no decodable frames on {topic} ({skipped} skipped)")
    return ImageSet(torch.from_numpy(np.stack(frames)), torch.zeros(len(frames), dtype=torch.int64), UNLABELLED)


def camera_images(path: Path, topic: str) -> Iterator[tuple[int, tuple[np.ndarray, str] | None]]:
    """Per camera frame of a bag (``Image`` or ``CompressedImage`` on ``topic``), streamed: its header
    stamp [ns] and (pixels, encoding) as the inference node decodes them, or None when it cannot be."""
    from adascale_ros.runtime.images import (
        MAX_COMPRESSED_BYTES,
        MAX_IMAGE_PIXELS,
        FrameError,
        compressed_to_array,
        image_to_array,
        stamp_ns,
    )

    topics = bag_topics(path)
    if topic not in topics or topics[topic].msgtype not in (IMAGE, COMPRESSED_IMAGE):
        found = ", ".join(f"{t.name} ({t.msgtype})" for t in topics.values())
        raise ValueError(f"{path}: no Image or CompressedImage topic {topic} (the bag has {found})")
    store = typestore()
    for message in bag_messages(path, {topic}):
        msg = store.deserialize_cdr(message.data, message.msgtype)
        stamp = stamp_ns(msg.header.stamp)
        try:
            if message.msgtype == IMAGE:
                yield stamp, image_to_array(msg, MAX_IMAGE_PIXELS)
            else:
                yield stamp, compressed_to_array(msg, MAX_IMAGE_PIXELS, MAX_COMPRESSED_BYTES)
        except FrameError:
            yield stamp, None


def read_labels(path: Path, labels_topic: str = LABELS_TOPIC) -> dict[int, int]:
    """Ground truth of a labelled bag: header stamp [ns] -> class id (``ValueError`` when it has none)."""
    from adascale_ros.runtime.images import stamp_ns

    store = typestore()
    truth = {}
    for m in bag_messages(path, {labels_topic}):
        label = store.deserialize_cdr(m.data, FRAME_LABEL)
        truth[stamp_ns(label.header.stamp)] = int(label.class_id)
    if not truth:
        raise ValueError(
            f"{path}: no labels on {labels_topic} (a bag `adascale make-bag` wrote has them; for a robot's own"
            " recording, evaluate --unlabelled scores against the top variant's answers)"
        )
    return truth


@dataclass(frozen=True)
class ReplaySpec:
    rate: float = 1.0  # playback speed factor
    loop: bool = False
    start_offset_s: float = 0.0

    def __post_init__(self) -> None:
        if not self.rate > 0 or self.start_offset_s < 0:
            raise ValueError(f"rate must be > 0 and start offset >= 0, got {self.rate} and {self.start_offset_s}")


def schedule(messages: Callable[[], Iterable[BagMessage]], spec: ReplaySpec) -> Iterator[tuple[float, BagMessage]]:
    """(seconds after the start of playback, message), in order; forever with ``loop``. ``messages()``
    is called once per pass, so a bag is streamed from its file each time, never held whole."""
    offset_s = 0.0
    while True:
        cut = first = last = None
        count = 0
        for m in messages():
            if cut is None:
                cut = m.timestamp_ns + round(spec.start_offset_s * 1e9)
            if m.timestamp_ns < cut:
                continue
            if first is None:
                first = m.timestamp_ns  # playback starts at once with the first message kept
            last, count = m.timestamp_ns, count + 1
            yield offset_s + (m.timestamp_ns - first) / 1e9 / spec.rate, m
        if cut is None:
            raise ValueError("the bag holds no messages (on the topics chosen)")
        if first is None or last is None:
            raise ValueError(f"start offset {spec.start_offset_s} s is past the end of the bag")
        if not spec.loop:
            return
        span_s = (last - first) / 1e9 / spec.rate
        offset_s += span_s + span_s / max(1, count - 1)  # one message period between the last one and the next loop


def replay(
    messages: Callable[[], Iterable[BagMessage]],
    publish: Callable[[BagMessage], None],
    spec: ReplaySpec = ReplaySpec(),
    should_stop: Callable[[], bool] = lambda: False,
    clock: Callable[[int], None] | None = None,
    clock_hz: float = 40.0,
) -> int:
    """Publish the messages on their recorded schedule; return how many were published. ``clock`` is
    called with the bag's time [ns] ``clock_hz`` times a second of playback (``ros2 bag play --clock``):
    the last message's recording time advanced at the playback rate, never past the next message's."""
    start = time.monotonic()
    count = 0
    played: tuple[float, int] | None = None  # (seconds into playback, bag time) of the last message
    next_tick_s = 0.0
    for at_s, message in schedule(messages, spec):
        if played is None:
            played = (at_s, message.timestamp_ns)
        while (wait := start + at_s - time.monotonic()) > 0:
            if should_stop():
                return count
            if clock is not None:
                now_s = time.monotonic() - start
                if now_s >= next_tick_s:
                    bag_ns = played[1] + round((now_s - played[0]) * spec.rate * 1e9)
                    clock(min(bag_ns, message.timestamp_ns))
                    next_tick_s = now_s + 1.0 / clock_hz
                wait = min(wait, max(0.0, next_tick_s - now_s))
            time.sleep(min(wait, 0.05))
        if should_stop():
            return count
        if clock is not None:
            clock(message.timestamp_ns)
        publish(message)
        count += 1
        played = (at_s, message.timestamp_ns)
    return count
