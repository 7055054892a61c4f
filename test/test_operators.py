import pytest
import torch

from adascale_ros.model.operators import OPERATORS, build_operator


@pytest.mark.parametrize("name", list(OPERATORS))
@pytest.mark.parametrize(
    ("cin", "cout", "stride", "size"), [(8, 8, 1, 9), (8, 16, 2, 9), (16, 12, 2, 8), (4, 24, 1, 5)]
)
def test_every_operator_honours_the_shared_interface(name, cin, cout, stride, size):
    block = build_operator(name, cin, cout, stride)
    out = block(torch.randn(2, cin, size, size))
    expected = -(-size // stride)  # ceil
    assert out.shape == (2, cout, expected, expected)
    out.sum().backward()  # trainable end to end
    assert all(p.grad is not None for p in block.parameters())


def test_pool_covers_the_four_categories_with_five_families():
    categories = {category for _, category in OPERATORS.values()}
    assert len(OPERATORS) >= 5
    assert {"reference", "structural", "connectivity", "decomposition"} <= categories


def test_operators_differ_in_cost():
    params = {name: sum(p.numel() for p in build_operator(name, 32, 32, 1).parameters()) for name in OPERATORS}
    assert params["dws"] < params["mbc"] < params["res"]
    assert params["fac"] < params["res"]  # the decomposition is cheaper than the 3x3 it replaces


def test_unknown_operator_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown operator 'conv7'"):
        build_operator("conv7", 8, 8, 1)
