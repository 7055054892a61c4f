"""The profiler: regressors, auto-selection, predictor files, energy model, calibration under stress-ng, the node."""

from __future__ import annotations

import json
import math
import random
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import REPO_ROOT, spin_until, subscribe_diagnostics

from adascale_ros.load.stress import StressSpec
from adascale_ros.model.directory import (
    ModelLoadError,
    camera_rate_variants,
    load_variant_table,
    reference_variants,
)
from adascale_ros.model.elastic import Variant
from adascale_ros.profiling.energy import EnergyProfile, cache_hit_rate, energy_mj, fit_power_coefficients
from adascale_ros.profiling.fitting import _camera_rate_lines, camera_rate_report, fit_and_report, report_markdown
from adascale_ros.profiling.measurement import (
    CalibrationData,
    CalibrationPlan,
    LoadLevel,
    module_infos,
    run_calibration,
    variant_module_keys,
)
from adascale_ros.profiling.online import MEASURED_MIN_RESULTS, OnlineProfiler
from adascale_ros.profiling.predictor import (
    LatencyCorrection,
    LatencyPredictor,
    device_fingerprint,
    latency_sample,
)
from adascale_ros.profiling.regressors import (
    MLP,
    REGRESSORS,
    Candidate,
    FittedRegressor,
    Forest,
    Score,
    auto_select,
)

DEFAULT_MODEL = REPO_ROOT / "models" / "default"
PROFILE = EnergyProfile("test", cpu_w=10.0, gpu_w=0.0, mem_w=2.0, cpu_mhz=2000.0, gpu_mhz=0.0, mem_mhz=1000.0)


# ---------------------------------------------------------------- regressors


