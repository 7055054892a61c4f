"""The AR load forecaster: on a process it can model, and on a recorded real trace."""

import math

import numpy as np
import pytest
from conftest import DATA_DIR

from adascale_ros.load.recorded import evaluate_forecasters, read_load_trace
from adascale_ros.resources import ARForecaster


def ar2_series(n: int, seed: int = 0, noise: float = 0.02) -> np.ndarray:
    """x[t] = 0.1 + 1.2 x[t-1] - 0.4 x[t-2] + e, a stationary AR(2) around 0.5."""
    rng = np.random.default_rng(seed)
    x = np.full(n, 0.5)
    for t in range(2, n):
        x[t] = 0.1 + 1.2 * x[t - 1] - 0.4 * x[t - 2] + rng.normal(0.0, noise)
    return x


def test_recovers_ar2_coefficients():
    f = ARForecaster(order=2, window=2000, horizon=1, bounds=(-math.inf, math.inf))
    for v in ar2_series(2000):
        f.update(v)
    intercept, a1, a2 = f.coef_
    assert a1 == pytest.approx(1.2, abs=0.05)
    assert a2 == pytest.approx(-0.4, abs=0.05)
    assert intercept == pytest.approx(0.1, abs=0.02)


def test_one_step_error_is_near_the_noise_floor_and_beats_baselines():
    noise = 0.02
    report = evaluate_forecasters(ar2_series(3000, seed=1, noise=noise), order=2, window=200, horizon=1)
    # The best possible one-step forecaster has MAE = noise * sqrt(2 / pi) ~ 0.016.
    assert report.ar.mae < 1.1 * noise * math.sqrt(2 / math.pi)
    assert report.ar.mae < 0.9 * report.persistence.mae
    assert report.ar.mae < 0.5 * report.window_mean.mae


def test_multi_step_forecast_converges_to_the_process_mean():
    f = ARForecaster(order=2, window=500, horizon=200)
    for v in ar2_series(500, seed=2):
        f.update(v)
    # Mean of the process: 0.1 / (1 - 1.2 + 0.4) = 0.5.
    assert f.forecast() == pytest.approx(0.5, abs=0.03)


def test_nan_before_fit_and_nan_samples_are_ignored():
    f = ARForecaster(order=2, window=10, horizon=1)
    assert math.isnan(f.forecast()) and not f.fitted
    for v in [0.2, float("nan"), 0.3, float("inf"), 0.2, 0.3, 0.2, 0.3]:
        f.update(v)
    assert f.fitted
    assert 0.0 <= f.forecast() <= 1.0


def test_forecast_is_clipped_to_bounds():
    f = ARForecaster(order=1, window=10, horizon=5)
    for v in np.linspace(0.5, 0.99, 10):  # a steep trend would extrapolate past 1
        f.update(v)
    assert f.forecast() <= 1.0


@pytest.mark.parametrize("kwargs", [{"order": 0}, {"order": 3, "window": 7}, {"horizon": 0}])
def test_invalid_configuration_is_rejected(kwargs):
    with pytest.raises(ValueError):
        ARForecaster(**kwargs)


def test_on_a_recorded_real_trace():
    """A load trace recorded on this kind of machine (2 cores) under random stress-ng bursts.

    Recorded with `adascale record-load --bursty --seconds 300 --out
    test/data/load_trace_bursty.csv`. On square-wave load, persistence is hard
    to beat in absolute error: the AR model hedges towards the recent mean, so
    it loses a little MAE and wins RMSE once the horizon is long enough for
    bursts to end. These bars pin that behaviour with the node's defaults.
    """
    series = read_load_trace(DATA_DIR / "load_trace_bursty.csv")
    one_step = evaluate_forecasters(series, order=3, window=300, horizon=1)
    assert one_step.ar.mae < 1.25 * one_step.persistence.mae
    assert one_step.ar.mae < 0.3 * one_step.window_mean.mae
    one_second = evaluate_forecasters(series, order=3, window=300, horizon=10)
    assert one_second.ar.rmse < 0.97 * one_second.persistence.rmse
    assert one_second.ar.mae < 0.8 * one_second.window_mean.mae
