"""elastic_inference as a separate process over real DDS, fed real Fashion-MNIST test images."""

from __future__ import annotations

import math
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial

import cv2
import numpy as np
import pytest
import yaml
from conftest import REPO_ROOT, subscribe_diagnostics

from adascale_ros.graph.definition import CLASSIFICATION_TOPIC
from adascale_ros.harness.bags import camera_frame as bag_camera_frame
from adascale_ros.model.datasets import FASHION_MNIST_CLASSES, FASHION_MNIST_DIR, load_idx_split
from adascale_ros.model.directory import cheapest_variant, load_variant_table, reference_variants
from adascale_ros.model.elastic import Variant
from adascale_ros.package_files import default_params_file
from adascale_ros.profiling.predictor import calibrated_threads

pytestmark = pytest.mark.ros
MODULE = "adascale_ros.nodes.elastic_inference"
CAMERA = "/test_camera/image_raw"
SELECTION = "/test_selector/selection"
DEFAULT_TABLE = load_variant_table(REPO_ROOT / "models" / "default")
SIDE = 224  # camera-like frames: each 28 x 28 image enlarged 8 times
TEST_ACCURACY = {
    row["variant_id"]: row["accuracy"] for row in load_variant_table(REPO_ROOT / "models/default")["variants"]
}
ROBOT_MODEL = REPO_ROOT / "models" / "lite0-fashion-mnist"
ROBOT_TABLE = load_variant_table(ROBOT_MODEL)
ROBOT_ACCURACY = {row["variant_id"]: row["accuracy"] for row in ROBOT_TABLE["variants"]}


@pytest.fixture(scope="module")
def test_images():
    test = load_idx_split(FASHION_MNIST_DIR, "t10k", FASHION_MNIST_CLASSES)
    return test.images[:, 0].numpy(), test.labels.numpy()


def camera_frame(image: np.ndarray) -> np.ndarray:
    """A grey 28 x 28 image as a 224 x 224 RGB camera frame."""
    big = cv2.resize(image, (SIDE, SIDE), interpolation=cv2.INTER_NEAREST)
    return cv2.cvtColor(big, cv2.COLOR_GRAY2RGB)


