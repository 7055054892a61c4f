"""``adascale evaluate``: replay a labelled bag under a load trace once per policy and score every frame.

For each policy the node graph it needs starts as separate processes (the
runner's ``GraphProcesses``), ``adascale replay`` plays the bag in a loop, and
once the first frame is on the wire the load trace starts, so frame k of every
run is the same image at the same point of the trace. This process records
every frame's header stamp, every classification and every resource state, then
stops everything and moves to the next policy. Scoring (``harness.metrics``, ``targets``, ``report``)
happens after the last run, from the saved records.

Policies
  adascale         the full loop: resource monitor -> profiler -> selector -> inference
  reactive         AdaptiveNet's monitor: the profiler predicts at the calibration's
                   idle state and corrects only by measured/predicted latency (no
                   resource sensing, no forecast); same selector and budget
  static-top       the most accurate variant (validation), always: what one would deploy
                   without adaptation
  static-mid       the most accurate variant that the model's calibration timed at camera
                   rate and that met the deadline there (p90) under the trace's heaviest
                   calibrated phase, always: the static choice made for the worst case
  static-smallest  the cheapest variant that classifies (fewest FLOPs, accuracy at least 90 %
                   of the top's), always
                   (static: no confidence early exit either; the two
                   adaptive policies run the inference node's configured one)
  oracle           per frame in hindsight: the most accurate variant whose measured
                   latency on that frame met the budget, among the variants the
                   other runs measured, early exits included (needs at least one
                   other policy; no run)
  adascale+LABEL   an arm: adascale's graph with some node parameters set otherwise
                   (``Arm``), interleaved with the other policies round by round, so
                   that two settings meet the same noise of the machine
"""

from __future__ import annotations

import json
import math
import signal
import struct
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from adascale_ros.graph.definition import (
    CLASSIFICATION_TOPIC,
    RESOURCE_STATE_TOPIC,
    SELECTION_TOPIC,
    NodeSpec,
    node_graph,
    with_parameters,
)
from adascale_ros.graph.runner import GraphProcesses, status_line, unclean_exits
from adascale_ros.harness.metrics import (
    TOP_ACCURACY_SLACK,
    FrameOutcome,
    frame_outcomes,
    mean_node_cpu,
    oracle_outcomes,
    phase_groups,
    phase_metrics,
    policy_metrics,
    pooled_metrics,
)
from adascale_ros.harness.plots import plot_report
from adascale_ros.harness.records import FrameRecord, PolicyRun, ResultRecord, StateRecord, save_run_config
from adascale_ros.harness.report import markdown_report
from adascale_ros.harness.targets import all_targets
from adascale_ros.load.stress import load_session
from adascale_ros.load.traces import LoadTrace, play_trace

POLICIES = ("adascale", "static-top", "static-smallest", "static-mid", "reactive", "oracle")
STATIC = {"static-top", "static-mid", "static-smallest"}
# The default deadline: this multiple of static-top's idle p90 at camera rate in the model's
# calibration report, fixed before anything runs (``calibrated_deadline``): static-top meets it
# when the machine is idle and misses it when load slows it by more than the margin.
DEADLINE_FACTOR = 1.25
READY_TIMEOUT_S = 120.0  # four nodes importing torch and exporting ONNX on a busy 2-core machine
# The replay waits for its two subscribers (the inference node and this recorder), then this long, so
# frame 0 reaches both: a writer that sees a reader does not mean the reader has matched the writer,
# and a best-effort reader drops what comes before (Fast DDS's defaults take up to about 3 s).
REPLAY_DELAY_S = 3.0
TAIL_S = 0.5  # results of the last frames still in flight when the run ends


@dataclass(frozen=True)
class Arm:
    """AdaScale with node parameters set otherwise: ``LABEL:NODE.PARAM=VALUE[,NODE.PARAM=VALUE...]``
    (values in YAML, e.g. ``noee:elastic_inference.early_exit_threshold=0``); runs as the policy
    ``adascale+LABEL``."""

    label: str
    parameters: tuple[tuple[str, str, Any], ...]  # (node, parameter, value)

    @property
    def policy(self) -> str:
        return f"adascale+{self.label}"

    @property
    def settings(self) -> list[str]:
        """Its parameters as ``node.param=value``, for the report."""
        return [f"{node}.{name}={value}" for node, name, value in self.parameters]

    @classmethod
    def parse(cls, text: str) -> Arm:
        import yaml

        label, sep, settings = text.partition(":")
        if not sep or not label.replace("-", "").replace("_", "").isalnum() or not settings:
            raise ValueError(f"an arm is LABEL:NODE.PARAM=VALUE[,...] with a letters-and-digits label, got {text!r}")
        parameters = []
        for setting in settings.split(","):
            target, sep, value = setting.partition("=")
            node, dot, name = target.partition(".")
            if not sep or not dot or not node or not name:
                raise ValueError(f"arm {label}: expected NODE.PARAM=VALUE, got {setting!r}")
            parameters.append((node, name, yaml.safe_load(value)))
        return cls(label, tuple(parameters))


