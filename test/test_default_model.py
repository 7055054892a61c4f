"""The committed default model: loads safely, and its table matches the weights.

The full re-evaluation (780 variants on 16,000 images, several minutes on two
cores) is marked slow: `make test-slow` runs it.
"""

from __future__ import annotations

import pytest
import torch
from conftest import REPO_ROOT

from adascale_ros.model.directory import load_variant_table
from adascale_ros.model.elastic import Variant
from adascale_ros.model.pipeline import best_per_exit, reevaluate
from adascale_ros.model.saved_model import load_model

DEFAULT = REPO_ROOT / "models" / "default"


def test_default_model_loads_and_lists_every_variant():
    model = load_model(DEFAULT)
    table = load_variant_table(DEFAULT)
    assert len(table["variants"]) == len(model.net.variants()) >= 300
    assert len({op for row in table["variants"] for op in row["operators"]}) >= 5
    assert sum(f.stat().st_size for f in DEFAULT.iterdir()) < 10 * 2**20
    # A deeper best variant is more accurate than the first exit's best.
    best = best_per_exit(table["variants"])
    assert best[max(best)]["accuracy"] > best[0]["accuracy"]
    with torch.no_grad():
        logits = model.net(torch.zeros(1, *model.input_shape), Variant.parse(best[0]["variant_id"]))
    assert logits.shape == (1, len(model.classes))


@pytest.mark.slow
def test_default_model_table_is_recomputed_from_the_weights():
    stored = load_variant_table(DEFAULT)["variants"]
    recomputed = reevaluate(load_model(DEFAULT), progress=False)["variants"]
    assert [(r["variant_id"], r["accuracy"], r["val_accuracy"]) for r in recomputed] == [
        (r["variant_id"], r["accuracy"], r["val_accuracy"]) for r in stored
    ]
