"""Publish every example of msg_examples on /examples/<Type> (transient local)
until killed: the far end of the cross-process round-trip test."""

import rclpy
from msg_examples import examples
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

LATCHED = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE)


def main() -> None:
    rclpy.init()
    node = rclpy.create_node("publish_examples")
    publishers = []
    for name, msg in examples().items():
        pub = node.create_publisher(type(msg), f"/examples/{name}", LATCHED)
        pub.publish(msg)
        publishers.append(pub)
    print("published", flush=True)
    try:
        rclpy.spin(node)
    except KeyboardInterrupt:
        pass
    finally:
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
