"""Fine-tuning an elastic backbone: trunk-feature cache, distillation, tuning, resuming, scoring."""

import numpy as np
import pytest
import torch

from adascale_ros.model.datasets import ImageSet
from adascale_ros.model.elastic_backbone import LITE_MEAN, LITE_STD, BackboneConfig, ElasticBackbone
from adascale_ros.model.evaluation import Normalization
from adascale_ros.model.finetune import (
    CHECKPOINT,
    FineTuneConfig,
    FineTuner,
    evaluate_backbone_variants,
    model_input,
    trunk_features,
)
from adascale_ros.model.variant import Variant
from adascale_ros.tools.cli import main

RESOLUTIONS = (32, 64)
NORMALIZE = Normalization(LITE_MEAN, LITE_STD)
QUICK = {"distill_epochs": 1.0, "tune_epochs": 1.0, "batch_size": 16, "checkpoint_every": 2}


def images(n=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    # Three classes a network can tell apart: dark, mid and bright images with noise.
    pixels = (labels.view(-1, 1, 1, 1) * 100 + torch.randint(0, 50, (n, 1, 12, 12), generator=g)).to(torch.uint8)
    return ImageSet(pixels, labels, ("dark", "mid", "bright"))


def fresh_net():
    torch.manual_seed(0)
    return ElasticBackbone(BackboneConfig(num_classes=3, resolutions=RESOLUTIONS)).eval()


@pytest.fixture(scope="module")
def data():
    return images()


@pytest.fixture(scope="module")
def features(data, tmp_path_factory):
    cache = tmp_path_factory.mktemp("features")
    return {r: trunk_features(fresh_net(), data, r, NORMALIZE, cache, progress=False) for r in RESOLUTIONS}


def tuner(net, features, data, workdir, **settings):
    config = FineTuneConfig(**{**QUICK, **settings})
    return FineTuner(net, config, features, data.labels, workdir, progress=False, log=lambda _: None)


def test_grey_images_become_normalised_rgb_at_the_resolution(data):
    x = model_input(data.images, 64, NORMALIZE)
    assert x.shape == (len(data), 3, 64, 64) and x.dtype == torch.float32
    assert torch.equal(x[:, 0], x[:, 2])
    # The full pixel range (0..249 here) spans about [-1, 1], the ImageNet weights' input range.
    assert -1.0 <= float(x.min()) < -0.95 and 0.9 < float(x.max()) <= 1.0


def test_cached_trunk_features_are_the_trunks_output_and_are_reused(data, tmp_path):
    net = fresh_net()
    first = np.array(trunk_features(net, data, 64, NORMALIZE, tmp_path, batch_size=20, progress=False))
    with torch.inference_mode():
        expected = net.stem(model_input(data.images, 64, NORMALIZE)).numpy()
    assert first.dtype == np.float16 and first.shape == expected.shape
    np.testing.assert_allclose(first.astype(np.float32), expected, rtol=1e-2, atol=1e-2)
    files = list(tmp_path.glob("trunk-*.npy"))
    assert len(files) == 1
    files[0].write_bytes(b"not an array")  # a damaged entry is computed again
    again = trunk_features(net, data, 64, NORMALIZE, tmp_path, progress=False)
    np.testing.assert_array_equal(again, first)


def test_distillation_brings_every_new_branch_closer_to_its_stage(data, features, tmp_path):
    net = fresh_net()
    x = torch.from_numpy(np.asarray(features[64], np.float32))

    def distances():
        out = {}
        with torch.inference_mode():
            inputs = x
            for s, blocks in enumerate(net.stages):
                target = blocks["pre"](inputs)
                for op, block in blocks.items():
                    if op != "pre":
                        out[(s, op)] = float(((block(inputs) - target) ** 2).mean())
                inputs = target
        return out

    before = distances()
    tuner(net, features, data, tmp_path, distill_epochs=4.0, tune_epochs=0.0).run()
    net.eval()
    after = distances()
    improved = [key for key in before if after[key] < before[key]]
    assert len(improved) >= 0.8 * len(before), (before, after)


def test_an_interrupted_run_resumes_from_its_checkpoint_to_the_same_weights(data, features, tmp_path, monkeypatch):
    whole = fresh_net()
    tuner(whole, features, data, tmp_path / "whole").run()

    resumed = fresh_net()
    calls = {"n": 0}
    original = FineTuner._path

    def interrupt_on_the_third_step(self):  # of three; a checkpoint was written after the second
        calls["n"] += 1
        if calls["n"] > 2:
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(FineTuner, "_path", interrupt_on_the_third_step)
    with pytest.raises(KeyboardInterrupt):
        tuner(resumed, features, data, tmp_path / "resumed").run()
    monkeypatch.setattr(FineTuner, "_path", original)
    assert (tmp_path / "resumed" / CHECKPOINT).exists()
    restarted = fresh_net()
    tuner(restarted, features, data, tmp_path / "resumed").run()
    for key, value in whole.state_dict().items():
        torch.testing.assert_close(restarted.state_dict()[key], value, msg=key)


def test_label_free_tuning_keeps_the_top_variant_as_it_was(data, features, tmp_path):
    net = fresh_net()
    top = {k: v.clone() for k, v in net.state_dict().items() if ".pre." in f".{k}" or k.startswith("exits.3.")}
    config = FineTuneConfig(**{**QUICK, "labels": False})
    FineTuner(net, config, features, None, tmp_path, progress=False, log=lambda _: None).run()
    state = net.state_dict()
    changed = [k for k, v in top.items() if not torch.equal(state[k], v) and "running" not in k and "batches" not in k]
    assert changed == []
    assert not torch.equal(state["exits.0.4.weight"], fresh_net().state_dict()["exits.0.4.weight"])


def test_variant_accuracy_with_prefix_reuse_equals_running_each_variant(data, features):
    net = fresh_net()
    accuracy = evaluate_backbone_variants(net, features, data.labels, batch_size=20, progress=False)
    assert len(accuracy) == len(net.variants())
    for variant in (Variant(0, ("dws",), 32), Variant(3, ("merge", "pre", "shrink", "slim"), 64)):
        x = model_input(data.images, variant.resolution, NORMALIZE)
        with torch.inference_mode():
            direct = float((net(x, variant).argmax(1) == data.labels).float().mean())
        assert accuracy[variant.id] == pytest.approx(direct, abs=1.5 / len(data))


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("network: {backbone: lite0}\ntraining: {epochs: 3}\n", "unknown training settings"),
        ("network: {backbone: lite0, depth: 2}\n", "unknown network settings"),
        ("network: {backbone: lite0, resolutions: [100]}\n", "multiples of 32"),
        ("network: {backbone: lite0}\ndataset: {name: imagenet}\n", "unknown dataset"),
    ],
)
def test_a_bad_backbone_configuration_is_a_one_line_error(tmp_path, capsys, yaml_text, message):
    config = tmp_path / "bad.yaml"
    config.write_text(yaml_text)
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "m"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