def synthetic_relation(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """latency = exp(0.4 a - 0.3 b + 0.2 c) ms with 1 % noise: a known relation, multiplicative like load."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.5, 1.5, (n, 3))
    return x, np.exp(0.4 * x[:, 0] - 0.3 * x[:, 1] + 0.2 * x[:, 2]) * rng.normal(1.0, 0.01, n)


def test_latency_samples_price_the_stages_a_deadline_exit_skipped():
    raw = np.array([0.5, 0.8, math.nan])  # prefix, variant, never predicted
    assert latency_sample(1.2, False, False, raw, 1, None) == 1.2  # ran the whole path
    assert latency_sample(0.6, True, False, raw, 1, 0) is None  # confidence exit: the input chose a shorter path
    assert latency_sample(0.6, True, True, raw, 1, 0) == pytest.approx(0.9)  # censored: + 0.3 ms skipped
    assert latency_sample(0.6, True, True, raw, 0, 1) == pytest.approx(0.6)  # never less than what it took
    assert latency_sample(0.6, True, True, raw, 2, 0) is None  # the skipped stages not priced yet
    assert latency_sample(0.6, True, True, raw, 1, None) is None


@pytest.mark.parametrize("family", sorted(REGRESSORS))
def test_each_regressor_learns_a_known_relation(family):
    x, y = synthetic_relation(5000, seed=1)
    regressor = FittedRegressor.fit(family, x[:4000], y[:4000])
    score = Score.of(regressor.predict(x[4000:]), y[4000:])
    floor = 0.7 if family == Forest.name else 0.95  # trees are piecewise constant
    assert score.within_10 >= floor, score
    assert score.r2 > 0.9, score


@pytest.mark.parametrize("family", sorted(REGRESSORS))
def test_a_feature_constant_in_calibration_is_ignored_not_amplified(family):
    # A VM's CPU clock reads 2596.142 MHz in every calibration sample; its standard deviation is
    # rounding noise (~1e-13), and the node's reading of 2596.0 once turned every prediction into inf.
    x, y = synthetic_relation(2000, seed=2)
    clock = np.full((len(x), 1), 2596.142)
    regressor = FittedRegressor.fit(family, np.hstack([x, clock]), y)
    probe = x[:50]
    expected = regressor.predict(np.hstack([probe, np.full((50, 1), 2596.142)]))
    for other in (2596.0, 3000.0):
        got = regressor.predict(np.hstack([probe, np.full((50, 1), other)]))
        assert np.all(np.isfinite(got)) and np.allclose(got, expected)
    stored = regressor.to_arrays("r.")
    stored["r.x_scale"] = np.where(np.isinf(stored["r.x_scale"]), 1e-13, stored["r.x_scale"])  # an older file
    reloaded = FittedRegressor.from_arrays(family, stored, "r.")
    assert np.allclose(reloaded.predict(np.hstack([probe, np.full((50, 1), 2596.0)])), expected)


def test_exported_arrays_predict_what_scikit_learn_predicts():
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.neural_network import MLPRegressor

    x, y = synthetic_relation(600, seed=2)
    forest = Forest(trees=7, max_depth=6)
    reference = RandomForestRegressor(n_estimators=7, max_depth=6, min_samples_leaf=20, random_state=3).fit(x, y)
    np.testing.assert_allclose(Forest.predict(forest.fit(x, y, seed=3), x), reference.predict(x), rtol=1e-12)
    mlp = MLP(hidden=(8,))
    arrays = mlp.fit(x, y, seed=4)
    reference = MLPRegressor(
        hidden_layer_sizes=(8,), learning_rate_init=3e-3, max_iter=400, early_stopping=True,
        n_iter_no_change=20, random_state=4,
    ).fit(x, y)  # fmt: skip
    np.testing.assert_allclose(MLP.predict(arrays, x), reference.predict(x), rtol=1e-9)


def test_auto_selection_follows_the_rule():
    def cand(family, within, r2, us, size):
        return Candidate(family, Score(within, 0.1, r2, 100), us, size)

    # Accuracy first: "slow" is the best; "close" is within the 2-point tolerance; "far" is not.
    # R^2 then drops "weak"; of the rest the cheapest to run and store wins.
    chosen = auto_select(
        [
            cand("slow", 0.95, 0.97, 100.0, 20_000),
            cand("close", 0.94, 0.96, 10.0, 10_000),
            cand("weak", 0.94, 0.80, 1.0, 100),
            cand("far", 0.80, 0.99, 1.0, 100),
        ]
    )
    assert chosen.family == "close"
    # With nothing within tolerance the best stands, however slow.
    assert auto_select([cand("best", 0.9, 0.9, 500.0, 10**6), cand("cheap", 0.5, 0.9, 1.0, 1)]).family == "best"
    with pytest.raises(ValueError):
        auto_select([])
    # A regressor that predicts a module faster under more load is out while another is monotone.
    non_monotone = Candidate("bent", Score(0.99, 0.01, 0.99, 100), 1.0, 1, monotone=False)
    assert auto_select([non_monotone, cand("plain", 0.7, 0.8, 9.0, 900)]).family == "plain"
    assert auto_select([non_monotone]).family == "bent"


@pytest.mark.parametrize("family", ["linear", "random_forest"])
def test_linear_and_forest_never_predict_less_latency_for_more_load(family):
    # Noisy samples in which latency falls with load: the constraint holds the fit flat instead.
    rng = np.random.default_rng(0)
    load = rng.uniform(0, 1, 400)
    size = rng.uniform(1, 10, 400)
    latency = np.exp(0.2 * size - 0.3 * load + rng.normal(0, 0.05, 400))
    x = np.column_stack([size, load])
    regressor = FittedRegressor.fit(family, x, latency, increasing=np.array([False, True]))
    sweep = np.column_stack([np.full(11, 5.0), np.linspace(0, 1, 11)])
    assert np.all(np.diff(regressor.predict(sweep)) >= -1e-12)


# ---------------------------------------------------------------- fitting on a known law

LEVELS = {"idle": 0.02, "cpu30": 0.3, "cpu60": 0.6, "cpu95": 0.95}


def module_law_ms(info, cpu: float) -> float:
    """The synthetic device: a module costs its FLOPs at 50 GFLOP/s plus 20 us, slowed by background CPU."""
    base = 0.3 if info.kind == "fixed" else 0.02 + info.flops / 5e7
    return base * (1.0 + 1.5 * cpu)


def synthetic_calibration(table: dict, rounds_per_level: int = 30, seed: int = 0) -> CalibrationData:
    """A calibration dataset in the real format, measured on a device that follows ``module_law_ms``."""
    rng = random.Random(seed)
    infos = module_infos(table)
    variants = [Variant.parse(v["variant_id"]) for v in table["variants"]]
    truth = rng.sample(variants, 40)
    data = CalibrationData(
        device={
            **device_fingerprint(),
            "throughput": {"gflops": 50.0, "copy_gbs": 10.0},
            "reference_variants": {"top": truth[0].id},
        },
        levels=[{"name": n, "idle": n == "idle", "stress_ng": []} for n in LEVELS],
    )
    round_index = 0
    for level, cpu_mean in LEVELS.items():
        for _ in range(rounds_per_level):
            cpu = min(1.0, max(0.0, rng.gauss(cpu_mean, 0.02)))
            state = {"cpu_util": cpu, "load_index": (0.5 * cpu + 0.2 * 0.1) / 0.7, "mem_available_mb": 20000.0}
            state["cpu_freq_mhz"] = math.nan  # unknown on this device, as in many VMs
            for key, info in infos.items():
                ms = module_law_ms(info, cpu) * rng.gauss(1.0, 0.02)
                for column, value in {"key": key, "level": level, "round": round_index, "latency_ms": ms}.items():
                    data.modules.setdefault(column, []).append(value)
                for column, value in state.items():
                    data.modules.setdefault(column, []).append(value)
            for variant in rng.sample(truth, 8):
                ms = sum(module_law_ms(infos[k], cpu) for k in variant_module_keys(variant)) * rng.gauss(1.0, 0.02)
                row = {"variant_id": variant.id, "level": level, "round": round_index, "latency_ms": ms, **state}
                for column, value in row.items():
                    data.variants.setdefault(column, []).append(value)
            round_index += 1
        for key in infos:
            row = {"key": key, "level": level, "cold_ms": 0.4, "warm_ms": 0.1 + 0.2 * cpu_mean}
            for column, value in {**row, "load_index": (0.5 * cpu_mean + 0.02) / 0.7}.items():
                data.cache.setdefault(column, []).append(value)
    return data


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """The default model's variant table with a predictor fitted to the synthetic device, on disk."""
    model_dir = tmp_path_factory.mktemp("model")
    for name in ("variants.json", "model_card.json"):
        shutil.copy(DEFAULT_MODEL / name, model_dir / name)
    table = load_variant_table(model_dir)
    data = synthetic_calibration(table)
    predictor, report = fit_and_report(data, table, PROFILE, {"backend": "onnxruntime", "threads": 1})
    predictor.save(model_dir)
    return model_dir, table, predictor, report


def test_fitting_recovers_a_known_device_and_reports_it(fitted):
    *_, report = fitted
    auto = report["auto_selected"]
    assert set(auto["per_kind"]) == {"fixed", "stem", "exit", "res", "dws", "mbc", "dense", "fac"}
    for name in ("idle", "load"):
        assert report["targets"][name]["met"], report["targets"]
        assert auto["variants"][name]["within_10"] >= 0.9
    # Without the state features the regressors cannot see the load: the ablation must be worse under load.
    assert report["ablation_without_state"]["variants"]["load"]["within_10"] < auto["variants"]["load"]["within_10"]
    text = report_markdown(report)
    assert "auto-selected" in text and "ablation" in text and "NOT met" not in text
    # The synthetic device slows down with load, and the report says by how much.
    slowdown = report["slowdown_by_level"]
    assert slowdown["idle"] == 1.0 and max(slowdown.values()) > 1.1
    assert "Measured slowdown per load level" in text
    # ... and by how much it slowed the variant calibration measured at every level (the top one).
    ((role, top_slowdown),) = report["reference_slowdown_by_level"].items()
    assert role.startswith("top (e") and top_slowdown["idle"] == 1.0 and max(top_slowdown.values()) > 1.1
    assert f"Measured slowdown of the {role}: idle 1.00x" in text
    assert "The ground truth's own repeatability" in text and report["ground_truth_split_half"]["pairs"]["idle"] > 0


def test_no_variant_is_predicted_faster_at_a_higher_load(fitted):
    *_, predictor, _ = fitted
    _, sweep = predictor.load_sweep()
    assert np.all(np.diff(sweep, axis=0) >= -1e-9 * sweep[:-1])
    assert np.all(sweep[-1] > sweep[0])  # the synthetic device does slow down


def test_predict_sweeps_the_load_and_says_whether_any_variant_gets_faster(fitted, capsys):
    from adascale_ros.cli.main import main

    model_dir, *_ = fitted
    assert main(["predict", str(model_dir), "--sweep", "5"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[2::2] == ["0.00", "0.25", "0.50", "0.75", "1.00"]
    assert len(out) == 1 + 4 + 1  # the best variant of each of the four exits, then the verdict
    assert out[-1].startswith("0 of 780 variants predicted faster")
    assert main(["predict", str(model_dir)]) == 2  # neither a load index nor a sweep


def test_the_shipped_calibration_refits_to_a_predictor_monotone_in_load():
    # The shipped default model's own measurements: before the constraints its largest variant
    # was predicted at 0.79 ms at load 0 and 0.68 ms at load 1.
    table = load_variant_table(DEFAULT_MODEL)
    data = CalibrationData.load(DEFAULT_MODEL / "profiler" / "calibration_data.json.gz")
    predictor, report = fit_and_report(data, table, PROFILE, {"backend": "onnxruntime", "threads": 1})
    _, sweep = predictor.load_sweep()
    worst = float((np.diff(sweep, axis=0) / sweep[:-1]).min())
    assert worst >= -1e-9, f"a variant predicted {-worst:.1%} faster one step up the load sweep"
    assert report["auto_selected"]["variant_mode"]["scaled_coefficients"]["cpu_x_sum"] >= 0.0


def test_camera_rate_report_gives_each_reference_its_median_p90_and_slowdown_per_level():
    levels = [{"name": "idle", "idle": True}, {"name": "cpu2", "idle": False}]
    rows = [("e1:a", "idle", ms) for ms in (4.0, 5.0, 6.0, 5.0, 5.0)] + [("e1:a", "cpu2", ms) for ms in (10.0,) * 5]
    data = CalibrationData(
        device={"reference_variants": {"top": "e1:a", "fastest": "e0:b"}},
        levels=levels,
        camera_rate={k: [r[i] for r in rows] for i, k in enumerate(("variant_id", "level", "latency_ms"))},
    )
    report = camera_rate_report(data)
    idle = report["top"]["levels"]["idle"]
    assert (idle["median_ms"], idle["p90_ms"], idle["slowdown"]) == (5.0, pytest.approx(5.6), 1.0)
    assert report["top"]["levels"]["cpu2"]["slowdown"] == 2.0
    assert report["fastest"] == {"variant_id": "e0:b", "levels": {}}  # not timed: nothing made up
    assert camera_rate_report(CalibrationData(device={}, levels=levels)) == {}  # a dataset from before
    assert "cpu_median_ms" not in idle  # not measured in this dataset: no CPU column, none in the report
    assert "CPU time" not in "\n".join(_camera_rate_lines(report, ["idle", "cpu2"]))
    # Where the CPU time per frame was measured, the report gives its median per level and a table of it.
    data.camera_rate["cpu_ms"] = [4.0, 4.0, 5.0, 6.0, 4.0] + [4.5] * 5
    report = camera_rate_report(data)
    assert [report["top"]["levels"][level]["cpu_median_ms"] for level in ("idle", "cpu2")] == [4.0, 4.5]
    lines = _camera_rate_lines(report, ["idle", "cpu2"])
    assert "| top `e1:a` | 4.00 | 4.50 |" in lines and "| fastest `e0:b` | n/a | n/a |" in lines


def test_camera_rate_variants_are_the_references_and_the_best_at_each_resolution():
    table = load_variant_table(REPO_ROOT / "models" / "lite0-fashion-mnist")
    chosen = camera_rate_variants(table)
    assert {k: chosen[k] for k in ("top", "largest", "fastest")} == reference_variants(table)
    assert len(set(chosen.values())) == len(chosen)  # each variant timed once
    rows = {r["variant_id"]: r for r in table["variants"]}
    for resolution in sorted({r["resolution"] for r in rows.values()}):
        best = max(r["val_accuracy"] for r in rows.values() if r["resolution"] == resolution)
        timed = [v for v in chosen.values() if rows[v]["resolution"] == resolution]
        assert any(rows[v]["val_accuracy"] == best for v in timed), resolution
    # A network of one input size: the references alone.
    tiny = load_variant_table(DEFAULT_MODEL)
    assert camera_rate_variants(tiny) == reference_variants(tiny)
    # The report follows the variants the calibration timed.
    levels = [{"name": "idle", "idle": True}]
    data = CalibrationData(
        device={"reference_variants": {"top": "e1:a"}, "camera_rate_variants": {"top": "e1:a", "best @64": "e0:b"}},
        levels=levels,
        camera_rate={"variant_id": ["e1:a", "e0:b"], "level": ["idle", "idle"], "latency_ms": [5.0, 1.0]},
    )
    assert camera_rate_report(data)["best @64"]["levels"]["idle"]["median_ms"] == 1.0


def test_slowdown_by_level_is_the_median_over_variants_of_their_ratio_to_idle():
    from adascale_ros.profiling.fitting import MedianGroup, slowdown_by_level

    state = np.full(4, math.nan)
    groups = [  # a took 1.0 and 1.2 ms at idle
        MedianGroup("a", True, 1.1, state, "idle"),
        MedianGroup("b", True, 2.0, state, "idle"),
        MedianGroup("a", False, 2.2, state, "busy"),
        MedianGroup("b", False, 3.0, state, "busy"),
    ]
    levels = [{"name": "idle", "idle": True}, {"name": "busy", "idle": False}, {"name": "unmeasured", "idle": False}]
    slowdown = slowdown_by_level(groups, levels)
    assert slowdown["idle"] == 1.0
    assert slowdown["busy"] == pytest.approx(1.75)  # a: 2.2 / 1.1, b: 3.0 / 2.0
    assert math.isnan(slowdown["unmeasured"])


def test_split_half_agreement_says_how_often_a_pairs_two_halves_agree_within_10_percent():
    from adascale_ros.profiling.fitting import split_half_agreement

    rows = [  # (variant, level, round, ms); in calibration order by round, whatever the row order
        *[("a", "idle", r, ms) for r, ms in enumerate([1.0, 1.05, 1.0, 1.02])],  # halves 1.0 / 1.035: agree
        *[("b", "idle", r, ms) for r, ms in enumerate([1.0, 2.0, 1.1, 2.1])],  # 1.05 / 2.05: disagree
        *[("a", "busy", r, ms) for r, ms in reversed(list(enumerate([2.0, 2.1, 2.0, 2.1, 2.0])))],  # agree
        ("b", "busy", 0, 3.0),  # fewer than 4 samples: not counted
    ]
    table = {
        "variant_id": np.array([r[0] for r in rows]),
        "level": np.array([r[1] for r in rows]),
        "round": np.array([r[2] for r in rows]),
        "latency_ms": np.array([r[3] for r in rows]),
    }
    agreement = split_half_agreement(table, table["level"] == "idle")
    assert agreement["idle"] == 0.5 and agreement["load"] == 1.0
    assert agreement["pairs"] == {"idle": 2, "load": 1}


def test_predictions_follow_the_law_and_rise_with_load(fitted):
    _, table, predictor, _ = fitted
    infos = module_infos(table)
    state = np.array([0.5, (0.25 + 0.02) / 0.7, 20000.0, math.nan])
    latency, energy = predictor.predict(state)
    assert latency.shape == energy.shape == (780,)
    for variant_id in ("e0:dws", "e3:res-mbc-fac-fac"):
        expected = sum(module_law_ms(infos[k], 0.5) for k in variant_module_keys(Variant.parse(variant_id)))
        assert latency[predictor.variant_index(variant_id)] == pytest.approx(expected, rel=0.1)
    low = predictor.latency_ms(predictor.at_load(state, 0.1)[None, :])[0]
    high = predictor.latency_ms(predictor.at_load(state, 0.9)[None, :])[0]
    assert np.all(high > low)
    assert np.all(np.isfinite(energy)) and np.all(energy > 0)


def test_prediction_time_covers_every_variant_at_both_loads(fitted):
    from adascale_ros.profiling.calibration import prediction_time_ms

    _, table, predictor, _ = fitted
    timing = prediction_time_ms(predictor, repeats=20)
    assert timing["variants"] == len(table["variants"])
    assert 0 < timing["median_ms"] <= timing["p90_ms"]


def test_predictor_files_round_trip_and_fail_clearly(fitted, tmp_path):
    model_dir, table, predictor, _ = fitted
    loaded = LatencyPredictor.load(model_dir)
    state = np.array([0.3, 0.3, 8000.0, math.nan])
    np.testing.assert_array_equal(loaded.latency_ms(state[None, :]), predictor.latency_ms(state[None, :]))
    np.testing.assert_array_equal(loaded.energy_mj(state), predictor.energy_mj(state))
    assert loaded.check_against(table, device_fingerprint()) == []
    other = dict(device_fingerprint(), cpu_model="another CPU")
    assert any("another machine" in w for w in loaded.check_against(table, other))
    changed = {**table, "modules": table["modules"][1:]}
    assert any("another network" in w for w in loaded.check_against(changed, device_fingerprint()))

    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    with pytest.raises(ModelLoadError, match="calibrate"):
        LatencyPredictor.load(tmp_path)  # no profiler/ at all
    (broken / "profiler" / "predictor.npz").write_bytes(b"not a zip")
    with pytest.raises(ModelLoadError, match=r"predictor\.npz: not an \.npz archive of plain arrays") as refused:
        LatencyPredictor.load(broken)
    assert "pickle" not in str(refused.value)  # NumPy's advice to unpickle it is not passed on
    # An object array can only be read by unpickling: refused, never run.
    np.savez(broken / "profiler" / "predictor.npz", module_features=np.array([{"x": 1}], dtype=object))
    with pytest.raises(ModelLoadError, match=r"predictor\.npz: not an \.npz archive of plain arrays"):
        LatencyPredictor.load(broken)
    # Plain arrays of the wrong names or shapes.
    np.savez(broken / "profiler" / "predictor.npz", module_features=np.zeros(3))
    with pytest.raises(ModelLoadError, match="corrupt predictor"):
        LatencyPredictor.load(broken)


# ---------------------------------------------------------------- energy and correction


def test_energy_model_eq3_and_cache_rate_eq5():
    assert cache_hit_rate(np.array([1.0, 1.0, 0.0]), np.array([0.25, 1.5, 0.1])).tolist() == [0.75, 0.0, 0.0]
    # 1 MB, eps 0.5: 1e6*10*0.5/2e9 + 1e6*2*0.5/1e9 J = 2.5 mJ + 1.0 mJ.
    assert energy_mj(np.array([1e6]), np.array([0.5]), PROFILE)[0] == pytest.approx(3.5)
    # A measured clock replaces the profile's: at 4 GHz the CPU term halves.
    assert energy_mj(np.array([1e6]), np.array([0.5]), PROFILE, cpu_mhz=4000.0)[0] == pytest.approx(2.25)
    memory = np.array([1e6, 2e6, 4e6, 3e6])
    eps = np.array([0.2, 0.5, 0.9, 0.7])
    truth = EnergyProfile("truth", 7.0, 0.0, 3.0, 2000.0, 0.0, 1000.0)
    fitted = fit_power_coefficients(memory, eps, energy_mj(memory, eps, truth), PROFILE, "rapl")
    assert (fitted.cpu_w, fitted.mem_w, fitted.source) == (pytest.approx(7.0), pytest.approx(3.0), "rapl")
    with pytest.raises(ValueError, match="mem_w"):
        EnergyProfile("bad", 1.0, 0.0, -1.0, 1000.0, 0.0, 1000.0)
    for shipped in (REPO_ROOT / "config" / "energy").glob("*.yaml"):
        assert EnergyProfile.from_yaml(shipped).name == shipped.stem


def test_latency_correction_tracks_a_quantile_of_the_measured_ratio():
    correction = LatencyCorrection(window=10, quantile=0.9, min_samples=3)
    assert correction.ratio_ == 1.0
    correction.partial_fit(5.0, 1.0)
    assert correction.ratio_ == 1.0  # too few samples yet
    correction.samples_.clear()
    assert not correction.partial_fit(math.nan, 1.0) and not correction.partial_fit(2.0, math.nan)
    assert not correction.partial_fit(2.0, 0.0) and correction.n_updates_ == 1
    for _ in range(10):
        correction.partial_fit(3.0, 1.5)
    assert correction.ratio_ == pytest.approx(2.0)
    correction.partial_fit(100.0, 1.0)  # one slow frame in ten barely moves the 0.9 quantile (clamped at 4)
    assert correction.ratio_ == pytest.approx(2.0 + 0.1 * (4.0 - 2.0))
    for _ in range(3):
        correction.partial_fit(3.0, 1.0)  # a sustained rise moves it: the 0.9 quantile of 2 x6, 3 x3, 4
    assert correction.ratio_ == pytest.approx(3.1)
    for _ in range(10):
        correction.partial_fit(1.0, 1.0)  # old samples leave the window
    assert correction.ratio_ == pytest.approx(1.0)
    with pytest.raises(ValueError):
        LatencyCorrection(window=0)
    with pytest.raises(ValueError):
        LatencyCorrection(window=10, tail_window=0)


def test_forgetting_what_a_load_taught_returns_to_the_raw_predictions():
    incidence = np.array([[1.0, 0.0], [1.0, 1.0]])
    correction = LatencyCorrection(window=10, incidence=incidence, min_samples=5, variant_min_samples=3)
    for _ in range(12):  # variant 1 under load: 3 ms over its prediction, and slow tails
        correction.partial_fit(7.0, 4.0, 1)
    loaded = correction.corrected(np.array([2.0, 4.0]))
    assert loaded[1] >= 7.0 and loaded[0] > 2.0  # variant 0 shares the offset through its module
    correction.forget_measured()
    assert correction.ratio_ == 1.0 and not correction.measured_offsets_
    assert correction.corrected(np.array([2.0, 4.0])).tolist() == [2.0, 4.0]
    correction.partial_fit(4.5, 4.0, 1)  # learning again from the next results
    assert correction.n_updates_ == 13


def test_the_tail_can_be_taken_over_more_results_than_the_offsets():
    correction = LatencyCorrection(window=10, quantile=0.9, min_samples=3, tail_window=40)
    for _ in range(40):
        correction.partial_fit(2.0, 1.0)
    for _ in range(10):
        correction.partial_fit(1.0, 1.0)  # ten fast frames: over the last 10 alone the tail would be 1
    assert correction.ratio_ == pytest.approx(2.0)
    for _ in range(30):
        correction.partial_fit(1.0, 1.0)
    assert correction.ratio_ == pytest.approx(1.0)


def test_latency_correction_learns_offsets_per_variant_and_shares_them_through_modules():
    # Modules: stem, a big block, a small block. Variants: 0 = stem+small, 1 = stem+big,
    # 2 = stem+big+small, 3 = stem alone.
    incidence = np.array([[1, 0, 1], [1, 1, 0], [1, 1, 1], [1, 0, 0]], float)
    correction = LatencyCorrection(window=10, min_samples=3, incidence=incidence, variant_min_samples=3)
    raw = np.array([1.0, 1.3, 1.5, 0.8])
    assert correction.corrected(raw) == pytest.approx(raw)  # nothing measured yet
    for _ in range(10):  # the big variant runs 0.6 ms over its prediction, the small one 0.1 under
        correction.partial_fit(1.9, 1.3, variant=1)
        correction.partial_fit(0.9, 1.0, variant=0)
    offsets = correction.offsets(4)
    assert offsets[:2] == pytest.approx([-0.1, 0.6])  # measured: their own medians
    # Never run: each gets the per-frame offset plus the sum of its modules' ones, fitted to the two
    # measured (the smallest module offsets that explain them: per frame 0.25, big 0.35, small -0.35
    # ms; the stem, in every variant, is the per-frame term's). Variant 2 (stem+big+small) is
    # corrected by the frame's offset alone, its big and small blocks cancelling; the stem alone pays
    # the frame's.
    assert offsets[2:] == pytest.approx([0.25, 0.25], abs=0.02)  # ridge shrinks a little
    # Measured variants' ratios are now 1, so the tail is 1.
    assert correction.ratio_ == pytest.approx(1.0)
    assert correction.corrected(raw)[:2] == pytest.approx([0.9, 1.9])
    # A load that slows the running variant by 2x raises the tail at once (before its median
    # follows), and with it every prediction.
    for _ in range(3):
        correction.partial_fit(1.8, 1.0, variant=0)
    assert correction.ratio_ > 1.5 and correction.offsets(4)[0] == pytest.approx(-0.1)
    assert all(correction.corrected(raw) > 1.5 * (raw + correction.offsets(4)) - 1e-9)
    # One slow frame leaves a variant's offset (a median) where it was.
    for _ in range(10):
        correction.partial_fit(0.9, 1.0, variant=0)
    correction.partial_fit(4.0, 1.0, variant=0)
    assert correction.offsets(4)[0] == pytest.approx(-0.1)
    # A large negative offset never takes a prediction below low x raw.
    for _ in range(10):
        correction.partial_fit(0.3, 1.5, variant=2)
    assert correction.corrected(raw)[2] >= 0.25 * raw[2] * correction.ratio_


def test_what_no_module_explains_every_variant_pays_so_an_untried_one_never_looks_cheaper_for_it():
    # Modules: stem, a, b, c. Variant 0 = stem+a has run under a load, 3 ms over its prediction;
    # variant 1 = stem+b+c shares only the stem and is predicted 1 ms slower than it.
    incidence = np.array([[1, 1, 0, 0], [1, 0, 1, 1]], float)
    correction = LatencyCorrection(window=10, min_samples=100, incidence=incidence, variant_min_samples=3)
    for _ in range(5):
        correction.partial_fit(5.0, 2.0, variant=0)
    corrected = correction.corrected(np.array([2.0, 3.0]))
    # One measured variant cannot tell a slow frame from slow blocks: the offset is the frame's, and
    # the variant that computes more stays the slower (split over stem and a, it was priced 4.5 ms).
    assert corrected.tolist() == pytest.approx([5.0, 6.0], abs=0.01)


def test_every_variant_is_priced_from_the_latest_measured_one_and_the_work_it_adds_or_saves():
    incidence = np.array([[1, 1, 0], [1, 0, 1]], float)  # two variants, each with its own block
    correction = LatencyCorrection(
        window=10, min_samples=100, tail_window=100, incidence=incidence, variant_min_samples=3
    )  # the tail stays 1
    raw = np.array([2.0, 3.0])  # variant 1 computes 1 ms more
    for _ in range(5):
        correction.partial_fit(3.0, 3.0, variant=1)  # variant 1 ran at its prediction, a while ago
    for _ in range(5):
        correction.partial_fit(6.0, 2.0, variant=0)  # now variant 0 runs 4 ms over: a load came
    # Variant 1's own offset (0 ms) is from before the load; variant 0's results are the load's measure.
    assert correction.corrected(raw).tolist() == pytest.approx([6.0, 7.0])
    for _ in range(5):
        correction.partial_fit(3.0, 3.0, variant=1)  # the load has gone: variant 1 runs at its prediction
    assert correction.corrected(raw).tolist() == pytest.approx([6.0, 3.0])  # variant 0's price is its own
    for _ in range(10):
        correction.partial_fit(8.0, 3.0, variant=1)  # a load again, measured on variant 1
    # Variant 0 saves the 1 ms it does not compute, not the 5 ms variant 1's offset grew by.
    assert correction.corrected(raw).tolist() == pytest.approx([7.0, 8.0])
    correction.forget_measured()
    assert correction.corrected(raw).tolist() == pytest.approx(raw.tolist())  # nothing measured: no floor


def test_the_tail_is_the_spread_about_known_offsets_not_the_error_of_transferred_ones():
    incidence = np.array([[1, 0], [1, 1]], float)  # variant 1 = variant 0's module and one more
    correction = LatencyCorrection(window=10, min_samples=3, incidence=incidence, variant_min_samples=3)
    for _ in range(10):
        correction.partial_fit(1.0, 1.0, variant=0)
    assert correction.ratio_ == pytest.approx(1.0)
    # A switch to variant 1, whose transferred offset is 1 ms too low: its first results measure
    # that bias, which its own offset takes up after three; the tail stays 1 throughout.
    for _ in range(3):
        correction.partial_fit(3.0, 1.5, variant=1)
    assert correction.ratio_ == pytest.approx(1.0)
    assert correction.corrected(np.array([1.0, 1.5]))[1] == pytest.approx(3.0)
    # Once it has its own offset, its spread about it is the tail.
    for _ in range(10):
        correction.partial_fit(6.0, 1.5, variant=1)  # twice as slow as its offset says
    assert correction.ratio_ == pytest.approx(2.0)


def test_an_offset_not_refreshed_for_offset_max_age_results_gives_way_to_the_transferred_one():
    incidence = np.array([[1, 0], [1, 1]], float)
    correction = LatencyCorrection(
        window=10, min_samples=3, incidence=incidence, variant_min_samples=3, offset_max_age=20
    )
    for _ in range(5):
        correction.partial_fit(4.0, 1.5, variant=1)  # variant 1 in a bad moment: 2.5 ms over
    assert correction.offsets(2)[1] == pytest.approx(2.5)
    for _ in range(20):
        correction.partial_fit(1.2, 1.0, variant=0)
    assert 1 in correction.measured_offsets_  # 20 results of another variant: still its own
    correction.partial_fit(1.2, 1.0, variant=0)
    assert 1 not in correction.measured_offsets_  # 21: gone, transferred from variant 0's modules
    assert correction.offsets(2)[1] == pytest.approx(0.2, abs=0.05)
    with pytest.raises(ValueError, match="offset_max_age"):
        LatencyCorrection(offset_max_age=0)


# ---------------------------------------------------------------- calibration under real load


def _stress_ng_running() -> bool:
    return subprocess.run(["pgrep", "-x", "stress-ng"], capture_output=True).returncode == 0


def test_calibration_measures_under_stress_ng_and_leaves_nothing_behind():
    work = np.random.default_rng(0).standard_normal((64, 64))
    calls = {
        "fixed": lambda: work.sum(),
        "stem": lambda: work @ work,
        "exit0": lambda: work @ work,
        "s0:res": lambda: work @ work,
    }
    variants = [Variant.parse("e0:res")]
    plan = CalibrationPlan(
        levels=[LoadLevel("idle", StressSpec()), LoadLevel("cpu2x100", StressSpec(2, 100))],
        seconds_per_level=1.0, settle_s=0.3, round_s=0.1, repeats=3, always=(variants[0],), camera_frames=3,
    )  # fmt: skip
    data = run_calibration(plan, calls, lambda v: work @ work, variants, device_fingerprint())
    modules = data.table("modules")
    assert set(modules["level"]) == {"idle", "cpu2x100"} and set(modules["key"]) == set(calls)
    idle = modules["cpu_util"][modules["level"] == "idle"]
    loaded = modules["cpu_util"][modules["level"] == "cpu2x100"]
    assert np.nanmedian(loaded) > np.nanmedian(idle) + 0.3  # background load is seen, our own is not
    assert len(data.table("variants")["variant_id"]) > 0 and len(data.cache["key"]) == 2 * len(calls)
    camera = data.table("camera_rate")  # one frame at a time: its latency and the CPU time it took
    assert set(camera["level"]) == {"idle", "cpu2x100"} and (camera["cpu_ms"] > 0).all()
    assert not _stress_ng_running()

    def interrupt(done_s: float) -> None:
        if done_s > 1.2:  # inside the loaded level
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_calibration(plan, calls, lambda v: work @ work, variants, device_fingerprint(), progress=interrupt)
    assert not _stress_ng_running()


def test_calibration_gives_whole_variants_the_time_of_modules_and_each_level_its_references():
    # Modules of 10 ms (a backbone's scale): one pass over them outlasts round_s.
    calls = {key: lambda: time.sleep(0.01) for key in ("fixed", "stem", "exit0", "s0:res", "s0:dws")}
    variants = [Variant.parse(v) for v in ("e0:res", "e0:dws")]
    reference = Variant.parse("e0:dws")
    idle = [LoadLevel(name, StressSpec()) for name in ("idle", "idle_again")]
    plan = CalibrationPlan(
        levels=idle, seconds_per_level=0.6, settle_s=0.0, round_s=0.02, repeats=1, variants_per_exit=1,
        always=(reference,),
    )  # fmt: skip
    data = run_calibration(plan, calls, lambda v: time.sleep(0.005), variants, device_fingerprint())
    samples = data.table("variants")
    for level in ("idle", "idle_again"):
        at_level = samples["variant_id"][samples["level"] == level]
        assert at_level[0] == reference.id  # first thing every level measures
        rounds = len(set(samples["round"][samples["level"] == level]))
        assert len(at_level) >= 4 * rounds  # ~50 ms of modules, then ~50 ms of 5 ms variants per round


@pytest.mark.slow
def test_calibrate_refuses_fewer_than_one_variant_per_exit_before_measuring(capsys):
    from adascale_ros.cli.main import main as cli

    for bad in ("0", "-1"):
        assert cli(["calibrate", str(REPO_ROOT / "models" / "lite0-fashion-mnist"), "--variants-per-exit", bad]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "variants per exit must be >= 1" in err


def test_calibrate_and_predict_commands_on_the_real_model(tmp_path):
    model_dir = tmp_path / "model"
    shutil.copytree(DEFAULT_MODEL, model_dir, ignore=shutil.ignore_patterns("profiler", "calibration_report.*"))
    cli = [sys.executable, "-m", "adascale_ros.cli.main"]
    run = subprocess.run(
        [*cli, "calibrate", str(model_dir), "--quick", "--no-progress"], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    assert "auto-selected" in run.stdout and (model_dir / "calibration_report.json").exists()
    assert not _stress_ng_running()
    # The reference variants one camera frame at a time, at every level: what a deadline is set from.
    report = json.loads((model_dir / "calibration_report.json").read_text())
    levels = [level["name"] for level in report["levels"]]
    for role in ("top", "largest", "fastest"):
        figures = report["camera_rate"][role]["levels"]
        assert list(figures) == levels and figures[levels[0]]["slowdown"] == 1.0
        assert all(0 < f["median_ms"] <= f["p90_ms"] for f in figures.values())
    assert "At camera rate" in (model_dir / "calibration_report.md").read_text()
    run = subprocess.run(
        [*cli, "predict", str(model_dir), "--load-index", "0.5", "--json"], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    variants = json.loads(run.stdout)["variants"]
    assert len(variants) == 780 and all(v["predicted_latency_ms"] > 0 for v in variants)


# ---------------------------------------------------------------- the node, in its own process

MODULE = "adascale_ros.nodes.profiler"


def resource_state(load: float, cpu: float, forecast: float = math.nan):
    from adascale_msgs.msg import ResourceState

    msg = ResourceState()
    msg.cpu_util, msg.load_index, msg.load_index_forecast = cpu, load, forecast
    msg.mem_available_mb, msg.cpu_freq_mhz = 20000.0, math.nan
    msg.mem_util = msg.gpu_util = msg.gpu_mem_util = msg.power_w = math.nan
    return msg


def test_node_publishes_profiles_that_follow_load_forecast_and_measurements(fitted, ros_node, start_process):
    from adascale_msgs.msg import ElasticClassification, ResourceState, VariantProfileArray

    model_dir, _, predictor, _ = fitted
    proc = start_process(["-m", MODULE, "--ros-args", "-p", f"model_dir:={model_dir}", "-p", "max_rate_hz:=20.0"])
    current, forecast = [], []
    ros_node.create_subscription(
        VariantProfileArray, "/profiler/profiles", lambda m: (forecast if m.load_is_forecast else current).append(m), 10
    )
    diagnostics = subscribe_diagnostics(ros_node, "profiler")
    states = ros_node.create_publisher(ResourceState, "/profiler/resource_state", 10)
    results = ros_node.create_publisher(ElasticClassification, "/profiler/classification", 10)

    def publish_until(msg, condition, timeout_s=20.0):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not condition():
            states.publish(msg)
            spin_until(ros_node, condition, 0.3)
        return condition()

    def mean_latency(array) -> float:
        return float(np.mean(array.predicted_latency_ms))

    assert publish_until(resource_state(0.05, 0.05), lambda: bool(current)), proc.poll()
    idle = current[-1]
    assert list(idle.variant_ids) == list(predictor.variant_ids) and not idle.load_is_forecast
    columns = ("exit_indices", "accuracy", "params", "flops", "storage_bytes", "memory_accesses")
    columns += ("predicted_latency_ms", "predicted_energy_mj", "measured_latency_ms")
    assert {len(getattr(idle, c)) for c in columns} == {780}
    assert idle.load_index == pytest.approx(0.05)
    assert idle.exit_indices[0] == Variant.parse(idle.variant_ids[0]).exit_index
    assert idle.flops[0] > 0 and 0 < idle.accuracy[0] <= 1
    assert math.isnan(idle.measured_latency_ms[0]) and idle.predicted_energy_mj[0] > 0

    count = len(current)
    assert publish_until(resource_state(0.8, 0.95), lambda: len(current) > count and current[-1].load_index > 0.5)
    assert mean_latency(current[-1]) > 1.5 * mean_latency(idle)  # the synthetic device slows 2.4x at full CPU

    # A forecast of more load comes as a second array at the forecast load, predicting more latency.
    assert publish_until(resource_state(0.05, 0.05, forecast=0.9), lambda: bool(forecast))
    assert forecast[-1].load_index == pytest.approx(0.9) and mean_latency(forecast[-1]) > mean_latency(idle)

    # Malformed states are rejected and counted; the node keeps answering.
    for bad in (resource_state(math.nan, 0.1), resource_state(1.5, 0.1), resource_state(0.2, -3.0)):
        states.publish(bad)
    assert spin_until(
        ros_node,
        lambda: any(kv.key == "states_rejected" and kv.value == "3" for s in diagnostics for kv in s.values),
        10,
    )

    # Measured latencies twice the prediction: the correction doubles the next predictions.
    idle_ms = dict(zip(idle.variant_ids, idle.predicted_latency_ms, strict=True))
    variant = "e1:res-fac"
    assert math.isnan(current[-1].frame_period_ms)  # no result yet: the camera's period is unknown
    result = ElasticClassification(
        variant_id=variant, exit_index=1, latency_ms=2.0 * idle_ms[variant], frame_period_ms=66.7
    )
    count = len(current)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for _ in range(5):
            results.publish(result)
        states.publish(resource_state(0.05, 0.05))
        spin_until(ros_node, lambda: False, 0.2)
        index = list(current[-1].variant_ids).index(variant)
        if len(current) > count and current[-1].predicted_latency_ms[index] > 1.8 * idle_ms[variant]:
            break
    latest = current[-1]
    index = list(latest.variant_ids).index(variant)
    assert latest.predicted_latency_ms[index] == pytest.approx(2.0 * idle_ms[variant], rel=0.1)
    assert latest.measured_latency_ms[index] == pytest.approx(2.0 * idle_ms[variant], rel=1e-5)
    assert latest.frame_period_ms == pytest.approx(66.7)  # passed on to the selector
    assert proc.poll() is None


def test_reactive_mode_ignores_resource_states(fitted, ros_node, start_process):
    """resource_aware false (the evaluation's `reactive` baseline): idle-state predictions, no state needed."""
    from adascale_msgs.msg import ResourceState, VariantProfileArray

    model_dir, _, predictor, _ = fitted
    args = ["-p", f"model_dir:={model_dir}", "-p", "max_rate_hz:=20.0", "-p", "resource_aware:=false"]
    proc = start_process(["-m", MODULE, "--ros-args", *args])
    arrays = []
    ros_node.create_subscription(VariantProfileArray, "/profiler/profiles", arrays.append, 10)
    assert spin_until(ros_node, lambda: bool(arrays), 30), proc.poll()  # no resource state was ever sent
    idle = list(arrays[-1].predicted_latency_ms)
    expected = predictor.latency_ms(predictor.at_load(predictor.impute(predictor.state_mean), 0.0)[None, :])[0]
    np.testing.assert_allclose(idle, expected, rtol=1e-5)

    states = ros_node.create_publisher(ResourceState, "/profiler/resource_state", 10)
    count = len(arrays)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(arrays) < count + 5:
        states.publish(resource_state(0.9, 0.95, forecast=0.95))
        spin_until(ros_node, lambda: False, 0.2)
    assert len(arrays) >= count + 5
    assert not any(a.load_is_forecast for a in arrays)
    np.testing.assert_allclose(arrays[-1].predicted_latency_ms, idle, rtol=1e-5)
    assert proc.poll() is None


def test_node_refuses_to_start_without_predictors(tmp_path, start_process):
    for name in ("variants.json", "model_card.json"):
        shutil.copy(DEFAULT_MODEL / name, tmp_path / name)
    proc = start_process(["-m", MODULE, "--ros-args", "-p", f"model_dir:={tmp_path}"])
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "adascale calibrate" in out and "Traceback" not in out


@pytest.mark.slow
def test_interrupted_calibrate_leaves_no_stress_ng(tmp_path, start_process):
    model_dir = tmp_path / "model"
    shutil.copytree(DEFAULT_MODEL, model_dir, ignore=shutil.ignore_patterns("profiler", "calibration_report.*"))
    proc = start_process(["-m", "adascale_ros.cli.main", "calibrate", str(model_dir), "--quick", "--no-progress"])
    deadline = time.monotonic() + 60
    while not _stress_ng_running() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    assert _stress_ng_running(), "calibration never reached its loaded level"
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 130 and "interrupted" in out, out
    assert not _stress_ng_running()


def test_replaying_recorded_results_through_the_correction(fitted, tmp_path):
    from adascale_ros.harness.correction_replay import (
        evaluation_deadline_ms,
        load_evaluation_runs,
        markdown,
        priced_above_more_work,
        replay,
        replay_evaluation,
    )
    from adascale_ros.harness.records import PolicyRun, ResultRecord, StateRecord

    _, _, predictor, _ = fitted
    variant = predictor.variant_ids[40]
    # One frame in ten three times as slow: a 0.9 quantile over enough results sits between.
    latencies = [3.0 if i % 10 == 9 else 1.0 for i in range(400)]
    results = [ResultRecord(0.1 * i, i, variant, 0, 0, ms) for i, ms in enumerate(latencies)]
    states = [StateRecord(0.05 + 0.1 * i, 0.1, 0.1, 20000.0, math.nan) for i in range(400)]
    run = PolicyRun("adascale", 40.0, [], results, states, [(0.0, 0)])
    deadline = 1.5  # between the variant's usual and slow frames: its tail prices it over
    replayed, over, tails, inverted = replay(run, predictor, 30, 100, 0.9, budget_ms=deadline)
    # Over: slow frames the tail does not cover, and the first few before the offset is learnt.
    assert replayed == 400 and 0.05 <= over / replayed <= 0.125
    assert tails[-1] > 1.0
    # Priced over the deadline, yet no variant the raw model puts above it priced within: what one
    # variant measured is every frame's offset.
    raw = predictor.latency_ms(states[0].vector()[None, :])[0]
    assert np.sum(raw > raw[predictor.variant_index(variant)]) > 10 and inverted == 0
    # The count itself: over the deadline, and a variant of more raw work within it.
    raw2, budget = np.array([1.0, 2.0, 3.0]), 5.0
    assert priced_above_more_work(raw2, np.array([6.0, 4.0, 7.0]), 0, budget)  # variant 1 looks cheaper
    assert not priced_above_more_work(raw2, np.array([6.0, 7.0, 8.0]), 0, budget)  # priced by their work
    assert not priced_above_more_work(raw2, np.array([4.0, 6.0, 7.0]), 0, budget)  # within the deadline
    assert not priced_above_more_work(raw2, np.array([4.0, 6.0, 7.0]), 1, budget)  # only less work within
    (tmp_path / "runs").mkdir()
    run.save(tmp_path / "runs" / "adascale.json.gz")
    assert evaluation_deadline_ms(tmp_path) == math.inf  # no config.json recorded
    (tmp_path / "runs" / "config.json").write_text(json.dumps({"budgets_ms": [deadline]}))
    assert evaluation_deadline_ms(tmp_path) == deadline
    rows = replay_evaluation(load_evaluation_runs(tmp_path), predictor, [10, 100], budget_ms=deadline)
    assert [(r.policy, r.tail_window, r.results) for r in rows] == [("adascale", 10, 400), ("adascale", 100, 400)]
    assert "| adascale | 100 | 400 |" in markdown(rows, 0.9, deadline) and "deadline (1.5 ms)" in markdown(
        rows, 0.9, 1.5
    )
    with pytest.raises(FileNotFoundError, match="no recorded runs"):
        load_evaluation_runs(tmp_path / "nothing")


def test_the_online_profiler_rejects_what_cannot_describe_a_load_and_forgets_after_a_load(fitted):
    _, table, predictor, _ = fitted
    core = OnlineProfiler(predictor, correction_window=3, correction_tail_window=3)
    assert core.profiles(now_s=0.0) == []  # no state yet: nothing to predict at
    with pytest.raises(ValueError, match="load_index"):
        core.on_state((1.5, 0.2, 1000.0, 2000.0), math.nan, now_s=0.0)
    core.on_state((0.9, 0.9, math.nan, -1.0), forecast=0.95, now_s=0.0)  # unknown memory and frequency
    current, forecast = core.profiles(now_s=0.1)
    assert (current.load_index, current.is_forecast, forecast.is_forecast) == (0.9, False, True)
    assert np.all(forecast.latency_ms >= current.latency_ms)
    variant = table["variants"][0]["variant_id"]
    with pytest.raises(ValueError, match="unknown variant"):
        core.on_result("e9:nothing", 1.0, 0, False, False, 66.0, now_s=0.2)
    with pytest.raises(ValueError, match="latency_ms"):
        core.on_result(variant, math.nan, 0, False, False, 66.0, now_s=0.2)
    index = predictor.variant_index(variant)
    # Three times the prediction: from the third result on (a measured latency's minimum) also its own offset.
    for k in range(MEASURED_MIN_RESULTS):
        assert index not in core.correction.measured_offsets_
        core.on_result(variant, 3 * float(current.latency_ms[0]), 0, False, False, 66.0, now_s=0.3 + 0.01 * k)
    assert index in core.correction.measured_offsets_ and core.frame_period_ms == 66.0
    (corrected, _) = core.profiles(now_s=0.4)
    assert corrected.latency_ms[index] > 2 * current.latency_ms[index]
    assert core.measured_ms[index] == pytest.approx(3 * float(current.latency_ms[0]), rel=1e-6)
    core.on_state((0.6, 0.6, math.nan, math.nan), math.nan, now_s=0.5)  # 0.3 below the peak: the load ended
    assert core.counts["corrections_reset"] == 1 and not core.correction.measured_offsets_
    assert core.counts | {"profiles": 0} == {
        "states": 3,
        "states_rejected": 1,
        "results": 2 + MEASURED_MIN_RESULTS,
        "results_rejected": 2,
        "profiles": 0,
        "corrections_reset": 1,
    }
    assert core.state_stale(now_s=0.5 + core.state_timeout_s + 0.1)


def test_a_state_at_a_load_takes_the_readings_given_and_the_typical_rest(fitted):
    predictor = fitted[2]
    followed = predictor.state_at(0.8)
    assert followed[1] == 0.8 and np.array_equal(followed, predictor.at_load(predictor.state_mean, 0.8), equal_nan=True)
    given = predictor.state_at(0.8, cpu_util=0.1, cpu_freq_mhz=1500.0)
    assert (given[0], given[1], given[3]) == (0.1, 0.8, 1500.0)
    with pytest.raises(ValueError, match="load index"):
        predictor.state_at(1.2)


def test_the_load_session_comparison_times_the_top_variant_idle_and_under_both_placements():
    from adascale_ros.load.stress import StressSpec
    from adascale_ros.model.directory import load_variant_table, reference_variants
    from adascale_ros.model.saved_model import load_model
    from adascale_ros.profiling.calibration import compare_load_sessions, format_load_sessions

    table = load_variant_table(DEFAULT_MODEL)
    spec = StressSpec(cpu_workers=1, cpu_load_percent=50)
    report = compare_load_sessions(load_model(DEFAULT_MODEL), table, spec, frames=3, gap_s=0.01, threads=1, rounds=1)
    assert report["variant"] == reference_variants(table)["top"]
    assert set(report["placements"]) == {"idle", "shared", "own"} and report["frames"] == 3
    assert report["placements"]["idle"]["slowdown"] == 1.0
    assert all(row["median_ms"] > 0 and row["slowdown"] > 0 for row in report["placements"].values())
    assert all(0 < row["cpu_median_ms"] for row in report["placements"].values())
    assert "| in a session of its own |" in format_load_sessions(report)
    assert "--cpu 1 --cpu-load 50" in report["load"]
