"""Short-term forecast of the load index with an autoregressive model.

AdaScale forecasts the load a little ahead so the selector can act before the
load arrives. ``ARForecaster`` keeps a sliding window of the last samples,
refits an AR(p) model with intercept by least squares after every sample, and
forecasts ``horizon`` steps ahead by iterating the model on its own outputs.

A few lines of numpy instead of statsmodels' ``AutoReg``: the fit runs at the
monitor's rate on a window of ~100 samples, where a full statsmodels model
object per sample costs far more than the least-squares solve it wraps.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

NAN = float("nan")


class ARForecaster:
    """Online AR(p) forecaster on a sliding window.

    Parameters
    ----------
    order:
        p, the number of lagged values in the model.
    window:
        Samples kept for fitting; must exceed ``2 * order + 1`` so the least
        squares problem is over-determined.
    horizon:
        Steps ahead the forecast is made for (>= 1).
    bounds:
        Forecasts are clipped to this range (the load index lives in [0, 1]).
    """

    def __init__(
        self,
        order: int = 3,
        window: int = 100,
        horizon: int = 10,
        bounds: tuple[float, float] = (0.0, 1.0),
    ) -> None:
        if order < 1:
            raise ValueError(f"order must be >= 1, got {order}")
        if window < 2 * order + 2:
            raise ValueError(f"window must be >= 2 * order + 2 = {2 * order + 2}, got {window}")
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        self.order = order
        self.window = window
        self.horizon = horizon
        self.bounds = bounds
        self._history: deque[float] = deque(maxlen=window)
        self.coef_: np.ndarray | None = None  # [intercept, a_1 .. a_p], a_1 on the newest lag

    def update(self, value: float) -> None:
        """Add one sample and refit. Non-finite samples are ignored."""
        if not math.isfinite(value):
            return
        self._history.append(float(value))
        if len(self._history) >= 2 * self.order + 2:
            self.coef_ = self._fit(np.fromiter(self._history, dtype=float))

    def _fit(self, series: np.ndarray) -> np.ndarray:
        p = self.order
        # Row t: [1, x[t-1], ..., x[t-p]] predicts x[t].
        lags = np.column_stack([series[p - k - 1 : len(series) - k - 1] for k in range(p)])
        design = np.column_stack([np.ones(len(lags)), lags])
        coef, *_ = np.linalg.lstsq(design, series[p:], rcond=None)
        return coef

    @property
    def fitted(self) -> bool:
        return self.coef_ is not None

    def forecast(self, steps: int | None = None) -> float:
        """Forecast ``steps`` (default: ``horizon``) ahead; NaN before the first fit."""
        if self.coef_ is None:
            return NAN
        steps = self.horizon if steps is None else steps
        lagged = list(self._history)[-self.order :][::-1]  # newest first
        low, high = self.bounds
        value = NAN
        for _ in range(steps):
            value = float(self.coef_[0] + np.dot(self.coef_[1:], lagged))
            value = min(high, max(low, value))  # keep the recursion in range
            lagged = [value, *lagged[:-1]]
        return value
