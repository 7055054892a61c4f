"""Per-module latency regressors, stored as plain arrays, and the auto-selection rule.

Four regressor families per module type, as in the module-latency prediction
framework: linear regression, random forest, MLP and MEDN (multi-task
encoder-decoder network: an encoder to a latent, one head predicting latency
and one reconstructing the inputs, trained jointly so the latent keeps what
describes the module and the device state).

Fitting uses scikit-learn (and torch for MEDN); prediction is numpy only, on
arrays exported from the fitted model. That one prediction path serves the
accuracy report and the profiler node, keeps the node free of torch and
scikit-learn start-up, makes predicting every variant fast, and lets the
predictors be stored as arrays in an ``.npz`` read with ``allow_pickle=False``
(no pickled estimator, so a file loads the same across library versions and
cannot run code).

Every family sees the same transformed problem: standardised features and the
log of the latency. Load slows modules down multiplicatively, which is linear
in log space.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Arrays = dict[str, np.ndarray]


def _dense_forward(x: np.ndarray, weights: list[np.ndarray], biases: list[np.ndarray]) -> np.ndarray:
    """A ReLU MLP: ReLU after every layer but the last."""
    for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
        x = x @ w + b
        if i < len(weights) - 1:
            x = np.maximum(x, 0.0)
    return x


def _layers(arrays: Arrays, prefix: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
    count = sum(1 for k in arrays if k.startswith(f"{prefix}w"))
    return [arrays[f"{prefix}w{i}"] for i in range(count)], [arrays[f"{prefix}b{i}"] for i in range(count)]


def _named_layers(prefix: str, weights: list[np.ndarray], biases: list[np.ndarray]) -> Arrays:
    out: Arrays = {}
    for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
        out[f"{prefix}w{i}"], out[f"{prefix}b{i}"] = np.asarray(w, np.float64), np.asarray(b, np.float64)
    return out


class Linear:
    name = "linear"

    def fit(self, x: np.ndarray, y: np.ndarray, seed: int = 0, increasing: np.ndarray | None = None) -> Arrays:
        from scipy.optimize import lsq_linear

        # Least squares with the coefficients of the ``increasing`` columns bounded below by 0.
        lower = np.full(x.shape[1] + 1, -np.inf)
        if increasing is not None:
            lower[:-1][np.asarray(increasing, bool)] = 0.0
        design = np.hstack([x, np.ones((len(x), 1))])
        # BVLS, an active-set method, always ends; the default trust-region method can loop forever in
        # its backtracking on some calibrations (seen on a quick one of the tiny model).
        solution = lsq_linear(design, y, bounds=(lower, np.full_like(lower, np.inf)), method="bvls").x
        return {"coef": solution[:-1].astype(np.float64), "intercept": solution[-1:].astype(np.float64)}

    @staticmethod
    def predict(arrays: Arrays, x: np.ndarray) -> np.ndarray:
        return x @ arrays["coef"] + arrays["intercept"][0]


class Forest:
    """Random forest; the trees are exported as padded node arrays and walked level by level."""

    name = "random_forest"

    def __init__(self, trees: int = 30, max_depth: int = 10, min_samples_leaf: int = 20) -> None:
        self.trees, self.max_depth, self.min_samples_leaf = trees, max_depth, min_samples_leaf

    def fit(self, x: np.ndarray, y: np.ndarray, seed: int = 0, increasing: np.ndarray | None = None) -> Arrays:
        from sklearn.ensemble import RandomForestRegressor

        monotonic = None if increasing is None else np.asarray(increasing, bool).astype(int)
        model = RandomForestRegressor(
            n_estimators=self.trees, max_depth=self.max_depth, min_samples_leaf=self.min_samples_leaf,
            random_state=seed, monotonic_cst=monotonic,
        ).fit(x, y)  # fmt: skip
        trees = [est.tree_ for est in model.estimators_]
        width = max(t.node_count for t in trees)

        def padded(get: Callable, dtype: type, fill: float) -> np.ndarray:
            out = np.full((len(trees), width), fill, dtype)
            for i, t in enumerate(trees):
                out[i, : t.node_count] = get(t)
            return out

        return {
            "left": padded(lambda t: t.children_left, np.int32, -1),
            "right": padded(lambda t: t.children_right, np.int32, -1),
            "feature": padded(lambda t: np.maximum(t.feature, 0), np.int32, 0),
            "threshold": padded(lambda t: t.threshold, np.float64, 0.0),
            "value": padded(lambda t: t.value[:, 0, 0], np.float64, 0.0),
        }

    @staticmethod
    def predict(arrays: Arrays, x: np.ndarray) -> np.ndarray:
        left, right, feature = arrays["left"], arrays["right"], arrays["feature"]
        threshold, value = arrays["threshold"], arrays["value"]
        trees = np.arange(left.shape[0])[:, None]
        rows = np.arange(x.shape[0])[None, :]
        node = np.zeros((left.shape[0], x.shape[0]), np.int64)
        while True:
            l_child = left[trees, node]
            inner = l_child >= 0
            if not inner.any():
                break
            go_left = x[rows, feature[trees, node]] <= threshold[trees, node]
            node = np.where(inner, np.where(go_left, l_child, right[trees, node]), node)
        return value[trees, node].mean(axis=0)


class MLP:
    name = "mlp"

    def __init__(self, hidden: tuple[int, ...] = (32, 32)) -> None:
        self.hidden = hidden

    def fit(self, x: np.ndarray, y: np.ndarray, seed: int = 0, increasing: np.ndarray | None = None) -> Arrays:
        """``increasing`` cannot be imposed on an MLP: the auto-selection checks the fitted one instead."""
        from sklearn.neural_network import MLPRegressor

        model = MLPRegressor(
            hidden_layer_sizes=self.hidden, learning_rate_init=3e-3, max_iter=400, early_stopping=len(x) >= 200,
            n_iter_no_change=20, random_state=seed,
        ).fit(x, y)  # fmt: skip
        return _named_layers("", model.coefs_, [b for b in model.intercepts_])

    @staticmethod
    def predict(arrays: Arrays, x: np.ndarray) -> np.ndarray:
        return _dense_forward(x, *_layers(arrays, ""))[:, 0]


class MEDN:
    """Multi-task encoder-decoder network: encoder -> latent -> (latency head, reconstruction head)."""

    name = "medn"

    def __init__(
        self, hidden: int = 32, latent: int = 16, reconstruction_weight: float = 0.5, epochs: int = 400
    ) -> None:
        self.hidden, self.latent = hidden, latent
        self.reconstruction_weight, self.epochs = reconstruction_weight, epochs

    def fit(self, x: np.ndarray, y: np.ndarray, seed: int = 0, increasing: np.ndarray | None = None) -> Arrays:
        """``increasing`` is not imposed (see MLP)."""
        import torch
        from torch import nn

        torch.manual_seed(seed)
        d = x.shape[1]
        encoder = nn.Sequential(nn.Linear(d, self.hidden), nn.ReLU(), nn.Linear(self.hidden, self.latent), nn.ReLU())
        latency = nn.Sequential(nn.Linear(self.latent, self.hidden), nn.ReLU(), nn.Linear(self.hidden, 1))
        decoder = nn.Sequential(nn.Linear(self.latent, self.hidden), nn.ReLU(), nn.Linear(self.hidden, d))
        params = [*encoder.parameters(), *latency.parameters(), *decoder.parameters()]
        optimizer = torch.optim.Adam(params, lr=1e-2)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, self.epochs)
        xt = torch.as_tensor(x, dtype=torch.float32)
        yt = torch.as_tensor(y, dtype=torch.float32)[:, None]
        batch = 512
        steps_per_epoch = max(1, math.ceil(len(x) / batch))
        for _ in range(self.epochs):
            order = torch.randperm(len(x))
            for i in range(steps_per_epoch):
                idx = order[i * batch : (i + 1) * batch]
                z = encoder(xt[idx])
                loss = nn.functional.mse_loss(latency(z), yt[idx]) + self.reconstruction_weight * (
                    nn.functional.mse_loss(decoder(z), xt[idx])
                )
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            scheduler.step()
        # Prediction needs the encoder and the latency head only: one MLP.
        linears = [m for m in [*encoder, *latency] if isinstance(m, nn.Linear)]
        with torch.no_grad():
            return _named_layers("", [m.weight.T.numpy() for m in linears], [m.bias.numpy() for m in linears])

    @staticmethod
    def predict(arrays: Arrays, x: np.ndarray) -> np.ndarray:
        # The encoder ends in a ReLU, as every hidden layer does: one ReLU MLP.
        return _dense_forward(x, *_layers(arrays, ""))[:, 0]


REGRESSORS: dict[str, Callable[[], Linear | Forest | MLP | MEDN]] = {
    Linear.name: Linear,
    Forest.name: Forest,
    MLP.name: MLP,
    MEDN.name: MEDN,
}


def informative_scale(mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Standardisation scales, infinite for a feature that did not vary in calibration.

    Such a feature (the CPU clock of a VM) has a standard deviation of zero or of rounding
    noise; dividing by it would send any other value of that feature to +-1e12 and the
    prediction to inf. It carried no information, so it standardises to 0 whatever its value.
    """
    constant = std <= 1e-9 * np.maximum(1.0, np.abs(mean))
    return np.where(constant, np.inf, std)


