"""Evaluation: scoring of recorded runs, the oracle, the policies' graphs, and `adascale evaluate` end to end."""

from __future__ import annotations

import json
import math
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, replace

import pytest
from conftest import REPO_ROOT, write_robot_recording

from adascale_ros.harness.evaluation import (
    DEADLINE_FACTOR,
    Arm,
    EvaluationConfig,
    calibrated_deadline,
    deadline_by_level,
    image_stamp_ns,
    load_runs,
    policy_graph,
    reference_answers,
    run_name,
    score,
    static_mid,
    static_variants,
)
from adascale_ros.harness.metrics import (
    FrameOutcome,
    adaptation_times,
    frame_outcomes,
    mean_node_cpu,
    oracle_outcomes,
    phase_metrics,
    policy_metrics,
    pooled_metrics,
)
from adascale_ros.harness.plots import plot_report
from adascale_ros.harness.records import FrameRecord, PolicyRun, ResultRecord, StateRecord
from adascale_ros.harness.report import markdown_report
from adascale_ros.harness.targets import all_targets, check_targets
from adascale_ros.load.traces import LoadTrace, resolve_trace
from adascale_ros.model.directory import cheapest_variant, load_variant_table, reference_variants
from adascale_ros.package_files import default_params_file

DEFAULT_MODEL = REPO_ROOT / "models" / "default"
ROBOT_MODEL = REPO_ROOT / "models" / "lite0-fashion-mnist"
MS = 1_000_000  # ns


def hand_made_run() -> tuple[PolicyRun, dict[int, int]]:
    """Six frames at 10 Hz: two right on time, one late, one wrong, one dropped, one answered twice."""
    truth = {s * 100 * MS: s % 3 for s in range(6)}
    frames = [FrameRecord(0.1 * s, s * 100 * MS) for s in range(6)]
    results = [
        ResultRecord(0.01, 0, "e0:dws", 0, 0, 1.0),
        ResultRecord(0.11, 100 * MS, "e0:dws", 0, 1, 1.5),
        ResultRecord(0.21, 200 * MS, "e1:res-res", 1, 2, 3.0),  # late
        ResultRecord(0.31, 300 * MS, "e1:res-res", 0, 2, 1.2, True),  # wrong (the label is 0), at an early exit
        # frame 4 dropped
        ResultRecord(0.51, 500 * MS, "e0:dws", 0, 2, 0.8),
        ResultRecord(0.52, 500 * MS, "e0:dws", 0, 2, 0.8),  # a duplicate counts once
        ResultRecord(0.60, 999 * MS, "e0:dws", 0, 1, 0.8),  # no such frame
    ]
    states = [StateRecord(0.0, 0.1, 0.1, 1000.0, math.nan), StateRecord(0.25, 0.9, 0.7, 1000.0, math.nan)]
    node_cpu = {"elastic_inference": 0.045, "selector": 0.0625}
    return PolicyRun("adascale", 0.6, frames, results, states, [(0.0, 0), (0.25, 1)], node_cpu), truth


def test_metrics_of_a_hand_made_run():
    run, truth = hand_made_run()
    energy_calls = []

    def energy_of(variant_id: str, state: StateRecord) -> float:
        energy_calls.append((variant_id, state.load_index))
        return 2.0 if state.load_index > 0.5 else 1.0

    outcomes, unmatched = frame_outcomes(run, truth, energy_of)
    assert unmatched == 1
    assert [o.dropped for o in outcomes] == [False, False, False, False, True, False]
    assert [o.correct for o in outcomes if not o.dropped] == [True, True, True, False, True]
    assert ("e1:res-res", 0.1) in energy_calls  # the state at the result's time
    assert ("e0:res", 0.7) in energy_calls  # the early exit's energy: the path it ran
    m = policy_metrics(outcomes, budget_ms=2.0, duration_s=0.6)
    assert (m["frames"], m["classified"], m["dropped"], m["late"]) == (6, 5, 1, 1)
    assert m["accuracy"] == pytest.approx(4 / 5)
    assert m["deadline_miss_rate"] == pytest.approx(2 / 6)  # one late + one dropped
    assert m["latency_mean_ms"] == pytest.approx((1.0 + 1.5 + 3.0 + 1.2 + 0.8) / 5)
    assert m["latency_p50_ms"] == pytest.approx(1.2)
    assert m["switches"] == 2 and m["switches_per_min"] == pytest.approx(2 / 0.01)
    assert m["energy_mj_per_frame"] == pytest.approx((1 + 1 + 1 + 2 + 2) / 5)
    assert m["frames_per_exit"] == {"0": 4, "1": 1} and m["early_exits"] == 1


