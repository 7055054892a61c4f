import pytest
import torch

from adascale_ros.model.elastic import ElasticConfig, ElasticNet, Variant

TINY = ElasticConfig(stem_channels=4, stage_channels=(4, 6, 8), stage_strides=(2, 2, 1), head_channels=8)


def test_default_configuration_gives_780_variants_from_5_families():
    net = ElasticNet()
    variants = net.variants()
    assert len(variants) == 5 + 25 + 125 + 625 >= 300
    assert len({v.id for v in variants}) == len(variants)
    assert {op for v in variants for op in v.operators} == {"res", "dws", "mbc", "dense", "fac"}


def test_variant_ids_are_readable_and_round_trip():
    v = Variant(2, ("dws", "mbc", "res"))
    assert v.id == "e2:dws-mbc-res"
    assert Variant.parse(v.id) == v
    for bad in ["", "e1:dws", "x2:dws-mbc-res", "e1:dws_mbc", "e1:DWS-mbc"]:
        with pytest.raises(ValueError):
            Variant.parse(bad)
    # What an early exit ran: the path up to that exit.
    assert v.prefix(0).id == "e0:dws" and v.prefix(2) == v
    with pytest.raises(ValueError, match="not on the path"):
        v.prefix(3)


def test_unknown_variants_are_rejected_by_the_network():
    net = ElasticNet(TINY)
    for bad in [Variant(3, ("res",) * 4), Variant(0, ("conv7",))]:
        with pytest.raises(ValueError, match="variant"):
            net(torch.zeros(1, 1, 16, 16), bad)


def test_running_a_variant_computes_only_its_stages():
    net = ElasticNet(TINY).eval()
    called: list[str] = []
    for s, stage in enumerate(net.stages):
        for op, block in stage.items():
            block.register_forward_hook(lambda *_, key=f"s{s}:{op}": called.append(key))
    for e, head in enumerate(net.exits):
        head.register_forward_hook(lambda *_, key=f"exit{e}": called.append(key))
    out = net(torch.zeros(2, 1, 16, 16), Variant(1, ("mbc", "fac")))
    assert out.shape == (2, 10)
    assert called == ["s0:mbc", "s1:fac", "exit1"]


def test_iter_exits_is_lazy():
    net = ElasticNet(TINY).eval()
    called: list[int] = []
    for s, stage in enumerate(net.stages):
        for block in stage.values():
            block.register_forward_hook(lambda *_, s=s: called.append(s))
    exits = net.iter_exits(torch.zeros(1, 1, 16, 16), Variant(2, ("res", "res", "res")))
    exit_index, logits = next(exits)
    assert exit_index == 0 and logits.shape == (1, 10)
    assert called == [0]  # stages 1 and 2 never ran


def test_final_exit_of_iter_exits_matches_forward():
    net = ElasticNet(TINY).eval()
    x = torch.randn(3, 1, 16, 16)
    v = Variant(2, ("dense", "dws", "mbc"))
    with torch.no_grad():
        *_, (last, logits) = net.iter_exits(x, v)
        assert last == 2 and torch.equal(logits, net(x, v))


def test_config_round_trips_through_a_dict():
    assert ElasticConfig.from_dict(TINY.to_dict()) == TINY
    with pytest.raises(ValueError):
        ElasticConfig(operators=("res", "res"))
    with pytest.raises(ValueError):
        ElasticConfig(stage_channels=(8, 8), stage_strides=(1,))
    with pytest.raises(ValueError):
        ElasticConfig(stem_stride=0)


def test_stem_stride_downsamples_before_the_first_stage():
    net = ElasticNet(ElasticConfig(**{**TINY.to_dict(), "stem_stride": 2}))
    assert net.stem(torch.zeros(1, 1, 16, 16)).shape[-2:] == (8, 8)
    assert ElasticConfig.from_dict({k: v for k, v in TINY.to_dict().items() if k != "stem_stride"}).stem_stride == 1


def test_norm_is_chosen_by_the_config_and_old_cards_mean_groupnorm():
    from torch import nn

    batch = ElasticNet(ElasticConfig(**{**TINY.to_dict(), "norm": "batch"}))
    norms = {type(m) for m in batch.modules() if isinstance(m, nn.BatchNorm2d | nn.GroupNorm)}
    assert norms == {nn.BatchNorm2d}
    group = ElasticNet(TINY)
    assert {type(m) for m in group.modules() if isinstance(m, nn.BatchNorm2d | nn.GroupNorm)} == {nn.GroupNorm}
    assert ElasticConfig.from_dict({k: v for k, v in TINY.to_dict().items() if k != "norm"}).norm == "group"
    with pytest.raises(ValueError, match="norm must be one of"):
        ElasticConfig(norm="layer")


def test_a_network_of_one_input_size_refuses_a_variant_with_a_resolution():
    with pytest.raises(ValueError, match="resolution 64"):
        ElasticNet(TINY).check_variant(Variant(0, ("res",), 64))