@dataclass(frozen=True)
class EvaluationConfig:
    bag: Path
    trace: LoadTrace
    policies: tuple[str, ...]
    out: Path
    model_dir: Path
    params_file: Path
    budget_ms: float
    budget_source: str = "--budget-ms"  # where the deadline came from, for the report
    duration_s: float | None = None  # per policy; default: the trace's duration
    camera_topic: str = "/camera/image_raw"
    repeats: int = 1  # runs per policy, interleaved (policy order within each round)
    unlabelled: bool = False  # score against the top variant's offline answers instead of the bag's labels
    load_own_session: bool = False  # the trace's stress-ng in a session of its own, not the nodes' (load.stress)
    arms: tuple[Arm, ...] = ()  # AdaScale with other node parameters, each a policy of its own (``Arm``)

    def __post_init__(self) -> None:
        known = (*POLICIES, *(arm.policy for arm in self.arms))
        unknown = set(self.policies) - set(known)
        if unknown:
            raise ValueError(f"unknown policies {sorted(unknown)}; known: {', '.join(known)}")
        if len({arm.label for arm in self.arms}) != len(self.arms):
            raise ValueError("two arms with one label")
        if not self.policies or set(self.policies) == {"oracle"}:
            raise ValueError("give at least one policy to run (the oracle is computed from the others)")
        if not (math.isfinite(self.budget_ms) and self.budget_ms > 0):
            raise ValueError(f"--budget-ms must be > 0, got {self.budget_ms}")
        if self.duration_s is not None and not self.duration_s > 0:
            raise ValueError(f"--duration must be > 0, got {self.duration_s}")
        if self.repeats < 1:
            raise ValueError(f"--repeats must be >= 1, got {self.repeats}")

    @property
    def run_s(self) -> float:
        return self.duration_s if self.duration_s is not None else self.trace.duration_s

    @property
    def runnable(self) -> tuple[str, ...]:
        """The policies that run a graph (all but the oracle)."""
        return tuple(p for p in self.policies if p != "oracle")


def reference_answers(
    bag: Path, camera_topic: str, model_dir: Path, say: Callable[[str], None] = print
) -> tuple[dict[int, int], str]:
    """The top variant's answer to every decodable frame of ``bag``, run offline one frame at a time
    without early exit or deadline: header stamp [ns] -> class id; and that variant's id. The truth of
    an unlabelled recording: accuracy against it is agreement with what the best variant would say."""
    from adascale_ros.harness.bags import camera_images
    from adascale_ros.model.directory import card_input_shape, load_variant_table, read_model_card, reference_variants
    from adascale_ros.runtime.engine import ElasticEngine
    from adascale_ros.runtime.preprocess import Preprocessor

    card = read_model_card(model_dir)
    engine = ElasticEngine.from_model_dir(model_dir, card_input_shape(card))
    top = engine.check_variant(reference_variants(load_variant_table(model_dir))["top"])
    preprocess = Preprocessor.from_card(card)
    answers: dict[int, int] = {}
    skipped = 0
    for stamp, decoded in camera_images(bag, camera_topic):
        if decoded is None:
            skipped += 1
            continue
        answers[stamp] = int(np.argmax(engine.run(preprocess(*decoded, top.resolution), top).probabilities))
    if not answers:
        raise ValueError(f"{bag}: no decodable frames on {camera_topic} ({skipped} skipped)")
    say(f"{bag}: {top.id} answered {len(answers)} frames offline ({skipped} undecodable): the reference")
    return answers, top.id


def camera_offer(config: EvaluationConfig) -> str:
    """The reliability the replay offers the camera topic with (``ValueError`` when the bag lacks it)."""
    from adascale_ros.harness.bags import bag_topics, replay_offer

    topics = bag_topics(config.bag)
    if config.camera_topic not in topics:
        raise ValueError(f"{config.bag}: no topic {config.camera_topic} (it has {', '.join(sorted(topics))})")
    return replay_offer(topics[config.camera_topic])[0]


