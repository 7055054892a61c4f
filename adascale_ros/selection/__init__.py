"""Variant selection: tables with ordered indexes, the constrained search, stable switching (no ROS here)."""
