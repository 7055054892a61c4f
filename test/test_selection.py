import math

import pytest
from conftest import REPO_ROOT
from hypothesis import given, settings
from hypothesis import strategies as st

from adascale_ros.model.directory import load_variant_table
from adascale_ros.selection.policy import (
    Budgets,
    Objective,
    SwitchingPolicy,
    choose,
    cost,
    search_indexed,
    search_linear,
)
from adascale_ros.selection.tables import INDEX_KINDS, VariantEntry, VariantTables

INF = math.inf


def tables_with(predictions: dict[str, tuple[float, float]], accuracy: dict[str, float]) -> VariantTables:
    tables = VariantTables(VariantEntry(v, 0, ("res",), a) for v, a in accuracy.items())
    tables.update_predictions(predictions)
    return tables


ACC = {"fast": 0.80, "mid": 0.86, "slow": 0.90}
PRED = {"fast": (2.0, 1.0), "mid": (5.0, 3.0), "slow": (9.0, 8.0)}


def test_range_queries_and_incremental_updates():
    tables = tables_with(PRED, ACC)
    assert list(tables.within_latency(5.0)) == ["fast", "mid"]  # inclusive bound, fastest first
    assert list(tables.within_energy(2.0)) == ["fast"]
    assert tables.fastest() == "fast"
    # Only changed predictions move in the indexes.
    assert tables.update_predictions({"fast": (2.0, 1.0), "mid": (1.0, 3.0)}) == 1
    assert tables.fastest() == "mid"
    # Unknown (NaN) predictions take a variant out of the index; unknown ids are ignored.
    assert tables.update_predictions({"mid": (math.nan, 3.0), "ghost": (1.0, 1.0)}) == 1
    assert list(tables.within_latency(INF)) == ["fast", "slow"]


# Small value sets so that ties in accuracy, latency and J are common.
_value = st.sampled_from([0.5, 1.0, 1.5, 2.0, 4.0, 8.0, math.nan])
_rows = st.dictionaries(
    st.text("abcdef", min_size=1, max_size=3),
    st.tuples(st.sampled_from([0.25, 0.5, 0.75, 0.875]), _value, _value),
    min_size=1,
    max_size=25,
)
_budget = st.sampled_from([0.5, 1.0, 3.0, 8.0, INF])


@settings(max_examples=300, deadline=None)
@given(
    rows=_rows,
    latency=_budget,
    energy=_budget,
    min_accuracy=st.sampled_from([0.0, 0.5, 0.8]),
    objective=st.sampled_from(
        [Objective(), Objective(beta=1.0), Objective("min_cost"), Objective("min_cost", 0.0, 1.0)]
    ),
    index_kind=st.sampled_from(sorted(INDEX_KINDS)),
)
def test_indexed_search_agrees_with_a_linear_scan(rows, latency, energy, min_accuracy, objective, index_kind):
    tables = VariantTables((VariantEntry(v, 0, ("res",), acc) for v, (acc, _, _) in rows.items()), index_kind)
    tables.update_predictions({v: (lat, en) for v, (_, lat, en) in rows.items()})
    budgets = Budgets(latency, energy, min_accuracy)
    assert search_indexed(tables, budgets, objective) == search_linear(tables, budgets, objective)


def test_max_accuracy_within_budgets():
    tables = tables_with(PRED, ACC)
    assert choose(tables, Budgets(latency_ms=6.0), Objective()).variant_id == "mid"
    assert choose(tables, Budgets(latency_ms=20.0), Objective()).variant_id == "slow"
    assert choose(tables, Budgets(latency_ms=20.0, energy_mj=4.0), Objective()).variant_id == "mid"
    choice = choose(tables, Budgets(latency_ms=20.0, min_accuracy=0.95), Objective())
    assert choice.variant_id == "fast" and not choice.feasible and "fastest" in choice.reason


def test_min_cost_is_eq7():
    tables = tables_with(PRED, ACC)
    objective = Objective("min_cost", alpha=1.0, beta=1.0)
    assert cost(tables, "mid", objective) == 8.0
    assert choose(tables, Budgets(min_accuracy=0.85), objective).variant_id == "mid"