def ground_truth(config: EvaluationConfig, say: Callable[[str], None] = print) -> tuple[dict[int, int], str]:
    """What results are scored against (header stamp [ns] -> class id) and a phrase saying what it is:
    the bag's labels, or with ``unlabelled`` the top variant's offline answers. Called before any
    policy runs, so a bag without labels fails in seconds, not after the runs."""
    from adascale_ros.harness.bags import read_labels

    if not config.unlabelled:
        return read_labels(config.bag), "the bag's labels"
    answers, top = reference_answers(config.bag, config.camera_topic, config.model_dir, say)
    return answers, f"agreement with {top} run offline (the bag has no labels)"


def read_calibration_report(model_dir: Path) -> dict[str, Any]:
    """The model's calibration report (``ValueError`` saying what to run when it cannot be read)."""
    path = Path(model_dir) / "calibration_report.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read the calibration report ({exc}); run `adascale calibrate`") from exc


def _camera_rate_timings(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The calibration report's camera-rate timings: variant id -> load level -> its figures there."""
    return {e["variant_id"]: e["levels"] for e in report.get("camera_rate", {}).values()}


def _p90_at(timed: dict[str, dict[str, Any]], level: str) -> dict[str, float]:
    """The camera-rate p90 [ms] at ``level`` of every variant the calibration timed there."""
    return {v: float(levels[level]["p90_ms"]) for v, levels in timed.items() if level in levels}


def _most_accurate_within(p90: dict[str, float], accuracy: dict[str, float], deadline_ms: float) -> str | None:
    """The most accurate variant whose p90 met ``deadline_ms`` (ties: the faster), None when none did."""
    meeting = [v for v, ms in p90.items() if ms <= deadline_ms]
    return max(meeting, key=lambda v: (accuracy[v], -p90[v])) if meeting else None


def static_mid(model_dir: Path, trace: LoadTrace, deadline_ms: float) -> tuple[str, str]:
    """static-mid's variant and why: the most accurate of the variants the calibration timed at camera
    rate whose p90 met ``deadline_ms`` at the calibration level of the trace's heaviest phase (the phase
    of the same stress-ng load where static-top ran slowest; every level when no phase was
    calibrated); the fastest of them when none met it."""
    from adascale_ros.model.directory import load_variant_table

    report = read_calibration_report(model_dir)
    timed = _camera_rate_timings(report)
    table = load_variant_table(model_dir)
    top = static_variants(table)["static-top"]
    if top not in timed:
        raise ValueError(f"{model_dir}: the calibration report has no camera-rate timing of {top}")
    loads = {tuple(phase.spec.args()) for phase in trace.phases if not phase.spec.idle}
    levels = [lv["name"] for lv in report["levels"] if tuple(lv["stress_ng"]) in loads and lv["name"] in timed[top]]
    where = f"the heaviest calibrated phase of {trace.name}"
    if not levels:
        levels, where = list(timed[top]), f"the heaviest calibrated level (no phase of {trace.name} was calibrated)"
    heaviest = max(levels, key=lambda name: timed[top][name]["median_ms"])
    accuracy = {row["variant_id"]: row["val_accuracy"] for row in table["variants"]}
    p90 = _p90_at(timed, heaviest)
    chosen = _most_accurate_within(p90, accuracy, deadline_ms)
    if chosen is None:
        fastest = min(p90, key=p90.get)
        return fastest, f"{fastest}: no timed variant met {deadline_ms:g} ms at {heaviest} ({where}); the fastest"
    return chosen, (
        f"{chosen}: the most accurate timed variant within {deadline_ms:g} ms at {heaviest} ({where}),"
        f" p90 {p90[chosen]:.2f} ms in the calibration"
    )


@dataclass(frozen=True)
class LevelReach:
    """At one load level of the calibration: the most accurate variant timed at camera rate whose p90
    met the deadline (None when none did), and the fastest timed variant."""

    level: str
    within: str | None
    within_p90_ms: float | None
    fastest: str
    fastest_p90_ms: float


def deadline_by_level(model_dir: Path, deadline_ms: float) -> list[LevelReach]:
    """Per load level of the model's calibration, which of the variants timed at camera rate met
    ``deadline_ms`` at p90. The timed variants include the cheapest that classifies (fewest FLOPs): at a
    level where none met the deadline, that one did not either."""
    from adascale_ros.model.directory import load_variant_table

    report = read_calibration_report(model_dir)
    timed = _camera_rate_timings(report)
    if not timed:
        raise ValueError(f"{model_dir}: the calibration report has no camera-rate timing; run `adascale calibrate`")
    accuracy = {row["variant_id"]: row["val_accuracy"] for row in load_variant_table(model_dir)["variants"]}
    reach = []
    for level in (lv["name"] for lv in report["levels"]):
        p90 = _p90_at(timed, level)
        if not p90:
            continue
        within = _most_accurate_within(p90, accuracy, deadline_ms)
        fastest = min(p90, key=p90.get)
        reach.append(LevelReach(level, within, None if within is None else p90[within], fastest, p90[fastest]))
    return reach


def calibrated_deadline(model_dir: Path) -> tuple[float, str]:
    """The default deadline [ms], ``DEADLINE_FACTOR`` x static-top's idle p90 at camera rate in the
    model's calibration report, and the sentence that says where it came from; ``ValueError`` when
    the report has no such timing (a calibration made before camera-rate timing was measured)."""
    from adascale_ros.model.directory import load_variant_table

    top = static_variants(load_variant_table(model_dir))["static-top"]
    path = Path(model_dir) / "calibration_report.json"
    report = read_calibration_report(model_dir)
    idle = next((level["name"] for level in report.get("levels", []) if level.get("idle")), None)
    timed = _camera_rate_timings(report).get(top)
    if idle is None or timed is None or idle not in timed:
        raise ValueError(
            f"{path} has no camera-rate timing of {top} at idle: run `adascale calibrate {model_dir}` again,"
            " or give --budget-ms"
        )
    p90 = float(timed[idle]["p90_ms"])
    budget = round(DEADLINE_FACTOR * p90, 2)
    created = report.get("meta", {}).get("created", "?")
    return budget, (
        f"{DEADLINE_FACTOR:g} x static-top's ({top}) idle p90 at camera rate, {p90:.2f} ms, in the model's"
        f" calibration report of {created}"
    )


def run_name(policy: str, repeat: int, repeats: int) -> str:
    """File stem of one run's records and log: the policy, with the repeat number when there are several."""
    return policy if repeats == 1 else f"{policy}-{repeat + 1}"


def static_variants(table: dict[str, Any]) -> dict[str, str]:
    """The fixed variant of static-top and static-smallest, from the variant table (static-mid's
    depends on the trace and the deadline: ``static_mid``)."""
    from adascale_ros.model.directory import cheapest_variant, reference_variants

    return {"static-top": reference_variants(table)["top"], "static-smallest": cheapest_variant(table)}


def static_mid_reason(config: EvaluationConfig, variants: dict[str, str]) -> str | None:
    """Why static-mid ran the variant it ran (None when it did not run)."""
    if "static-mid" not in variants:
        return None
    try:
        chosen, why = static_mid(config.model_dir, config.trace, config.budget_ms)
    except ValueError as exc:
        return f"{variants['static-mid']}, as recorded in the runs ({exc})"
    return why if chosen == variants["static-mid"] else f"{variants['static-mid']}, as recorded in the runs"


def policy_graph(policy: str, config: EvaluationConfig, variants: dict[str, str]) -> list[NodeSpec]:
    """The nodes one policy runs, with the parameters that make it that policy."""
    nodes = {spec.name: spec for spec in node_graph(config.camera_topic, model_dir=str(config.model_dir))}
    monitor, profiler, selector, inference = (
        nodes[name] for name in ("resource_monitor", "profiler", "selector", "elastic_inference")
    )
    if policy in STATIC:  # the resource monitor only records the load for the timeline; one fixed path
        return [monitor, with_parameters(inference, safe_default_variant=variants[policy], early_exit_threshold=0.0)]
    selector = with_parameters(selector, latency_budget_ms=float(config.budget_ms))
    if policy == "adascale":
        return [monitor, profiler, selector, inference]
    arm = next((arm for arm in config.arms if arm.policy == policy), None)
    if arm is not None:
        return arm_graph(arm, [monitor, profiler, selector, inference])
    if policy == "reactive":
        return [
            monitor,
            with_parameters(profiler, resource_aware=False),
            with_parameters(selector, use_forecast=False),
            inference,
        ]
    raise ValueError(f"policy {policy!r} runs no graph")


def arm_graph(arm: Arm, specs: list[NodeSpec]) -> list[NodeSpec]:
    """``specs`` with the arm's parameters set; a node or parameter the graph does not have is refused."""
    import importlib

    by_name = {spec.name: spec for spec in specs}
    for node, name, value in arm.parameters:
        if node not in by_name:
            raise ValueError(f"arm {arm.label}: no node {node!r} (the graph has {', '.join(by_name)})")
        declared = importlib.import_module(by_name[node].module).PARAMETERS
        if name not in declared:
            raise ValueError(f"arm {arm.label}: {node} has no parameter {name!r}")
        default = declared[name].default
        if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)  # 0 for a double parameter: ROS 2 refuses an integer there
        if type(value) is not type(default):
            raise ValueError(f"arm {arm.label}: {node}.{name} is a {type(default).__name__}, got {value!r}")
        by_name[node] = with_parameters(by_name[node], **{name: value})
    return [by_name[spec.name] for spec in specs]


