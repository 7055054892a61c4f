"""``adascale campaign``: a malformed-input campaign against the running nodes.

The nodes that consume messages (profiler, selector, and the inference node
twice: raw and compressed input) run as separate processes, each reading only
topics this process writes, under the ``/campaign`` prefix. For every message
type they consume, ``hypothesis`` generates malformed messages (random sizes,
steps, encodings and truncated data; garbage compressed frames; NaN, inf,
negative and out-of-range values; empty and oversized arrays; unknown variant
ids) and they are published one by one. Then every node gets a valid message
and must answer it exactly as it answered the same message before the
campaign. The report counts, per input: sent, received by the node, rejected
with a reason (the node's diagnostics), accepted, and crashes (a node that
died, logged a traceback, or hit an unexpected error; must be zero).
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from adascale_ros.graph.definition import NodeSpec, node_graph, with_parameters
from adascale_ros.graph.runner import GraphProcesses, unexpected_errors
from adascale_ros.model.directory import load_variant_table

PREFIX = "/campaign"
REPORT_WAIT_S = 2.5  # diagnostics are published at 1 Hz
READY_TIMEOUT_S = 60.0
# Each node's subscriptions are reliable with depth 10 (images: depth 100 here): a
# short pause between messages lets them take every one, so "received" means "examined".
PAUSE_S = 0.002


# -- the nodes under test ----------------------------------------------------------------------


def campaign_graph(model_dir: str) -> list[NodeSpec]:
    """The consuming nodes, named campaign_*, their inputs and outputs under /campaign."""
    nodes = {spec.name: spec for spec in node_graph(model_dir=model_dir)}
    inference = with_parameters(nodes["elastic_inference"], qos_reliability="reliable", qos_depth=100)
    return [
        replace(
            with_parameters(nodes["profiler"], correction_window=0),  # predictions depend on the state only
            name="campaign_profiler",
            remappings=(
                ("~/resource_state", f"{PREFIX}/resource_state"),
                ("~/classification", f"{PREFIX}/classification"),
                ("~/profiles", f"{PREFIX}/out/profiles"),
            ),
        ),
        replace(
            with_parameters(nodes["selector"], dwell_s=0.0, margin=0.0, latency_budget_ms=2.0, republish_period_s=0.0),
            name="campaign_selector",
            remappings=(("~/profiles", f"{PREFIX}/profiles"), ("~/selection", f"{PREFIX}/out/selection")),
        ),
        replace(
            with_parameters(inference, input="raw", selection_timeout_s=0.0),
            name="campaign_inference",
            remappings=(
                ("~/image", f"{PREFIX}/image"),
                ("~/selection", f"{PREFIX}/selection"),
                ("~/classification", f"{PREFIX}/out/classification"),
            ),
        ),
        replace(
            with_parameters(inference, input="compressed", selection_timeout_s=0.0),
            name="campaign_inference_compressed",
            remappings=(
                ("~/image/compressed", f"{PREFIX}/image/compressed"),
                ("~/selection", f"{PREFIX}/compressed/selection"),
                ("~/classification", f"{PREFIX}/out/compressed_classification"),
            ),
        ),
    ]


# -- malformed messages ------------------------------------------------------------------------


def strategies(variant_ids: list[str], sample_jpeg: bytes, sample_png: bytes) -> dict[str, Any]:
    """Hypothesis strategies of malformed (and now and then well-formed) messages, by input name."""
    from hypothesis import strategies as st
    from sensor_msgs.msg import CompressedImage, Image

    from adascale_msgs.msg import (
        ElasticClassification,
        ResourceState,
        VariantProfileArray,
        VariantSelection,
    )

    f32 = st.floats(width=32)  # NaN, +-inf, huge, negative, subnormal
    unit = st.floats(-0.5, 1.5, width=32) | f32
    text = st.text(st.characters(exclude_categories=("Cs",)), max_size=24)  # UTF-8 encodable
    known = st.sampled_from(variant_ids)
    ids = known | known.map(lambda v: v + "x") | known.map(lambda v: v[: len(v) // 2]) | text
    u8, u64 = st.integers(0, 255), st.integers(0, 2**64 - 1)
    max_bytes = 1 << 20

    def pattern(size: int) -> bytes:
        return (bytes(range(256)) * (size // 256 + 1))[:size]

    @st.composite
    def images(draw: Callable) -> Image:
        height, width = draw(st.integers(0, 5000)), draw(st.integers(0, 5000))
        channels = draw(st.sampled_from([1, 2, 3, 4]))
        step = draw(st.just(width * channels) | st.integers(0, 20_000))
        size = draw(st.just(min(step * height, max_bytes)) | st.integers(0, 70_000))
        encodings = ["rgb8", "bgr8", "mono8", "mono16", "rgba8", "bgra8", "16UC1", "32FC1", "yuv422", "bayer_rggb8"]
        return Image(
            height=height,
            width=width,
            encoding=draw(st.sampled_from(encodings) | text),
            is_bigendian=draw(st.integers(0, 1)),
            step=step,
            data=pattern(size),
        )

    @st.composite
    def compressed(draw: Callable) -> CompressedImage:
        sample = draw(st.sampled_from([sample_jpeg, sample_png]))
        cut = draw(st.integers(0, len(sample)))
        flips = draw(st.lists(st.tuples(st.integers(0, len(sample) - 1), st.integers(1, 255)), max_size=8))
        damaged = bytearray(sample)
        for at, bits in flips:
            damaged[at] ^= bits
        data = draw(st.just(bytes(damaged[:cut])) | st.just(bytes(damaged)) | st.binary(max_size=4096))
        fmt = st.sampled_from(["jpeg", "png", "rgb8; jpeg compressed bgr8", "bgr8; png compressed bgr8", "bmp", ""])
        return CompressedImage(format=draw(fmt | text), data=data)

    @st.composite
    def profiles(draw: Callable) -> VariantProfileArray:
        """Columns of one length (bad values in a well-formed shape), or half the time of any length (ragged)."""
        size, ragged = draw(st.integers(0, 40)), draw(st.booleans())

        def column(values: Any) -> list:
            return draw(st.lists(values, max_size=40) if ragged else st.lists(values, min_size=size, max_size=size))

        return VariantProfileArray(
            load_index=draw(unit),
            load_is_forecast=draw(st.booleans()),
            variant_ids=column(ids),
            exit_indices=column(u8),
            accuracy=column(unit),
            params=column(u64),
            flops=column(u64),
            storage_bytes=column(u64),
            memory_accesses=column(u64),
            predicted_latency_ms=column(f32),
            predicted_energy_mj=column(f32),
            measured_latency_ms=column(f32),
        )

    return {
        "image": images(),
        "compressed_image": compressed(),
        "selection": st.builds(
            VariantSelection,
            variant_id=ids,
            exit_index=u8,
            predicted_latency_ms=f32,
            predicted_energy_mj=f32,
            expected_accuracy=unit,
            latency_budget_ms=f32,
            energy_budget_mj=f32,
            min_accuracy=unit,
            load_index=unit,
            feasible=st.booleans(),
            reason=text,
        ),
        "resource_state": st.builds(
            ResourceState,
            cpu_util=unit,
            cpu_util_per_core=st.lists(unit, max_size=64),
            cpu_freq_mhz=f32,
            gpu_util=unit,
            gpu_mem_util=unit,
            mem_util=unit,
            mem_available_mb=f32,
            power_w=f32,
            power_source=text,
            load_index=unit,
            load_index_forecast=unit,
            forecast_horizon_s=f32,
        ),
        "classification": st.builds(
            ElasticClassification,
            variant_id=ids,
            exit_index=u8,
            early_exited=st.booleans(),
            deadline_exited=st.booleans(),
            class_ids=st.lists(st.integers(-(2**31), 2**31 - 1), max_size=12),
            labels=st.lists(text, max_size=12),
            scores=st.lists(f32, max_size=12),
            latency_ms=f32,
            age_ms=f32,
        ),
        "profiles": profiles(),
    }


@dataclass(frozen=True)
class Input:
    """One message type a node consumes: where the campaign sends it and how the node counts it."""

    name: str
    topic: str
    node: str
    received: str  # diagnostics key: messages of this input the node took in ("" : not counted)
    rejected: tuple[str, ...]  # diagnostics keys (or prefixes ending in ".") counting rejections


INPUTS = (
    Input("image", f"{PREFIX}/image", "campaign_inference", "frames_received", ("skipped.",)),
    Input(
        "compressed_image",
        f"{PREFIX}/image/compressed",
        "campaign_inference_compressed",
        "frames_received",
        ("skipped.",),
    ),
    Input("selection", f"{PREFIX}/selection", "campaign_inference", "selections_received", ("rejected_selections",)),
    Input("resource_state", f"{PREFIX}/resource_state", "campaign_profiler", "states", ("states_rejected",)),
    Input("classification", f"{PREFIX}/classification", "campaign_profiler", "results", ("results_rejected",)),
    Input(
        "profiles",
        f"{PREFIX}/profiles",
        "campaign_selector",
        "profiles_received",
        ("profiles_rejected", "unknown_variant_ids", "invalid_predictions"),
    ),
)


@dataclass
class InputReport:
    input: str
    node: str
    sent: int = 0
    received: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    answers_after: bool = False  # the node answered a valid message as before the campaign


@dataclass
class CampaignReport:
    seed: int
    inputs: list[InputReport]
    crashes: dict[str, str]  # node -> what happened
    seconds: float

    @property
    def passed(self) -> bool:
        return not self.crashes and all(r.answers_after for r in self.inputs)

    def to_json(self) -> dict[str, Any]:
        return {"passed": self.passed, **asdict(self)}

    def table(self) -> str:
        lines = [
            "| input | node | sent | received | rejected (reasons) | answers a valid one after |",
            "|---|---|---:|---:|---|---|",
        ]
        for r in self.inputs:
            reasons = ", ".join(f"{k} {v}" for k, v in sorted(r.rejected.items()) if v) or "-"
            lines.append(
                f"| {r.input} | {r.node} | {r.sent} | {r.received} | {reasons} | {'yes' if r.answers_after else 'NO'} |"
            )
        crashes = ", ".join(f"{n}: {w}" for n, w in self.crashes.items()) or "none"
        lines.append("")
        lines.append(f"crashes: {len(self.crashes)} ({crashes}); {self.seconds:.0f} s; seed {self.seed}")
        return "\n".join(lines)


# -- running it ---------------------------------------------------------------------------------


def send_examples(
    strategy: Any, publish: Callable[[Any], None], count: int, seed: int, stop: Callable[[], bool]
) -> int:
    """Publish ``count`` examples drawn by hypothesis from ``strategy``; returns how many were sent."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as fixed_seed
    from hypothesis.errors import HypothesisWarning

    sent = 0
    warnings.filterwarnings("ignore", category=HypothesisWarning)  # "overly large repr" of big images

    class Interrupted(Exception):
        pass

    @fixed_seed(seed)
    @settings(
        max_examples=count,
        database=None,
        deadline=None,
        phases=[Phase.generate],  # every example is sent; nothing fails, so there is nothing to shrink
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def send(msg: Any) -> None:
        nonlocal sent
        if stop():
            raise Interrupted
        publish(msg)
        sent += 1
        time.sleep(PAUSE_S)

    try:
        send()
    except Interrupted:
        pass
    return sent


def probe_image(side: int = 96) -> np.ndarray:
    """A fixed RGB test pattern: the same frame before and after the campaign."""
    y, x = np.mgrid[0:side, 0:side]
    return np.stack([(x * 255 // side), (y * 255 // side), ((x + y) * 127 // side)], axis=-1).astype(np.uint8)


class Campaign:
    """The nodes under test, the publishers and the probes, in one ROS context."""

    def __init__(self, model_dir: Path, log: Any, stop: Callable[[], bool]) -> None:
        import cv2
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from rclpy.signals import SignalHandlerOptions
        from sensor_msgs.msg import CompressedImage, Image

        from adascale_msgs.msg import (
            ElasticClassification,
            ResourceState,
            VariantProfileArray,
            VariantSelection,
        )
        from adascale_ros.nodes.common import latched_qos
        from adascale_ros.package_files import default_params_file

        self.table = load_variant_table(model_dir)
        self.variant_ids = [row["variant_id"] for row in self.table["variants"]]
        self.stop = stop
        pixels = probe_image()
        self.jpeg = cv2.imencode(".jpg", pixels)[1].tobytes()
        self.png = cv2.imencode(".png", pixels)[1].tobytes()

        self.context = rclpy.Context()
        rclpy.init(context=self.context, signal_handler_options=SignalHandlerOptions.NO)  # the caller's stop flag
        self.node = rclpy.create_node("adascale_campaign", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        types = {
            "image": Image,
            "compressed_image": CompressedImage,
            "selection": VariantSelection,
            "resource_state": ResourceState,
            "classification": ElasticClassification,
            "profiles": VariantProfileArray,
        }
        # The selection input is transient local (as the selector publishes it), deep enough to lose nothing.
        latched = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=latched_qos().durability)
        self.publishers = {
            i.name: self.node.create_publisher(types[i.name], i.topic, latched if i.name == "selection" else reliable)
            for i in INPUTS
        }
        self.compressed_selection = self.node.create_publisher(
            VariantSelection, f"{PREFIX}/compressed/selection", latched_qos()
        )
        self.diagnostics: dict[str, dict[str, str]] = {}
        self.outputs: dict[str, list] = {"profiles": [], "selection": [], "classification": [], "compressed": []}
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 50)
        self.node.create_subscription(
            VariantProfileArray, f"{PREFIX}/out/profiles", self.outputs["profiles"].append, reliable
        )
        self.node.create_subscription(
            VariantSelection, f"{PREFIX}/out/selection", self.outputs["selection"].append, latched_qos()
        )
        self.node.create_subscription(
            ElasticClassification, f"{PREFIX}/out/classification", self.outputs["classification"].append, reliable
        )
        self.node.create_subscription(
            ElasticClassification,
            f"{PREFIX}/out/compressed_classification",
            self.outputs["compressed"].append,
            reliable,
        )
        self.graph = GraphProcesses(campaign_graph(str(model_dir)), default_params_file())
        self.graph.start(out=log)

    def close(self) -> dict[str, int]:
        codes = self.graph.stop()
        self.executor.shutdown()
        self.node.destroy_node()
        self.context.try_shutdown()
        return codes

    def _on_diagnostics(self, msg: Any) -> None:
        from adascale_ros.nodes.diagnostics import statuses_by_node

        self.diagnostics.update(statuses_by_node(msg))

    def spin_until(self, condition: Callable[[], bool], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not self.stop():
            if self.graph.exited():
                return False
            if condition():
                return True
            self.executor.spin_once(timeout_sec=0.01)
        return condition()

    def ready(self) -> bool:
        nodes = {spec.name for spec in self.graph.specs}
        return self.spin_until(
            lambda: (
                nodes <= set(self.diagnostics) and all(p.get_subscription_count() > 0 for p in self.publishers.values())
            ),
            READY_TIMEOUT_S,
        )

    # -- probes: a valid message, and the node's answer to it ---------------------------------

    def _classify(self, compressed: bool, variant_id: str) -> tuple | None:
        from sensor_msgs.msg import CompressedImage, Image

        from adascale_msgs.msg import VariantSelection

        selection = VariantSelection(variant_id=variant_id, reason="campaign probe", load_index=0.5)
        (self.compressed_selection if compressed else self.publishers["selection"]).publish(selection)
        results = self.outputs["compressed" if compressed else "classification"]
        for attempt in range(50):  # until the selection is in force and the frame answered
            if compressed:
                frame = CompressedImage(format="jpeg", data=self.jpeg)
            else:
                pixels = probe_image()
                side = pixels.shape[0]
                frame = Image(height=side, width=side, encoding="rgb8", step=side * 3, data=pixels.tobytes())
            frame.header.frame_id = f"probe {attempt}"
            (self.publishers["compressed_image" if compressed else "image"]).publish(frame)
            answered = self.spin_until(
                lambda f=frame.header.frame_id: bool(results) and results[-1].header.frame_id == f, 1.0
            )
            if answered and results[-1].variant_id == variant_id:
                r = results[-1]
                return r.variant_id, tuple(r.class_ids), tuple(round(float(s), 4) for s in r.scores)
        return None

    def _profile_for(self, load_index: float) -> tuple | None:
        from adascale_msgs.msg import ResourceState

        state = ResourceState(
            cpu_util=load_index,
            load_index=load_index,
            mem_available_mb=2000.0,
            cpu_freq_mhz=2000.0,
            load_index_forecast=math.nan,
        )
        sent_at = len(self.outputs["profiles"])
        self.publishers["resource_state"].publish(state)

        def answers() -> list:  # profiles at this state's load (not the forecast one)
            newer = self.outputs["profiles"][sent_at:]
            return [p for p in newer if p.load_index == np.float32(load_index) and not p.load_is_forecast]

        if not self.spin_until(lambda: bool(answers()), 5.0):
            return None
        answer = answers()[0]
        return tuple(
            (variant_id, round(float(ms), 5), round(float(mj), 5))
            for variant_id, ms, mj in zip(
                answer.variant_ids, answer.predicted_latency_ms, answer.predicted_energy_mj, strict=True
            )
        )

    def _selection_for_profile(self) -> tuple | None:
        from adascale_msgs.msg import VariantProfileArray

        rows = self.table["variants"]
        most = max(row["flops"] for row in rows)
        array = VariantProfileArray(
            load_index=0.3,
            variant_ids=[row["variant_id"] for row in rows],
            predicted_latency_ms=[0.5 + 3.0 * row["flops"] / most for row in rows],  # deeper ones break 2 ms
            predicted_energy_mj=[1.0] * len(rows),
            measured_latency_ms=[math.nan] * len(rows),
        )
        for forecast in (False, True):  # replace both profiles the selector keeps
            array.load_is_forecast = forecast
            self.publishers["profiles"].publish(array)
        self.spin_until(lambda: False, 1.0)  # the choice in force is the last one published (latched)
        if not self.outputs["selection"] or self.graph.exited():
            return None
        s = self.outputs["selection"][-1]
        return round(float(s.expected_accuracy), 6), bool(s.feasible), round(float(s.predicted_latency_ms), 4)

    def send(self, messages: int, seed: int, say: Callable[[str], None]) -> dict[str, int]:
        """``messages`` malformed messages of every input; returns how many of each were sent."""
        drawn = strategies(self.variant_ids, self.jpeg, self.png)
        sent: dict[str, int] = {}
        for n, spec in enumerate(INPUTS):
            if self.stop() or self.graph.exited():
                break
            say(f"[{n + 1}/{len(INPUTS)}] {messages} malformed {spec.name} messages -> {spec.node}")
            publisher = self.publishers[spec.name]

            def publish(msg: Any, publisher: Any = publisher) -> None:
                publisher.publish(msg)
                self.executor.spin_once(timeout_sec=0.0)  # keep the diagnostics flowing in

            sent[spec.name] = send_examples(drawn[spec.name], publish, messages, seed, self.stop)
        return sent

    def answers(self) -> dict[str, tuple | None]:
        """Each node's answer to a valid message, by the input it was probed through."""
        probe_variant = max(self.table["variants"], key=lambda row: row["val_accuracy"])["variant_id"]
        raw, profile = self._classify(False, probe_variant), self._profile_for(0.3)
        return {
            "image": raw,
            "selection": raw,
            "compressed_image": self._classify(True, probe_variant),
            "resource_state": profile,
            "classification": profile,
            "profiles": self._selection_for_profile(),
        }


def run_campaign(
    model_dir: Path, messages: int, seed: int, log_path: Path, say: Callable[[str], None], stop: Callable[[], bool]
) -> CampaignReport:
    """Start the nodes, probe them, send ``messages`` malformed messages per input, probe again.

    The nodes' output goes to ``log_path``.
    """
    start = time.monotonic()
    with open(log_path, "w") as log:
        campaign = Campaign(model_dir, log, stop)
        try:
            say(f"starting {', '.join(s.name for s in campaign.graph.specs)} ...")
            if not campaign.ready():
                raise RuntimeError(f"the nodes did not come up (exited: {campaign.graph.exited()})")
            before = campaign.answers()
            missing = [name for name, answer in before.items() if answer is None]
            if missing:
                raise RuntimeError(f"no answer to a valid message before the campaign: {missing}")
            campaign.spin_until(lambda: False, REPORT_WAIT_S)
            counts_before = dict(campaign.diagnostics)  # the probes' messages are not the campaign's
            sent = campaign.send(messages, seed, say)
            campaign.spin_until(lambda: False, REPORT_WAIT_S)
            diagnostics = dict(campaign.diagnostics)
            after = campaign.answers()
        finally:
            codes = campaign.close()
    reports = []
    for spec in INPUTS:
        values, earlier = diagnostics.get(spec.node, {}), counts_before.get(spec.node, {})
        counts = {key: int(float(value)) - int(float(earlier.get(key, 0))) for key, value in values.items()
                  if key == spec.received or _matches(key, spec.rejected)}  # fmt: skip
        rejected = {key: n for key, n in counts.items() if key != spec.received and n}
        received = counts.get(spec.received, 0)
        answered = after[spec.name] is not None and after[spec.name] == before[spec.name]
        reports.append(InputReport(spec.name, spec.node, sent.get(spec.name, 0), received, rejected, answered))
    crashes = unexpected_errors(list(codes), log_path.read_text(errors="replace"), diagnostics)
    crashes.update({name: f"exit code {code}" for name, code in codes.items() if code != 0})
    return CampaignReport(seed, reports, crashes, time.monotonic() - start)


def _matches(key: str, patterns: tuple[str, ...]) -> bool:
    return any(key == p or (p.endswith(".") and key.startswith(p)) for p in patterns)


def write_report(report: CampaignReport, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "campaign.json").write_text(json.dumps(report.to_json(), indent=2) + "\n")
    (out / "campaign.md").write_text(report.table() + "\n")
