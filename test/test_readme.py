"""The README's results are generated from the committed reports, never typed."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from conftest import REPO_ROOT

from adascale_ros.harness.report import results_table

BLOCK = re.compile(r"<!-- results-table (?P<report>\S+) -->\n(?P<table>.*?)\n<!-- /results-table -->", re.S)


def test_every_results_block_is_the_generated_table_of_its_report():
    blocks = list(BLOCK.finditer((REPO_ROOT / "README.md").read_text()))
    assert blocks, "the README shows no results table"
    for block in blocks:
        report = json.loads((REPO_ROOT / block["report"]).read_text())
        expected = results_table(report, block["report"])
        assert block["table"] == expected, f"regenerate with: adascale results-table {block['report']}"


def test_results_table_command_prints_the_block():
    block = next(BLOCK.finditer((REPO_ROOT / "README.md").read_text()))
    run = subprocess.run(
        [sys.executable, "-m", "adascale_ros.cli.main", "results-table", block["report"]],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.rstrip("\n") == block["table"]


def test_the_cli_reference_is_generated_from_the_parsers():
    from adascale_ros.cli.reference import markdown

    text = markdown()
    assert (REPO_ROOT / "docs" / "cli.md").read_text() == text, "regenerate: python -m adascale_ros.cli.reference"
    for command in ("run", "evaluate", "calibrate", "bench inference", "make-bag"):
        assert f"## adascale {command}\n" in text