def image_stamp_ns(cdr: bytes) -> int:
    """Header stamp of a serialized sensor_msgs/Image (little- or big-endian CDR) without deserializing it."""
    endian = "<" if cdr[1] & 1 else ">"
    sec, nanosec = struct.unpack_from(f"{endian}iI", cdr, 4)
    return sec * 1_000_000_000 + nanosec


class Recorder:
    """Subscriptions of the evaluation, collecting what one run needs (receive times: monotonic)."""

    def __init__(self, node: Any, camera_topic: str, camera_reliability: str = "reliable") -> None:
        """``camera_reliability``: what the replay offers on the camera topic (the recording's publisher's)."""
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        from adascale_msgs.msg import ElasticClassification, ResourceState, VariantSelection
        from adascale_ros.nodes.common import latched_qos

        reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        self.reset()
        camera = QoSProfile(depth=100, reliability=ReliabilityPolicy[camera_reliability.upper()])
        node.create_subscription(Image, camera_topic, self._on_frame, camera, raw=True)
        node.create_subscription(ElasticClassification, CLASSIFICATION_TOPIC, self._on_result, reliable)
        node.create_subscription(ResourceState, RESOURCE_STATE_TOPIC, self._on_state, 10)
        node.create_subscription(VariantSelection, SELECTION_TOPIC, self._on_selection, latched_qos())
        node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)

    def reset(self) -> None:
        self.frames: list[tuple[float, int]] = []
        self.results: list[tuple[float, Any]] = []
        self.states: list[tuple[float, Any]] = []
        self.selection: deque[Any] = deque(maxlen=1)
        self.diagnostics: dict[str, dict[str, str]] = {}  # node -> its latest /diagnostics values

    def _on_frame(self, data: bytes) -> None:
        try:
            self.frames.append((time.monotonic(), image_stamp_ns(data)))
        except (struct.error, IndexError):
            pass  # not a frame of ours

    def _on_selection(self, msg: Any) -> None:
        self.selection.append(msg)

    def _on_result(self, msg: Any) -> None:
        self.results.append((time.monotonic(), msg))

    def _on_state(self, msg: Any) -> None:
        self.states.append((time.monotonic(), msg))

    def _on_diagnostics(self, msg: Any) -> None:
        from adascale_ros.nodes.diagnostics import statuses_by_node

        self.diagnostics.update(statuses_by_node(msg))

    def run_records(
        self,
        policy: str,
        t0: float,
        duration_s: float,
        phases: list[tuple[float, int]],
        node_cpu: dict[str, float],
    ) -> PolicyRun:
        from adascale_ros.runtime.images import stamp_ns

        frames = [FrameRecord(t - t0, s) for t, s in self.frames if t0 <= t <= t0 + duration_s]
        results = [
            ResultRecord(
                t - t0, stamp_ns(m.header.stamp), m.variant_id, int(m.exit_index),
                int(m.class_ids[0]) if len(m.class_ids) else -1, float(m.latency_ms), bool(m.early_exited),
                bool(m.deadline_exited),
            )
            for t, m in self.results
            if t >= t0
        ]  # fmt: skip
        states = [
            StateRecord(t - t0, m.cpu_util, m.load_index, m.mem_available_mb, m.cpu_freq_mhz)
            for t, m in self.states
            if t0 <= t <= t0 + duration_s
        ]
        return PolicyRun(policy, duration_s, frames, results, states, phases, node_cpu)


