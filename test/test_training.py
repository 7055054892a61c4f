"""Algorithm 1 (multi-stage, freeze and guarded) and joint training on a tiny network."""

from __future__ import annotations

import copy

import pytest
import torch

from adascale_ros.model.accuracy import Normalization
from adascale_ros.model.datasets import DatasetSplits, ImageSet
from adascale_ros.model.elastic import ElasticConfig, ElasticNet
from adascale_ros.model.metrics import module_table
from adascale_ros.model.training import Trainer, TrainingConfig, augment

TINY = ElasticConfig(
    stem_channels=8, stage_channels=(8, 16), stage_strides=(2, 2), head_channels=16, operators=("res", "dws", "fac")
)


def separable_data(n: int, seed: int) -> ImageSet:
    """Class = texture (horizontal, vertical, diagonal stripes, checkerboard), random phase and noise:
    local patterns, learnable by every exit in a few steps."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (n,), generator=g)
    r = torch.arange(16).view(16, 1)
    c = torch.arange(16).view(1, 16)
    patterns = []
    for label, phase in zip(labels.tolist(), torch.randint(0, 4, (n,), generator=g).tolist(), strict=True):
        wave = [(r + phase) // 2 % 2, (c + phase) // 2 % 2, (r + c + phase) // 2 % 2, ((r + phase) // 2 + c // 2) % 2]
        patterns.append(wave[label].expand(16, 16))
    noise = torch.randint(0, 60, (n, 1, 16, 16), generator=g)
    images = (torch.stack(patterns).unsqueeze(1) * 150 + noise).to(torch.uint8)
    return ImageSet(images, labels, ("horizontal", "vertical", "diagonal", "checker"))


@pytest.fixture
def splits() -> DatasetSplits:
    return DatasetSplits("quadrants", separable_data(256, 0), separable_data(64, 1), separable_data(64, 2))


def make_trainer(splits: DatasetSplits, **overrides) -> Trainer:
    torch.manual_seed(0)
    config = TrainingConfig(
        **{
            "epochs_per_partition": 3,
            "batch_size": 16,
            "lr": 0.1,
            "augment_flip": False,
            "monitor_variants": 3,
            "monitor_images": 64,
            **overrides,
        }
    )
    net = ElasticNet(ElasticConfig.from_dict({**TINY.to_dict(), "num_classes": 4}))
    return Trainer(net, splits, config, Normalization.fit(splits.train.images), progress=False, log=lambda _: None)


def test_freeze_mode_learns_every_exit_and_never_touches_earlier_partitions(splits, monkeypatch):
    import adascale_ros.model.training as training

    trainer = make_trainer(splits, mode="freeze")
    partition0 = ("stem.", "stages.0.", "exits.0.")
    before: dict[str, torch.Tensor] = {}
    original = training.make_optimizer

    def capture_when_partition1_starts(params, config, total_steps):
        if not before and any(p is trainer.net.stages[1]["res"].body[0][0].weight for p in params):
            state = trainer.net.state_dict()
            before.update({k: v.clone() for k, v in state.items() if k.startswith(partition0)})
        return original(params, config, total_steps)

    monkeypatch.setattr(training, "make_optimizer", capture_when_partition1_starts)
    result = trainer.train()
    assert result.mode == "freeze" and result.epochs == 6
    assert all(a > 0.5 for a in result.exit_accuracy), result.exit_accuracy  # chance is 0.25
    after = trainer.net.state_dict()
    changed = [k for k, v in before.items() if not torch.equal(after[k], v)]
    assert before and not changed, changed


def test_target_accuracy_stops_a_partition_early(splits):
    result = make_trainer(splits, mode="freeze", epochs_per_partition=5, target_accuracy=(0.0, 0.0)).train()
    assert result.epochs == 2  # one epoch per partition: the target is met at once
    assert [e.partition for e in result.log] == [0, 1]


def test_guarded_mode_never_accepts_a_drop_in_earlier_exits(splits):
    trainer = make_trainer(splits, mode="guarded", epochs_per_partition=3)
    result = trainer.train()
    exit0 = [e.monitor_accuracy[0] for e in result.log]
    first_partition_final = exit0[2]
    # During partition 1, exit 0's accepted accuracy only goes up (rollbacks undo drops).
    assert all(a >= first_partition_final - 1e-9 for a in exit0[3:])
    assert result.exit_accuracy[1] > 0.5


def test_rollback_restores_only_earlier_partitions(splits):
    trainer = make_trainer(splits, mode="guarded")
    snapshot = copy.deepcopy(trainer.net.state_dict())
    with torch.no_grad():
        for p in trainer.net.parameters():
            p.add_(1.0)
    trainer._restore_earlier(snapshot, 1)
    state = trainer.net.state_dict()
    assert torch.equal(state["stem.0.weight"], snapshot["stem.0.weight"])
    assert torch.equal(state["stages.0.res.body.0.0.weight"], snapshot["stages.0.res.body.0.0.weight"])
    assert not torch.equal(state["stages.1.res.body.0.0.weight"], snapshot["stages.1.res.body.0.0.weight"])


def test_joint_mode(splits):
    result = make_trainer(splits, mode="joint", joint_epochs=6).train()
    assert result.mode == "joint" and result.epochs == 6 and len(result.exit_accuracy) == 2
    assert result.exit_accuracy[-1] > 0.5


def test_augment_keeps_shapes_and_pixels():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (8, 1, 10, 10), dtype=torch.uint8)
    out = augment(images, crop=2, flip=True, generator=g)
    assert out.shape == images.shape and out.dtype == torch.uint8
    assert torch.equal(augment(images, crop=0, flip=False, generator=g), images)


def test_invalid_training_config():
    with pytest.raises(ValueError):
        TrainingConfig(mode="sgd")
    with pytest.raises(ValueError):
        TrainingConfig(target_accuracy=(1.5,))


def test_sandwich_paths_are_the_largest_and_smallest_then_random(splits):
    trainer = make_trainer(splits, mode="joint", path_sampling="sandwich", paths_per_step=4)
    largest, smallest = trainer._sandwich_ends()
    table = module_table(trainer.net, splits.train.shape)
    for stage, (big, small) in enumerate(zip(largest, smallest, strict=True)):
        flops = {op: table[f"s{stage}:{op}"].flops for op in trainer.net.config.operators}
        assert flops[big] == max(flops.values()) and flops[small] == min(flops.values())
    paths = trainer._joint_paths([largest, smallest])
    assert paths[:2] == [largest, smallest] and len(paths) == 4
    result = trainer.train_joint(2)
    assert result.epochs == 2 and all(0.0 <= a <= 1.0 for a in result.exit_accuracy)


def test_sandwich_needs_two_paths():
    with pytest.raises(ValueError, match="paths_per_step"):
        TrainingConfig(mode="joint", path_sampling="sandwich", paths_per_step=1)
    with pytest.raises(ValueError, match="path_sampling"):
        TrainingConfig(path_sampling="cover")
