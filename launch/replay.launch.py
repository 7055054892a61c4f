"""Evaluate on a bag with a real ROS 2 install: the node graph fed by `ros2 bag play`.

    ros2 launch adascale_ros replay.launch.py bag:=<bag dir> [rate:=1.0] [loop:=false] [delay:=2.0] \
        [use_sim_time:=false] [any argument of adascale.launch.py]

use_sim_time:=true also plays the bag's /clock (ros2 bag play --clock). The
labels topic of an `adascale make-bag` bag is played too (it needs adascale_msgs).
"""

from adascale_ros.graph.launch_support import replay_launch_description


def generate_launch_description():  # noqa: ANN201 - launch.LaunchDescription
    return replay_launch_description()
