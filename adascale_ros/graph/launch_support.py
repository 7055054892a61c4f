"""Launch descriptions of the node graph, for the files in launch/ (needs ``launch_ros``: a ROS 2 install).

Every launch file is one call here, so they share the arguments and the node
list, which comes from ``adascale_ros.graph.definition.node_graph`` like ``adascale run``'s.
"""

from __future__ import annotations

from typing import Any

from adascale_ros.graph.definition import BAG_CAMERA_TOPIC, DEFAULT_CAMERA_TOPIC, node_graph
from adascale_ros.package_files import PACKAGE, default_params_file


def graph_arguments(camera_topic: str = DEFAULT_CAMERA_TOPIC) -> dict[str, tuple[str | None, str]]:
    """Launch arguments of the graph: name -> (default, description); no default: required."""
    return {
        "camera_topic": (
            camera_topic,
            "raw image topic, a relative one in the namespace; compressed frames are read from <topic>/compressed",
        ),
        "namespace": ("", "run every node in this namespace (one per robot), below any pushed with PushRosNamespace"),
        "input": ("", "raw or compressed; empty: the parameters file's (raw)"),
        "model_dir": ("", "model directory; empty: the parameters file's (the embedded default model)"),
        "latency_budget_ms": (
            "",
            "the selector's latency budget [ms]; empty: the parameters file's (0: from the camera)",
        ),
        "budget_fraction_of_frame_period": (
            "",
            "with no latency budget, this fraction of the camera's frame period is the budget; empty: the"
            " parameters file's (0.5)",
        ),
        "params_file": (str(default_params_file()), "ROS parameters of every node"),
        "use_sim_time": ("false", "use /clock (true when a bag is played with --clock)"),
        "log_level": ("info", "debug, info, warn or error"),
        "enclave_prefix": ("", "SROS 2: run each node in the enclave <prefix>/<node> (e.g. /adascale); empty: none"),
    }


def _declare(arguments: dict[str, tuple[str | None, str]]) -> list[Any]:
    from launch.actions import DeclareLaunchArgument

    return [
        DeclareLaunchArgument(name, description=text, **({} if default is None else {"default_value": default}))
        for name, (default, text) in arguments.items()
    ]


def _number(text: str) -> float | None:
    """A numeric launch argument; None when empty (the parameters file decides)."""
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"expected a number, got {text!r}") from None


def _graph_nodes(context: Any) -> list[Any]:
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node

    def arg(name: str) -> str:
        return LaunchConfiguration(name).perform(context)

    specs = node_graph(
        arg("camera_topic"),
        model_dir=arg("model_dir"),
        image_input=arg("input"),
        use_sim_time=arg("use_sim_time").lower() in ("true", "1"),
        namespace=arg("namespace"),
        latency_budget_ms=_number(arg("latency_budget_ms")),
        budget_fraction_of_frame_period=_number(arg("budget_fraction_of_frame_period")),
    )

    def ros_args(spec: Any) -> list[str]:
        enclave = ["--enclave", f"{arg('enclave_prefix').rstrip('/')}/{spec.name}"] if arg("enclave_prefix") else []
        return ["--ros-args", "--log-level", arg("log_level"), *enclave]

    return [
        Node(
            package=PACKAGE,
            executable=spec.executable,
            name=spec.name,
            namespace=spec.namespace or None,  # relative: composes with PushRosNamespace
            parameters=[arg("params_file"), spec.parameters],
            remappings=list(spec.remappings),
            arguments=ros_args(spec),
            output="screen",
            emulate_tty=True,
        )
        for spec in specs
    ]


def graph_launch_description(camera_topic: str = DEFAULT_CAMERA_TOPIC) -> Any:
    """The four nodes, with ``camera_topic`` as the camera argument's default."""
    from launch.actions import OpaqueFunction

    from launch import LaunchDescription

    return LaunchDescription([*_declare(graph_arguments(camera_topic)), OpaqueFunction(function=_graph_nodes)])


def _bag_play(context: Any) -> list[Any]:
    from launch.actions import ExecuteProcess
    from launch.substitutions import LaunchConfiguration

    def arg(name: str) -> str:
        return LaunchConfiguration(name).perform(context)

    cmd = ["ros2", "bag", "play", arg("bag"), "--rate", arg("rate"), "--delay", arg("delay")]
    if arg("loop").lower() in ("true", "1"):
        cmd.append("--loop")
    if arg("use_sim_time").lower() in ("true", "1"):
        cmd.append("--clock")
    return [ExecuteProcess(cmd=cmd, output="screen")]


def replay_launch_description() -> Any:
    """The graph fed by ``ros2 bag play`` of a camera bag (``adascale make-bag`` writes one)."""
    from launch.actions import OpaqueFunction

    from launch import LaunchDescription

    arguments = {
        "bag": (None, "the bag to play (required): a directory written by adascale make-bag or ros2 bag record"),
        "rate": ("1.0", "playback speed factor"),
        "loop": ("false", "play the bag again at its end"),
        "delay": ("2.0", "seconds before playing, so the nodes are up"),
        **graph_arguments(BAG_CAMERA_TOPIC),  # the bag's own topic, whatever the namespace
    }
    return LaunchDescription(
        [*_declare(arguments), OpaqueFunction(function=_graph_nodes), OpaqueFunction(function=_bag_play)]
    )
