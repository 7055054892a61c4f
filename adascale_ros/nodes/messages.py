"""Conversions between the domain's objects and the adascale_msgs messages the nodes exchange."""

from __future__ import annotations

import array
import math
from typing import Any

import numpy as np

from adascale_msgs.msg import ResourceState, VariantProfileArray, VariantSelection
from adascale_ros.profiling.predictor import LatencyPredictor
from adascale_ros.resources import ResourceSample
from adascale_ros.selection.selector import Selection


def resource_state_message(sample: ResourceSample, msg: ResourceState) -> ResourceState:
    """Copy a sample's fields into a ResourceState (field names match one to one)."""
    for name in ResourceSample.__dataclass_fields__:
        setattr(msg, name, getattr(sample, name))
    return msg


def float32_array(values: np.ndarray) -> array.array:
    """A float32[] message field from numpy values, in one copy (a list would be checked value by value)."""
    return array.array("f", np.asarray(values, np.float32).tobytes())


def profile_message(predictor: LatencyPredictor, rows: dict[str, dict[str, Any]]) -> VariantProfileArray:
    """The columns that never change, in the predictor's variant order: only the predictions change
    between publications."""
    table = [rows[variant_id] for variant_id in predictor.variant_ids]
    return VariantProfileArray(
        variant_ids=list(predictor.variant_ids),
        exit_indices=[int(row["exit_index"]) for row in table],
        accuracy=[float(row["val_accuracy"]) for row in table],
        params=[int(row["params"]) for row in table],
        flops=[int(row["flops"]) for row in table],
        storage_bytes=[int(row["storage_bytes"]) for row in table],
        memory_accesses=[int(row["memory_accesses"]) for row in table],
        measured_latency_ms=[math.nan] * len(table),
        frame_period_ms=math.nan,
    )


def selection_message(selection: Selection, msg: VariantSelection) -> VariantSelection:
    choice, budgets = selection.choice, selection.budgets
    msg.variant_id = choice.variant_id
    msg.exit_index = choice.exit_index
    msg.predicted_latency_ms = choice.latency_ms
    msg.predicted_energy_mj = choice.energy_mj
    msg.expected_accuracy = choice.accuracy
    msg.latency_budget_ms = budgets.latency_ms
    msg.energy_budget_mj = budgets.energy_mj
    msg.min_accuracy = budgets.min_accuracy
    msg.load_index = selection.load_index
    msg.feasible = choice.feasible
    msg.reason = choice.reason
    return msg
