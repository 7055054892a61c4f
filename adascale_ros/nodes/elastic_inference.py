"""elastic_inference: classifies the camera stream with the variant the selector chose.

Subscriptions
  ~/image             sensor_msgs/Image (input: raw), depth 1, reliability as the camera offers
  ~/image/compressed  sensor_msgs/CompressedImage (input: compressed), same QoS
  ~/selection         adascale_msgs/VariantSelection, reliable + transient local; after
                      ``selection_timeout_s`` without one the safe default runs again
Publications
  ~/classification    adascale_msgs/ElasticClassification, one per processed frame
  ~/vision_classification
                      vision_msgs/Classification, the same top-k (class_id: the label), when
                      vision_msgs is installed (it is on a ROS 2 install)
  ~/overlay           sensor_msgs/Image (bgr8), only while someone subscribes
  /diagnostics        diagnostic_msgs/DiagnosticArray at 1 Hz: ERROR while the model fails on every
                      frame; WARN with no camera frame for NO_FRAME_WARN_S (a mistyped topic shows
                      here), frames skipped, or no selection in force; OK otherwise

The subscription callback only drops the frame into a one-slot mailbox; a
worker thread takes the newest frame, converts, pre-processes and runs it, so
callbacks never wait for inference and no queue ever builds. Conversion,
pre-processing and execution live in ``adascale_ros.runtime``.
"""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from cv_bridge import CvBridge
from sensor_msgs.msg import CompressedImage, Image

from adascale_msgs.msg import ElasticClassification, VariantSelection
from adascale_ros.model.files import card_input_shape, cheapest_variant, load_variant_table, read_model_card
from adascale_ros.nodes.camera_subscription import CameraSubscription, check_reliability_setting
from adascale_ros.nodes.common import (
    AdascaleNode,
    Param,
    latched_qos,
    spin_node,
)
from adascale_ros.profiling.predictor import calibrated_threads
from adascale_ros.runtime.engine import BACKENDS, ElasticEngine, Inference
from adascale_ros.runtime.frames import LatestSlot
from adascale_ros.runtime.images import (
    MAX_COMPRESSED_BYTES,
    MAX_IMAGE_PIXELS,
    FrameError,
    compressed_to_array,
    image_to_array,
    stamp_ns,
)
from adascale_ros.runtime.overlay import draw_overlay
from adascale_ros.runtime.preprocess import Preprocessor
from adascale_ros.runtime.stats import InferenceStats, Situation

PARAMETERS: dict[str, Param] = {
    "model_dir": Param("", "Model directory; empty: the embedded default model.", read_only=True),
    "input": Param("raw", "raw: Image on ~/image; compressed: CompressedImage on ~/image/compressed.", True),
    "backend": Param("onnxruntime", "onnxruntime (fast path) or torch (reference).", read_only=True),
    "threads": Param(
        0,
        "Intra-op threads of the backend (>= 0); 0: as many as the model's latency predictor was calibrated"
        " with (1 for a model without one), so the predicted latencies describe what runs.",
        read_only=True,
    ),
    "qos_depth": Param(1, "Image subscription history depth.", read_only=True, low=1),
    "qos_reliability": Param(
        "auto",
        "Image subscription reliability: auto (reliable when every camera publisher offers it, else best"
        " effort; followed as publishers come and go), reliable or best_effort.",
        read_only=True,
    ),
    "early_exit_threshold": Param(
        0.9,
        "Answer at an earlier exit whose top score >= this; 0: off (`adascale early-exit`).",
        low=0.0,
        high=1.0,
    ),
    "deadline_guard": Param(
        True,
        "Answer at the last exit reached when the next stage would overrun the selection's latency budget"
        " (timed from the frame's decoding); false: always run to the selected exit.",
    ),
    "top_k": Param(3, "Classes reported per frame.", low=1),
    "max_image_pixels": Param(MAX_IMAGE_PIXELS, "Frames with more pixels are rejected.", low=1),
    "max_compressed_bytes": Param(MAX_COMPRESSED_BYTES, "Compressed frames larger than this are rejected [B].", low=1),
    "safe_default_variant": Param(
        "",
        "Run before any selection arrives and after the selection timeout; empty: the cheapest that classifies.",
    ),
    "selection_timeout_s": Param(
        3.0, "Without a valid selection for this long the safe default runs again [s] (>= 0; 0: never)."
    ),
}


def _validate(values: dict[str, Any]) -> None:
    threshold = float(values["early_exit_threshold"])
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"early_exit_threshold must be in [0, 1] (0: off), got {threshold}")
    timeout = float(values["selection_timeout_s"])
    if not (math.isfinite(timeout) and timeout >= 0.0):
        raise ValueError(f"selection_timeout_s must be >= 0 (0: never), got {timeout}")
    for name in ("top_k", "max_image_pixels", "max_compressed_bytes", "qos_depth"):
        if int(values[name]) < 1:
            raise ValueError(f"{name} must be >= 1, got {values[name]}")
    if int(values["threads"]) < 0:
        raise ValueError(f"threads must be >= 1 (0: as calibrated), got {values['threads']}")
    if values["input"] not in ("raw", "compressed"):
        raise ValueError(f"input must be raw or compressed, got {values['input']!r}")
    if values["backend"] not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {values['backend']!r}")
    check_reliability_setting(values["qos_reliability"])


