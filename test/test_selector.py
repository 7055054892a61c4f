"""The selector: its decision loop (no ROS), its benchmark, and the node over real DDS."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from conftest import call_service, spin_until, subscribe_diagnostics

from adascale_ros.nodes.common import HELPER_NICE
from adascale_ros.selection.benchmark import bench_selector
from adascale_ros.selection.selector import Profile, SelectorConfig, VariantSelector
from adascale_ros.selection.tables import VariantEntry, VariantTables

MODULE = "adascale_ros.nodes.selector"

# A three-variant model: accuracy rises with cost (each classifies: within 90 % of the top's).
ROWS = [
    ("e0:res", 0, ["res"], 0.82, 1_000_000),
    ("e1:res-res", 1, ["res", "res"], 0.86, 2_000_000),
    ("e2:res-res-res", 2, ["res", "res", "res"], 0.90, 3_000_000),
]
IDLE = {"e0:res": (2.0, 1.0), "e1:res-res": (5.0, 2.0), "e2:res-res-res": (9.0, 3.0)}
LOADED = {v: (lat * 2.0, en * 2.0) for v, (lat, en) in IDLE.items()}  # 4, 10, 18 ms

PARAMS = {
    "objective": "max_accuracy",
    "latency_budget_ms": 0.0,
    "energy_budget_mj": 0.0,
    "min_accuracy": 0.0,
    "alpha": 1.0,
    "beta": 0.0,
    "dwell_s": 0.0,
    "max_dwell_s": 0.0,
    "margin": 0.005,
    "latency_headroom": 0.0,
    "use_forecast": True,
    "profile_timeout_s": 2.0,
    "budget_fraction_of_frame_period": 0.0,
}


def entries() -> list[VariantEntry]:
    return [VariantEntry(v, e, tuple(ops), acc, flops=flops) for v, e, ops, acc, flops in ROWS]


def selector(**overrides) -> VariantSelector:
    return VariantSelector(VariantTables(entries()), SelectorConfig.from_values(PARAMS | overrides), "e0:res")


def profile(
    at_s: float, load: float, predictions: dict, measured: dict | None = None, frame_period_ms: float = math.nan
) -> Profile:
    return Profile(at_s, load, predictions, measured or {}, frame_period_ms)


def test_config_from_parameters_validates_with_a_reason():
    config = SelectorConfig.from_values(PARAMS | {"latency_budget_ms": 0.0, "energy_budget_mj": 5.0})
    assert math.isinf(config.budgets.latency_ms) and config.budgets.energy_mj == 5.0  # 0: no budget
    for bad, word in [
        ({"latency_budget_ms": -1.0}, "latency_budget_ms"),
        ({"energy_budget_mj": math.nan}, "energy_budget_mj"),
        ({"min_accuracy": 1.2}, "min_accuracy"),
        ({"objective": "fastest"}, "objective"),
        ({"profile_timeout_s": 0.0}, "profile_timeout_s"),
        ({"dwell_s": -0.5}, "dwell_s"),
        ({"dwell_s": 2.0, "max_dwell_s": 1.0}, "max_dwell_s"),
        ({"latency_headroom": 1.0}, "latency_headroom"),
        ({"budget_fraction_of_frame_period": 1.5}, "budget_fraction_of_frame_period"),
        ({"budget_fraction_of_frame_period": -0.1}, "budget_fraction_of_frame_period"),
    ]:
        with pytest.raises(ValueError, match=word):
            SelectorConfig.from_values(PARAMS | bad)


def test_safe_default_until_the_first_profile():
    core = selector(latency_budget_ms=10.0)
    assert core.in_force.choice.variant_id == "e0:res" and "safe default" in core.in_force.choice.reason
    first = core.on_profile(profile(0.0, 0.1, IDLE), is_forecast=False)
    assert first.choice.variant_id == "e2:res-res-res" and first.choice.feasible
    assert first.choice.exit_index == 2
    # The same answer again is not a new selection.
    assert core.on_profile(profile(0.1, 0.1, IDLE), is_forecast=False) is None
    with pytest.raises(ValueError, match="safe default"):
        VariantSelector(VariantTables(entries()), SelectorConfig(), "e9:nope")


def test_acts_on_the_forecast_when_it_predicts_more_load():
    core = selector(latency_budget_ms=10.0)
    core.on_profile(profile(0.0, 0.2, IDLE), is_forecast=False)
    # The forecaster expects load 0.8: at that load e2 takes 18 ms, so switch now (e1: 10 ms).
    chosen = core.on_profile(profile(0.1, 0.8, LOADED), is_forecast=True)
    assert chosen.choice.variant_id == "e1:res-res" and chosen.load_is_forecast
    assert "forecast load 0.80" in chosen.choice.reason
    # A forecast of less load than now is not acted on ...
    core = selector(latency_budget_ms=10.0)
    core.on_profile(profile(0.0, 0.8, LOADED), is_forecast=False)
    assert core.on_profile(profile(0.1, 0.2, IDLE), is_forecast=True) is None
    assert core.in_force.choice.variant_id == "e1:res-res"
    # ... nor one that is older than the profile timeout, nor any with use_forecast off.
    assert core.acting_profile(0.5)[1] is False
    core = selector(latency_budget_ms=10.0, use_forecast=False)
    core.on_profile(profile(0.0, 0.2, IDLE), is_forecast=False)
    assert core.on_profile(profile(0.1, 0.8, LOADED), is_forecast=True) is None


def test_measured_latency_over_budget_downgrades():
    core = selector(latency_budget_ms=10.0)
    core.on_profile(profile(0.0, 0.2, IDLE), is_forecast=False)
    # Predictions still say 9 ms, but the running variant measures 14 ms: r = 1.56,
    # so the choice is made within 10 / 1.56 = 6.4 ms.
    chosen = core.on_profile(profile(0.1, 0.2, IDLE, {"e2:res-res-res": 14.0}), is_forecast=False)
    assert chosen.choice.variant_id == "e1:res-res" and "measured latency 14.00" in chosen.choice.reason


def test_budget_changes_take_effect_at_once_and_are_republished():
    core = selector()
    core.on_profile(profile(0.0, 0.2, IDLE), is_forecast=False)
    assert core.in_force.choice.variant_id == "e2:res-res-res"
    tighter = core.reconfigure(SelectorConfig.from_values(PARAMS | {"latency_budget_ms": 6.0}), 0.1)
    assert tighter.choice.variant_id == "e1:res-res" and tighter.budgets.latency_ms == 6.0
    # Same variant, new budgets: published so consumers see the budgets in force.
    same = core.reconfigure(SelectorConfig.from_values(PARAMS | {"latency_budget_ms": 7.0}), 0.2)
    assert same.choice.variant_id == "e1:res-res" and same.budgets.latency_ms == 7.0
    # Nothing feasible: the fastest, flagged.
    none = core.reconfigure(SelectorConfig.from_values(PARAMS | {"latency_budget_ms": 1.0}), 0.3)
    assert none.choice.variant_id == "e0:res" and not none.choice.feasible


def test_without_a_budget_the_budget_follows_the_camera():
    core = selector(budget_fraction_of_frame_period=0.5)
    # No frame period measured yet: no latency budget, the most accurate variant.
    first = core.on_profile(profile(0.0, 0.2, IDLE), is_forecast=False)
    assert first.choice.variant_id == "e2:res-res-res" and math.isinf(first.budgets.latency_ms)
    assert first.budget_source == "none until the camera's frame period is measured"
    # A 20 ms camera: 10 ms, e2 (9 ms) keeps up; a budget that appears is published at once.
    known = core.on_profile(profile(0.1, 0.2, IDLE, frame_period_ms=20.0), is_forecast=False)
    assert known.choice.variant_id == "e2:res-res-res" and known.budgets.latency_ms == 10.0
    assert known.budget_source == "0.5 x the camera's 20.0 ms frame period"
    # The camera's jitter is no new budget: nothing to publish, the budget in force stays.
    assert core.on_profile(profile(0.2, 0.2, IDLE, frame_period_ms=20.6), is_forecast=False) is None
    assert core.in_force.budgets.latency_ms == 10.0
    # A faster camera (12 ms) leaves 6 ms: e1 (5 ms).
    faster = core.on_profile(profile(0.3, 0.2, IDLE, frame_period_ms=12.0), is_forecast=False)
    assert faster.choice.variant_id == "e1:res-res" and faster.budgets.latency_ms == 6.0


def test_a_configured_budget_overrides_the_camera_and_a_zero_fraction_means_none():
    fixed = selector(latency_budget_ms=6.0, budget_fraction_of_frame_period=0.5)
    chosen = fixed.on_profile(profile(0.0, 0.2, IDLE, frame_period_ms=40.0), is_forecast=False)
    assert chosen.choice.variant_id == "e1:res-res" and chosen.budgets.latency_ms == 6.0
    assert chosen.budget_source == "latency_budget_ms"
    # A fixed budget's small change is still a new budget.
    moved = fixed.reconfigure(SelectorConfig.from_values(PARAMS | {"latency_budget_ms": 6.1}), 0.1)
    assert moved is not None and moved.budgets.latency_ms == 6.1
    off = selector(budget_fraction_of_frame_period=0.0)
    chosen = off.on_profile(profile(0.0, 0.2, IDLE, frame_period_ms=4.0), is_forecast=False)
    assert chosen.choice.variant_id == "e2:res-res-res" and chosen.budget_source == "none"


def test_staleness():
    core = selector()
    assert not core.stale(100.0)  # nothing received yet: not stale, just waiting
    core.on_profile(profile(0.0, 0.2, IDLE), is_forecast=False)
    assert not core.stale(1.9) and core.stale(2.1)


def test_benchmark_compares_four_indexes_that_agree():
    table = [VariantEntry(f"v{i:02d}", 0, ("res",), round(0.5 + i / 150, 3), flops=(i + 1) * 10**5) for i in range(60)]
    report = bench_selector(table, decisions=60, synthetic=300)
    assert set(report["tables"]) == {"default", "synthetic_300"}
    for result in report["tables"].values():
        assert set(result["methods"]) == {"sorted_on_query", "btree", "sorted_array", "linear_scan"}
        assert result["answers_agree"]
        for figures in result["methods"].values():
            assert 0 < figures["min_us"] <= figures["median_us"] <= figures["p99_us"]
    shipped = report["tables"]["default"]["methods"]["sorted_on_query"]
    assert (report["median_us"], report["full_profile_ms"]) == (shipped["median_us"], shipped["full_profile_ms"])
    json.dumps(report)


# --- the node, in its own process, over DDS ----------------------------------------------------


def write_model_dir(tmp_path):
    rows = [
        {"variant_id": v, "exit_index": e, "operators": ops, "accuracy": acc, "val_accuracy": acc, "flops": flops}
        for v, e, ops, acc, flops in ROWS
    ]
    (tmp_path / "variants.json").write_text(json.dumps({"format_version": 1, "variants": rows}))
    return tmp_path


def profile_array(
    load: float,
    predictions: dict,
    forecast: bool = False,
    measured: dict | None = None,
    frame_period_ms: float = math.nan,
):
    from adascale_msgs.msg import VariantProfileArray

    return VariantProfileArray(
        load_index=load,
        load_is_forecast=forecast,
        frame_period_ms=frame_period_ms,
        variant_ids=list(predictions),
        predicted_latency_ms=[float(latency) for latency, _ in predictions.values()],
        predicted_energy_mj=[float(energy) for _, energy in predictions.values()],
        measured_latency_ms=[float((measured or {}).get(v, math.nan)) for v in predictions],
    )


class SelectorHarness:
    """The selector node in a child process, seen from a test node."""

    def __init__(self, tmp_path, ros_node, start_process, **params):
        from rclpy.parameter_client import AsyncParameterClient

        from adascale_msgs.msg import VariantProfileArray
        from adascale_ros.graph.definition import PROFILES_TOPIC

        args = ["-m", MODULE, "--ros-args", "-r", f"~/profiles:={PROFILES_TOPIC}"]
        args += ["-p", f"model_dir:={write_model_dir(tmp_path)}"]
        for name, value in params.items():
            args += ["-p", f"{name}:={value}"]
        self.node = ros_node
        self.process = start_process(args)
        self.profiles = ros_node.create_publisher(VariantProfileArray, PROFILES_TOPIC, 10)
        self.diagnostics = subscribe_diagnostics(ros_node, "selector")
        self.params = AsyncParameterClient(ros_node, "selector")
        assert self.params.wait_for_services(timeout_sec=20.0), "selector did not come up"

    def subscribe(self) -> list:
        from adascale_msgs.msg import VariantSelection
        from adascale_ros.graph.definition import SELECTION_TOPIC
        from adascale_ros.nodes.common import latched_qos

        received: list = []
        self.node.create_subscription(VariantSelection, SELECTION_TOPIC, received.append, latched_qos())
        return received

    def publish_until(self, msg, condition, timeout_s: float = 10.0) -> bool:
        """Publish ``msg`` every 0.1 s (as the profiler would) until ``condition()``."""

        def step() -> bool:
            self.profiles.publish(msg)
            return spin_until(self.node, condition, 0.1)

        return spin_until(self.node, step, timeout_s)

    def set(self, **params):
        from rclpy.parameter import Parameter

        parameters = [Parameter(k, value=v) for k, v in params.items()]
        return call_service(self.node, lambda: self.params.set_parameters(parameters)).results[0]


@pytest.mark.ros
def thread_niceness(pid: int) -> set[int]:
    """The niceness of every thread of a process (field 19 of /proc/<pid>/task/<tid>/stat)."""
    values = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        values.add(int((task / "stat").read_text().rsplit(")", 1)[1].split()[16]))
    return values


def test_raising_niceness_reaches_every_thread_and_never_lowers_it(start_process):
    code = (
        "import threading, time\n"
        "from adascale_ros.nodes.common import raise_niceness\n"
        "threading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n"
        "raise_niceness(7); raise_niceness(3)\n"
        "print('raised', flush=True); time.sleep(30)\n"
    )
    child = start_process(["-c", code])
    assert child.stdout.readline().strip() == "raised"
    assert thread_niceness(child.pid) == {7}


def test_node_follows_load_and_budgets(tmp_path, ros_node, start_process):
    harness = SelectorHarness(tmp_path, ros_node, start_process, latency_budget_ms=10.0, latency_headroom=0.0)
    # The helper nodes yield the CPU to the classifier: every thread, the executor's and DDS's too.
    assert thread_niceness(harness.process.pid) == {HELPER_NICE}
    # Subscribing after the node published: transient local hands over the safe default.
    selections = harness.subscribe()
    assert spin_until(ros_node, lambda: selections, timeout_s=10.0), "late joiner got no selection"
    assert selections[0].variant_id == "e0:res" and "safe default" in selections[0].reason

    def latest(variant_id: str):
        return lambda: selections and selections[-1].variant_id == variant_id

    assert harness.publish_until(profile_array(0.1, IDLE), latest("e2:res-res-res"))
    chosen = selections[-1]
    assert chosen.feasible and chosen.exit_index == 2 and chosen.predicted_latency_ms == 9.0
    assert chosen.latency_budget_ms == 10.0 and chosen.load_index == pytest.approx(0.1)

    # Load doubles every prediction: e2 (18 ms) and e1 (10 ms is within budget) ...
    assert harness.publish_until(profile_array(0.7, LOADED), latest("e1:res-res"))
    assert "breaks its budget" in selections[-1].reason
    # ... a tighter budget takes effect without a new profile.
    assert harness.set(latency_budget_ms=5.0).successful
    assert spin_until(ros_node, latest("e0:res"), timeout_s=5.0)
    # A negative budget is refused with the reason; the budget in force stays.
    refused = harness.set(latency_budget_ms=-3.0)
    assert not refused.successful and "latency_budget_ms out of range" in refused.reason
    assert selections[-1].latency_budget_ms == 5.0

    # Load falls: with dwell 0 the upgrade follows the next profile.
    assert harness.set(latency_budget_ms=10.0).successful
    assert harness.publish_until(profile_array(0.1, IDLE), latest("e2:res-res-res"))
    # The forecast of a load step makes it downgrade before the load arrives.
    forecast = profile_array(0.8, LOADED, forecast=True)
    assert harness.publish_until(forecast, latest("e1:res-res"))
    assert "forecast" in selections[-1].reason and selections[-1].load_index == pytest.approx(0.8)

    # Budget 0: half the camera's frame period (the shipped default fraction), 12 ms from a 24 ms camera.
    assert harness.set(latency_budget_ms=0.0).successful
    camera = profile_array(0.1, IDLE, frame_period_ms=24.0)
    # (once the forecast above is older than the profile timeout: e2 at 9 ms keeps up)
    in_budget = latest("e2:res-res-res")
    assert harness.publish_until(camera, lambda: in_budget() and selections[-1].latency_budget_ms == 12.0)

    def budget_source() -> str:
        return (
            {kv.key: kv.value for kv in harness.diagnostics[-1].values}.get("budget_source", "")
            if harness.diagnostics
            else ""
        )

    assert spin_until(ros_node, lambda: "camera" in budget_source(), timeout_s=5.0)
    print("selector diagnostics: budget", budget_source())
    values = {kv.key: kv.value for kv in harness.diagnostics[-1].values}
    assert 2.0 <= float(values["dwell_in_force_s"]) <= 8.0  # between dwell_s and max_dwell_s


@pytest.mark.ros
def test_node_flags_stale_profiles_and_counts_bad_ones(tmp_path, ros_node, start_process):
    from diagnostic_msgs.msg import DiagnosticStatus

    harness = SelectorHarness(tmp_path, ros_node, start_process, profile_timeout_s=1.0)
    selections = harness.subscribe()
    harness.publish_until(profile_array(0.1, IDLE | {"e7:ghost": (1.0, 1.0)}), lambda: len(selections) >= 2)
    assert selections[-1].variant_id == "e2:res-res-res"
    harness.profiles.publish(profile_array(0.1, {}))  # empty: rejected
    ragged = profile_array(0.1, IDLE)
    ragged.predicted_energy_mj = ragged.predicted_energy_mj[:-1]  # a column one short: rejected
    harness.profiles.publish(ragged)

    def values():
        return {kv.key: kv.value for kv in harness.diagnostics[-1].values} if harness.diagnostics else {}

    assert spin_until(ros_node, lambda: values().get("profiles_rejected") == "2", timeout_s=5.0)
    assert int(values()["unknown_variant_ids"]) >= 1
    # No profile for longer than profile_timeout_s: WARN, and the last choice stays in force.
    assert spin_until(
        ros_node, lambda: harness.diagnostics and harness.diagnostics[-1].level == DiagnosticStatus.WARN, 5.0
    )
    assert "stale" in harness.diagnostics[-1].message and values()["variant"] == "e2:res-res-res"
    harness.process.terminate()
    assert harness.process.wait(5) == 0


def test_node_refuses_to_start_on_a_bad_model_dir_or_parameter(tmp_path, start_process):
    for args, message in [
        (["-p", f"model_dir:={tmp_path / 'missing'}"], "variants.json: not found"),
        (["-p", f"model_dir:={write_model_dir(tmp_path)}", "-p", "energy_budget_mj:=-1.0"], "energy_budget_mj"),
        (["-p", f"model_dir:={write_model_dir(tmp_path)}", "-p", "safe_default_variant:=e5:x"], "safe default"),
    ]:
        process = start_process(["-m", MODULE, "--ros-args", *args])
        out, _ = process.communicate(timeout=20)
        assert process.returncode == 2 and message in out, out


def test_a_variant_that_does_not_classify_is_never_chosen_and_overload_runs_the_safe_default():
    # A fourth variant, fastest of all, answering near chance (its branches did not learn).
    rows = [*entries(), VariantEntry("e0:dws", 0, ("dws",), 0.12, flops=500_000)]
    core = VariantSelector(
        VariantTables(rows), SelectorConfig.from_values(PARAMS | {"latency_budget_ms": 6.0}), "e0:res"
    )
    assert core.accuracy_floor == pytest.approx(0.9 * 0.90)
    predictions = {**IDLE, "e0:dws": (0.5, 0.2)}
    core.on_profile(profile(0.0, 0.1, predictions), is_forecast=False)
    assert core.in_force.choice.variant_id == "e1:res-res"  # the most accurate within 6 ms
    assert core.in_force.budgets.min_accuracy == pytest.approx(0.81)  # the floor, shown in every selection
    # Overload: only the near-chance variant would still fit; the safe default runs instead, and stays.
    overloaded = {v: (lat * 10, en) for v, (lat, en) in IDLE.items()} | {"e0:dws": (0.5, 0.2)}
    for t in range(5):
        core.on_profile(profile(1.0 + t, 0.9, overloaded), is_forecast=False)
        assert core.in_force.choice.variant_id == "e0:res" and not core.in_force.choice.feasible
    assert "safe default" in core.in_force.choice.reason
