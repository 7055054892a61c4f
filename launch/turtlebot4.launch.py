"""adascale on a TurtleBot 4: the OAK-D's 250x250 RGB preview, /oakd/rgb/preview/image_raw.

    ros2 launch adascale_ros turtlebot4.launch.py [input:=compressed] [model_dir:=...] [params_file:=...]

The arguments are those of adascale.launch.py; only camera_topic's default differs. It is
relative: with namespace:=robot1 (or under PushRosNamespace) the nodes read /robot1/oakd/rgb/preview/image_raw.
"""

from adascale_ros.graph.launch_support import graph_launch_description


def generate_launch_description():  # noqa: ANN201 - launch.LaunchDescription
    return graph_launch_description("oakd/rgb/preview/image_raw")
