"""Launch the adascale node graph on a ROS 2 install.

    ros2 launch adascale_ros adascale.launch.py [params_file:=...] [log_level:=info]

The graph (nodes, parameters, remappings) comes from adascale_ros.bringup,
the same definition `adascale run` uses.
"""

from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from adascale_ros.bringup import PACKAGE, default_params_file, node_graph
from launch import LaunchDescription


def generate_launch_description() -> LaunchDescription:
    params_file = LaunchConfiguration("params_file")
    log_level = LaunchConfiguration("log_level")
    nodes = [
        Node(
            package=PACKAGE,
            executable=spec.executable,
            name=spec.name,
            parameters=[params_file, spec.parameters],
            remappings=list(spec.remappings),
            arguments=["--ros-args", "--log-level", log_level],
            output="screen",
            emulate_tty=True,
        )
        for spec in node_graph()
    ]
    return LaunchDescription(
        [
            DeclareLaunchArgument("params_file", default_value=str(default_params_file())),
            DeclareLaunchArgument("log_level", default_value="info"),
            *nodes,
        ]
    )
