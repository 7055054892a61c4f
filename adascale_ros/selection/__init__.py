"""Variant selection: tables with B+ tree indexes, the constrained search, stable switching (no ROS here)."""
