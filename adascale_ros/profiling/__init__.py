"""Performance profiling: latency measurement and prediction (no ROS here)."""
