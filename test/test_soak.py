"""adascale soak: memory growth, per-minute figures and the pass rule; a one-minute soak end to end."""

from __future__ import annotations

import json
import math

import pytest
from test_evaluate import short_trace, small_bag  # noqa: F401 - fixtures

from adascale_ros.harness.soak import NodeMemory, SoakReport, warm_up_s, window_s


def series(duration_s: float, level: float, growth: float) -> NodeMemory:
    """RSS samples every 2 s: a start-up rise over the first 10 s, then ``growth`` (fraction) spread linearly."""
    samples = []
    for i in range(int(duration_s / 2) + 1):
        t = i * 2.0
        start_up = min(t / 10.0, 1.0) * 0.2 * level
        samples.append((t, 0.8 * level + start_up + level * growth * t / duration_s))
    return NodeMemory("node", samples)


def report(memory: dict, exceptions: dict | None = None, p50s: tuple[float, ...] = (1.0,)) -> SoakReport:
    rows = [
        {"minute": i + 1, "frames": 600, "dropped": 0, "latency_p50_ms": p, "latency_p95_ms": p,
         "deadline_miss_rate": 0.0, "switches_per_min": 0.0}
        for i, p in enumerate(p50s)
    ]  # fmt: skip
    totals = {"frames": 600 * len(p50s), "classified": 600 * len(p50s), "dropped": 0, "deadline_miss_rate": 0.0}
    return SoakReport(len(p50s), "bursty", 1.6, memory, rows, exceptions or {}, totals)


def test_growth_is_measured_after_the_warm_up():
    duration = 900.0
    assert warm_up_s(duration) == 120.0 and window_s(duration) == 60.0
    flat = series(duration, 100.0, 0.0).growth(duration)
    assert flat["rss_start_mb"] == pytest.approx(80.0)  # the start-up rise is not growth
    assert abs(flat["growth_percent"]) < 1e-9
    leaking = series(duration, 100.0, 0.10).growth(duration)
    # 10 % of 100 MiB over 900 s: from the middle of the window after the warm-up (150 s) to the
    # middle of the last one (870 s), 8 MiB on top of 101.7.
    assert leaking["growth_percent"] == pytest.approx(8.0 / (100.0 + 10.0 * 150 / 900) * 100, rel=1e-3)


def test_the_pass_rule_and_the_latency_drift():
    ok, leak = series(900, 100, 0.0).growth(900), series(900, 100, 0.07).growth(900)
    assert report({"a": ok}).passed
    assert not report({"a": ok, "b": leak}).passed  # one node growing by 5 % or more fails the soak
    assert not report({"a": ok}, {"elastic_inference": "1 tracebacks"}).passed
    assert not report({}).passed  # nothing measured is not a pass
    assert not report({"a": {**ok, "growth_percent": math.nan}}).passed
    drift = report({"a": ok}, p50s=(2.0, 1.0, 1.0, 1.1, 1.2)).latency_drift_percent()
    assert drift == pytest.approx(20.0)  # minute 5 against minute 3, the first to start after the 75-s warm-up
    assert math.isnan(report({"a": ok}).latency_drift_percent())
    md = report({"a": ok}).markdown()
    assert "| a |" in md and "PASSED" in md


@pytest.mark.ros
def test_one_minute_soak_end_to_end(tmp_path, small_bag, start_process):  # noqa: F811
    out = tmp_path / "soak"
    args = ["-m", "adascale_ros.cli.main", "soak", "--minutes", "1", "--bag", str(small_bag), "--budget-ms", "1.4"]
    proc = start_process([*args, "--trace", str(short_trace(tmp_path)), "--out", str(out), "--json"])
    stdout, _ = proc.communicate(timeout=300)
    print((out / "soak.md").read_text())
    assert proc.returncode == 0, stdout
    result = json.loads(stdout[stdout.index("{\n") :])
    assert result["passed"] and result["exceptions"] == {}
    assert set(result["memory"]) == {"resource_monitor", "profiler", "selector", "elastic_inference"}
    assert all(m["growth_percent"] < 5.0 for m in result["memory"].values())
    (minute,) = result["minutes_table"]
    assert minute["frames"] >= 500 and minute["dropped"] <= 0.05 * minute["frames"]
    assert (out / "memory.png").stat().st_size > 10_000
