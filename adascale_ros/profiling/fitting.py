"""From a calibration dataset to the stored predictor and its accuracy report.

Module samples are split by calibration round, so a round's readings never
sit on both sides: rounds 0-2 of every 5 train the regressors, round 3 is the
auto-selection's, round 4 scores modules. Whole variants, measured end to
end, are split by variant: one half fits and chooses the variant mode
(additive or scaled), the other half is held out for the report.

A single batch-1 timing on a shared machine varies by tens of percent from
one tenth of a second to the next (host noise moves every module together),
so the ground truth is measured as nn-Meter does: per variant and load level,
the median over all its timings. The report scores those against the sum of
the predicted modules at the median state: share within +-10 %, RMSE and R^2,
at idle and under load, for every regressor family alone, for the
auto-selected set and for the auto-selected set without the measured state
features (the ablation).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict
from typing import Any, NamedTuple

import numpy as np
from scipy.optimize import lsq_linear

from adascale_ros.load.stress import LOAD_SESSIONS
from adascale_ros.model.elastic import Variant
from adascale_ros.profiling.energy import EnergyProfile, cache_hit_rate, fit_power_coefficients
from adascale_ros.profiling.measurement import (
    MODULE_FEATURES,
    CalibrationData,
    ModuleInfo,
    module_infos,
    variant_module_keys,
)
from adascale_ros.profiling.predictor import (
    ADDITIVE,
    STATE_FEATURES,
    LatencyPredictor,
    move_to_load,
    scaled_terms,
    table_fingerprint,
)
from adascale_ros.profiling.regressors import REGRESSORS, Candidate, FittedRegressor, Score, auto_select

TARGETS = {"idle": 0.90, "load": 0.80}
LOAD_FEATURES = ("cpu_util", "load_index")  # readings under which latency must not fall as they grow


def split_of(rounds: np.ndarray) -> dict[str, np.ndarray]:
    part = np.asarray(rounds) % 5
    return {"train": part <= 2, "select": part == 3, "test": part == 4}


def _states(table: dict[str, np.ndarray]) -> np.ndarray:
    return np.column_stack([table[f].astype(np.float64) for f in STATE_FEATURES])


class MedianGroup(NamedTuple):
    """One id (module or variant) at one load level: the median latency and state of its samples."""

    id: str
    idle: bool
    latency_ms: float
    state: np.ndarray
    level: str


def _median_groups(
    table: dict[str, np.ndarray], id_column: str, mask: np.ndarray, idle: np.ndarray
) -> list[MedianGroup]:
    """Ground truth as nn-Meter measures it: per id (module or variant) and load level, the median
    latency of its samples in ``mask`` and the median of their states."""
    states = _states(table)
    groups = []
    for item, level in sorted(set(zip(table[id_column][mask], table["level"][mask], strict=True))):
        mine = mask & (table[id_column] == item) & (table["level"] == level)
        state = np.array([np.nanmedian(c) if np.isfinite(c).any() else math.nan for c in states[mine].T])
        latency = float(np.median(table["latency_ms"][mine]))
        groups.append(MedianGroup(str(item), bool(idle[mine][0]), latency, state, str(level)))
    return groups


def split_half_agreement(table: dict[str, np.ndarray], idle: np.ndarray, min_samples: int = 4) -> dict[str, Any]:
    """How repeatable the whole-variant ground truth is: per (variant, load level) with at least
    ``min_samples`` samples, whether the median of its even-numbered samples (in calibration order)
    is within 10 % of the median of its odd-numbered ones; the share of pairs that are, idle and
    under load. A predictor scored against medians that disagree with themselves this often cannot
    score much better than they do (each half has half the samples, so this is a lower bound)."""
    agree: dict[str, list[bool]] = {"idle": [], "load": []}
    order = np.argsort(table["round"], kind="stable")
    ids, levels, latency = table["variant_id"][order], table["level"][order], table["latency_ms"][order]
    idle = idle[order]
    for item, level in sorted(set(zip(ids, levels, strict=True))):
        mine = (ids == item) & (levels == level)
        samples = latency[mine].astype(np.float64)
        if len(samples) < min_samples:
            continue
        even, odd = float(np.median(samples[0::2])), float(np.median(samples[1::2]))
        agree["idle" if idle[mine][0] else "load"].append(abs(even - odd) <= 0.10 * odd)
    return {
        **{name: float(np.mean(values)) if values else math.nan for name, values in agree.items()},
        "pairs": {name: len(values) for name, values in agree.items()},
        "min_samples": min_samples,
    }


def slowdown_by_level(groups: list[MedianGroup], levels: list[dict[str, Any]]) -> dict[str, float]:
    """How much each load level slowed the measured variants: per level, the median over variants of
    (their median latency at that level / their median latency at idle), from ``_median_groups``.
    What the load did to the modules back to back, to compare with what it does to frames at
    camera rate."""
    idle = {g.id: g.latency_ms for g in groups if g.idle}
    result = {}
    for level in levels:
        ratios = [g.latency_ms / idle[g.id] for g in groups if g.level == level["name"] and g.id in idle]
        result[level["name"]] = float(np.median(ratios)) if ratios else math.nan
    return result


class Fitter:
    """Fits the latency predictors to one calibration dataset and one model's variant table.

    As a scikit-learn estimator: ``seed`` (which ground-truth variants are held out) is the setting;
    ``fit`` arranges the dataset (splits, masks, the variant-module incidence) and fits the CPU-load
    line, and the methods after it fit and score regressors on that arrangement.
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def fit(self, data: CalibrationData, variants_table: dict[str, Any]) -> Fitter:
        seed = self.seed
        self.data, self.variants_table = data, variants_table
        infos = module_infos(variants_table)
        self.modules = data.table("modules")
        self.variant_samples = data.table("variants")
        self.module_keys = [k for k in infos if k in set(self.modules["key"])]
        self.infos: dict[str, ModuleInfo] = {k: infos[k] for k in self.module_keys}
        self.kinds = sorted({info.kind for info in self.infos.values()})
        states = _states(self.modules)
        self.state_mean = np.array([np.nanmean(c) if np.isfinite(c).any() else math.nan for c in states.T])
        self.variant_ids = [v["variant_id"] for v in variants_table["variants"]]
        column = {k: i for i, k in enumerate(self.module_keys)}
        self.incidence = np.zeros((len(self.variant_ids), len(self.module_keys)))
        for row, variant_id in enumerate(self.variant_ids):
            for key in variant_module_keys(Variant.parse(variant_id)):
                self.incidence[row, column[key]] = 1.0
        self.module_split = split_of(self.modules["round"])
        # Half of the ground-truth variants are held out for the report; the other half fits and
        # chooses the variant mode. Module samples are split by calibration round.
        measured = sorted(set(self.variant_samples["variant_id"]))
        np.random.default_rng(seed).shuffle(measured)
        self.held_out = np.isin(self.variant_samples["variant_id"], measured[::2])
        idle_levels = {level["name"] for level in data.levels if level["idle"]}
        self.variant_idle = np.isin(self.variant_samples["level"], list(idle_levels))
        self.module_idle = np.isin(self.modules["level"], list(idle_levels))
        self.cpu_line_ = self._fit_cpu_per_load()
        return self

    def _impute(self, states: np.ndarray) -> np.ndarray:
        return np.where(np.isfinite(states), states, np.nan_to_num(self.state_mean, nan=0.0))

    def features(self, mask: np.ndarray, use_state: bool) -> np.ndarray:
        feats = np.array([self.infos[k].features() for k in self.modules["key"][mask]])
        if use_state:
            feats = np.hstack([feats, self._impute(_states(self.modules)[mask])])
        return feats

    def kind_mask(self, kind: str) -> np.ndarray:
        keys = [k for k, info in self.infos.items() if info.kind == kind]
        return np.isin(self.modules["key"], keys)

    # -- regressors -----------------------------------------------------------------------------

    def fit_kind(self, kind: str, family: str, use_state: bool) -> tuple[FittedRegressor, Candidate, Score]:
        """Fit one family on one module kind: the fitted model, its selection-split candidate, its test score."""
        of_kind = self.kind_mask(kind)
        split = self.module_split
        y = self.modules["latency_ms"].astype(np.float64)
        train = of_kind & split["train"]
        increasing = np.array([False] * len(MODULE_FEATURES) + [f in LOAD_FEATURES for f in STATE_FEATURES])
        regressor = FittedRegressor.fit(
            family, self.features(train, use_state), y[train], self.seed, increasing if use_state else None
        )
        scores = {}
        for part in ("select", "test"):  # scored as nn-Meter measures: median per module and load level
            groups = _median_groups(self.modules, "key", of_kind & split[part], self.module_idle)
            feats = np.array([self.infos[g.id].features() for g in groups])
            if use_state:
                feats = np.hstack([feats, self._impute(np.vstack([g.state for g in groups]))])
            scores[part] = Score.of(regressor.predict(feats), np.array([g.latency_ms for g in groups]))
        # One prediction call in the node: every module of this kind at the current and forecast state.
        modules_of_kind = sum(info.kind == kind for info in self.infos.values())
        probe = self.features(of_kind & split["train"], use_state)[: 2 * modules_of_kind]
        monotone = not use_state or self.monotone_in_load(regressor, kind)
        candidate = Candidate(family, scores["select"], regressor.predict_us(probe), regressor.stored_bytes, monotone)
        return regressor, candidate, scores["test"]

    def monotone_in_load(self, regressor: FittedRegressor, kind: str, steps: int = 21) -> bool:
        """Whether ``regressor`` predicts every module of ``kind`` no faster at each step of a load sweep
        0 -> 1 from the calibration's typical state (CPU utilisation following the load, as the
        profiler moves a state to the forecast load)."""
        keys = [k for k, info in self.infos.items() if info.kind == kind]
        base = self._impute(self.state_mean[None, :])[0]
        states = np.array([move_to_load(base, load, self.cpu_line_) for load in np.linspace(0.0, 1.0, steps)])
        module_features = np.array([self.infos[k].features() for k in keys])
        feats = np.hstack([np.repeat(module_features, steps, axis=0), np.tile(states, (len(keys), 1))])
        latency = regressor.predict(feats).reshape(len(keys), steps)
        return bool(np.all(np.diff(latency, axis=1) >= -1e-9 * latency[:, :-1]))

    def predictor(self, regressors: dict[str, FittedRegressor], use_state: bool) -> LatencyPredictor:
        throughput = self.data.device["throughput"]
        flops = np.array([v["flops"] for v in self.variants_table["variants"]], np.float64)
        memory = np.array([v["memory_accesses"] for v in self.variants_table["variants"]], np.float64)
        return LatencyPredictor(
            module_keys=self.module_keys,
            module_kinds=[self.infos[k].kind for k in self.module_keys],
            module_features=np.array([self.infos[k].features() for k in self.module_keys]),
            module_memory=np.array([self.infos[k].memory_accesses for k in self.module_keys], np.float64),
            regressors=regressors,
            use_state=use_state,
            state_mean=self.state_mean,
            variant_ids=self.variant_ids,
            incidence=self.incidence,
            theoretical_ms=flops / (throughput["gflops"] * 1e6) + memory / (throughput["copy_gbs"] * 1e6),
        )

    def variant_groups(self, mask: np.ndarray) -> list[MedianGroup]:
        """Whole-variant ground truth: median latency and state per variant and level."""
        return _median_groups(self.variant_samples, "variant_id", mask, self.variant_idle)

    def variant_predictions(
        self, predictor: LatencyPredictor, groups: list[MedianGroup]
    ) -> tuple[np.ndarray, np.ndarray]:
        """(predicted, measured) latency of each ground-truth group, predicted at the group's state."""
        if not groups:
            return np.empty(0), np.empty(0)
        rows = np.array([predictor.variant_index(g.id) for g in groups], np.int64)
        latency = predictor.latency_ms(np.vstack([g.state for g in groups]))
        return latency[np.arange(len(groups)), rows], np.array([g.latency_ms for g in groups])

    def variant_scores(self, predictor: LatencyPredictor) -> dict[str, Any]:
        """Scores on the held-out half of the ground-truth variants, at idle and under load."""
        groups = self.variant_groups(self.held_out)
        out = {}
        for name, idle in (("idle", True), ("load", False)):
            predicted, measured = self.variant_predictions(predictor, [g for g in groups if g.idle == idle])
            out[name] = asdict(Score.of(predicted, measured))
        return out

    def choose_mode(self, predictor: LatencyPredictor) -> dict[str, Any]:
        """Fit the scaled mode on the other half of the ground-truth variants; keep it if it predicts them better."""
        groups = self.variant_groups(~self.held_out)
        predictor.mode, predictor.scale = "additive", ADDITIVE.copy()
        additive, measured = self.variant_predictions(predictor, groups)
        rows = np.array([predictor.variant_index(g.id) for g in groups], np.int64)
        cpu = predictor.impute(np.vstack([g.state for g in groups]))[:, 0] if predictor.use_state else 0.0
        design = scaled_terms(additive, predictor.theoretical_ms[rows], cpu)
        # The sum of modules and its load-dependent share count with weights >= 0: more load
        # must never make the prediction smaller (the theoretical term and constant are free).
        lower = np.array([0.0, -np.inf, -np.inf, 0.0])
        # Least squares on the relative error, as the predictor is judged (within 10 %): on the
        # absolute error the slow variants and the many loaded pairs outweigh the fast and idle ones.
        relative = 1.0 / measured
        scale = lsq_linear(
            design * relative[:, None], measured * relative, bounds=(lower, np.full(4, np.inf)), method="bvls"
        ).x  # BVLS always ends (see regressors.Linear)
        scores = {}
        for mode, coefficients in (("additive", ADDITIVE), ("scaled", scale)):
            predictor.mode, predictor.scale = mode, coefficients.copy()
            scores[mode] = Score.of(*self.variant_predictions(predictor, groups))
        chosen = "scaled" if scores["scaled"].within_10 > scores["additive"].within_10 else "additive"
        predictor.mode = chosen
        predictor.scale = scale if chosen == "scaled" else ADDITIVE.copy()
        names = ("sum", "theoretical", "constant_ms", "cpu_x_sum")
        return {
            "chosen": chosen,
            "scaled_coefficients": dict(zip(names, scale.tolist(), strict=True)),
            "fit_half": {mode: asdict(score) for mode, score in scores.items()},
        }

    def cpu_per_load(self) -> np.ndarray:
        """CPU utilisation against load index, ``[slope, intercept]``: the line the profiler moves a state
        along to the forecast load. A negative fitted slope (noise) becomes flat at the mean."""
        return self.cpu_line_

    def _fit_cpu_per_load(self) -> np.ndarray:
        load, cpu = self.modules["load_index"].astype(float), self.modules["cpu_util"].astype(float)
        ok = np.isfinite(load) & np.isfinite(cpu)
        if ok.sum() < 2 or np.ptp(load[ok]) == 0:
            return np.array([1.0, 0.0])
        slope, intercept = np.polyfit(load[ok], cpu[ok], 1)
        return np.array([slope, intercept]) if slope >= 0 else np.array([0.0, float(np.mean(cpu[ok]))])

    def hit_rate(self) -> np.ndarray | None:
        cache = self.data.table("cache")
        if not len(cache.get("key", [])):
            return None
        out = np.zeros((len(self.module_keys), 2))
        for row, key in enumerate(self.module_keys):
            mine = cache["key"] == key
            eps = cache_hit_rate(cache["cold_ms"][mine], cache["warm_ms"][mine])
            load = cache["load_index"][mine].astype(float)
            if len(eps) >= 2 and np.ptp(load) > 0:
                slope, intercept = np.polyfit(load, eps, 1)
                out[row] = intercept, slope
            elif len(eps):
                out[row] = float(np.mean(eps)), 0.0
        return out


