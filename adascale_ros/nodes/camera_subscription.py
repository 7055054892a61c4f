"""The camera subscription: newest frame only, its reliability matched to what the camera offers.

A VGA frame is about 0.9 MB, hundreds of UDP fragments; over a best-effort
subscription one lost fragment loses the frame, and most frames of a reliable
publisher (camera drivers and image_transport publish reliable) never arrive.
A reliable subscription gets lost fragments resent, but matches no best-effort
publisher (simulators and some drivers publish sensor-data QoS). So by default
(``auto``) the subscription follows the publishers on the topic, as
``ros2 topic echo`` and rosbag2 do: reliable when every publisher offers it,
best effort otherwise, re-checked once a second so a camera started later or
replaced is followed. History depth 1 keeps newest-frame semantics either way:
with KEEP_LAST a reliable publisher never waits for a slow subscriber.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

RELIABILITY_SETTINGS = ("auto", "reliable", "best_effort")
RECHECK_PERIOD_S = 1.0


def check_reliability_setting(setting: str) -> None:
    """``ValueError`` unless ``setting`` is one of ``RELIABILITY_SETTINGS``."""
    if setting not in RELIABILITY_SETTINGS:
        raise ValueError(f"qos_reliability must be one of {', '.join(RELIABILITY_SETTINGS)}, got {setting!r}")


def matching_reliability(offered: Iterable[ReliabilityPolicy]) -> ReliabilityPolicy | None:
    """Reliable when every publisher offers it, best effort when one does not; None without publishers."""
    offered = list(offered)
    if not offered:
        return None
    if all(policy == ReliabilityPolicy.RELIABLE for policy in offered):
        return ReliabilityPolicy.RELIABLE
    return ReliabilityPolicy.BEST_EFFORT


def image_qos(depth: int, reliability: ReliabilityPolicy) -> QoSProfile:
    """SensorDataQoS (keep last, volatile) with the given depth and reliability."""
    qos = QoSProfile(depth=depth)
    qos.history, qos.durability = qos_profile_sensor_data.history, qos_profile_sensor_data.durability
    qos.reliability = reliability
    return qos


class CameraSubscription:
    """A subscription to ``topic`` with reliability ``setting`` (one of ``RELIABILITY_SETTINGS``)."""

    def __init__(
        self, node: Node, msg_type: Any, topic: str, callback: Callable[[Any], None], depth: int, setting: str
    ) -> None:
        check_reliability_setting(setting)
        self._node, self._msg_type, self._callback, self._depth = node, msg_type, callback, depth
        fixed = {"reliable": ReliabilityPolicy.RELIABLE, "best_effort": ReliabilityPolicy.BEST_EFFORT}
        self.reliability = fixed.get(setting, ReliabilityPolicy.BEST_EFFORT)  # best effort matches any publisher
        self._subscription = node.create_subscription(msg_type, topic, callback, image_qos(depth, self.reliability))
        self.topic_name: str = self._subscription.topic_name
        if setting == "auto":
            self.follow_publishers()
            self._timer = node.create_timer(RECHECK_PERIOD_S, self.follow_publishers)

    def follow_publishers(self) -> None:
        """Subscribe again when the publishers on the topic call for the other reliability."""
        offered = (info.qos_profile.reliability for info in self._node.get_publishers_info_by_topic(self.topic_name))
        wanted = matching_reliability(offered)
        if wanted is None or wanted == self.reliability:
            return
        self._node.destroy_subscription(self._subscription)
        self.reliability = wanted
        qos = image_qos(self._depth, wanted)
        self._subscription = self._node.create_subscription(self._msg_type, self.topic_name, self._callback, qos)
        self._node.get_logger().info(f"camera on {self.topic_name} offers {wanted.name.lower()}: subscribed so")
