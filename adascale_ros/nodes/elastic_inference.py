"""elastic_inference: classifies the camera stream with the variant the selector chose.

Topics, parameters and diagnostics: docs/nodes/elastic_inference.md. The image callback only drops the
frame into a one-slot mailbox; a worker thread takes the newest frame and runs it, so callbacks never wait
for inference and no queue builds. Decoding, pre-processing and execution live in ``adascale_ros.runtime``.
"""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path
from typing import Any

from sensor_msgs.msg import CompressedImage, Image

from adascale_msgs.msg import VariantSelection
from adascale_ros.model.directory import card_input_shape, cheapest_variant, load_variant_table, read_model_card
from adascale_ros.nodes.camera_subscription import RELIABILITY_SETTINGS, CameraSubscription
from adascale_ros.nodes.classification_output import ClassificationOutputs
from adascale_ros.nodes.common import AdascaleNode, latched_qos, spin_node
from adascale_ros.nodes.parameters import Param
from adascale_ros.profiling.predictor import calibrated_threads
from adascale_ros.runtime.engine import BACKENDS, ElasticEngine
from adascale_ros.runtime.frames import LatestSlot
from adascale_ros.runtime.images import MAX_COMPRESSED_BYTES, MAX_IMAGE_PIXELS, frame_to_array
from adascale_ros.runtime.preprocess import Preprocessor
from adascale_ros.runtime.stats import InferenceStats, Situation
from adascale_ros.runtime.variant_in_force import VariantInForce

PARAMETERS: dict[str, Param] = {
    "model_dir": Param("", "Model directory; empty: the embedded default model.", read_only=True),
    "input": Param(
        "raw",
        "raw: Image on ~/image; compressed: CompressedImage on ~/image/compressed.",
        read_only=True,
        choices=("raw", "compressed"),
    ),
    "backend": Param("onnxruntime", "onnxruntime (fast path) or torch (reference).", read_only=True, choices=BACKENDS),
    "threads": Param(
        0, "Intra-op threads of the backend; 0: as the model's predictor was calibrated with.", read_only=True, low=0
    ),
    "qos_depth": Param(1, "Image subscription history depth.", read_only=True, low=1),
    "qos_reliability": Param(
        "auto",
        "Image subscription reliability: auto (as the camera's publishers offer), reliable or best_effort.",
        read_only=True,
        choices=RELIABILITY_SETTINGS,
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
        3.0, "Without a valid selection for this long the safe default runs again [s]; 0: never.", low=0.0
    ),
}


class ElasticInferenceNode(AdascaleNode):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__("elastic_inference", PARAMETERS, **kwargs)
        values = self.settings
        model_dir = self.model_dir()
        card = read_model_card(model_dir)
        self.labels = list(card["classes"])
        self.preprocess = Preprocessor.from_card(card)
        # 0: as calibrated, so that the predicted latencies describe what runs
        self.threads = int(values["threads"]) or calibrated_threads(Path(model_dir)) or 1
        self.engine = ElasticEngine.from_model_dir(model_dir, card_input_shape(card), values["backend"], self.threads)
        safe_default = values["safe_default_variant"] or cheapest_variant(load_variant_table(model_dir))
        self.in_force = VariantInForce(self.engine.check_variant(safe_default))  # ValueError: refuse to start
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
        self.outputs = ClassificationOutputs(self, self.labels)
        self.serve()
        self._timeout_timer = self.create_timer(0.25, self._check_selection_timeout)
        self._worker = threading.Thread(
            target=self.slot.serve, args=(self._process, self._count_error), name="inference", daemon=True
        )
        self._worker.start()
        self.get_logger().info(
            f"{values['backend']} backend ({self.engine.source}, {self.threads} threads), {len(self.labels)} classes"
            f" from {model_dir}; running {safe_default} until a selection arrives on {self._selection_sub.topic_name};"
            f" input {self._image_sub.topic_name}"
        )

    # -- callbacks: never wait for a frame's inference (a switch warms its variant, about 1 ms) --

    def _on_image(self, msg: Any) -> None:
        self.stats.frame_received(time.monotonic())
        self.slot.put(msg)

    def _on_selection(self, msg: VariantSelection) -> None:
        self.stats.count("selections_received")
        running = self.in_force.current.variant
        try:
            variant = self.engine.check_variant(msg.variant_id)
        except ValueError as exc:
            self.stats.count("rejected_selections")
            self.get_logger().warning(f"ignored selection: {exc}; still running {running}")
            return
        if variant != running:
            self.get_logger().info(f"switching {running} -> {variant}: {msg.reason}")
            self.engine.warm(variant)  # before it takes the next frame (sessions are thread-safe)
        self.in_force.select(variant, float(msg.load_index), float(msg.latency_budget_ms), time.monotonic())

    def _check_selection_timeout(self) -> None:
        # Wall time on purpose: a selector that stopped is a fact of this machine, not of sim time.
        timeout = float(self.settings["selection_timeout_s"])
        running = self.in_force.current.variant
        if self.in_force.expire(time.monotonic(), timeout):
            self.get_logger().warning(
                f"no selection for {timeout:g} s (is the selector running?): {running} -> safe default "
                f"{self.in_force.safe_default}"
            )
            self.stats.count("selection_timeouts")

    def _count_error(self, kind: str, message: str) -> None:
        self.stats.frame_skipped(kind)
        self.get_logger().warning(f"frame skipped ({kind}): {message}", throttle_duration_sec=2.0)

    def _process(self, msg: Any) -> None:
        settings, selection = self.settings, self.in_force.current
        variant, budget_ms = selection.variant, selection.latency_budget_ms
        start = time.perf_counter()
        image, encoding = frame_to_array(msg, int(settings["max_image_pixels"]), int(settings["max_compressed_bytes"]))
        x = self.preprocess(image, encoding, variant.resolution)
        threshold = float(settings["early_exit_threshold"]) or math.inf
        deadline = start + budget_ms / 1e3 if settings["deadline_guard"] and math.isfinite(budget_ms) else None
        result = self.engine.run(x, variant, threshold, deadline)
        latency_ms = (time.perf_counter() - start) * 1e3
        top_k, period_ms = int(settings["top_k"]), self.stats.frame_period_ms()
        self.outputs.publish(msg.header, variant.id, result, latency_ms, top_k, period_ms)
        self.stats.frame_processed(latency_ms, result.early_exited, result.deadline_exited)
        if self.outputs.overlay_wanted:
            load = selection.load_index
            self.outputs.publish_overlay(msg.header, image, encoding, variant.id, result, latency_ms, load)

    def diagnostic_status(self) -> tuple[bytes, str, dict[str, Any]]:
        now, variant = time.monotonic(), self.in_force.current.variant
        situation = Situation(variant.id, self._image_sub.topic_name, self.in_force.selected, self.slot.dropped)
        level, message, counted = self.stats.status(now, situation)
        values: dict[str, Any] = {
            "variant": variant.id,
            "selection_age_s": self.in_force.age_s(now),
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
    return spin_node(ElasticInferenceNode, args, stop)


if __name__ == "__main__":
    raise SystemExit(main())
