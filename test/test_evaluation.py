import torch

from adascale_ros.model.accuracy import Normalization, evaluate_variants
from adascale_ros.model.datasets import ImageSet
from adascale_ros.model.elastic import ElasticConfig, ElasticNet

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


def test_early_exit_accuracy_decides_per_input_as_the_engine_does():
    import numpy as np

    from adascale_ros.model.accuracy import early_exit_accuracy, lowest_threshold
    from adascale_ros.model.elastic import Variant
    from adascale_ros.runtime.engine import ElasticEngine

    torch.manual_seed(0)
    net = ElasticNet(TINY).eval()
    data = random_data(48)
    norm = Normalization.fit(data.images)
    variant = Variant.parse("e2:res-dws-mbc")
    result = early_exit_accuracy(net, data, norm, variant, [0.0, 0.15, 1.01], batch_size=20)
    by_threshold = {row["threshold"]: row for row in result["rows"]}
    accuracy = evaluate_variants(net, data, norm, [variant, Variant.parse("e0:res")])
    assert result["accuracy"] == by_threshold[1.01]["accuracy"] == accuracy[variant.id]
    assert by_threshold[1.01]["exit_share"] == [0.0, 0.0, 1.0]
    assert by_threshold[0.0]["accuracy"] == accuracy["e0:res"] and by_threshold[0.0]["exit_share"][0] == 1.0
    # Between the two, each input answers where the engine's early exit answers it.
    engine = ElasticEngine.from_net(net, (1, 16, 16), "torch", threads=1)
    x = norm(data.images).numpy()
    answers = [engine.run(x[i : i + 1], variant, 0.15) for i in range(len(data))]
    shares = np.bincount([a.exit_index for a in answers], minlength=3) / len(data)
    np.testing.assert_allclose(by_threshold[0.15]["exit_share"], shares.round(4))
    assert 0 < shares[0] < 1  # the threshold splits this data
    correct = np.mean([int(np.argmax(a.probabilities)) == int(y) for a, y in zip(answers, data.labels, strict=True)])
    assert by_threshold[0.15]["accuracy"] == correct
    # The lowest threshold within the loss allowed; None when all lose more.
    assert lowest_threshold(result, max_loss=1.0) == 0.0
    assert lowest_threshold({"accuracy": 0.9, "rows": [{"threshold": 0.5, "accuracy": 0.5}]}, 0.1) is None
