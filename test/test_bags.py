"""Labelled camera bags: written with rosbags (MCAP, SQLite 3), read back as ``ros2 bag play`` reads them,
scheduled and replayed over DDS."""

from __future__ import annotations

import signal
import time

import numpy as np
import pytest
from conftest import rosbags_qos, spin_until, write_robot_recording

from adascale_ros.harness.bags import (
    FRAME_LABEL,
    IMAGE,
    LABELS_TOPIC,
    BagMessage,
    BagSpec,
    BagTopic,
    ReplaySpec,
    bag_frames,
    bag_messages,
    bag_topics,
    camera_frame,
    camera_images,
    make_camera_bag,
    read_labels,
    replay,
    replay_offer,
    schedule,
    typestore,
)
from adascale_ros.model.datasets import UNLABELLED, DatasetSpec, load_splits
from adascale_ros.runtime.preprocess import shrink_by_area

FRAMES = 20


@pytest.fixture(scope="module")
def fashion():
    test = load_splits(DatasetSpec(limit_train=100, limit_test=FRAMES)).test
    return test.images[:, 0].numpy(), test.labels.numpy(), test.classes


@pytest.fixture(scope="module")
def bag(tmp_path_factory, fashion):
    out = tmp_path_factory.mktemp("bags") / "fashion"
    images, labels, classes = fashion
    make_camera_bag(out, images, labels, classes, BagSpec(width=64, height=48, rate_hz=20.0))
    return out


def test_bag_holds_every_frame_and_its_label(bag, fashion):
    images, labels, classes = fashion
    topics, messages = bag_topics(bag), list(bag_messages(bag))
    assert {t.name: t.msgtype for t in topics.values()} == {"/camera/image_raw": IMAGE, LABELS_TOPIC: FRAME_LABEL}
    assert len(messages) == 2 * FRAMES and (bag / "metadata.yaml").exists() and list(bag.glob("*.mcap"))
    store = typestore()
    frames = [store.deserialize_cdr(m.data, IMAGE) for m in messages if m.topic == "/camera/image_raw"]
    first = frames[0]
    assert (first.width, first.height, first.encoding, first.step) == (64, 48, "rgb8", 192)
    np.testing.assert_array_equal(first.data.reshape(48, 64, 3), camera_frame(images[0], 64, 48))
    stamps = [f.header.stamp.sec * 10**9 + f.header.stamp.nanosec for f in frames]
    assert np.all(np.diff(stamps) == 50_000_000)  # 20 Hz
    truth = read_labels(bag)
    assert [truth[s] for s in stamps] == labels.tolist()
    label = store.deserialize_cdr(next(m.data for m in messages if m.topic == LABELS_TOPIC), FRAME_LABEL)
    assert label.label == classes[labels[0]]


def test_bag_frames_are_the_camera_frames_as_the_inference_node_shrinks_them(bag, fashion):
    frames = bag_frames(bag, "/camera/image_raw", 32, limit=5)
    assert frames.images.shape == (5, 3, 32, 32) and frames.classes == UNLABELLED
    expected = shrink_by_area(camera_frame(fashion[0][1], 64, 48), 32, 32).transpose(2, 0, 1)
    np.testing.assert_array_equal(frames.images[1].numpy(), expected)
    with pytest.raises(ValueError, match=r"no Image or CompressedImage topic /oops .*/camera/labels"):
        bag_frames(bag, "/oops", 32)
    with pytest.raises(ValueError, match=r"no Image or CompressedImage topic /camera/labels"):
        bag_frames(bag, LABELS_TOPIC, 32)


def test_bad_bags_and_arguments_fail_clearly(tmp_path, bag, fashion):
    with pytest.raises(ValueError, match="not a rosbag2 bag"):
        bag_topics(tmp_path / "missing")
    (tmp_path / "junk.mcap").write_bytes(b"not mcap")
    with pytest.raises(ValueError, match="cannot read the bag"):
        bag_topics(tmp_path / "junk.mcap")
    with pytest.raises(ValueError, match="exists"):
        make_camera_bag(bag, *fashion)
    with pytest.raises(ValueError, match="same"):
        make_camera_bag(tmp_path / "x", fashion[0][:3], fashion[1][:2], fashion[2])
    with pytest.raises(ValueError, match="rate"):
        ReplaySpec(rate=0.0)


def test_schedule_follows_rate_offset_and_loop():
    listed = [BagMessage("/t", "std_msgs/msg/Empty", t * 10**8, b"") for t in range(5)]  # 0.0 .. 0.4 s
    passes = []

    def messages():
        passes.append(1)
        return iter(listed)

    assert [round(at, 3) for at, _ in schedule(messages, ReplaySpec(rate=2.0))] == [0.0, 0.05, 0.1, 0.15, 0.2]
    offset = list(schedule(messages, ReplaySpec(start_offset_s=0.25)))
    assert [m.timestamp_ns for _, m in offset] == [3 * 10**8, 4 * 10**8] and offset[0][0] == 0.0
    looped = schedule(messages, ReplaySpec(loop=True))
    times = [round(next(looped)[0], 3) for _ in range(7)]
    assert times == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6]  # one frame period between loops
    assert len(passes) == 4  # the bag is read again on each pass, never held
    with pytest.raises(ValueError, match="past the end"):
        list(schedule(messages, ReplaySpec(start_offset_s=9.0)))
    with pytest.raises(ValueError, match="holds no messages"):
        list(schedule(lambda: iter(()), ReplaySpec()))