def test_looping_replay_results_go_to_the_nearest_frame_with_their_stamp():
    truth = {0: 1}
    frames = [FrameRecord(0.0, 0), FrameRecord(30.0, 0)]  # the bag played twice
    results = [ResultRecord(30.01, 0, "e0:dws", 0, 1, 1.0)]
    outcomes, _ = frame_outcomes(PolicyRun("p", 31.0, frames, results), truth)
    assert [o.dropped for o in outcomes] == [True, False]


def test_oracle_takes_the_most_accurate_variant_that_met_the_budget():
    accuracy = {"small": 0.8, "big": 0.9}
    big = [FrameOutcome(0.0, "big", 1, 1.0, True), FrameOutcome(0.1, "big", 1, 3.0, True), FrameOutcome(0.2, None)]
    small = [FrameOutcome(0.0, "small", 0, 0.5, False), FrameOutcome(0.1, "small", 0, 2.5, False)]
    small.append(FrameOutcome(0.2, None))
    chosen = oracle_outcomes({"static-top": big, "static-smallest": small}, accuracy, budget_ms=2.0)
    assert [o.variant_id for o in chosen] == ["big", "small", None]  # frame 1: none met it, the fastest
    with pytest.raises(ValueError):
        oracle_outcomes({}, accuracy, 2.0)


def test_targets_are_checked_from_the_metrics():
    def m(miss: float, acc: float, switches: float = 0.0) -> dict:
        return {"deadline_miss_rate": miss, "accuracy": acc, "switches_per_min": switches}

    whole = {
        "adascale": m(0.04, 0.88, 4.0),
        "static-top": m(0.35, 0.90),
        "static-mid": m(0.10, 0.89),  # adascale: fewer misses, within a point: dominated
        "reactive": m(0.03, 0.88),  # fewer misses than adascale at the same accuracy: not dominated
    }
    idle = {"adascale": m(0.0, 0.895), "static-top": m(0.02, 0.90)}
    loaded = {"adascale": m(0.06, 0.86), "static-top": m(0.60, 0.90)}
    checks = {c.name.split(" (")[0]: c for c in check_targets(whole, idle, loaded, [0.8, 1.5])}
    assert [name for name, c in checks.items() if not c.passed] == ["adascale dominates reactive"]
    assert checks["premise: static-top misses <= 5 % in the idle phases and >= 30 % in the loaded ones"].measured == (
        "2.0% idle, 60.0% loaded"
    )
    # Never back on the top variant in a phase, too many switches, a premise that does not hold.
    late = check_targets(
        {**whole, "adascale": m(0.04, 0.88, 7.0)}, idle, {**loaded, "static-top": m(0.2, 0.9)}, [float("nan")]
    )
    assert {c.name.split(" (")[0].split(":")[0] for c in late if not c.passed} == {
        "premise",
        "adascale back on a top-accuracy variant within 2 s after the load ends",
        "adascale switches <= 6 per minute",
        "adascale dominates reactive",
    }
    assert check_targets({"static-top": m(0.3, 0.9)}) == []
    # An arm is held to AdaScale's targets with its own figures, under its own name; the premise once.
    arm = "adascale+noee"
    groups = {
        "idle_phases": {**idle, arm: m(0.0, 0.88)},  # 2 points under static-top's idle accuracy
        "loaded_phases": {**loaded, arm: m(0.06, 0.86)},
        "adaptation_s": {"adascale": {"back_to_top_s": [0.8, 1.5]}, arm: {"back_to_top_s": [0.8, 1.5]}},
    }
    both = {c.name.split(" (")[0]: c for c in all_targets({**whole, arm: m(0.04, 0.88, 4.0)}, groups, [arm])}
    assert sum(name.startswith("premise") for name in both) == 1
    assert {name for name, c in both.items() if not c.passed} == {
        "adascale dominates reactive",
        "adascale+noee idle-phase accuracy within 1 point of static-top's",
        "adascale+noee dominates reactive",
    }
    assert all_targets(whole, groups, [arm]) == all_targets(whole, groups)  # an arm that did not run: none


