"""The node graph, defined once.

The launch files (for a ROS 2 install with ``launch_ros``) and ``adascale run``
(the local runner, which needs only rclpy) both build the graph from
``node_graph()``, so they cannot disagree about which nodes run, with which
parameters and remappings.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

from adascale_ros.nodes.entry import NODE_MODULES

ENTRY_MODULE = "adascale_ros.nodes.entry"


@dataclass(frozen=True)
class NodeSpec:
    """One node of the graph."""

    name: str
    executable: str  # console script, as ``ros2 run adascale_ros <executable>``; also ``python -m ENTRY_MODULE``
    module: str  # python module of the node (its PARAMETERS and main)
    remappings: tuple[tuple[str, str], ...] = ()
    parameters: dict[str, object] = field(default_factory=dict)
    namespace: str = ""  # relative, so that a launch file's PushRosNamespace still applies above it

    def command(self, params_file: Path | None = None, log_level: str = "info") -> list[str]:
        """The command line the local runner starts this node with."""
        cmd = [sys.executable, "-m", ENTRY_MODULE, self.executable, "--ros-args", "-r", f"__node:={self.name}"]
        if self.namespace:
            cmd += ["-r", f"__ns:=/{self.namespace}"]
        cmd += ["--log-level", log_level]
        if params_file is not None:
            cmd += ["--params-file", str(params_file)]
        for name, value in self.parameters.items():
            text = str(value).lower() if isinstance(value, bool) else str(value)  # YAML booleans
            cmd += ["-p", f"{name}:={text}"]
        for src, dst in self.remappings:
            cmd += ["-r", f"{src}:={dst}"]
        return cmd


# Topics between the nodes, by role, as seen from outside the nodes. Relative: a graph started in a
# namespace (one per robot) talks only within it, and a node in the same namespace finds them by these.
RESOURCE_STATE_TOPIC = "resource_monitor/state"
PROFILES_TOPIC = "profiler/profiles"
SELECTION_TOPIC = "selector/selection"
CLASSIFICATION_TOPIC = "elastic_inference/classification"
DEFAULT_CAMERA_TOPIC = "camera/image_raw"  # /camera/image_raw, or /<namespace>/camera/image_raw
BAG_CAMERA_TOPIC = f"/{DEFAULT_CAMERA_TOPIC}"  # what a camera bag names (a bag's topics are absolute)


def check_namespace(namespace: str) -> str:
    """``namespace`` without its leading and trailing slashes; ``ValueError`` unless it is a valid ROS
    namespace (empty: none)."""
    from rclpy.exceptions import InvalidNamespaceException
    from rclpy.validate_namespace import validate_namespace

    relative = namespace.strip("/")
    if relative:
        try:
            validate_namespace(f"/{relative}")
        except InvalidNamespaceException as exc:
            raise ValueError(f"invalid namespace {namespace!r}: {str(exc).splitlines()[0]}") from None
    return relative


def node_graph(
    camera_topic: str = DEFAULT_CAMERA_TOPIC,
    model_dir: str = "",
    image_input: str = "",
    use_sim_time: bool | None = None,
    namespace: str = "",
    latency_budget_ms: float | None = None,
    budget_fraction_of_frame_period: float | None = None,
) -> list[NodeSpec]:
    """The nodes of the adaptation loop, in start order.

    ``camera_topic`` is the raw image topic (relative ones resolve in the
    namespace); compressed frames are read from ``<camera_topic>/compressed``
    (image_transport's naming) when the inference node's ``input`` parameter
    says so. ``model_dir`` (for every node that reads the model),
    ``image_input`` (raw or compressed) and ``use_sim_time`` override the
    parameters file when given; empty or None leaves its values, as do
    ``latency_budget_ms`` and ``budget_fraction_of_frame_period`` (the
    selector's deadline) when None. ``namespace`` puts every node, and so every
    topic between them, under it.
    """
    if image_input not in ("", "raw", "compressed"):
        raise ValueError(f"input must be raw or compressed, got {image_input!r}")
    relative = check_namespace(namespace)
    specs = [replace(s, namespace=relative) for s in _graph(camera_topic)]
    if model_dir:
        specs = [with_parameters(s, model_dir=model_dir) if s.name in MODEL_READERS else s for s in specs]
    if image_input:
        specs = [with_parameters(s, input=image_input) if s.name == "elastic_inference" else s for s in specs]
    if use_sim_time is not None:
        specs = [with_parameters(s, use_sim_time=use_sim_time) for s in specs]
    deadline = {
        "latency_budget_ms": latency_budget_ms,
        "budget_fraction_of_frame_period": budget_fraction_of_frame_period,
    }
    deadline = {name: float(value) for name, value in deadline.items() if value is not None}
    if deadline:
        specs = [with_parameters(s, **deadline) if s.name == "selector" else s for s in specs]
    return specs


MODEL_READERS = ("profiler", "selector", "elastic_inference")


def with_parameters(spec: NodeSpec, **parameters: object) -> NodeSpec:
    """``spec`` with these parameters set on top of its own."""
    return replace(spec, parameters={**spec.parameters, **parameters})


def _graph(camera_topic: str) -> list[NodeSpec]:
    return [
        NodeSpec(
            name="resource_monitor",
            executable="resource_monitor",
            module=NODE_MODULES["resource_monitor"],
        ),
        NodeSpec(
            name="profiler",
            executable="profiler",
            module=NODE_MODULES["profiler"],
            remappings=(
                ("~/resource_state", RESOURCE_STATE_TOPIC),
                ("~/classification", CLASSIFICATION_TOPIC),
                ("~/profiles", PROFILES_TOPIC),
            ),
        ),
        NodeSpec(
            name="selector",
            executable="selector",
            module=NODE_MODULES["selector"],
            remappings=(("~/profiles", PROFILES_TOPIC),),
        ),
        NodeSpec(
            name="elastic_inference",
            executable="elastic_inference",
            module=NODE_MODULES["elastic_inference"],
            remappings=(
                ("~/image", camera_topic),
                ("~/image/compressed", f"{camera_topic}/compressed"),
                ("~/selection", SELECTION_TOPIC),
            ),
        ),
    ]