@dataclass
class FittedRegressor:
    """One fitted regressor with its input standardisation; predicts latency in ms."""

    family: str
    x_mean: np.ndarray
    x_scale: np.ndarray
    arrays: Arrays

    def __post_init__(self) -> None:
        self.x_scale = informative_scale(self.x_mean, self.x_scale)  # on load too: older files had tiny scales

    @classmethod
    def fit(
        cls, family: str, x: np.ndarray, latency_ms: np.ndarray, seed: int = 0, increasing: np.ndarray | None = None
    ) -> FittedRegressor:
        """``increasing`` (a mask of columns): latency must not fall as these grow (the load readings);
        linear and random forest impose it, the networks are checked by the auto-selection."""
        if family not in REGRESSORS:
            raise ValueError(f"unknown regressor {family!r}; known: {sorted(REGRESSORS)}")
        mean = x.mean(axis=0)
        scale = informative_scale(mean, x.std(axis=0))
        arrays = REGRESSORS[family]().fit((x - mean) / scale, np.log(latency_ms), seed, increasing)
        return cls(family, mean, scale, arrays)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.exp(REGRESSORS[self.family].predict(self.arrays, (x - self.x_mean) / self.x_scale))

    @property
    def stored_bytes(self) -> int:
        return int(sum(a.nbytes for a in self.arrays.values()) + self.x_mean.nbytes + self.x_scale.nbytes)

    def predict_us(self, x: np.ndarray, repeats: int = 50) -> float:
        """Median time of one ``predict`` on ``x`` [us]."""
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            self.predict(x)
            samples.append(time.perf_counter() - start)
        return float(np.median(samples) * 1e6)

    def to_arrays(self, prefix: str) -> Arrays:
        out = {f"{prefix}x_mean": self.x_mean, f"{prefix}x_scale": self.x_scale}
        out.update({f"{prefix}{k}": v for k, v in self.arrays.items()})
        return out

    @classmethod
    def from_arrays(cls, family: str, arrays: Arrays, prefix: str) -> FittedRegressor:
        own = {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
        return cls(family, own.pop("x_mean"), own.pop("x_scale"), own)


# ------------------------------------------------------------------ accuracy


@dataclass(frozen=True)
class Score:
    """nn-Meter's accuracy (share within +-10 %), RMSE [ms] and R^2 on held-out samples."""

    within_10: float
    rmse_ms: float
    r2: float
    samples: int

    @classmethod
    def of(cls, predicted: np.ndarray, measured: np.ndarray, tolerance: float = 0.10) -> Score:
        if len(measured) == 0:
            return cls(math.nan, math.nan, math.nan, 0)
        error = predicted - measured
        total = float(np.sum((measured - measured.mean()) ** 2))
        return cls(
            within_10=float(np.mean(np.abs(error) <= tolerance * measured)),
            rmse_ms=float(np.sqrt(np.mean(error**2))),
            r2=1.0 - float(np.sum(error**2)) / total if total > 0 else math.nan,
            samples=len(measured),
        )


@dataclass(frozen=True)
class Candidate:
    family: str
    score: Score
    predict_us: float
    stored_bytes: int
    monotone: bool = True  # never predicts a module faster at a higher load


def auto_select(candidates: list[Candidate], tolerance: float = 0.02, r2_tolerance: float = 0.02) -> Candidate:
    """The framework's time/space-efficient auto-selection for one module type.

    0. drop the regressors not monotone in load (``Candidate.monotone``) while any other is left;
    1. keep the regressors whose accuracy (share within +-10 %) is within
       ``tolerance`` of the best;
    2. of those, keep the ones whose R^2 is within ``r2_tolerance`` of the best
       R^2 among them (a NaN R^2, from constant targets, counts as passing);
    3. take the cheapest to run and store: the lowest sum of prediction time
       and stored size, each relative to the smallest among the kept.
    """
    if not candidates:
        raise ValueError("no regressor to select from")
    # A regressor that predicts some module faster under more load is out while another is not.
    candidates = [c for c in candidates if c.monotone] or candidates
    best = max(c.score.within_10 for c in candidates)
    kept = [c for c in candidates if c.score.within_10 >= best - tolerance]
    r2s = [c.score.r2 for c in kept if math.isfinite(c.score.r2)]
    if r2s:
        best_r2 = max(r2s)
        kept = [c for c in kept if not math.isfinite(c.score.r2) or c.score.r2 >= best_r2 - r2_tolerance]
    fastest = min(c.predict_us for c in kept) or 1e-9
    smallest = min(c.stored_bytes for c in kept) or 1
    return min(kept, key=lambda c: (c.predict_us / fastest + c.stored_bytes / smallest, c.family))