def test_invalid_budgets_and_objectives():
    for bad in [dict(latency_ms=-1.0), dict(latency_ms=math.nan), dict(energy_mj=0.0), dict(min_accuracy=1.5)]:
        with pytest.raises(ValueError):
            Budgets(**bad)
    with pytest.raises(ValueError):
        Objective("fastest")
    with pytest.raises(ValueError):
        Objective("min_cost", alpha=0.0, beta=0.0)


def test_downgrade_at_once_upgrade_after_dwell():
    tables = tables_with(PRED, ACC)
    selector = SwitchingPolicy(dwell_s=2.0, margin=0.01)
    budgets = Budgets(latency_ms=10.0)
    assert selector.update(0.0, tables, budgets, Objective()).variant_id == "slow"
    # Load rises: slow now predicts 12 ms > 10 ms -> switch at once.
    tables.update_predictions({"slow": (12.0, 8.0), "mid": (7.0, 3.0)})
    choice = selector.update(0.1, tables, budgets, Objective())
    assert choice.variant_id == "mid" and "breaks its budget" in choice.reason
    # Load falls: slow is feasible again, but only taken after 2 s of being the better choice.
    tables.update_predictions({"slow": (9.0, 8.0)})
    assert selector.update(0.2, tables, budgets, Objective()).variant_id == "mid"
    assert selector.update(1.5, tables, budgets, Objective()).variant_id == "mid"
    choice = selector.update(2.3, tables, budgets, Objective())
    assert choice.variant_id == "slow" and "upgrade" in choice.reason
    # A measured latency over budget also forces the downgrade.
    assert selector.update(2.4, tables, budgets, Objective(), measured_latency_ms=11.0).variant_id == "mid"


def test_dwell_is_on_the_upgrade_not_on_one_candidate():
    # Near the budget two close rivals take turns at being the best; either beats the running one.
    accuracy = {"fast": 0.80, "a": 0.90, "b": 0.899}
    tables = tables_with({"fast": (1.0, 1.0), "a": (12.0, 1.0), "b": (12.0, 1.0)}, accuracy)
    selector = SwitchingPolicy(dwell_s=2.0, margin=0.01)
    budgets = Budgets(latency_ms=10.0)
    assert selector.update(0.0, tables, budgets, Objective()).variant_id == "fast"
    chosen = []
    for step in range(1, 30):  # 0.1 s apart: a fits, then b, then a ...
        rival, other = ("a", "b") if step % 2 else ("b", "a")
        tables.update_predictions({rival: (9.0, 1.0), other: (11.0, 1.0)})
        chosen.append(selector.update(step * 0.1, tables, budgets, Objective()))
    switched = [c for c in chosen if c.variant_id != "fast"]
    assert switched and "upgrade after 2 s" in switched[0].reason
    # The upgrade came 2 s after one first became available (t = 0.1), to the best at that moment.
    assert chosen.index(switched[0]) == 20 and switched[0].variant_id == "a"
    # An upgrade that stops being available restarts the dwell.
    selector = SwitchingPolicy(dwell_s=2.0, margin=0.01)
    tables.update_predictions({"a": (11.0, 1.0), "b": (11.0, 1.0)})
    assert selector.update(0.0, tables, budgets, Objective()).variant_id == "fast"
    for t, a_latency in [(0.1, 9.0), (1.5, 11.0), (2.2, 9.0), (3.0, 9.0)]:
        tables.update_predictions({"a": (a_latency, 1.0)})
        assert selector.update(t, tables, budgets, Objective()).variant_id == "fast"
    assert selector.update(4.3, tables, budgets, Objective()).variant_id == "a"


