"""Playing a bag onto the ROS graph, as ``ros2 bag play`` does: ``adascale replay``."""

from __future__ import annotations

import importlib
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from adascale_ros.harness.bags import ReplaySpec

SUBSCRIBER_WAIT_S = 30.0
DEFAULT_CLOCK_HZ = 40.0


def play_bag(
    bag: Path,
    spec: ReplaySpec,
    topics: Sequence[str] | None = None,
    clock_hz: float | None = None,
    wait_for_subscribers: int = 0,
    delay_s: float = 0.0,
    stop: threading.Event | None = None,
    say: Callable[[str], None] = print,
) -> int:
    """Publish ``bag``'s messages (``topics``: only these) at their recorded pace; the count published.

    Each topic is offered with the QoS it was recorded with; with ``clock_hz`` the bag's time goes out
    on /clock (for ``use_sim_time``). Before the first message it waits up to ``SUBSCRIBER_WAIT_S``
    for ``wait_for_subscribers`` subscribers on every topic, then ``delay_s`` for discovery. Setting
    ``stop`` ends the replay. The caller owns signal handling: rclpy installs none here.
    """
    import rclpy
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from rclpy.signals import SignalHandlerOptions

    from adascale_ros.harness.bags import bag_messages, bag_topics, replay, replay_offer

    stop = stop or threading.Event()
    recorded = bag_topics(bag)
    if topics:
        missing = set(topics) - set(recorded)
        if missing:
            raise ValueError(f"{bag}: no topics {sorted(missing)}; it has {sorted(recorded)}")
        recorded = {t: recorded[t] for t in topics}
    if not recorded:
        raise ValueError(f"{bag}: the bag has no topics")
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node("adascale_replay")
    try:
        publishers, offers = {}, []
        for topic in recorded.values():
            package, _, name = topic.msgtype.split("/")
            message_class = getattr(importlib.import_module(f"{package}.msg"), name)
            reliability, durability = replay_offer(topic)
            qos = QoSProfile(
                depth=10,
                reliability=ReliabilityPolicy[reliability.upper()],
                durability=DurabilityPolicy[durability.upper()],
            )
            publishers[topic.name] = node.create_publisher(message_class, topic.name, qos)
            offers.append(f"{topic.name} ({reliability})")
        clock = None
        if clock_hz:
            from rosgraph_msgs.msg import Clock

            clock_publisher = node.create_publisher(
                Clock, "/clock", QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
            )

            def clock(bag_ns: int) -> None:
                msg = Clock()
                msg.clock.sec, msg.clock.nanosec = divmod(bag_ns, 10**9)
                clock_publisher.publish(msg)

        say(f"{bag}: {', '.join(sorted(offers))} at x{spec.rate:g}")
        deadline = time.monotonic() + SUBSCRIBER_WAIT_S
        while (
            not stop.is_set()
            and time.monotonic() < deadline
            and any(p.get_subscription_count() < wait_for_subscribers for p in publishers.values())
        ):
            time.sleep(0.05)
        stop.wait(delay_s)  # discovery: let subscribers match before the first message
        count = replay(
            lambda: bag_messages(bag, publishers),
            lambda m: publishers[m.topic].publish(m.data),
            spec,
            stop.is_set,
            clock=clock,
            clock_hz=clock_hz or DEFAULT_CLOCK_HZ,
        )
        say(f"published {count} messages{' (stopped)' if stop.is_set() else ''}")
        return count
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
