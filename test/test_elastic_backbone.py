"""The pretrained backbone made elastic: branches, exits, resolutions, and its model directory."""

import pytest
import torch

from adascale_ros.model.artifacts import load_model, save_model
from adascale_ros.model.efficientnet_lite import efficientnet_lite
from adascale_ros.model.elastic_backbone import BackboneConfig, ElasticBackbone, slim_block
from adascale_ros.model.metrics import module_keys, module_table
from adascale_ros.model.variant import Variant


@pytest.fixture(scope="module")
def net():
    return ElasticBackbone(BackboneConfig(resolutions=(64, 96, 128))).eval()


def test_lite0_gives_828_variants_over_4_exits_3_resolutions_and_3_or_more_branch_kinds(net):
    variants = ElasticBackbone().variants()
    assert len(variants) == 828 >= 100
    assert {v.exit_index for v in variants} == {0, 1, 2, 3}
    assert {v.resolution for v in variants} == {128, 160, 224}
    assert net.stage_operators == (
        ("pre", "shrink", "merge", "dws"),
        ("pre", "shrink", "merge", "dws"),
        ("pre", "shrink", "merge", "dws"),
        ("pre", "slim", "dws"),
    )
    assert len({v.id for v in variants}) == len(variants)
    assert all(Variant.parse(v.id) == v for v in variants)


def test_the_all_pretrained_path_is_the_imagenet_backbone(net):
    base = efficientnet_lite("lite0").eval()
    x = torch.randn(1, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        features = net.stem(x)
        for blocks in net.stages:
            features = blocks["pre"](features)
        torch.testing.assert_close(net.exits[-1][0](features), base.features(x))


def test_every_branch_gives_its_stage_output_shape(net):
    x = torch.zeros(1, 3, 64, 64)
    with torch.inference_mode():
        features = net.stem(x)
        for blocks in net.stages:
            shapes = {op: block(features).shape for op, block in blocks.items()}
            assert len(set(shapes.values())) == 1, shapes
            features = blocks["pre"](features)


def test_new_branches_are_their_own_modules_and_the_trunk_stays_frozen(net):
    new = net.new_branches()
    assert sorted({op for _, op in new}) == ["dws", "merge", "shrink", "slim"]
    pre = {id(p) for blocks in net.stages for p in blocks["pre"].parameters()}
    assert not any(id(p) in pre for module in new.values() for p in module.parameters())
    assert not any(p.requires_grad for p in net.stem.parameters())
    net.train()
    assert not net.stem.training and net.stages[0]["pre"].training
    net.eval()


def test_a_slim_block_keeping_every_channel_is_the_block():
    block = efficientnet_lite("lite0").blocks[15].eval()
    x = torch.randn(1, 192, 4, 4)
    with torch.inference_mode():
        torch.testing.assert_close(slim_block(block, 1.0).eval()(x), block(x))
        assert slim_block(block, 0.5).hidden_channels == block.hidden_channels // 2


def test_variants_outside_the_network_are_refused(net):
    for bad in (
        Variant(0, ("pre",), 160),
        Variant(0, ("slim",), 64),
        Variant(4, ("pre",) * 5, 64),
    ):
        with pytest.raises(ValueError, match="variant"):
            net(torch.zeros(1, 3, 64, 64), bad)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"backbone": "resnet50"}, "backbone must be"),
        ({"resolutions": (100,)}, "multiples of 32"),
        ({"resolutions": (64, 64)}, "distinct"),
        ({"pool_operators": ("conv7",)}, "pool_operators"),
        ({"trunk_stages": 6}, "trunk_stages"),
    ],
)
def test_bad_configurations_say_what_is_wrong(settings, message):
    with pytest.raises(ValueError, match=message):
        BackboneConfig(**settings)


def test_module_metrics_are_per_resolution(net):
    table = module_table(net, (3, 64, 64), "@64") | module_table(net, (3, 128, 128), "@128")
    small, large = Variant(3, ("pre",) * 4, 64), Variant(3, ("pre",) * 4, 128)
    assert module_keys(small)[0] == "stem@64"
    flops = [sum(table[k].flops for k in module_keys(v)) for v in (small, large)]
    assert flops[1] == pytest.approx(4 * flops[0], rel=0.05)


def test_a_model_directory_round_trips_without_the_imagenet_weights(net, tmp_path):
    card = {
        "name": "m",
        "classes": [str(i) for i in range(10)],
        "input": {"channels": 3, "height": 128, "width": 128, "dtype": "uint8"},
        "normalization": {"mean": [0.5] * 3, "std": [0.5] * 3},
        "network": net.config.to_dict(),
    }
    save_model(tmp_path / "m", net, card, {"variants": []})
    loaded = load_model(tmp_path / "m")
    assert isinstance(loaded.net, ElasticBackbone)
    x = torch.randn(1, 3, 64, 64)
    variant = Variant(2, ("merge", "dws", "shrink"), 64)
    with torch.inference_mode():
        torch.testing.assert_close(loaded.net(x, variant), net(x, variant))
