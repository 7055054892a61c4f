"""One filled-in example of every adascale_msgs message, shared by the test and
the publisher process of the round-trip test (test/publish_examples.py)."""

from __future__ import annotations

from builtin_interfaces.msg import Time
from std_msgs.msg import Header

from adascale_msgs.msg import (
    ElasticClassification,
    FrameLabel,
    ResourceState,
    VariantProfileArray,
    VariantSelection,
)

NAN = float("nan")
HEADER = Header(stamp=Time(sec=1_700_000_000, nanosec=123_456_789), frame_id="camera_optical")


def examples() -> dict[str, object]:
    """Type name -> example. Values are exact in float32 (so equality holds after
    the trip) and NaN is avoided (NaN != NaN)."""
    return {
        "ResourceState": ResourceState(
            header=HEADER,
            cpu_util=0.5,
            cpu_util_per_core=[0.25, 0.75],
            cpu_freq_mhz=2400.0,
            gpu_util=0.125,
            gpu_mem_util=0.5,
            mem_util=0.375,
            mem_available_mb=15_000.0,
            power_w=12.5,
            power_source="rapl+nvml",
            load_index=0.4375,
            load_index_forecast=0.5,
            forecast_horizon_s=1.0,
        ),
        "VariantProfileArray": VariantProfileArray(
            header=HEADER,
            load_index=0.25,
            load_is_forecast=True,
            variant_ids=["e0:dws", "e1:dws-mbc"],
            exit_indices=[0, 1],
            accuracy=[0.75, 0.875],
            params=[12_345, 312_345],
            flops=[1_000_000, 12_000_000_000],  # exceeds 32 bits on purpose
            storage_bytes=[49_380, 1_249_380],
            memory_accesses=[567_890, 4_567_890],
            predicted_latency_ms=[1.25, 3.25],
            predicted_energy_mj=[0.25, 0.5],
            measured_latency_ms=[1.5, 3.5],
        ),
        "VariantSelection": VariantSelection(
            header=HEADER,
            variant_id="e1:dws-mbc",
            exit_index=1,
            predicted_latency_ms=3.25,
            predicted_energy_mj=0.5,
            expected_accuracy=0.875,
            latency_budget_ms=10.0,
            energy_budget_mj=float("inf"),
            min_accuracy=0.75,
            load_index=0.25,
            feasible=True,
            reason="initial selection",
        ),
        "ElasticClassification": ElasticClassification(
            header=HEADER,
            variant_id="e1:dws-mbc",
            exit_index=0,
            early_exited=True,
            class_ids=[7, 5, 9],
            labels=["sneaker", "sandal", "ankle boot"],
            scores=[0.75, 0.125, 0.0625],
            latency_ms=1.5,
            age_ms=4.0,
        ),
        "FrameLabel": FrameLabel(header=HEADER, class_id=9, label="ankle boot"),
    }