def test_dwell_backs_off_while_the_load_reverses_upgrades_and_resets_when_one_lasts():
    tables = tables_with(PRED, ACC)
    budgets = Budgets(latency_ms=10.0)
    selector = SwitchingPolicy(dwell_s=2.0, margin=0.01, max_dwell_s=8.0)
    idle, burst = {"slow": (9.0, 8.0)}, {"slow": (12.0, 8.0)}

    def at(t: float, load: dict) -> str:
        tables.update_predictions(load)
        return selector.update(t, tables, budgets, Objective()).variant_id

    assert at(0.0, idle) == "slow"
    # Bursts 4 s apart: each upgrade (after the dwell in force) is reversed by the next burst within it.
    t, dwells = 0.0, []
    for _ in range(3):
        assert at(t + 0.1, burst) == "mid"
        waited = selector.dwell_in_force_s
        dwells.append(waited)
        start = t + 0.2
        assert at(start, idle) == "mid"
        assert at(start + waited - 0.1, idle) == "mid"
        assert at(start + waited, idle) == "slow"
        t = start + waited + 1.0  # the next burst, 1 s after the upgrade
    assert dwells == [2.0, 4.0, 8.0]
    assert at(t + 0.1, burst) == "mid" and selector.dwell_in_force_s == 8.0  # at the ceiling
    # The load ends: the upgrade after 8 s lasts 8 s, and the dwell is back to 2 s.
    assert at(t + 0.2, idle) == "mid" and at(t + 8.2, idle) == "slow"
    assert at(t + 16.3, idle) == "slow" and selector.dwell_in_force_s == 2.0
    # Without max_dwell_s there is no back-off.
    plain = SwitchingPolicy(dwell_s=2.0, margin=0.01)
    tables.update_predictions(idle)
    plain.update(0.0, tables, budgets, Objective())
    tables.update_predictions(burst)
    plain.update(0.1, tables, budgets, Objective())
    tables.update_predictions(idle)
    plain.update(0.2, tables, budgets, Objective())
    plain.update(2.2, tables, budgets, Objective())
    tables.update_predictions(burst)
    assert plain.update(2.5, tables, budgets, Objective()).variant_id == "mid" and plain.dwell_in_force_s == 2.0
    with pytest.raises(ValueError, match="max_dwell_s"):
        SwitchingPolicy(dwell_s=2.0, max_dwell_s=1.0)


def test_headroom_on_new_choices_not_on_the_running_variant():
    tables = tables_with(PRED, ACC)
    budgets = Budgets(latency_ms=10.0)
    selector = SwitchingPolicy(dwell_s=0.0, margin=0.01, headroom=0.05)
    # slow at 9.6 ms fits the budget but not 95 % of it: mid is chosen.
    tables.update_predictions({"slow": (9.6, 8.0)})
    assert selector.update(0.0, tables, budgets, Objective()).variant_id == "mid"
    tables.update_predictions({"slow": (9.4, 8.0)})
    assert selector.update(0.1, tables, budgets, Objective()).variant_id == "slow"
    # Running, it is kept up to the budget itself ...
    tables.update_predictions({"slow": (9.9, 8.0)})
    assert selector.update(0.2, tables, budgets, Objective()).variant_id == "slow"
    # ... and past it replaced by one with headroom; with no such variant, by the best within the budget.
    tables.update_predictions({"slow": (10.5, 8.0), "mid": (9.8, 3.0)})
    assert selector.update(0.3, tables, budgets, Objective()).variant_id == "fast"
    tables.update_predictions({"fast": (9.7, 1.0), "slow": (10.5, 8.0), "mid": (9.8, 3.0)})
    chosen = SwitchingPolicy(headroom=0.05).update(0.0, tables, budgets, Objective())
    assert chosen.variant_id == "mid" and chosen.feasible
    with pytest.raises(ValueError, match="headroom"):
        SwitchingPolicy(headroom=1.0)


def test_small_gains_do_not_cause_switching():
    tables = tables_with(PRED, {"fast": 0.80, "mid": 0.896, "slow": 0.90})
    selector = SwitchingPolicy(dwell_s=0.0, margin=0.01)
    tables.update_predictions({"slow": (12.0, 8.0)})
    assert selector.update(0.0, tables, Budgets(latency_ms=10.0), Objective()).variant_id == "mid"
    tables.update_predictions({"slow": (9.0, 8.0)})
    assert selector.update(5.0, tables, Budgets(latency_ms=10.0), Objective()).variant_id == "mid"


def test_tables_from_the_default_model():
    tables = VariantTables.from_variant_table(load_variant_table(REPO_ROOT / "models" / "default"))
    assert len(tables) == 780
    flops = {v: e.flops for v, e in tables.index.items()}
    # With predictions proportional to FLOPs, a tight budget picks a shallow, cheap variant.
    tables.update_predictions({v: (f / 1e6, math.nan) for v, f in flops.items()})
    tight = choose(tables, Budgets(latency_ms=min(flops.values()) / 1e6 * 1.5), Objective())
    loose = choose(tables, Budgets(), Objective())
    assert tight.feasible and loose.feasible
    assert tables.index[tight.variant_id].accuracy <= tables.index[loose.variant_id].accuracy
    assert flops[tight.variant_id] < flops[loose.variant_id]
