"""Fine-tuning an elastic backbone: trunk-feature cache, distillation, tuning, resuming, scoring."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from adascale_ros.cli.main import main
from adascale_ros.model.accuracy import Normalization
from adascale_ros.model.datasets import ImageSet
from adascale_ros.model.directory import load_variant_table
from adascale_ros.model.elastic_backbone import LITE_MEAN, LITE_STD, BackboneConfig, ElasticBackbone
from adascale_ros.model.finetune import (
    CHECKPOINT,
    FineTuneConfig,
    FineTuner,
    evaluate_backbone_variants,
    model_input,
    trunk_features,
)
from adascale_ros.model.saved_model import load_model
from adascale_ros.model.variant import Variant

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


SMALL_RUN = (
    "dataset: {name: fashion-mnist, limit_train: 96, limit_test: 32, val_fraction: 0.25}\n"
    "network: {backbone: lite0, resolutions: [32, 64]}\n"
    "training: {distill_epochs: %s, tune_epochs: 0.5, batch_size: 16, table_images: 12}\n"
)


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    """A Lite0 model fine-tuned for a few steps on 96 Fashion-MNIST images at 32 and 64 pixels, and the
    trunk-feature cache it filled."""
    root = tmp_path_factory.mktemp("small")
    (root / "first.yaml").write_text(SMALL_RUN % "0.2")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ADASCALE_CACHE_DIR", str(root / "cache"))
        args = ["train", "--config", str(root / "first.yaml"), "--out", str(root / "a"), "--no-progress"]
        assert main([*args, "--workdir", str(root / "a.work")]) == 0
    return root / "a", root / "cache"


def cached_features(cache) -> list[tuple[str, int]]:
    return sorted((f.name, f.stat().st_mtime_ns) for f in (cache / "features").iterdir())


def test_training_on_from_a_models_weights_computes_no_trunk_features_again(small_model, tmp_path, monkeypatch):
    parent_dir, cache = small_model
    monkeypatch.setenv("ADASCALE_CACHE_DIR", str(cache))
    features = cached_features(cache)
    (tmp_path / "more.yaml").write_text(SMALL_RUN % "0.0")
    args = ["train", "--config", str(tmp_path / "more.yaml"), "--out", str(tmp_path / "b"), "--no-progress"]
    assert main([*args, "--init-from", str(parent_dir), "--workdir", str(tmp_path / "b.work")]) == 0

    assert features and cached_features(cache) == features
    parent = json.loads((parent_dir / "model_card.json").read_text())
    card = json.loads((tmp_path / "b" / "model_card.json").read_text())
    assert card["init_from"]["name"] == "a" and card["init_from"]["config"] == parent["config"]
    assert "distill" not in card["training"]["phase_seconds"] and card["training"]["phase_seconds"]["tune"] > 0

    (tmp_path / "other.yaml").write_text((SMALL_RUN % "0.0").replace("[32, 64]}", "[32, 64], exit_channels: 64}"))
    args = ["train", "--config", str(tmp_path / "other.yaml"), "--out", str(tmp_path / "c"), "--no-progress"]
    assert main([*args, "--init-from", str(parent_dir), "--workdir", str(tmp_path / "c.work")]) == 2  # refused


def test_training_on_at_another_input_resolution_starts_from_the_same_weights(small_model, tmp_path, monkeypatch):
    parent_dir, cache = small_model
    monkeypatch.setenv("ADASCALE_CACHE_DIR", str(cache))
    (tmp_path / "more.yaml").write_text((SMALL_RUN % "0.0").replace("[32, 64]", "[32, 64, 96]"))
    args = ["train", "--config", str(tmp_path / "more.yaml"), "--out", str(tmp_path / "d"), "--no-progress"]
    assert main([*args, "--init-from", str(parent_dir), "--workdir", str(tmp_path / "d.work")]) == 0

    card = json.loads((tmp_path / "d" / "model_card.json").read_text())
    assert card["network"]["resolutions"] == [32, 64, 96] and card["init_from"]["name"] == "a"
    table = json.loads((tmp_path / "d" / "variants.json").read_text())
    assert {row["resolution"] for row in table["variants"]} == {32, 64, 96}


def test_label_free_adaptation_on_a_folder_of_frames_keeps_the_largest_variant(small_model, tmp_path, monkeypatch):
    parent_dir, cache = small_model
    monkeypatch.setenv("ADASCALE_CACHE_DIR", str(cache))
    frames = tmp_path / "frames" / "2026-12-02"
    frames.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(30):  # unlabelled camera frames, not square, of another world than the training images
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(frames / f"{i:03d}.png")
    (frames / "notes.txt").write_text("not an image")
    out = tmp_path / "adapted"
    args = ["adapt", str(parent_dir), "--frames", str(tmp_path / "frames"), "--out", str(out), "--no-progress"]
    assert main([*args, "--epochs", "2"]) == 0

    before, after = load_model(parent_dir), load_model(out)
    largest = Variant(3, ("pre",) * 4, 64)
    x = model_input(images(8).images, 64, NORMALIZE)
    with torch.inference_mode():
        assert torch.equal(before.net(x, largest), after.net(x, largest))  # the teacher stays as it was
        assert not torch.equal(before.net(x, Variant(0, ("pre",), 64)), after.net(x, Variant(0, ("pre",), 64)))
    adapted = after.card["adapted"]
    assert adapted["frames"] == 30 and adapted["held_out"] == 3 and adapted["from"]["name"] == "a"
    assert len(adapted["mean_agreement_per_exit"]["after"]) == 4
    rows = load_variant_table(out)["variants"]
    assert all(0.0 <= row["agreement"] <= 1.0 and "val_accuracy" in row for row in rows)
    assert next(row for row in rows if row["variant_id"] == largest.id)["agreement"] == 1.0

    assert main(["adapt", str(parent_dir), "--frames", str(tmp_path / "none"), "--out", str(tmp_path / "x")]) == 2


def test_confidence_early_exit_table_of_a_backbone_model(small_model, capsys):
    model_dir, _ = small_model
    assert main(["early-exit", str(model_dir), "--variant", "e3:pre-pre-pre-pre@32", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["val"]["variant_id"] == "e3:pre-pre-pre-pre@32"
    rows = report["test"]["rows"]
    assert [len(row["exit_share"]) for row in rows] == [4] * len(rows)
    # The highest threshold answers (almost) everything at the variant's own exit, its accuracy without early exit.
    assert rows[-1]["exit_share"][-1] >= 0.9
    assert main(["early-exit", str(model_dir), "--variant", "e3:pre-pre-pre-pre@48"]) == 2  # not a resolution