def test_adaptation_times_from_a_load_step_and_back():
    # Idle 0-10 s, loaded 10-20 s, idle 20-30 s; the top variant is "big".
    phases = [(0.0, 0), (10.0, 1), (20.0, 2)]
    ran = ["big"] * 105 + ["small"] * 100 + ["big"] * 95  # at 10 Hz: downgrade 0.5 s in, back 0.5 s after
    outcomes = [FrameOutcome(0.1 * i, v, 0, 1.0, True) for i, v in enumerate(ran)]
    times = adaptation_times(outcomes, phases, [True, False, True], {"big"})
    assert times["downgrade_s"] == [pytest.approx(0.5)] and times["back_to_top_s"] == [pytest.approx(0.5)]
    stuck = adaptation_times(
        outcomes[:200] + [replace(o, variant_id="small") for o in outcomes[200:]], phases, [True, False, True], {"big"}
    )
    assert math.isnan(stuck["back_to_top_s"][0])


def test_pooled_metrics_count_switches_within_each_repeat_only():
    def run(*variants: str) -> list[FrameOutcome]:
        return [FrameOutcome(0.1 * i, v, 0, 1.0 + i, True) for i, v in enumerate(variants)]

    first, second = run("a", "a", "b"), run("a", "b", "b")  # one switch each; b -> a between them is none
    m = pooled_metrics([first, second], budgets_ms=[2.5, 2.5], duration_s=30.0)
    assert (m["frames"], m["switches"]) == (6, 2)
    assert m["switches_per_min"] == pytest.approx(2.0)  # 2 switches in 60 s
    assert m["deadline_miss_rate"] == pytest.approx(2 / 6)  # the 3.0 ms frame of each run
    assert m["latency_mean_ms"] == pytest.approx(2.0)
    # Each repeat against its own budget: the second's 2.0 ms frame misses its 1.5 ms too.
    assert pooled_metrics([first, second], budgets_ms=[2.5, 1.5], duration_s=30.0)["late"] == 3


def test_phase_metrics_put_each_frame_in_the_phase_that_had_begun():
    early = [FrameOutcome(t, "a", 0, lat, True) for t, lat in ((0.0, 1.0), (0.5, 1.0), (1.2, 3.0), (2.5, 1.0))]
    late_start = [FrameOutcome(t, "a", 0, 3.0, True) for t in (0.05, 1.6)]
    by_phase = phase_metrics([(early, [(0.01, 0), (1.0, 1), (2.0, 2)], 2.0), (late_start, [(0.1, 0), (1.5, 1)], 2.0)])
    assert {k: v["frames"] for k, v in by_phase.items()} == {"0": 3, "1": 2, "2": 1}  # 0.05 s: before the first change
    assert by_phase["0"]["deadline_miss_rate"] == pytest.approx(1 / 3)
    assert by_phase["1"]["deadline_miss_rate"] == pytest.approx(1.0)
    assert by_phase["2"]["latency_mean_ms"] == pytest.approx(1.0)


def test_runs_round_trip_and_a_corrupt_record_fails_clearly(tmp_path):
    run, _ = hand_made_run()
    run.save(tmp_path / "run.json.gz")
    loaded = PolicyRun.load(tmp_path / "run.json.gz")
    assert json.dumps(asdict(loaded)) == json.dumps(asdict(run))  # NaN readings included
    (tmp_path / "bad.json.gz").write_bytes(b"not gzip")
    with pytest.raises(ValueError, match="not a recorded evaluation run"):
        PolicyRun.load(tmp_path / "bad.json.gz")


def test_report_and_plots_are_written(tmp_path):
    run, truth = hand_made_run()
    outcomes = {"adascale": frame_outcomes(run, truth)[0]}
    metrics = {"adascale": policy_metrics(outcomes["adascale"], 2.0, 0.6)}
    paths = plot_report({"adascale": run}, outcomes, metrics, 2.0, tmp_path)
    assert all(p.stat().st_size > 10_000 and p.read_bytes()[:4] == b"\x89PNG" for p in paths)
    report = {
        "config": {"bag": "b", "trace": "step", "duration_s": 0.6, "budget_ms": 2.0, "model_dir": "m"},
        "variants": {},
        "policies": metrics,
        "targets": [],
        "node_cpu": {"adascale": mean_node_cpu([run, replace(run, node_cpu={"selector": 0.0375})])},
    }
    text = markdown_report(report)
    assert "| adascale | adaptive | 6 | 80.0% |" in text and "timeline.png" in text
    assert "| policy | elastic_inference | selector | all nodes |" in text
    assert "| adascale | 4.5 | 5.0 | 9.5 |" in text  # a node a run did not measure is left out of its mean


# ---------------------------------------------------------------- policies


def config(tmp_path, **kwargs) -> EvaluationConfig:
    values = {
        "bag": tmp_path / "bag",
        "trace": LoadTrace.from_yaml(resolve_trace("step")),
        "policies": ("adascale",),
        "out": tmp_path / "out",
        "model_dir": DEFAULT_MODEL,
        "params_file": default_params_file(),
        "budget_ms": 1.4,
        **kwargs,
    }
    return EvaluationConfig(**values)