def test_replay_publishes_on_schedule_and_ticks_the_bag_clock():
    listed = [BagMessage("/t", "std_msgs/msg/Empty", 5 * 10**9 + t * 10**8, b"") for t in range(4)]  # 0.3 s
    published, ticks = [], []
    started = time.monotonic()
    count = replay(lambda: iter(listed), published.append, ReplaySpec(rate=1.0), clock=ticks.append, clock_hz=50)
    elapsed = time.monotonic() - started
    assert count == 4 and published == listed and 0.3 <= elapsed < 1.0
    assert ticks == sorted(ticks) and ticks[0] == listed[0].timestamp_ns and ticks[-1] == listed[-1].timestamp_ns
    assert len(ticks) >= 10  # ~50 Hz for 0.3 s, besides one tick per message
    assert all(listed[0].timestamp_ns <= t <= listed[-1].timestamp_ns for t in ticks)


def test_replay_offers_what_the_recorded_publishers_offered():
    assert replay_offer(BagTopic("/a", IMAGE, (rosbags_qos("best_effort"),))) == ("best_effort", "volatile")
    assert replay_offer(BagTopic("/a", IMAGE, (rosbags_qos("reliable", "transient_local"),))) == (
        "reliable", "transient_local",
    )  # fmt: skip
    # Publishers that disagree, or none recorded: what every subscriber matches.
    assert replay_offer(BagTopic("/a", IMAGE, (rosbags_qos("best_effort"), rosbags_qos("reliable")))) == (
        "reliable",
        "volatile",
    )
    assert replay_offer(BagTopic("/a", IMAGE, ())) == ("reliable", "volatile")


@pytest.mark.parametrize("storage", ["MCAP", "SQLITE3"])
def test_a_robot_recording_reads_in_either_storage_even_when_metadata_disagrees_with_the_file(tmp_path, storage):
    frames = np.arange(6, dtype=np.uint8)[:, None, None, None] * np.ones((6, 4, 6, 3), np.uint8)
    out = write_robot_recording(tmp_path / "rec", frames, 1e6, storage)  # a frame every microsecond
    # rosbags' own directory reader finds no messages in it: it wants metadata.yaml's QoS to be the file's.
    topics = bag_topics(out)
    assert replay_offer(topics["/camera/image_raw"]) == ("best_effort", "volatile")
    frames = list(camera_images(out, "/camera/image_raw"))
    assert [stamp for stamp, _ in frames] == [1_800_000_000 * 10**9 + i * 1000 for i in range(6)]
    assert all(decoded is not None and decoded[0][0, 0, 0] == i for i, (_, decoded) in enumerate(frames))
    with pytest.raises(ValueError, match=r"no labels on /camera/labels.*--unlabelled"):
        read_labels(out)


def test_adascale_replay_publishes_the_bag_over_dds(bag, ros_node, start_process):
    from rclpy.qos import qos_profile_sensor_data
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import Image

    from adascale_msgs.msg import FrameLabel

    frames, labels, clock = [], [], []
    ros_node.create_subscription(Image, "/camera/image_raw", frames.append, 50)
    ros_node.create_subscription(FrameLabel, LABELS_TOPIC, labels.append, 50)
    ros_node.create_subscription(Clock, "/clock", clock.append, qos_profile_sensor_data)
    proc = start_process(["-m", "adascale_ros.cli.main", "replay", str(bag), "--rate", "2", "--loop", "--clock"])
    assert spin_until(ros_node, lambda: len(frames) >= FRAMES and len(labels) >= FRAMES, 30), proc.poll()
    recorded = BagSpec().start_ns, BagSpec().start_ns + FRAMES * 50_000_000
    clock_ns = [c.clock.sec * 10**9 + c.clock.nanosec for c in clock]
    assert clock_ns and all(recorded[0] <= t <= recorded[1] for t in clock_ns)  # the bag's time, not the wall's
    assert frames[0].width == 64 and frames[0].encoding == "rgb8"

    def stamps(msgs):
        return {(m.header.stamp.sec, m.header.stamp.nanosec) for m in msgs[:FRAMES]}

    assert len(stamps(frames)) == FRAMES and stamps(labels) == stamps(frames)  # every frame has its label
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0 and "(stopped)" in out, out
    assert time.monotonic() - started < 2.0


def test_adascale_replay_refuses_a_bad_bag(tmp_path, start_process):
    proc = start_process(["-m", "adascale_ros.cli.main", "replay", str(tmp_path)])
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 2 and "not a rosbag2 bag" in out and "Traceback" not in out
