"""Camera frames to classifications: image conversion, pre-processing, elastic execution (no ROS here)."""
