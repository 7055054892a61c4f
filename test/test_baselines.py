"""Static baselines and the training-mode comparison, on tiny budgets."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import REPO_ROOT

from adascale_ros.model.baselines import BASELINES, build_baseline, compare_training, run_baselines
from adascale_ros.model.pipeline import TrainRunConfig, train_model
from adascale_ros.model.saved_model import load_model

needs_data = pytest.mark.skipif(
    not Path("/usr/share/datasets/fashion-mnist").is_dir(), reason="dataset-fashion-mnist not installed"
)


@pytest.mark.parametrize("name", BASELINES)
@pytest.mark.parametrize(("channels", "size"), [(1, 28), (3, 32), (3, 64)])
def test_baselines_adapt_to_the_input(name, channels, size):
    model = build_baseline(name, channels, 7, size).eval()
    with torch.no_grad():
        assert model(torch.zeros(2, channels, size, size)).shape == (2, 7)


def test_unknown_baseline():
    with pytest.raises(ValueError, match="unknown baseline"):
        build_baseline("vgg16", 1, 10, 28)


@pytest.mark.parametrize("lr", [0.0, -0.1, math.nan])
def test_a_learning_rate_that_is_not_positive_is_refused_before_any_work(lr, tmp_path):
    with pytest.raises(ValueError, match="--lr must be > 0"):
        run_baselines(None, tmp_path, lr=lr)  # the model is never read


@needs_data
def test_baseline_table_beside_the_elastic_exits(tmp_path):
    config = TrainRunConfig.from_yaml(REPO_ROOT / "config/train/tiny.yaml")
    train_model(config, tmp_path / "tiny", progress=False, log=lambda _: None)
    report = run_baselines(
        load_model(tmp_path / "tiny"),
        tmp_path / "out",
        names=["squeezenet1_1"],
        epochs=1,
        lr=0.01,
        latency_repeats=3,
        limit_train=256,
        progress=False,
        log=lambda _: None,
    )
    models = [r["model"] for r in report["rows"]]
    assert models[:3] == [m for m in models if m.startswith("AdaScale exit")] and models[-1] == "squeezenet1_1"
    for row in report["rows"]:
        assert 0.0 <= row["accuracy"] <= 1.0 and row["latency_ms"] > 0 and row["params"] > 0
    assert json.loads((tmp_path / "out" / "baselines.json").read_text())["rows"] == report["rows"]
    assert report["baseline_lr"] == 0.01 and report["elastic_lr"] == config.training.lr
    markdown = (tmp_path / "out" / "baselines.md").read_text()
    assert "| squeezenet1_1 |" in markdown and "learning rate 0.01" in markdown


@needs_data
def test_training_modes_compared_in_one_run(tmp_path):
    config = TrainRunConfig.from_yaml(REPO_ROOT / "config/train/tiny.yaml")
    report = compare_training(config, ["freeze", "joint"], tmp_path, progress=False, log=lambda _: None)
    assert [r["mode"] for r in report["results"]] == ["freeze", "joint"]
    budget = report["epoch_budget"]
    assert report["results"][1]["epochs"] == budget >= report["results"][0]["epochs"]
    for r in report["results"]:
        assert len(r["best_test_accuracy_per_exit"]) == 3 and r["seconds"] > 0
    assert "| joint |" in (tmp_path / "training_modes.md").read_text()