class InferenceHarness:
    def __init__(
        self, ros_node, start_process, compressed: bool = False, reliable: bool = False, camera_qos=None, **params
    ):
        """``reliable``: every frame reaches the node (reliable both sides, deep queues); ``camera_qos``:
        the camera publisher's QoS instead (the node's parameters as shipped)."""
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, qos_profile_sensor_data
        from sensor_msgs.msg import CompressedImage, Image

        from adascale_msgs.msg import ElasticClassification, VariantSelection
        from adascale_ros.nodes.common import latched_qos

        args = [
            "-m",
            MODULE,
            "--ros-args",
            "-r",
            f"~/image:={CAMERA}",
            "-r",
            f"~/image/compressed:={CAMERA}/compressed",
        ]
        args += ["-r", f"~/selection:={SELECTION}", "-p", f"input:={'compressed' if compressed else 'raw'}"]
        # This test publishes each selection once, as a person would: it stays in force.
        params.setdefault("selection_timeout_s", 0.0)
        # The variant table's accuracy is each variant's own exit's: early exit off, unless a test turns it on.
        params.setdefault("early_exit_threshold", 0.0)
        if reliable:  # every frame reaches the node's callback: what is dropped, the node dropped
            params |= {"qos_reliability": "reliable", "qos_depth": 400}
        for name, value in params.items():
            args += ["-p", f"{name}:={value}"]
        self.process = start_process(args)
        self.node = ros_node
        self.executor = SingleThreadedExecutor(context=ros_node.context)
        self.executor.add_node(ros_node)
        topic, kind = (f"{CAMERA}/compressed", CompressedImage) if compressed else (CAMERA, Image)
        if camera_qos is None:
            camera_qos = QoSProfile(depth=400) if reliable else qos_profile_sensor_data
        self.camera = ros_node.create_publisher(kind, topic, camera_qos)
        self.selection = ros_node.create_publisher(VariantSelection, SELECTION, latched_qos())
        self.results: list = []
        ros_node.create_subscription(ElasticClassification, CLASSIFICATION_TOPIC, self.results.append, 100)
        self.diagnostics = subscribe_diagnostics(ros_node, "elastic_inference")
        assert self.spin_until(lambda: self.camera.get_subscription_count() > 0, 30.0), "node did not come up"

    def spin_until(self, condition, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if condition():
                return True
            self.executor.spin_once(timeout_sec=0.01)
        return condition()

    def select(self, variant_id: str, latency_budget_ms: float = math.nan) -> None:
        from adascale_msgs.msg import VariantSelection

        self.selection.publish(
            VariantSelection(variant_id=variant_id, reason="test", load_index=0.25, latency_budget_ms=latency_budget_ms)
        )

    def frame(self, index: int, pixels: np.ndarray, fmt: str | None = None):
        from sensor_msgs.msg import CompressedImage, Image

        if fmt is None:
            height, width = pixels.shape[:2]
            msg = Image(height=height, width=width, encoding="rgb8", step=width * 3, data=pixels.tobytes())
        else:
            ok, data = cv2.imencode(f".{fmt}", cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
            assert ok
            msg = CompressedImage(format=fmt, data=data.tobytes())
        msg.header.frame_id = str(index)
        msg.header.stamp = self.node.get_clock().now().to_msg()
        return msg

    def classify(self, msg, timeout_s: float = 3.0):
        """Publish one frame and wait for its result (lockstep, so no frame is dropped)."""
        wanted = msg.header.frame_id
        for _ in range(3):  # best effort: a frame can be lost; send it again
            self.camera.publish(msg)
            if self.spin_until(lambda: self.results and self.results[-1].header.frame_id == wanted, timeout_s):
                return self.results[-1]
        raise AssertionError(f"no classification for frame {wanted}")

    def diagnostic_values(self) -> dict[str, str]:
        return {kv.key: kv.value for kv in self.diagnostics[-1].values} if self.diagnostics else {}


def run_stream(
    harness, images, labels, variant_id, count, fmt=None, early_exit=False, accuracy_table=None, render=camera_frame
):
    """Accuracy over ``count`` frames, and the exit that answered each."""
    harness.select(variant_id)
    # The selection is in force once a frame is answered by it (discovery takes a moment).
    probe = harness.frame(-1, render(images[0]), fmt)
    assert harness.spin_until(lambda: harness.classify(probe).variant_id == variant_id, 10.0)
    correct, exits = 0, []
    for i in range(count):
        result = harness.classify(harness.frame(i, render(images[i]), fmt))
        assert result.variant_id == variant_id
        assert result.early_exited == (result.exit_index < Variant.parse(variant_id).exit_index)
        assert early_exit or not result.early_exited
        correct += result.class_ids[0] == labels[i]
        exits.append(result.exit_index)
    accuracy = correct / count
    table = (accuracy_table or TEST_ACCURACY)[variant_id]
    print(f"{variant_id} over {count} {fmt or 'raw'} frames: {accuracy:.4f} (table {table:.4f})")
    return accuracy, exits


def test_raw_stream_reaches_the_table_accuracy(ros_node, start_process, test_images):
    images, labels = test_images
    harness = InferenceHarness(ros_node, start_process)
    variant = "e3:res-mbc-fac-fac"
    accuracy, _ = run_stream(harness, images, labels, variant, 1000)
    assert abs(accuracy - TEST_ACCURACY[variant]) <= 0.02
    last = harness.results[-1]
    assert last.header.frame_id == "999" and last.exit_index == 3
    assert len(last.class_ids) == len(last.labels) == len(last.scores) == 3
    assert last.labels[0] == FASHION_MNIST_CLASSES[last.class_ids[0]]
    assert list(last.scores) == sorted(last.scores, reverse=True) and 0.0 < last.scores[0] <= 1.0
    assert last.latency_ms > 0.0 and math.isfinite(last.age_ms) and last.age_ms >= last.latency_ms - 1.0


def test_the_robot_scale_model_classifies_the_stream_at_its_table_accuracy_with_its_calibrated_threads(
    ros_node, start_process, test_images
):
    images, labels = test_images
    harness = InferenceHarness(ros_node, start_process, model_dir=ROBOT_MODEL)
    top = reference_variants(ROBOT_TABLE)["top"]
    # Frames as the demo bag renders them (enlarged bilinearly, as a camera sees a garment, not in
    # 8 x 8 blocks); the table scores the first 500 test images resized bilinearly, as in training.
    smooth = partial(bag_camera_frame, width=SIDE, height=SIDE)
    accuracy, _ = run_stream(harness, images, labels, top, 500, accuracy_table=ROBOT_ACCURACY, render=smooth)
    assert abs(accuracy - ROBOT_ACCURACY[top]) <= 0.03
    assert Variant.parse(harness.results[-1].variant_id).resolution == Variant.parse(top).resolution
    assert harness.spin_until(
        lambda: harness.diagnostic_values().get("threads") == str(calibrated_threads(ROBOT_MODEL)), 5.0
    )


def test_vision_msgs_classification_mirrors_each_result(ros_node, start_process):
    """The standard output beside ours, where vision_msgs is installed (any ROS 2 install)."""
    pytest.importorskip("vision_msgs", reason="vision_msgs is not installed (only on a full ROS 2 install)")
    from vision_msgs.msg import Classification

    standard: list = []
    ros_node.create_subscription(Classification, "/elastic_inference/vision_classification", standard.append, 100)
    harness = InferenceHarness(ros_node, start_process)
    pixels = np.random.default_rng(1).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    for i in range(5):
        harness.camera.publish(harness.frame(i, pixels))
        harness.spin_until(lambda: False, 0.1)
    assert harness.spin_until(lambda: len(standard) >= 3 and len(harness.results) >= 3, 10.0)
    ours = {r.header.frame_id: r for r in harness.results}
    for msg in standard:
        mine = ours[msg.header.frame_id]
        assert [h.class_id for h in msg.results] == list(mine.labels)
        np.testing.assert_allclose([h.score for h in msg.results], mine.scores)


def test_the_subscription_matches_every_camera_publisher():
    from rclpy.qos import ReliabilityPolicy

    from adascale_ros.nodes.camera_subscription import matching_reliability

    reliable, best_effort = ReliabilityPolicy.RELIABLE, ReliabilityPolicy.BEST_EFFORT
    assert matching_reliability([]) is None  # no publisher yet: keep what is subscribed
    assert matching_reliability([reliable, reliable]) == reliable  # lost fragments resent
    assert matching_reliability([reliable, best_effort]) == best_effort  # a reliable one would miss the second


def _node_camera_reliability(harness) -> str | None:
    infos = [i for i in harness.node.get_subscriptions_info_by_topic(CAMERA) if i.node_name == "elastic_inference"]
    return infos[0].qos_profile.reliability.name.lower() if len(infos) == 1 else None


def _stream(harness, width: int, height: int, rate_hz: float, frames: int) -> int:
    """Publish ``frames`` random rgb8 frames at ``rate_hz``; how many the node answered."""
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    period, start = 1.0 / rate_hz, time.monotonic()
    for i in range(frames):
        harness.camera.publish(harness.frame(i, pixels))
        harness.spin_until(lambda: False, max(0.0, start + (i + 1) * period - time.monotonic()))
    harness.spin_until(lambda: harness.results and harness.results[-1].header.frame_id == str(frames - 1), 2.0)
    return len({r.header.frame_id for r in harness.results})


@pytest.mark.parametrize(("reliability", "rate_hz"), [("auto", 15), ("auto", 30), ("best_effort", 15)])
def test_a_vga_camera_is_answered_frame_by_frame_with_the_shipped_qos(ros_node, start_process, reliability, rate_hz):
    """640 x 480 rgb8 frames as TurtleBot cameras publish them (reliable, depth 10: camera_ros and
    image_transport's default), at 15 and 30 Hz, to the robot model with the shipped parameters; and,
    to show why they are what they are, with a best-effort subscription (SensorDataQoS, the old default)."""
    from rclpy.qos import QoSProfile

    harness = InferenceHarness(
        ros_node, start_process, camera_qos=QoSProfile(depth=10), model_dir=ROBOT_MODEL, qos_reliability=reliability
    )
    wanted = "reliable" if reliability == "auto" else reliability  # auto follows the camera within a second
    harness.spin_until(lambda: _node_camera_reliability(harness) == wanted, 5.0)
    assert _node_camera_reliability(harness) == wanted
    answered = _stream(harness, 640, 480, rate_hz, frames=150)
    print(f"640x480 rgb8 at {rate_hz} Hz, reliable publisher, {reliability} subscription: {answered} of 150 answered")
    if reliability == "auto":
        assert answered >= 0.95 * 150
        # The camera's frame period as the node measured it (the selector's default budget rests on it).
        period_ms = harness.results[-1].frame_period_ms
        print(f"frame period measured by the node: {period_ms:.1f} ms (published every {1e3 / rate_hz:.1f} ms)")
        assert period_ms == pytest.approx(1e3 / rate_hz, rel=0.15)
    else:  # it matches and receives; how many frames survive fragmentation is the network's affair
        assert answered >= 1


def test_a_best_effort_camera_is_matched(ros_node, start_process):
    """A sensor-data (best-effort) publisher, as simulators publish, is not matched by a reliable
    subscription: the node's follows it."""
    from rclpy.qos import qos_profile_sensor_data

    harness = InferenceHarness(ros_node, start_process, camera_qos=qos_profile_sensor_data)
    harness.spin_until(lambda: False, 1.5)  # two re-checks: it must stay best effort
    assert _node_camera_reliability(harness) == "best_effort"
    answered = _stream(harness, 64, 48, 15.0, frames=30)
    assert answered >= 0.9 * 30, answered
    assert harness.spin_until(lambda: harness.diagnostics, 5.0)
    assert harness.diagnostic_values()["camera_reliability"] == "best_effort"


def test_compressed_stream_reaches_the_table_accuracy(ros_node, start_process, test_images):
    images, labels = test_images
    harness = InferenceHarness(ros_node, start_process, compressed=True, backend="torch")
    variant = "e1:res-fac"
    accuracy, _ = run_stream(harness, images[1000:], labels[1000:], variant, 400, fmt="jpeg")
    assert abs(accuracy - TEST_ACCURACY[variant]) <= 0.02


def test_confidence_early_exit_answers_early_and_keeps_the_accuracy(ros_node, start_process, test_images):
    """The shipped threshold: most frames answer before the variant's exit, at its accuracy (2 points)."""
    images, labels = test_images
    threshold = yaml.safe_load(default_params_file().read_text())["elastic_inference"]["ros__parameters"][
        "early_exit_threshold"
    ]
    harness = InferenceHarness(ros_node, start_process, early_exit_threshold=threshold)
    variant = "e3:dense-res-res-res"
    accuracy, exits = run_stream(harness, images[1400:], labels[1400:], variant, 300, early_exit=True)
    assert abs(accuracy - TEST_ACCURACY[variant]) <= 0.02
    assert sum(e < 3 for e in exits) > len(exits) / 2 and 3 in exits


def test_deadline_guard_keeps_to_the_selections_budget(ros_node, start_process, test_images):
    """A budget no stage after the first fits: exit 0 answers, flagged; without a budget the path runs out."""
    images, _ = test_images
    harness = InferenceHarness(ros_node, start_process)
    variant = "e3:dense-res-res-res"
    frames = iter(range(10_000))

    def answer():
        i = next(frames)
        return harness.classify(harness.frame(i, camera_frame(images[i])))

    harness.select(variant, latency_budget_ms=1e-3)
    # The first guarded frame times the stages; from then on only stage 0 fits (it always runs).
    assert harness.spin_until(lambda: answer().deadline_exited, 10.0)
    cut = [answer() for _ in range(5)]
    assert all(r.variant_id == variant and r.exit_index == 0 and r.early_exited and r.deadline_exited for r in cut)
    assert harness.spin_until(lambda: int(harness.diagnostic_values().get("deadline_exits", "0")) >= 5, 5.0)
    harness.select(variant)  # NaN: no budget, no guard
    assert harness.spin_until(lambda: answer().exit_index == 3, 5.0)
    assert not any(r.deadline_exited or r.exit_index != 3 for r in [answer() for _ in range(5)])


def test_follows_selections_and_publishes_an_overlay(ros_node, start_process, test_images):
    from sensor_msgs.msg import Image

    images, _ = test_images
    harness = InferenceHarness(ros_node, start_process)
    overlays: list = []
    ros_node.create_subscription(Image, "/elastic_inference/overlay", overlays.append, 10)
    frames = iter(range(10_000))

    def answer() -> str:
        i = next(frames)
        return harness.classify(harness.frame(i, camera_frame(images[i]))).variant_id

    # Before any selection: the safe default (the cheapest variant that classifies).
    assert answer() == cheapest_variant(DEFAULT_TABLE)
    harness.select("e0:res")
    assert harness.spin_until(lambda: answer() == "e0:res", 5.0)
    harness.select("e3:dense-dense-dense-dense")
    assert harness.spin_until(lambda: answer() == "e3:dense-dense-dense-dense", 5.0)
    # An unknown id is refused; the variant in force stays.
    harness.select("e9:warp")
    time.sleep(0.5)
    assert all(answer() == "e3:dense-dense-dense-dense" for _ in range(5))
    assert harness.spin_until(lambda: harness.diagnostic_values().get("rejected_selections") == "1", 5.0)
    assert harness.spin_until(lambda: overlays, 5.0), "no overlay while subscribed"
    assert overlays[-1].encoding == "bgr8" and overlays[-1].width >= 320


def test_diagnostics_level_says_what_is_missing(ros_node, start_process, test_images):
    from diagnostic_msgs.msg import DiagnosticStatus

    from adascale_ros.runtime.stats import NO_FRAME_WARN_S

    images, _ = test_images
    harness = InferenceHarness(ros_node, start_process)
    status = lambda: harness.diagnostics[-1] if harness.diagnostics else None  # noqa: E731

    def shows(level: bytes, text: str) -> Callable[[], bool]:
        return lambda: status() is not None and status().level == level and text in status().message

    # No camera (a mistyped topic looks the same): WARN, naming the topic the node listens on.
    assert harness.spin_until(shows(DiagnosticStatus.WARN, f"no camera frame on {CAMERA}"), NO_FRAME_WARN_S + 5.0)
    assert status().name == "elastic_inference: elastic inference" and status().hardware_id
    print(f"no camera: level {status().level[0]} (WARN), {status().message!r}")
    # Frames, but no selection yet: WARN, the safe default runs.
    frames = iter(range(10_000))
    harness.classify(harness.frame(next(frames), camera_frame(images[0])))
    assert harness.spin_until(shows(DiagnosticStatus.WARN, "no selection yet"), 5.0)
    print(f"frames, no selection: level {status().level[0]} (WARN), {status().message!r}")
    # Frames and a selection: OK.
    harness.select("e0:res")

    def serving() -> bool:
        i = next(frames)
        harness.classify(harness.frame(i, camera_frame(images[i % len(images)])))
        return shows(DiagnosticStatus.OK, "running e0:res")()

    assert harness.spin_until(serving, 5.0)
    print(f"frames and a selection: level {status().level[0]} (OK), {status().message!r}")


def test_malformed_burst_and_flood_leave_the_node_serving(ros_node, start_process, test_images):
    from sensor_msgs.msg import Image

    images, labels = test_images
    harness = InferenceHarness(ros_node, start_process, reliable=True, max_image_pixels=100_000)
    rng = np.random.default_rng(0)
    bad = [
        Image(height=224, width=224, encoding="rgb8", step=672, data=bytes(1000)),  # truncated
        Image(height=224, width=224, encoding="rgb8", step=100, data=bytes(22400)),  # step < row
        Image(height=4, width=4, encoding="bayer_rggb8", step=4, data=bytes(16)),  # unsupported
        Image(height=0, width=0, encoding="mono8", step=0, data=b""),  # empty
        Image(height=400, width=400, encoding="mono8", step=400, data=bytes(160_000)),  # over the limit
    ]
    for i in range(300):
        msg = (
            bad[i % len(bad)]
            if i % 7
            else Image(
                height=int(rng.integers(1, 64)), width=int(rng.integers(1, 64)), encoding="mono16", step=3, data=b"x"
            )
        )
        harness.camera.publish(msg)
        harness.spin_until(lambda: False, 0.002)
    # The next good frame is classified correctly.
    result = harness.classify(harness.frame(0, camera_frame(images[0])))
    assert result.class_ids[0] == labels[0]
    assert harness.spin_until(lambda: int(harness.diagnostic_values().get("frames_skipped", 0)) >= 50, 5.0)
    skipped = harness.diagnostic_values()
    print("after the malformed burst:", {k: v for k, v in skipped.items() if k.startswith(("frames", "skipped"))})
    assert {"skipped.size", "skipped.step", "skipped.encoding", "skipped.too_large"} <= set(skipped)

    # A flood faster than inference: older frames are dropped, never queued.
    good = harness.frame(1, camera_frame(images[1]))
    for _ in range(300):
        harness.camera.publish(good)
    harness.spin_until(lambda: False, 2.0)
    values = harness.diagnostic_values()
    print("after the flood:", {k: v for k, v in values.items() if k.startswith("frames")})
    assert int(values["frames_dropped"]) > 0
    assert int(values["frames_processed"]) < int(values["frames_received"])
    assert harness.process.poll() is None
    harness.process.terminate()
    assert harness.process.wait(5) == 0


def test_a_missing_optional_package_is_one_error_line_and_exit_code_2():
    # onnxruntime made unimportable, as on a robot where it was not installed.
    code = (
        "import sys; sys.modules['onnxruntime'] = None; "
        "from adascale_ros.nodes.elastic_inference import main; sys.exit(main(sys.argv))"
    )
    args = [sys.executable, "-c", code, "--ros-args", "-p", f"model_dir:={REPO_ROOT / 'models' / 'default'}"]
    run = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "onnxruntime" in lines[0], run.stderr