def _fit_set(fitter: Fitter, use_state: bool, families: list[str]) -> tuple[dict, dict, dict]:
    """Every family on every kind, and the auto-selection per kind."""
    fitted: dict[str, dict[str, FittedRegressor]] = {f: {} for f in families}
    module_scores: dict[str, dict[str, Any]] = {f: {} for f in families}
    selection: dict[str, Any] = {}
    for kind in fitter.kinds:
        candidates = []
        for family in families:
            regressor, candidate, test = fitter.fit_kind(kind, family, use_state)
            fitted[family][kind] = regressor
            module_scores[family][kind] = asdict(test)
            candidates.append(candidate)
        chosen = auto_select(candidates)
        selection[kind] = {"chosen": chosen.family, "candidates": [asdict(c) for c in candidates]}
    return fitted, module_scores, selection


def fit_and_report(
    data: CalibrationData,
    variants_table: dict[str, Any],
    profile: EnergyProfile | None,
    meta: dict[str, Any],
    families: list[str] | None = None,
    seed: int = 0,
) -> tuple[LatencyPredictor, dict[str, Any]]:
    """Fit every regressor family, auto-select per module kind, choose the variant mode, build the report."""
    families = families or list(REGRESSORS)
    fitter = Fitter(seed).fit(data, variants_table)
    fitted, module_scores, selection = _fit_set(fitter, True, families)

    per_family = {}
    for family in families:
        predictor = fitter.predictor(fitted[family], use_state=True)
        fitter.choose_mode(predictor)
        per_family[family] = {
            "modules": module_scores[family],
            "variant_mode": predictor.mode,
            "variants": fitter.variant_scores(predictor),
        }

    chosen = {kind: fitted[s["chosen"]][kind] for kind, s in selection.items()}
    predictor = fitter.predictor(chosen, use_state=True)
    mode = fitter.choose_mode(predictor)
    auto_scores = fitter.variant_scores(predictor)

    ablation_fitted, _, ablation_selection = _fit_set(fitter, False, families)
    ablation = fitter.predictor(
        {kind: ablation_fitted[s["chosen"]][kind] for kind, s in ablation_selection.items()}, use_state=False
    )
    fitter.choose_mode(ablation)

    predictor.cpu_per_load = fitter.cpu_per_load()
    predictor.hit_rate = fitter.hit_rate()
    energy_report: dict[str, Any] = {"source": "profile" if profile else "none"}
    if profile is not None and data.energy.get("variant_id"):
        energy_report = _fit_energy(predictor, data, profile)
        profile = EnergyProfile(**energy_report["profile"])
    predictor.energy_profile = profile
    if profile is not None:
        energy_report["profile"] = profile.to_dict()
    predictor.meta = {**meta, "model_fingerprint": table_fingerprint(variants_table), "device": data.device}

    all_groups = fitter.variant_groups(np.ones(len(fitter.variant_samples["variant_id"]), bool))
    report = {
        "device": data.device,
        "levels": data.levels,
        "samples": {
            "module": len(fitter.modules["key"]),
            "variant": len(fitter.variant_samples["variant_id"]),
            "held_out_groups": len(fitter.variant_groups(fitter.held_out)),
            "variants_measured": len(set(fitter.variant_samples["variant_id"])),
        },
        "split": (
            "modules by calibration round (rounds 0-2 of 5 train, 3 selects, 4 scores); whole variants: "
            "half of the measured variants held out, scored per variant and load level (median latency)"
        ),
        "ground_truth_split_half": split_half_agreement(fitter.variant_samples, fitter.variant_idle),
        "slowdown_by_level": slowdown_by_level(all_groups, data.levels),
        "reference_slowdown_by_level": {
            f"{role} ({variant_id})": slowdown_by_level([g for g in all_groups if g.id == variant_id], data.levels)
            for role, variant_id in data.device.get("reference_variants", {}).items()
        },
        "camera_rate": camera_rate_report(data),
        "regressors": per_family,
        "auto_selected": {"per_kind": selection, "variant_mode": mode, "variants": auto_scores},
        "ablation_without_state": {
            "per_kind": {kind: s["chosen"] for kind, s in ablation_selection.items()},
            "variants": fitter.variant_scores(ablation),
        },
        "targets": {
            name: {
                "within_10_at_least": target,
                "achieved": auto_scores[name]["within_10"],
                "met": bool(auto_scores[name]["within_10"] >= target),
            }
            for name, target in TARGETS.items()
        },
        "energy": energy_report,
        "meta": meta,
    }
    return predictor, report