def test_static_variants_and_policy_graphs(tmp_path):
    table = load_variant_table(DEFAULT_MODEL)
    variants = static_variants(table)
    rows = {r["variant_id"]: r for r in table["variants"]}
    assert variants["static-top"] == reference_variants(table)["top"]
    assert rows[variants["static-top"]]["val_accuracy"] == max(r["val_accuracy"] for r in rows.values())
    assert variants["static-smallest"] == cheapest_variant(table)

    cfg = config(tmp_path, budget_ms=1.5)
    static = policy_graph("static-top", cfg, variants)
    assert [s.name for s in static] == ["resource_monitor", "elastic_inference"]
    assert static[1].parameters["safe_default_variant"] == variants["static-top"]
    assert static[1].parameters["early_exit_threshold"] == 0.0  # a static policy runs one fixed path
    ada = {s.name: s for s in policy_graph("adascale", cfg, variants)}
    assert ada["selector"].parameters["latency_budget_ms"] == 1.5
    assert "early_exit_threshold" not in ada["elastic_inference"].parameters  # the configured one
    assert all(ada[n].parameters["model_dir"] == str(DEFAULT_MODEL) for n in ("profiler", "selector"))
    reactive = {s.name: s for s in policy_graph("reactive", cfg, variants)}
    assert reactive["profiler"].parameters["resource_aware"] is False
    assert reactive["selector"].parameters["use_forecast"] is False
    assert "resource_aware:=false" in reactive["profiler"].command()


def test_an_arm_is_adascale_with_the_node_parameters_it_names(tmp_path):
    arm = Arm.parse("noee-2:elastic_inference.early_exit_threshold=0,selector.dwell_s=2.5")
    assert arm.policy == "adascale+noee-2"
    assert arm.parameters == (("elastic_inference", "early_exit_threshold", 0), ("selector", "dwell_s", 2.5))
    cfg = config(tmp_path, policies=("adascale", arm.policy), arms=(arm,), budget_ms=1.5)
    variants = static_variants(load_variant_table(DEFAULT_MODEL))
    ada = {s.name: s for s in policy_graph("adascale", cfg, variants)}
    armed = {s.name: s for s in policy_graph(arm.policy, cfg, variants)}
    assert list(armed) == list(ada)
    assert armed["elastic_inference"].parameters["early_exit_threshold"] == 0.0  # a double, as declared
    assert isinstance(armed["elastic_inference"].parameters["early_exit_threshold"], float)
    assert armed["selector"].parameters == {**ada["selector"].parameters, "dwell_s": 2.5}
    assert armed["profiler"] == ada["profiler"] and armed["resource_monitor"] == ada["resource_monitor"]
    assert arm.settings == ["elastic_inference.early_exit_threshold=0", "selector.dwell_s=2.5"]
    # Refused, each in one line: a malformed arm, a node or parameter the graph lacks, a value of another type.
    for text in ("noee", "noee:", "no ee:elastic_inference.x=1", "a:early_exit_threshold=0", "a:b.c"):
        with pytest.raises(ValueError, match="arm"):
            Arm.parse(text)
    for text in ("a:planner.x=1", "a:selector.no_such=1", "a:selector.dwell_s=fast"):
        bad = Arm.parse(text)
        with pytest.raises(ValueError, match="arm a"):
            policy_graph(bad.policy, config(tmp_path, policies=(bad.policy,), arms=(bad,)), variants)
    with pytest.raises(ValueError, match="unknown policies"):
        config(tmp_path, policies=("adascale+noee-2",))  # an arm's policy needs its arm
    with pytest.raises(ValueError, match="two arms"):
        config(tmp_path, arms=(arm, arm))


def test_command_line_budgets(capsys):
    from adascale_ros.cli.main import build_parser

    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["soak", "--help"])
    assert "(default: as adascale evaluate's auto)" in " ".join(capsys.readouterr().out.split())
    evaluate = ["evaluate", "--bag", "b", "--out", "o"]
    assert parser.parse_args(evaluate).budget_ms == "auto"
    assert parser.parse_args([*evaluate, "--budget-ms", "1.2"]).budget_ms == 1.2
    with pytest.raises(SystemExit):
        parser.parse_args([*evaluate, "--budget-ms", "soon"])
    assert "expected milliseconds or auto" in capsys.readouterr().err


