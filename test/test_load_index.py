import math

import pytest

from adascale_ros.resources import LoadIndexWeights, load_index

NAN = float("nan")


def test_weighted_mean_of_all_terms():
    w = LoadIndexWeights(cpu=2.0, gpu=1.0, memory=1.0)
    assert load_index(0.8, 0.4, 0.2, w) == pytest.approx((1.6 + 0.4 + 0.2) / 4.0)


def test_unknown_terms_drop_out_and_weights_renormalise():
    w = LoadIndexWeights(cpu=0.5, gpu=0.3, memory=0.2)
    # No GPU: (0.5 * 0.9 + 0.2 * 0.1) / 0.7, not / 1.0 (which would read as a lighter load).
    assert load_index(0.9, NAN, 0.1, w) == pytest.approx((0.45 + 0.02) / 0.7)
    assert load_index(NAN, NAN, 0.3, w) == pytest.approx(0.3)


def test_nothing_known_is_nan_not_zero():
    assert math.isnan(load_index(NAN, NAN, NAN, LoadIndexWeights()))
    # A zero-weight term does not count as known.
    assert math.isnan(load_index(NAN, 0.5, NAN, LoadIndexWeights(cpu=1.0, gpu=0.0, memory=1.0)))


def test_result_is_clipped_to_unit_range():
    assert load_index(1.3, 1.0, 1.0, LoadIndexWeights()) == 1.0


@pytest.mark.parametrize(
    "weights",
    [(-0.1, 0.5, 0.5), (0.0, 0.0, 0.0), (NAN, 0.5, 0.5), (math.inf, 0.0, 0.0)],
)
def test_invalid_weights_are_rejected(weights):
    with pytest.raises(ValueError):
        LoadIndexWeights(*weights)