def camera_rate_report(data: CalibrationData) -> dict[str, dict[str, dict[str, float]]]:
    """Each camera-rate variant's latency one camera frame at a time, per load level: median and p90 [ms],
    the median's slowdown over idle and, where measured, the median CPU time of a frame
    (``cpu_median_ms``). Empty for a dataset made before these were measured."""
    table = data.table("camera_rate")
    if not table:
        return {}
    idle = [level["name"] for level in data.levels if level["idle"]]
    report: dict[str, dict[str, dict[str, float]]] = {}
    roles = data.device.get("camera_rate_variants") or data.device.get("reference_variants", {})
    for role, variant_id in roles.items():
        per_level = {}
        for level in data.levels:
            mask = (table["variant_id"] == variant_id) & (table["level"] == level["name"])
            if mask.any():
                ms = table["latency_ms"][mask]
                per_level[level["name"]] = {"median_ms": float(np.median(ms)), "p90_ms": float(np.percentile(ms, 90))}
                if "cpu_ms" in table:
                    per_level[level["name"]]["cpu_median_ms"] = float(np.median(table["cpu_ms"][mask]))
        if idle and idle[0] in per_level:
            base = per_level[idle[0]]["median_ms"]
            for figures in per_level.values():
                figures["slowdown"] = figures["median_ms"] / base
        report[role] = {"variant_id": variant_id, "levels": per_level}
    return report