def _timed_model(tmp_path):
    """The robot model's variant table with a calibration report that timed three variants at camera rate
    (its top and the next two by accuracy) at idle, one and two CPU workers; the model folder and the three."""
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    shutil.copy(ROBOT_MODEL / "variants.json", model_dir)
    rows = sorted(load_variant_table(model_dir)["variants"], key=lambda r: -r["val_accuracy"])
    top, good, fair = rows[0]["variant_id"], rows[1]["variant_id"], rows[2]["variant_id"]

    def timed(variant_id: str, idle_p90: float, loaded_p90: float) -> dict:
        levels = {"idle": idle_p90, "cpu1x100": idle_p90 * 1.2, "cpu2x100": loaded_p90}
        return {"variant_id": variant_id, "levels": {k: {"median_ms": v * 0.9, "p90_ms": v} for k, v in levels.items()}}

    report = {
        "levels": [
            {"name": "idle", "idle": True, "stress_ng": []},
            {"name": "cpu1x100", "idle": False, "stress_ng": ["--cpu", "1", "--cpu-load", "100"]},
            {"name": "cpu2x100", "idle": False, "stress_ng": ["--cpu", "2", "--cpu-load", "100"]},
        ],
        "camera_rate": {"top": timed(top, 5.0, 12.0), "a": timed(good, 3.0, 7.5), "b": timed(fair, 1.0, 2.5)},
    }
    (model_dir / "calibration_report.json").write_text(json.dumps(report))
    return model_dir, top, good, fair


def test_static_mid_is_the_most_accurate_timed_variant_that_met_the_deadline_under_the_heaviest_phase(tmp_path):
    model_dir, top, good, fair = _timed_model(tmp_path)
    step_cpu = LoadTrace.from_yaml(resolve_trace("step-cpu"))  # its load phase: two CPU workers at 100 %
    chosen, why = static_mid(model_dir, step_cpu, 8.0)
    assert chosen == good and "cpu2x100" in why and "step-cpu" in why
    assert static_mid(model_dir, step_cpu, 13.0)[0] == top
    assert static_mid(model_dir, step_cpu, 5.0)[0] == fair
    chosen, why = static_mid(model_dir, step_cpu, 2.0)  # none met it: the fastest
    assert chosen == fair and "no timed variant met" in why
    # A trace none of whose phases was calibrated: the heaviest level calibrated.
    chosen, why = static_mid(model_dir, LoadTrace.from_yaml(resolve_trace("step")), 8.0)
    assert chosen == good and "no phase of step was calibrated" in why


def test_deadline_by_level_names_the_levels_where_no_timed_variant_met_the_deadline(tmp_path, capsys):
    from adascale_ros.cli.main import main

    model_dir, top, good, fair = _timed_model(tmp_path)
    reach = {row.level: row for row in deadline_by_level(model_dir, 8.0)}
    assert list(reach) == ["idle", "cpu1x100", "cpu2x100"]
    assert (reach["idle"].within, reach["idle"].within_p90_ms) == (top, 5.0)
    assert reach["cpu1x100"].within == top  # 6.0 ms
    assert (reach["cpu2x100"].within, reach["cpu2x100"].fastest, reach["cpu2x100"].fastest_p90_ms) == (good, fair, 2.5)
    reach = {row.level: row for row in deadline_by_level(model_dir, 2.0)}
    assert reach["idle"].within == reach["cpu1x100"].within == fair
    assert reach["cpu2x100"].within is None and reach["cpu2x100"].within_p90_ms is None
    assert main(["deadline-by-level", "--model-dir", str(model_dir), "--budget-ms", "2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("deadline 2 ms: --budget-ms")
    assert "| cpu2x100 | none | - |" in out and "At 1 of 3 levels (cpu2x100) no timed variant met 2 ms" in out
    assert main(["deadline-by-level", "--model-dir", str(model_dir), "--budget-ms", "0"]) == 2
    assert "--budget-ms must be > 0 ms" in capsys.readouterr().err
    # A calibration without camera-rate timing: a one-line error.
    (model_dir / "calibration_report.json").write_text(json.dumps({"levels": [], "camera_rate": {}}))
    with pytest.raises(ValueError, match="no camera-rate timing"):
        deadline_by_level(model_dir, 2.0)


def test_the_default_deadline_comes_from_the_calibration_report_before_any_run(tmp_path):
    budget, source = calibrated_deadline(ROBOT_MODEL)
    report = json.loads((ROBOT_MODEL / "calibration_report.json").read_text())
    top = static_variants(load_variant_table(ROBOT_MODEL))["static-top"]
    timed = next(e for e in report["camera_rate"].values() if e["variant_id"] == top)
    assert budget == round(DEADLINE_FACTOR * timed["levels"]["idle"]["p90_ms"], 2)
    assert top in source and "calibration report" in source
    print(f"default evaluation deadline of the robot model: {budget} ms = {source}")
    # A report from before camera-rate timing: a one-line error that says what to do, before anything runs.
    with pytest.raises(ValueError, match=r"no camera-rate timing .* `adascale calibrate"):
        calibrated_deadline(DEFAULT_MODEL)
    bag = tmp_path / "bag"
    bag.mkdir()
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "adascale_ros.cli.main",
            "evaluate",
            "--bag",
            str(bag),
            "--model-dir",
            str(DEFAULT_MODEL),
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
    )
    assert run.returncode != 0 and "no camera-rate timing" in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "out").exists()
    assert config(tmp_path, policies=("adascale", "reactive", "static-top", "oracle")).runnable == (
        "adascale",
        "reactive",
        "static-top",
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"policies": ("oracle",)},
        {"policies": ("fastest",)},
        {"budget_ms": 0.0},
        {"duration_s": -1.0},
        {"repeats": 0},
    ],
)
def test_bad_evaluation_settings_are_refused(tmp_path, kwargs):
    with pytest.raises(ValueError):
        config(tmp_path, **kwargs)


