"""The malformed-input campaign (adascale campaign) against the nodes as separate processes."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.ros


def test_malformed_input_campaign_crashes_nothing_and_every_node_still_answers(tmp_path, start_process):
    # 3000 malformed messages (500 of each input type), then one valid message per node.
    campaign = start_process(
        ["-m", "adascale_ros.cli.main", "campaign", "--messages", "500", "--out", str(tmp_path), "--json"]
    )
    out, _ = campaign.communicate(timeout=300)
    report = json.loads(out[out.index("{") :])
    print((tmp_path / "campaign.md").read_text())
    assert campaign.returncode == 0 and report["passed"], out
    assert report["crashes"] == {}
    assert [r["input"] for r in report["inputs"]] == [
        "image",
        "compressed_image",
        "selection",
        "resource_state",
        "classification",
        "profiles",
    ]
    for row in report["inputs"]:
        assert row["sent"] == 500 and row["received"] >= 490, row
        assert sum(row["rejected"].values()) > 0, row  # the messages were malformed, and refused
        assert row["answers_after"], row