def _fit_energy(predictor: LatencyPredictor, data: CalibrationData, profile: EnergyProfile) -> dict[str, Any]:
    energy = data.table("energy")
    rows = np.array([predictor.variant_index(v) for v in energy["variant_id"]], np.int64)
    eps = predictor.hit_rates(float(predictor.state_mean[1]))[rows]
    memory = predictor.variant_memory[rows]
    source = str(data.device.get("power_source", "power sensor"))
    fitted = fit_power_coefficients(memory, eps, energy["energy_mj"], profile, source, float(predictor.state_mean[3]))
    predictor.energy_profile = fitted
    predicted = predictor.energy_mj(predictor.state_mean)[rows]
    return {"source": source, "profile": fitted.to_dict(), "fit": asdict(Score.of(predicted, energy["energy_mj"]))}


def _camera_rate_lines(camera_rate: dict[str, Any], levels: list[str]) -> list[str]:
    def table(caption: str, cell: Callable[[dict[str, float]], str]) -> list[str]:
        """One row per variant, one column per level; ``cell`` formats a level's figures."""
        lines = [caption, "", "| variant | " + " | ".join(levels) + " |", "|---|" + "---:|" * len(levels)]
        for role, entry in camera_rate.items():
            cells = [cell(f) if (f := entry["levels"].get(level)) else "n/a" for level in levels]
            lines.append(f"| {role} `{entry['variant_id']}` | " + " | ".join(cells) + " |")
        return [*lines, ""]

    if not camera_rate:
        return []
    lines = table(
        "At camera rate (one frame at a time, a 15 Hz camera's gap before each; pre-processing of the"
        " frame included), median / p90 ms and the median's slowdown over idle:",
        lambda f: f"{f['median_ms']:.2f} / {f['p90_ms']:.2f}" + (f" ({f['slowdown']:.2f}x)" if "slowdown" in f else ""),
    )
    if any("cpu_median_ms" in f for entry in camera_rate.values() for f in entry["levels"].values()):
        lines += table(
            "The CPU time of those frames (the process's threads together), median ms: where the latency grows"
            " under a load and this does not, the frames waited for a core rather than computed slower.",
            lambda f: f"{f['cpu_median_ms']:.2f}" if "cpu_median_ms" in f else "n/a",
        )
    return lines


