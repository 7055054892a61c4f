import torch

from adascale_ros.model.datasets import ImageSet
from adascale_ros.model.elastic import ElasticConfig, ElasticNet
from adascale_ros.model.evaluation import Normalization, evaluate_variants

TINY = ElasticConfig(
    stem_channels=4,
    stage_channels=(4, 6, 8),
    stage_strides=(2, 2, 1),
    head_channels=8,
    operators=("res", "dws", "mbc", "dense", "fac"),
)


def random_data(n: int = 40) -> ImageSet:
    g = torch.Generator().manual_seed(0)
    return ImageSet(
        torch.randint(0, 256, (n, 1, 16, 16), dtype=torch.uint8, generator=g),
        torch.randint(0, 10, (n,), generator=g),
        tuple("abcdefghij"),
    )


def test_prefix_reuse_gives_exactly_the_naive_accuracies():
    torch.manual_seed(0)
    net = ElasticNet(TINY)
    data = random_data()
    norm = Normalization.fit(data.images)
    reused = evaluate_variants(net, data, norm, batch_size=32)
    naive = evaluate_variants(net, data, norm, batch_size=32, reuse=False)
    assert len(reused) == 155
    assert reused == naive
    assert len(set(reused.values())) > 1  # not all identical by accident


def test_prefix_reuse_computes_each_shared_stage_once_per_batch():
    net = ElasticNet(TINY)
    calls = {"stage0": 0}
    for block in net.stages[0].values():
        block.register_forward_hook(lambda *_: calls.__setitem__("stage0", calls["stage0"] + 1))
    data = random_data(32)
    evaluate_variants(net, data, Normalization.fit(data.images), batch_size=32)
    assert calls["stage0"] == 5  # one per stage-0 operator, not one per variant (155)


def test_subset_of_variants_and_training_mode_restored():
    net = ElasticNet(TINY).train()
    data = random_data(16)
    variants = net.variants()[::20]
    acc = evaluate_variants(net, data, Normalization.fit(data.images), variants)
    assert set(acc) == {v.id for v in variants}
    assert net.training