def test_image_stamp_is_read_from_serialized_frames():
    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import Image

    msg = Image(height=2, width=2, encoding="rgb8", step=6, data=bytes(12))
    msg.header.stamp.sec, msg.header.stamp.nanosec = 1_700_000_123, 456_789
    assert image_stamp_ns(serialize_message(msg)) == 1_700_000_123 * 10**9 + 456_789


# ---------------------------------------------------------------- the command


@pytest.fixture(scope="module")
def small_bag(tmp_path_factory):
    from adascale_ros.harness.bags import BagSpec, make_camera_bag
    from adascale_ros.model.datasets import DatasetSpec, load_splits

    test = load_splits(DatasetSpec(limit_train=100, limit_test=40)).test
    out = tmp_path_factory.mktemp("eval") / "bag"
    make_camera_bag(out, test.images[:, 0].numpy(), test.labels.numpy(), test.classes, BagSpec(120, 120, 10.0))
    return out


@pytest.fixture(scope="module")
def robot_recording(tmp_path_factory):
    """40 Fashion-MNIST test images as a best-effort camera's 120 x 120 frames at 10 Hz, unlabelled, SQLite 3."""
    from adascale_ros.harness.bags import camera_frame
    from adascale_ros.model.datasets import DatasetSpec, load_splits

    test = load_splits(DatasetSpec(limit_train=100, limit_test=40)).test
    frames = [camera_frame(image, 120, 120) for image in test.images[:, 0].numpy()]
    return write_robot_recording(tmp_path_factory.mktemp("rec") / "rec", frames, 10.0, "SQLITE3")


def test_an_unlabelled_recording_is_scored_against_the_top_variant_offline(small_bag):
    from adascale_ros.harness.bags import read_labels

    truth = read_labels(small_bag)
    answers, top = reference_answers(small_bag, "/camera/image_raw", DEFAULT_MODEL, say=lambda _: None)
    assert top == reference_variants(load_variant_table(DEFAULT_MODEL))["top"]
    assert set(answers) == set(truth)  # one answer per frame, by its header stamp
    agreement = sum(answers[s] == truth[s] for s in truth) / len(truth)
    assert agreement >= 0.8, agreement  # the top variant is ~92 % accurate on Fashion-MNIST


def test_evaluate_refuses_a_recording_without_labels_before_running_anything(tmp_path, robot_recording, start_process):
    args = ["-m", "adascale_ros.cli.main", "evaluate", "--bag", str(robot_recording), "--out", str(tmp_path / "r")]
    args += ["--policies", "static-smallest", "--budget-ms", "5"]
    proc = start_process(args)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "no labels on /camera/labels" in out and "--unlabelled" in out, out
    assert "starting" not in out and not (tmp_path / "r" / "logs").exists()
    proc = start_process([*args, "--unlabelled", "--camera-topic", "/oops"])
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "no topic /oops" in out and "Traceback" not in out, out


