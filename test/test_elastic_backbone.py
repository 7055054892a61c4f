"""The pretrained backbone made elastic: branches, exits, resolutions, and its model directory."""

import pytest
import torch

from adascale_ros.model.efficientnet_lite import efficientnet_lite
from adascale_ros.model.elastic_backbone import BackboneConfig, ElasticBackbone, slim_block
from adascale_ros.model.metrics import module_keys, module_table
from adascale_ros.model.saved_model import load_model, save_model
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


def test_one_set_of_onnx_graphs_runs_every_resolution_as_torch_does(net):
    from adascale_ros.runtime.engine import ElasticEngine

    engine = ElasticEngine.from_net(net, (3, 128, 128), "onnxruntime", threads=1)
    assert engine.resolutions == (64, 96, 128)
    for variant_id in ("e0:shrink@64", "e3:pre-merge-dws-slim@96", "e3:pre-pre-pre-pre@128"):
        variant = engine.check_variant(variant_id)
        side = variant.resolution
        x = torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(side))
        with torch.inference_mode():
            expected = torch.softmax(net(x, variant), dim=1)[0].numpy()
        result = engine.run(x.numpy(), variant)
        assert result.exit_index == variant.exit_index
        assert abs(result.probabilities - expected).max() < 1e-4
    for bad in ("e0:pre", "e0:pre@160"):
        with pytest.raises(ValueError, match="resolution"):
            engine.check_variant(bad)


def test_calibration_times_every_module_at_every_resolution(net, tmp_path):
    import numpy as np

    from adascale_ros.model.accuracy import Normalization
    from adascale_ros.model.backbone_pipeline import variant_table
    from adascale_ros.model.saved_model import LoadedModel
    from adascale_ros.profiling.calibration import engine_calls
    from adascale_ros.profiling.measurement import module_infos, variant_module_keys
    from adascale_ros.runtime.engine import ElasticEngine

    card = {
        "input": {"channels": 3, "height": 128, "width": 128},
        "normalization": {"mean": [0.5] * 3, "std": [0.5] * 3},
        "network": net.config.to_dict(),
    }
    model = LoadedModel(net, card, Normalization((0.5,) * 3, (0.5,) * 3), tmp_path)
    engine = ElasticEngine.from_net(net, (3, 128, 128), "onnxruntime", threads=1)
    calls, run_variant = engine_calls(model, engine, np.zeros((48, 64, 3), np.uint8))
    infos = module_infos(variant_table(net, {"accuracy": {v.id: 0.5 for v in net.variants()}}))
    assert set(calls) == set(infos)
    assert {"fixed@64", "fixed@128", "stem@96", "s3:slim@128", "exit0@64"} <= set(calls)
    assert infos["fixed@128"].out_hw == 4 * infos["fixed@64"].out_hw
    variant = Variant(1, ("dws", "merge"), 96)
    assert variant_module_keys(variant) == ["fixed@96", "stem@96", "s0:dws@96", "s1:merge@96", "exit1@96"]
    assert run_variant(variant).exit_index == 1
    for call in calls.values():
        call()
