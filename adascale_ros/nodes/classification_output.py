"""What the inference node publishes per frame: its result, the standard vision_msgs classification and
the annotated image."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from cv_bridge import CvBridge
from rclpy.node import Node
from sensor_msgs.msg import Image

from adascale_msgs.msg import ElasticClassification
from adascale_ros.runtime.engine import Inference
from adascale_ros.runtime.images import stamp_ns
from adascale_ros.runtime.overlay import draw_overlay


def vision_msgs_types() -> tuple[Any, Any] | None:
    """(Classification, ObjectHypothesis) of vision_msgs, the standard classification output; None when
    vision_msgs is not installed (a venv without ROS 2 packages beyond rclpy)."""
    try:
        from vision_msgs.msg import Classification, ObjectHypothesis
    except ImportError:
        return None
    return Classification, ObjectHypothesis


class ClassificationOutputs:
    """``~/classification``, ``~/vision_classification`` (with vision_msgs) and ``~/overlay`` of ``node``."""

    def __init__(self, node: Node, labels: list[str]) -> None:
        self._node = node
        self.labels = labels
        self.bridge = CvBridge()
        self._result_pub = node.create_publisher(ElasticClassification, "~/classification", 10)
        self._overlay_pub = node.create_publisher(Image, "~/overlay", 1)
        self._vision = vision_msgs_types()
        if self._vision is not None:
            self._vision_pub = node.create_publisher(self._vision[0], "~/vision_classification", 10)

    @property
    def overlay_wanted(self) -> bool:
        return self._overlay_pub.get_subscription_count() > 0

    def publish(
        self, header: Any, variant_id: str, result: Inference, latency_ms: float, top_k: int, frame_period_ms: float
    ) -> None:
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
        now_ns = self._node.get_clock().now().nanoseconds
        out.age_ms = (now_ns - stamp) / 1e6 if stamp > 0 else math.nan
        out.frame_period_ms = frame_period_ms
        self._result_pub.publish(out)
        if self._vision is not None:
            classification, hypothesis = self._vision
            standard = classification(header=header)
            pairs = zip(out.labels, out.scores, strict=True)
            standard.results = [hypothesis(class_id=label, score=float(score)) for label, score in pairs]
            self._vision_pub.publish(standard)

    def publish_overlay(
        self,
        header: Any,
        image: np.ndarray,
        encoding: str,
        variant_id: str,
        result: Inference,
        latency_ms: float,
        load_index: float,
    ) -> None:
        ids, scores = result.top_k(1)
        early = " (deadline)" if result.deadline_exited else " (early)" if result.early_exited else ""
        lines = [
            f"{self.labels[ids[0]]} {scores[0]:.2f}",
            f"exit {result.exit_index}{early} {variant_id}",
            f"{latency_ms:.1f} ms  load {load_index:.2f}",
        ]
        overlay = self.bridge.cv2_to_imgmsg(draw_overlay(image, encoding, lines), "bgr8")
        overlay.header = header
        self._overlay_pub.publish(overlay)