def test_repeats_are_scored_one_by_one_and_pooled(tmp_path, small_bag):
    from adascale_ros.harness.bags import read_labels

    truth = read_labels(small_bag)
    stamps = sorted(truth)[:20]
    variants = static_variants(load_variant_table(DEFAULT_MODEL))

    def run(policy: str, variant_id: str, latencies: list[float]) -> PolicyRun:
        frames = [FrameRecord(0.1 * i, s) for i, s in enumerate(stamps)]
        results = [
            ResultRecord(0.1 * i + 0.01, s, variant_id, int(variant_id[1]), truth[s], lat)
            for i, (s, lat) in enumerate(zip(stamps, latencies, strict=True))
        ]
        return PolicyRun(policy, 2.0, frames, results, [], [(0.0, 0), (1.0, 1)])

    small, large = variants["static-smallest"], variants["static-top"]
    runs = {
        "adascale": [run("adascale", small, [1.0] * 20), run("adascale", small, [1.0] * 10 + [3.0] * 10)],
        "static-top": [run("static-top", large, [3.0] * 20)] * 2,
    }
    cfg = config(tmp_path, bag=small_bag, policies=("adascale", "static-top", "oracle"), repeats=2, budget_ms=2.0)
    report = score(cfg, runs, variants)
    assert report["config"]["repeats"] == 2
    assert [r["policies"]["adascale"]["deadline_miss_rate"] for r in report["repeats"]] == [0.0, 0.5]
    assert report["policies"]["adascale"]["deadline_miss_rate"] == pytest.approx(0.25)  # 40 frames pooled
    assert report["policies"]["adascale"]["frames"] == 40
    assert [r["policies"]["oracle"]["deadline_miss_rate"] for r in report["repeats"]] == [0.0, 0.5]
    misses = next(t for t in report["targets"] if t["name"].startswith("adascale misses <= 5 %"))
    # The step trace: phase 0 idle, phase 1 loaded (these runs end there).
    assert report["idle_phases"]["adascale"]["deadline_miss_rate"] == 0.0
    assert report["loaded_phases"]["adascale"]["deadline_miss_rate"] == pytest.approx(0.5)
    assert report["loaded_phases"]["static-top"]["deadline_miss_rate"] == 1.0
    assert "## Idle and loaded phases" in (cfg.out / "evaluation.md").read_text()
    assert (misses["passed"], misses["met_in_runs"], misses["runs"]) == (False, 1, 2)
    phases = report["phases"]["adascale"]
    assert phases["0"]["deadline_miss_rate"] == 0.0 and phases["1"]["deadline_miss_rate"] == pytest.approx(0.5)
    text = (cfg.out / "evaluation.md").read_text()
    assert "## Each run" in text and "| adascale | " in text and "0.0% / 50.0%" in text
    assert "(met in 1 of 2 runs)" in text and "## By trace phase" in text

    # Saved under their run names, the runs load back and score to the same figures.
    (cfg.out / "runs").mkdir()
    for policy, policy_runs in runs.items():
        for r, recorded in enumerate(policy_runs):
            recorded.save(cfg.out / "runs" / f"{run_name(policy, r, 2)}.json.gz")
    assert score(cfg, load_runs(cfg), variants)["policies"] == report["policies"]
    # A budget per round (measured budgets): the second round's 3.0 ms frames meet a 3.5 ms budget.
    per_round = score(cfg, runs, variants, budgets_ms=[2.0, 3.5])
    assert [r["policies"]["adascale"]["deadline_miss_rate"] for r in per_round["repeats"]] == [0.0, 0.0]
    assert per_round["config"]["budgets_ms"] == [2.0, 3.5]
    assert "latency budget 2 / 3.5 ms (one per round)" in (cfg.out / "evaluation.md").read_text()
    assert run_name("adascale", 0, 1) == "adascale" and run_name("adascale", 1, 2) == "adascale-2"


def short_trace(tmp_path):
    trace = tmp_path / "short.yaml"
    trace.write_text("phases:\n  - {duration_s: 3.0}\n  - {duration_s: 3.0, cpu_workers: 1, cpu_load_percent: 80}\n")
    return trace


