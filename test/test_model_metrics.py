import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from adascale_ros.model.elastic import ElasticConfig, ElasticNet, Variant
from adascale_ros.model.metrics import memory_accesses, module_keys, module_table, variant_metrics

TINY = ElasticConfig(stem_channels=4, stage_channels=(4, 6, 8), stage_strides=(2, 2, 1), head_channels=8)


def test_memory_accesses_follow_eq4_on_a_single_layer():
    conv = nn.Conv2d(3, 5, 3, padding=1, bias=True)
    x = torch.zeros(1, 3, 8, 8)
    expected = (3 * 8 * 8 + 5 * 8 * 8 + 5 * 3 * 3 * 3 + 5) * 4  # (in + out + w + b) x 4 bytes
    assert memory_accesses(conv, x) == expected


@pytest.mark.parametrize("variant_id", ["e0:dense", "e1:mbc-fac", "e2:res-dws-dense"])
def test_variant_metrics_equal_measuring_the_whole_variant(variant_id):
    net = ElasticNet(TINY).eval()
    table = module_table(net, (1, 16, 16))
    variant = Variant.parse(variant_id)
    metrics = variant_metrics(variant, table)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        net(torch.zeros(1, 1, 16, 16), variant)
    assert metrics["flops"] == counter.get_total_flops() > 0
    modules = net.modules_of(variant)
    assert metrics["params"] == sum(p.numel() for m in modules for p in m.parameters())
    tensors = [t for m in modules for t in [*m.parameters(), *m.buffers()]]
    assert metrics["storage_bytes"] == sum(t.numel() * t.element_size() for t in tensors)
    assert metrics["memory_accesses"] > 0


def test_module_table_covers_every_module_once():
    net = ElasticNet(TINY)
    table = module_table(net, (1, 16, 16))
    assert len(table) == 1 + 3 * 5 + 3
    assert table["s1:dws"].in_shape == (4, 8, 8) and table["s1:dws"].out_shape == (6, 4, 4)
    assert module_keys(Variant(1, ("res", "fac"))) == ["stem", "s0:res", "s1:fac", "exit1"]
    # Deeper variants cost more.
    shallow = variant_metrics(Variant(0, ("res",)), table)
    deep = variant_metrics(Variant(2, ("res", "res", "res")), table)
    assert deep["flops"] > shallow["flops"] and deep["params"] > shallow["params"]
