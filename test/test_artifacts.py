"""Model directories: train a tiny model end to end, round-trip it, and refuse bad files."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import REPO_ROOT

from adascale_ros.cli.main import main as cli
from adascale_ros.model.directory import load_variant_table
from adascale_ros.model.pipeline import TrainRunConfig, reevaluate, train_model
from adascale_ros.model.saved_model import ModelLoadError, load_model

pytestmark = pytest.mark.skipif(
    not Path("/usr/share/datasets/fashion-mnist").is_dir(), reason="dataset-fashion-mnist not installed"
)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("models") / "tiny"
    train_model(TrainRunConfig.from_yaml(REPO_ROOT / "config/train/tiny.yaml"), out, progress=False, log=lambda _: None)
    return out


def test_model_directory_contents(tiny_model):
    card = json.loads((tiny_model / "model_card.json").read_text())
    for key in ("classes", "input", "normalization", "network", "config", "dataset", "seed", "training"):
        assert key in card
    assert card["dataset"]["fingerprint"] and card["training"]["seconds"] > 0
    table = load_variant_table(tiny_model)
    assert len(table["variants"]) == 155
    required = {
        "variant_id",
        "exit_index",
        "operators",
        "accuracy",
        "val_accuracy",
        "params",
        "flops",
        "storage_bytes",
        "memory_accesses",
    }
    for row in table["variants"]:
        assert required <= set(row)
        assert 0.0 <= row["accuracy"] <= 1.0


def test_weights_only_round_trip_and_reevaluation(tiny_model):
    state = torch.load(tiny_model / "weights.pt", weights_only=True)
    model = load_model(tiny_model)
    assert all(torch.equal(state[k], v) for k, v in model.net.state_dict().items())
    recomputed = reevaluate(model, progress=False)
    stored = load_variant_table(tiny_model)
    assert [r["accuracy"] for r in recomputed["variants"]] == [r["accuracy"] for r in stored["variants"]]
    assert [r["val_accuracy"] for r in recomputed["variants"]] == [r["val_accuracy"] for r in stored["variants"]]


def test_training_can_start_from_a_trained_model(tiny_model, tmp_path):
    base = TrainRunConfig.from_yaml(REPO_ROOT / "config/train/tiny.yaml")
    still = replace(base, training=replace(base.training, lr=1e-9))  # the weights all but stay
    card = train_model(still, tmp_path / "continued", progress=False, log=lambda _: None, init_from=tiny_model)
    parent = json.loads((tiny_model / "model_card.json").read_text())
    assert card["init_from"]["name"] == "tiny" and card["init_from"]["config"] == parent["config"]
    assert card["init_from"]["training"]["epochs"] == parent["training"]["epochs"]
    before, after = load_model(tiny_model).net.named_parameters(), load_model(tmp_path / "continued").net.parameters()
    assert all(torch.allclose(p, q, atol=1e-6) for (_, p), q in zip(before, after, strict=True))

    other_network = replace(still, network=replace(still.network, head_channels=32))
    with pytest.raises(ValueError, match="network differs"):
        train_model(other_network, tmp_path / "x", progress=False, log=lambda _: None, init_from=tiny_model)
    other_data = replace(still, dataset=replace(still.dataset, limit_train=1000))
    with pytest.raises(ValueError, match="other data"):
        train_model(other_data, tmp_path / "y", progress=False, log=lambda _: None, init_from=tiny_model)


def copy_model(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_corrupt_weights_give_one_line_error(tiny_model, tmp_path):
    bad = copy_model(tiny_model, tmp_path / "bad")
    (bad / "weights.pt").write_bytes((bad / "weights.pt").read_bytes()[:1000])
    with pytest.raises(ModelLoadError, match="not a readable weights file") as info:
        load_model(bad)
    assert "\n" not in str(info.value)


def test_pickled_code_in_weights_is_not_run(tiny_model, tmp_path):
    bad = copy_model(tiny_model, tmp_path / "evil")
    marker = tmp_path / "executed"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    torch.save({"stem.0.weight": Payload()}, bad / "weights.pt")
    with pytest.raises(ModelLoadError):
        load_model(bad)
    assert not marker.exists()


def test_mismatched_weights_name_the_problem(tiny_model, tmp_path):
    bad = copy_model(tiny_model, tmp_path / "mismatch")
    card = json.loads((bad / "model_card.json").read_text())
    card["network"]["head_channels"] = 32
    (bad / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(ModelLoadError, match="wrong shape"):
        load_model(bad)


def test_missing_or_broken_card(tiny_model, tmp_path):
    bad = copy_model(tiny_model, tmp_path / "card")
    (bad / "model_card.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="unreadable JSON"):
        load_model(bad)
    with pytest.raises(ModelLoadError, match="not a model directory"):
        load_model(tmp_path / "nothing")


def test_cli_variants(tiny_model, capsys):
    assert cli(["variants", str(tiny_model), "--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    assert len(table["variants"]) == 155
    assert cli(["variants", str(tiny_model), "--limit", "3"]) == 0
    out = capsys.readouterr().out
    assert "best per exit" in out and "e0:res" in out


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert cli(["variants", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error" in err


def test_the_cheapest_variant_is_the_fastest_one_that_classifies():
    from adascale_ros.model.directory import USEFUL_ACCURACY_SHARE, cheapest_variant

    rows = [("e0:chance", 1, 0.10), ("e1:ok", 2, 0.86), ("e2:top", 3, 0.95)]
    table = {"variants": [{"variant_id": v, "flops": f, "val_accuracy": a} for v, f, a in rows]}
    assert cheapest_variant(table) == "e1:ok"  # the one branch that did not learn is never the safe default
    robot = load_variant_table(REPO_ROOT / "models" / "lite0-fashion-mnist")["variants"]
    chosen = next(r for r in robot if r["variant_id"] == cheapest_variant({"variants": robot}))
    best = max(r["val_accuracy"] for r in robot)
    assert chosen["val_accuracy"] >= USEFUL_ACCURACY_SHARE * best
    assert all(r["flops"] >= chosen["flops"] for r in robot if r["val_accuracy"] >= USEFUL_ACCURACY_SHARE * best)
    print(f"robot model's safe default: {chosen['variant_id']}, {chosen['val_accuracy']:.1%} on validation")