def _pct(x: float) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{100 * x:.1f} %"


def _split_half_lines(agreement: dict[str, Any] | None) -> list[str]:
    if not agreement:
        return []
    pairs = agreement["pairs"]
    return [
        "The ground truth's own repeatability: the medians of the even- and odd-numbered samples of a "
        f"(variant, level) pair with at least {agreement['min_samples']} samples are within 10 % of each other "
        f"for {_pct(agreement['idle'])} of {pairs['idle']} pairs at idle and {_pct(agreement['load'])} of "
        f"{pairs['load']} under load (calibration_data: `variants`).",
        "",
    ]


def report_markdown(report: dict[str, Any]) -> str:
    """The report as markdown tables."""

    pct = _pct

    def num(x: float, digits: int = 3) -> str:
        return "n/a" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"

    def ratio(x: float) -> str:
        return "n/a" if x is None or not math.isfinite(x) else f"{x:.2f}x"

    lines = [
        "# Latency calibration report",
        "",
        f"Device: {report['device'].get('cpu_model', '?')} ({report['device'].get('cores')} cores), "
        f"backend {report['meta'].get('backend')}, {report['meta'].get('threads')} threads; "
        f"{report['samples']['module']} module samples, {report['samples']['variant']} whole-variant samples "
        f"of {report['samples']['variants_measured']} variants over {len(report['levels'])} load levels "
        f"({', '.join(level['name'] for level in report['levels'])}); "
        + LOAD_SESSIONS[report["device"].get("load_session", "own")]
        + ".",
        "",
        "Measured slowdown per load level (median over the measured variants of their median latency there"
        " over their median latency at idle): "
        + ", ".join(f"{name} {ratio(r)}" for name, r in report.get("slowdown_by_level", {}).items())
        + ".",
        "",
        *(
            f"Measured slowdown of the {role}: " + ", ".join(f"{name} {ratio(r)}" for name, r in levels.items()) + "."
            for role, levels in report.get("reference_slowdown_by_level", {}).items()
        ),
        "",
        *_camera_rate_lines(report.get("camera_rate", {}), [level["name"] for level in report["levels"]]),
        f"Held out: {report['split']}; {report['samples']['held_out_groups']} held-out (variant, level) pairs. "
        "Whole-variant prediction = sum of the predicted modules at the pair's median state; accurate when "
        "within +-10 % of the measured median latency (nn-Meter's metric).",
        "",
        *_split_half_lines(report.get("ground_truth_split_half")),
        "| predictor | idle: within 10 % | idle RMSE ms | idle R2 | load: within 10 % | load RMSE ms | load R2 |",
        "|---|---|---|---|---|---|---|",
    ]

    def row(name: str, scores: dict[str, Any]) -> str:
        idle, load = scores["idle"], scores["load"]
        return (
            f"| {name} | {pct(idle['within_10'])} | {num(idle['rmse_ms'])} | {num(idle['r2'])} | "
            f"{pct(load['within_10'])} | {num(load['rmse_ms'])} | {num(load['r2'])} |"
        )

    for family, entry in report["regressors"].items():
        lines.append(row(f"{family} (all modules, {entry['variant_mode']})", entry["variants"]))
    auto = report["auto_selected"]
    lines.append(row(f"**auto-selected** ({auto['variant_mode']['chosen']})", auto["variants"]))
    lines.append(row("auto-selected, no state features (ablation)", report["ablation_without_state"]["variants"]))
    lines += ["", "Auto-selection per module kind (selection split):", ""]
    families = list(report["regressors"])
    lines += ["| kind | chosen | " + " | ".join(families) + " |", "|---|---|" + "---|" * len(families)]
    for kind, entry in auto["per_kind"].items():
        cells = [
            f"{pct(c['score']['within_10'])}, R2 {num(c['score']['r2'], 2)}, {c['predict_us']:.0f} us, "
            f"{c['stored_bytes'] / 1024:.1f} KiB"
            for c in entry["candidates"]
        ]
        lines.append(f"| {kind} | {entry['chosen']} | " + " | ".join(cells) + " |")
    mode = auto["variant_mode"]
    lines += [
        "",
        f"Variant mode: {mode['chosen']} (on the fitting half of the measured variants, within 10 %: "
        f"additive {pct(mode['fit_half']['additive']['within_10'])}, "
        f"scaled {pct(mode['fit_half']['scaled']['within_10'])}).",
        "",
        "Targets: "
        + "; ".join(
            f"{name} >= {pct(t['within_10_at_least'])}: {pct(t['achieved'])} ({'met' if t['met'] else 'NOT met'})"
            for name, t in report["targets"].items()
        ),
        "",
        f"Energy coefficients: {report['energy'].get('source')}"
        + (f" ({report['energy']['profile']['name']})" if "profile" in report["energy"] else ""),
    ]
    return "\n".join(lines) + "\n"