def vision_msgs_types() -> tuple[Any, Any] | None:
    """(Classification, ObjectHypothesis) of vision_msgs, the standard classification output; None when
    vision_msgs is not installed (a venv without ROS 2 packages beyond rclpy)."""
    try:
        from vision_msgs.msg import Classification, ObjectHypothesis
    except ImportError:
        return None
    return Classification, ObjectHypothesis


def inference_threads(requested: int, model_dir: str) -> int:
    """The backend's intra-op threads: as requested, or (0) as the model was calibrated with, else 1."""
    return requested or calibrated_threads(Path(model_dir)) or 1


class ElasticInference(AdascaleNode):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__("elastic_inference", PARAMETERS, _validate, **kwargs)
        values = self.settings
        model_dir = self.model_dir()
        card = read_model_card(model_dir)
        self.labels = list(card["classes"])
        self.preprocess = Preprocessor.from_card(card)
        self.threads = inference_threads(int(values["threads"]), model_dir)
        self.engine = ElasticEngine.from_model_dir(model_dir, card_input_shape(card), values["backend"], self.threads)
        safe_default = values["safe_default_variant"] or cheapest_variant(load_variant_table(model_dir))
        self.safe_default = self.engine.check_variant(safe_default)  # ValueError -> refuse to start
        self.variant = self.safe_default
        self.selection_load = math.nan
        self.latency_budget_ms = math.nan  # of the selection in force; NaN: none (no deadline)
        self._selection_at: float | None = None  # monotonic time of the last valid selection; None: none in force

        self.bridge = CvBridge()
        self.slot: LatestSlot[Any] = LatestSlot()
        self.stats = InferenceStats(time.monotonic())  # shared by the callbacks and the inference thread

        compressed = values["input"] == "compressed"
        self._image_sub = CameraSubscription(
            self,
            CompressedImage if compressed else Image,
            "~/image/compressed" if compressed else "~/image",
            self._on_image,
            int(values["qos_depth"]),
            values["qos_reliability"],
        )
        self._selection_sub = self.create_subscription(
            VariantSelection, "~/selection", self._on_selection, latched_qos()
        )
        self._result_pub = self.create_publisher(ElasticClassification, "~/classification", 10)
        self._overlay_pub = self.create_publisher(Image, "~/overlay", 1)
        self._vision = vision_msgs_types()
        if self._vision is not None:
            self._vision_pub = self.create_publisher(self._vision[0], "~/vision_classification", 10)
        self.serve()
        self._timeout_timer = self.create_timer(0.25, self._check_selection_timeout)
        self._worker = threading.Thread(target=self._work, name="inference", daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"{values['backend']} backend ({self.engine.source}, {self.threads} threads), {len(self.labels)} classes"
            f" from {model_dir}; "
            f"running {self.variant} until a selection arrives on {self._selection_sub.topic_name}; "
            f"input {self._image_sub.topic_name}"
        )

    def apply(self, values: dict[str, Any]) -> None:
        _validate(values)

    # -- callbacks: never wait for a frame's inference (a switch warms its variant, about 1 ms) --

    def _on_image(self, msg: Any) -> None:
        self.stats.frame_received(time.monotonic())
        self.slot.put(msg)

    def _on_selection(self, msg: VariantSelection) -> None:
        self.stats.count("selections_received")
        try:
            variant = self.engine.check_variant(msg.variant_id)
        except ValueError as exc:
            self.stats.count("rejected_selections")
            self.get_logger().warning(f"ignored selection: {exc}; still running {self.variant}")
            return
        if variant != self.variant:
            self.get_logger().info(f"switching {self.variant} -> {variant}: {msg.reason}")
            self.engine.warm(variant)  # before it takes the next frame (sessions are thread-safe)
        budget = float(msg.latency_budget_ms)
        self.variant, self.selection_load = variant, float(msg.load_index)
        self.latency_budget_ms = budget if math.isfinite(budget) and budget > 0.0 else math.nan
        self._selection_at = time.monotonic()

    def _check_selection_timeout(self) -> None:
        # Wall time on purpose: a selector that stopped is a fact of this machine, not of sim time.
        timeout = float(self.settings["selection_timeout_s"])
        if self._selection_at is None or timeout == 0.0 or time.monotonic() - self._selection_at < timeout:
            return
        self.get_logger().warning(
            f"no selection for {timeout:g} s (is the selector running?): {self.variant} -> safe default "
            f"{self.safe_default}"
        )
        self.variant, self.selection_load, self._selection_at = self.safe_default, math.nan, None
        self.latency_budget_ms = math.nan
        self.stats.count("selection_timeouts")

    # -- the inference thread ------------------------------------------------------------------

    def _work(self) -> None:
        while not self.slot.closed:
            msg = self.slot.take(timeout_s=0.2)
            if msg is None:
                continue
            try:
                self._process(msg)
            except FrameError as exc:
                self._count_error(exc.kind, str(exc))
            except Exception as exc:  # one bad frame must never stop the node
                self._count_error("internal", f"{type(exc).__name__}: {exc}")

    def _count_error(self, kind: str, message: str) -> None:
        self.stats.frame_skipped(kind)
        self.get_logger().warning(f"frame skipped ({kind}): {message}", throttle_duration_sec=2.0)

    @staticmethod
    def _decode(msg: Any, settings: dict[str, Any]) -> tuple[np.ndarray, str]:
        limit = int(settings["max_image_pixels"])
        if isinstance(msg, CompressedImage):
            return compressed_to_array(msg, limit, int(settings["max_compressed_bytes"]))
        return image_to_array(msg, limit)

    def _process(self, msg: Any) -> None:
        settings, variant, budget_ms = self.settings, self.variant, self.latency_budget_ms
        start = time.perf_counter()
        image, encoding = self._decode(msg, settings)
        x = self.preprocess(image, encoding, variant.resolution)
        threshold = float(settings["early_exit_threshold"]) or math.inf
        deadline = start + budget_ms / 1e3 if settings["deadline_guard"] and math.isfinite(budget_ms) else None
        result = self.engine.run(x, variant, threshold, deadline)
        latency_ms = (time.perf_counter() - start) * 1e3
        self._publish(msg.header, variant.id, result, latency_ms, int(settings["top_k"]))
        self.stats.frame_processed(latency_ms, result.early_exited, result.deadline_exited)
        if self._overlay_pub.get_subscription_count() > 0:
            self._publish_overlay(msg.header, image, encoding, variant.id, result, latency_ms)

    def _publish(self, header: Any, variant_id: str, result: Inference, latency_ms: float, top_k: int) -> None:
        out = ElasticClassification()
        out.header = header
        out.variant_id = variant_id
        out.exit_index = result.exit_index
        out.early_exited = result.early_exited
        out.deadline_exited = result.deadline_exited
        out.class_ids, out.scores = result.top_k(top_k)
        out.labels = [self.labels[i] for i in out.class_ids]
        out.latency_ms = latency_ms
        stamp = stamp_ns(header.stamp)
        now_ns = self.get_clock().now().nanoseconds
        out.age_ms = (now_ns - stamp) / 1e6 if stamp > 0 else math.nan
        out.frame_period_ms = self.stats.frame_period_ms()
        self._result_pub.publish(out)
        if self._vision is not None:
            classification, hypothesis = self._vision
            standard = classification(header=header)
            pairs = zip(out.labels, out.scores, strict=True)
            standard.results = [hypothesis(class_id=label, score=float(score)) for label, score in pairs]
            self._vision_pub.publish(standard)

    def _publish_overlay(
        self, header: Any, image: np.ndarray, encoding: str, variant_id: str, result: Inference, latency_ms: float
    ) -> None:
        ids, scores = result.top_k(1)
        early = " (deadline)" if result.deadline_exited else " (early)" if result.early_exited else ""
        lines = [
            f"{self.labels[ids[0]]} {scores[0]:.2f}",
            f"exit {result.exit_index}{early} {variant_id}",
            f"{latency_ms:.1f} ms  load {self.selection_load:.2f}",
        ]
        overlay = self.bridge.cv2_to_imgmsg(draw_overlay(image, encoding, lines), "bgr8")
        overlay.header = header
        self._overlay_pub.publish(overlay)

    # -- diagnostics ---------------------------------------------------------------------------

    def diagnostic_status(self) -> tuple[bytes, str, dict[str, Any]]:
        now = time.monotonic()
        in_force = self._selection_at is not None
        situation = Situation(self.variant.id, self._image_sub.topic_name, in_force, self.slot.dropped)
        level, message, counted = self.stats.status(now, situation)
        values: dict[str, Any] = {
            "variant": self.variant.id,
            "selection_age_s": now - self._selection_at if in_force else math.nan,
            "backend": self.settings["backend"],
            "threads": self.threads,
            "camera_reliability": self._image_sub.reliability.name.lower(),
            **counted,
        }
        return bytes([level]), message, values

    def destroy_node(self) -> None:
        # Also called for a node whose constructor failed half-way (rclpy destroys it when collected).
        if hasattr(self, "_worker"):
            self.slot.close()
            self._worker.join(timeout=2.0)
        super().destroy_node()


def main(args: list[str] | None = None, stop: threading.Event | None = None) -> int:
    return spin_node(ElasticInference, args, stop)


if __name__ == "__main__":
    raise SystemExit(main())