class RunFailed(RuntimeError):
    pass


def _wait(node: Any, condition: Callable[[], bool], timeout_s: float, stop: threading.Event, what: str) -> None:
    import rclpy

    deadline = time.monotonic() + timeout_s
    while not condition():
        if stop.is_set():
            return
        if time.monotonic() > deadline:
            raise RunFailed(f"timed out after {timeout_s:g} s waiting for {what}")
        rclpy.spin_once(node, timeout_sec=0.1)


def _check_alive(graph: GraphProcesses, log_name: str) -> bool:
    """False while every node runs (so it can sit in a wait condition); ``RunFailed`` once one exited."""
    if graph.exited():
        raise RunFailed(f"node(s) exited: {graph.exited()} (see {log_name})")
    return False


def _start_replay(config: EvaluationConfig, log: IO[str]) -> subprocess.Popen[bytes]:
    """``adascale replay`` of the bag in a loop, once the inference node and this recorder subscribe."""
    return subprocess.Popen(
        [sys.executable, "-m", "adascale_ros.cli.main", "replay", str(config.bag), "--loop",
         "--topics", config.camera_topic, "--wait-for-subscribers", "2", "--delay", str(REPLAY_DELAY_S)],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip


def _stop_replay(replay: subprocess.Popen[bytes]) -> None:
    if replay.poll() is None:
        replay.send_signal(signal.SIGINT)  # the replay ends its loop, exit 0
        try:
            replay.wait(5.0)
        except subprocess.TimeoutExpired:
            replay.kill()
            replay.wait()


def _start_trace(
    config: EvaluationConfig, t0: float, phases: list[tuple[float, int]], stop: threading.Event
) -> threading.Thread:
    """The load trace in a thread, each phase's start appended to ``phases`` in seconds from ``t0``."""
    thread = threading.Thread(
        target=play_trace,
        kwargs={
            "trace": config.trace,
            "on_phase": lambda i, _: phases.append((time.monotonic() - t0, i)),
            "loop": config.run_s > config.trace.duration_s,
            "should_stop": stop.is_set,
            "own_session": config.load_own_session,
        },
        daemon=True,
    )
    thread.start()
    return thread


def _progress_line(recorder: Recorder, selecting: bool) -> str:
    """The latest resource state, selection and result, for the once-a-second progress line."""
    selection = recorder.selection[-1] if selecting and recorder.selection else None
    line = status_line(recorder.states[-1][1], selection)
    if recorder.results:
        last = recorder.results[-1][1]
        line += f" | ran {last.variant_id} {last.latency_ms:.2f} ms"
    return line


def run_policy(
    policy: str,
    specs: list[NodeSpec],
    config: EvaluationConfig,
    node: Any,
    recorder: Recorder,
    stop: threading.Event,
    say: Callable[[str], None],
    on_tick: Callable[[GraphProcesses], None] | None = None,
    name: str | None = None,
) -> PolicyRun | None:
    """One replay of the bag under the trace with this policy's graph; None when interrupted.

    The graph comes up, the replay starts, and the trace starts with the first replayed frame (t0);
    frames, results and states are recorded until ``config.run_s`` after t0. The trace starts over
    when the run is longer than it. ``on_tick`` is called with the running graph about every 50 ms
    while frames flow (e.g. to sample the nodes' memory). ``name`` (default: the policy) names the
    log file and the progress lines.
    """
    import rclpy

    label = name or policy
    log_dir = config.out / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    recorder.reset()
    selecting = any(s.name == "selector" for s in specs)
    with open(log_dir / f"{label}.log", "w") as log:
        graph = GraphProcesses(specs, config.params_file)
        graph.start(out=log)
        replay: subprocess.Popen[bytes] | None = None
        trace_thread: threading.Thread | None = None
        trace_stop = threading.Event()
        phases: list[tuple[float, int]] = []
        try:
            say(f"[{label}] starting {', '.join(s.name for s in specs)} ...")

            def ready() -> bool:
                came_up = "elastic_inference" in recorder.diagnostics and bool(recorder.states)
                return not _check_alive(graph, log.name) and came_up and (bool(recorder.selection) or not selecting)

            _wait(node, ready, READY_TIMEOUT_S, stop, "the graph to come up")
            if stop.is_set():
                return None
            replay = _start_replay(config, log)
            first_frame = lambda: _check_alive(graph, log.name) or bool(recorder.frames)  # noqa: E731
            _wait(node, first_frame, 60.0, stop, "the first replayed frame")
            if stop.is_set():
                return None
            t0 = recorder.frames[0][0]
            cpu_at_t0 = graph.cpu_seconds()
            trace_thread = _start_trace(config, t0, phases, trace_stop)
            next_status = time.monotonic() + 1.0
            while not stop.is_set() and time.monotonic() < t0 + config.run_s + TAIL_S:
                rclpy.spin_once(node, timeout_sec=0.05)
                _check_alive(graph, log.name)
                if on_tick is not None:
                    on_tick(graph)
                if time.monotonic() >= next_status and recorder.states:
                    next_status += 1.0
                    phase = phases[-1][1] if phases else 0
                    say(
                        f"[{label} {time.monotonic() - t0:5.1f} s, phase {phase}] {_progress_line(recorder, selecting)}"
                    )
            if stop.is_set():
                return None
            elapsed_s, cpu_now = time.monotonic() - t0, graph.cpu_seconds()
            node_cpu = {n: (cpu_now[n] - cpu_at_t0[n]) / elapsed_s for n in cpu_now if n in cpu_at_t0}
            return recorder.run_records(policy, t0, config.run_s, phases, node_cpu)
        finally:
            trace_stop.set()
            if replay is not None:
                _stop_replay(replay)
            if trace_thread is not None:
                trace_thread.join(timeout=10.0)  # stops the phase's stress-ng
            bad = unclean_exits(graph.stop())
            if bad:
                say(f"[{label}] warning: node(s) did not exit cleanly: {bad} (see {log.name})")


def score(
    config: EvaluationConfig,
    runs: dict[str, list[PolicyRun]],
    variants: dict[str, str],
    budgets_ms: Sequence[float] | None = None,
    truth: tuple[dict[int, int], str] | None = None,
) -> dict[str, Any]:
    """Metrics per policy (and the oracle), target checks, report files; returns the report.

    ``runs`` holds each policy's runs, one per repeat; ``budgets_ms`` the budget of each repeat
    (default: ``config.budget_ms`` for all). Every repeat is scored on its own, against its
    budget (the oracle from that repeat's runs); the report's table pools the frames of all
    repeats, and each target says in how many repeats it was met.
    """
    from adascale_ros.model.directory import load_variant_table

    truth_by_stamp, scored_against = truth if truth is not None else ground_truth(config)
    table = load_variant_table(config.model_dir)
    accuracy = {row["variant_id"]: float(row["val_accuracy"]) for row in table["variants"]}
    top_accuracy = {v for v, a in accuracy.items() if a >= max(accuracy.values()) - TOP_ACCURACY_SLACK}
    idle_phases = [phase.spec.idle for phase in config.trace.phases]

    energy_of = _energy_estimator(config.model_dir)
    repeats = min(len(r) for r in runs.values()) if runs else 0
    budgets = list(budgets_ms) if budgets_ms is not None else [float(config.budget_ms)] * repeats
    if len(budgets) < repeats:
        raise ValueError(f"{repeats} repeats but {len(budgets)} budgets")
    budgets = budgets[:repeats]
    run_s = next(iter(runs.values()))[0].duration_s if repeats else config.run_s  # as recorded
    outcomes: dict[str, list[list[FrameOutcome]]] = {p: [] for p in runs}
    phases: dict[str, list[list[tuple[float, int]]]] = {p: [] for p in runs}
    unmatched: dict[str, int] = dict.fromkeys(runs, 0)
    per_repeat = []
    for r in range(repeats):
        metrics = {}
        for policy, policy_runs in runs.items():
            run = policy_runs[r]
            got, lost = frame_outcomes(run, truth_by_stamp, energy_of)
            outcomes[policy].append(got)
            phases[policy].append(run.phases)
            unmatched[policy] += lost
            metrics[policy] = policy_metrics(got, budgets[r], run.duration_s)
        if "oracle" in config.policies and runs:
            chosen = oracle_outcomes({p: outcomes[p][r] for p in runs}, accuracy, budgets[r])
            outcomes.setdefault("oracle", []).append(chosen)
            phases.setdefault("oracle", []).append(next(iter(runs.values()))[r].phases)
            metrics["oracle"] = policy_metrics(chosen, budgets[r], run_s)
        metrics = {p: metrics[p] for p in config.policies if p in metrics}  # the order asked for
        adaptation = phase_groups(outcomes, phases, budgets, idle_phases, top_accuracy, slice(r, r + 1))
        targets_met = [asdict(c) for c in all_targets(metrics, adaptation, [arm.policy for arm in config.arms])]
        per_repeat.append({"policies": metrics, **adaptation, "targets": targets_met})
    pooled = {p: pooled_metrics(outcomes[p], budgets, run_s) for p in config.policies if p in outcomes}
    adaptation = phase_groups(outcomes, phases, budgets, idle_phases, top_accuracy, slice(0, repeats))
    met = [t["name"] for rep in per_repeat for t in rep["targets"] if t["passed"]]
    targets = [
        {**asdict(c), "met_in_runs": met.count(c.name), "runs": repeats}
        for c in all_targets(pooled, adaptation, [arm.policy for arm in config.arms])
    ]
    report = {
        "config": {
            "bag": str(config.bag),
            "trace": config.trace.name,
            "trace_phases": [phase.describe() for phase in config.trace.phases],
            "duration_s": run_s,
            "repeats": repeats,
            "budget_ms": budgets[0] if budgets else config.budget_ms,  # the first round's: the timeline's
            "budgets_ms": budgets,
            "budget_source": config.budget_source,
            "load_session": load_session(config.load_own_session),
            "model_dir": str(config.model_dir),
            "policies": list(config.policies),
            "accuracy_against": scored_against,
            "static_mid": static_mid_reason(config, variants),
            "arms": {arm.policy: arm.settings for arm in config.arms},
        },
        "variants": {p: v for p, v in variants.items() if p in pooled},
        "policies": pooled,
        "results_without_frame": unmatched,
        "targets": targets,
        **adaptation,
        "repeats": per_repeat,
        "phases": {p: phase_metrics(list(zip(outcomes[p], phases[p], budgets, strict=True))) for p in pooled},
        "node_cpu": {p: mean_node_cpu(runs[p]) for p in config.policies if p in runs},
    }
    config.out.mkdir(parents=True, exist_ok=True)
    (config.out / "evaluation.json").write_text(json.dumps(report, indent=1, allow_nan=True) + "\n")
    first = {p: runs[p][0] for p in runs}
    plot_report(first, {p: v[0] for p, v in outcomes.items()}, pooled, budgets[0], config.out)
    (config.out / "evaluation.md").write_text(markdown_report(report))
    return report


def _energy_estimator(model_dir: Path) -> Callable[[str, StateRecord], float] | None:
    from adascale_ros.profiling.predictor import PREDICTOR_DIR, LatencyPredictor

    if not (model_dir / PREDICTOR_DIR).is_dir():
        return None
    predictor = LatencyPredictor.load(model_dir)
    cache: dict[StateRecord, Any] = {}

    def energy_of(variant_id: str, state: StateRecord) -> float:
        if state not in cache:
            cache[state] = predictor.energy_mj(state.vector())
        return float(cache[state][predictor.variant_index(variant_id)])

    return energy_of


def evaluate(config: EvaluationConfig, stop: threading.Event, say: Callable[[str], None] = print) -> dict | None:
    """Run every policy in turn, save the records, score; None when interrupted."""
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    from adascale_ros.model.directory import load_variant_table

    variants = static_variants(load_variant_table(config.model_dir))
    if "static-mid" in config.policies:
        variants["static-mid"], why = static_mid(config.model_dir, config.trace, config.budget_ms)
        say(f"static-mid runs {why}")
    for policy in config.runnable:  # an arm's unknown node or parameter is refused before anything runs
        policy_graph(policy, config, variants)
    camera_reliability = camera_offer(config)
    truth = ground_truth(config, say)
    runs_dir = config.out / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)

    budgets: list[float] = []  # one per round (the same one: fixed before anything ran)

    def save_config() -> None:
        save_run_config(runs_dir, budgets, variants, config.repeats)

    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node("adascale_evaluate")
    runs: dict[str, list[PolicyRun]] = {p: [] for p in config.runnable}
    try:
        recorder = Recorder(node, config.camera_topic, camera_reliability)
        # Round by round, every policy once per round: slow drift of the machine spreads
        # over all policies instead of landing on the ones run last.
        for repeat in range(config.repeats):
            for policy in config.runnable:
                name = run_name(policy, repeat, config.repeats)
                specs = policy_graph(policy, config, variants)
                run = run_policy(policy, specs, config, node, recorder, stop, say, name=name)
                if run is None:
                    say("interrupted: no report written")
                    return None
                run.save(runs_dir / f"{name}.json.gz")
                runs[policy].append(run)
                say(f"[{name}] {len(run.frames)} frames, {len(run.results)} results recorded")
            budgets.append(float(config.budget_ms))
            save_config()
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return score(config, runs, variants, budgets, truth)


def load_runs(config: EvaluationConfig) -> dict[str, list[PolicyRun]]:
    """The runs a finished evaluation saved in ``config.out/runs``, per policy in repeat order."""
    runs_dir = config.out / "runs"
    return {
        p: [PolicyRun.load(runs_dir / f"{run_name(p, r, config.repeats)}.json.gz") for r in range(config.repeats)]
        for p in config.runnable
    }
