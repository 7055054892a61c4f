"""Launch the adascale node graph on a ROS 2 install.

    ros2 launch adascale_ros adascale.launch.py \
        [camera_topic:=camera/image_raw] [namespace:=<robot>] [input:=raw|compressed] \
        [model_dir:=<dir>] [params_file:=<yaml>] [use_sim_time:=false] [log_level:=info] \
        [latency_budget_ms:=<ms>] [budget_fraction_of_frame_period:=<0..1>]

The nodes, parameters and remappings come from adascale_ros.graph.definition, the same
definition `adascale run` uses. `input`, `model_dir` and the two deadline
arguments left empty keep the values of the parameters file (by default the
latency budget is half the camera's measured frame period). Every topic between the nodes is relative, so a
namespace (the argument, or PushRosNamespace around an include of this file)
keeps each robot's graph to itself.
"""

from adascale_ros.graph.launch_support import graph_launch_description


def generate_launch_description():  # noqa: ANN201 - launch.LaunchDescription
    return graph_launch_description()