@pytest.mark.ros
def test_adascale_evaluate_scores_every_policy_end_to_end(tmp_path, small_bag, start_process):
    out = tmp_path / "report"
    args = ["-m", "adascale_ros.cli.main", "evaluate", "--bag", str(small_bag), "--trace", str(short_trace(tmp_path))]
    args += ["--policies", "adascale", "static-top", "oracle", "--out", str(out), "--json", "--budget-ms", "1.4"]
    proc = start_process(args)
    stdout, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, stdout
    report = json.loads(stdout[stdout.index("{\n") :])
    assert list(report["policies"]) == ["adascale", "static-top", "oracle"]
    assert report["config"]["budget_ms"] == 1.4 and report["config"]["budget_source"] == "--budget-ms"
    assert json.loads((out / "runs" / "config.json").read_text())["budgets_ms"] == [1.4]
    for name, m in report["policies"].items():
        assert 50 <= m["frames"] <= 62, (name, m)  # 6 s at 10 Hz
        assert m["classified"] >= 0.9 * m["frames"], (name, m)
        assert 0.5 <= m["accuracy"] <= 1.0 and m["latency_p50_ms"] > 0
    assert report["policies"]["static-top"]["switches"] == 0
    assert report["policies"]["static-top"]["early_exits"] == 0  # a static policy runs one fixed path
    top = report["variants"]["static-top"]
    assert set(report["policies"]["static-top"]["frames_per_exit"]) == {top[1]}  # "e<exit>:..."
    for name in ("evaluation.json", "evaluation.md", "timeline.png", "accuracy_latency.png"):
        assert (out / name).stat().st_size > 0
    assert (out / "runs" / "adascale.json.gz").exists() and (out / "logs" / "adascale.log").exists()
    nodes = {"resource_monitor", "profiler", "selector", "elastic_inference"}
    assert set(report["node_cpu"]["adascale"]) == nodes and "oracle" not in report["node_cpu"]
    assert set(report["node_cpu"]["static-top"]) == {"resource_monitor", "elastic_inference"}
    assert all(0.0 < c < 2.0 for c in report["node_cpu"]["adascale"].values())  # CPU-seconds per second
    assert subprocess.run(["pgrep", "-x", "stress-ng"], capture_output=True).returncode == 1

    # The saved runs score again to the same figures.
    again = start_process(["-m", "adascale_ros.cli.main", "evaluate", *args[3:], "--rescore"])
    restdout, _ = again.communicate(timeout=120)
    assert again.returncode == 0, restdout
    assert json.loads(restdout)["policies"] == report["policies"]


@pytest.mark.ros
def test_adascale_evaluate_scores_a_robot_recording_without_labels(tmp_path, robot_recording, start_process):
    out = tmp_path / "report"
    args = ["-m", "adascale_ros.cli.main", "evaluate", "--bag", str(robot_recording), "--unlabelled"]
    args += ["--trace", str(short_trace(tmp_path)), "--policies", "static-top", "static-smallest"]
    args += ["--budget-ms", "5", "--out", str(out), "--json"]
    proc = start_process(args)
    stdout, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, stdout
    report = json.loads(stdout[stdout.index("{\n") :])
    top = reference_variants(load_variant_table(DEFAULT_MODEL))["top"]
    assert report["config"]["accuracy_against"].startswith(f"agreement with {top}")
    assert f"agreement with {top}" in (out / "evaluation.md").read_text()
    for name, m in report["policies"].items():
        print(f"unlabelled recording, {name}: {m['frames']} frames, agreement {m['accuracy']:.3f}")
        assert 50 <= m["frames"] <= 62, (name, m)  # 6 s at 10 Hz from a best-effort camera, replayed so
        assert m["classified"] >= 0.9 * m["frames"], (name, m)
    assert report["policies"]["static-top"]["accuracy"] >= 0.95  # the top variant, online, agrees with itself
    assert report["policies"]["static-smallest"]["accuracy"] < 1.0


@pytest.mark.ros
def test_interrupted_evaluate_stops_everything(tmp_path, small_bag, start_process):
    args = ["-m", "adascale_ros.cli.main", "evaluate", "--bag", str(small_bag), "--trace", str(short_trace(tmp_path))]
    policy = ["--policies", "static-smallest", "--budget-ms", "1.4"]
    proc = start_process([*args, *policy, "--out", str(tmp_path / "r")], start_new_session=True)
    for line in proc.stdout:
        if "phase 1]" in line:  # the trace's stress-ng is running
            break
    proc.send_signal(signal.SIGINT)
    sent = time.monotonic()
    out, _ = proc.communicate(timeout=30)
    took = time.monotonic() - sent
    print(f"evaluate after SIGINT: exit {proc.returncode} in {took:.2f} s")
    assert proc.returncode == 0, out
    assert "interrupted" in out
    # A clean stop takes about 1 s here; on a loaded shared machine one took 5.8 s. The bound is
    # the escalation path's (replay 5 s, then stress-ng 3 s): past it something ignored its signal.
    assert took <= 8.0, out
    for pattern in ("stress-ng", "adascale_ros.nodes", "adascale_ros.cli.main replay"):
        assert subprocess.run(["pgrep", "-f", pattern], capture_output=True).returncode == 1, pattern
