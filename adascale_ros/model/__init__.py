"""The elastic multi-exit network and everything that builds or measures it (no ROS here)."""
