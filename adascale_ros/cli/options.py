"""Options several commands share, as argparse parent parsers (``parents=[MODEL_DIR]``)."""

from __future__ import annotations

import argparse
from pathlib import Path


def _parent(*flags: str, **kwargs: object) -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(*flags, **kwargs)
    return parent


MODEL_DIR = _parent(
    "--model-dir", type=Path, help="default: the embedded default model, or $ADASCALE_MODEL_DIR when set"
)
PARAMS_FILE = _parent("--params-file", type=Path, help="ROS parameters file (default: config/adascale.yaml)")
JSON = _parent("--json", action="store_true", help="print the report as JSON")
JSON_PROGRESS = _parent("--json", action="store_true", help="print the report as JSON (progress goes to stderr)")
NO_PROGRESS = _parent("--no-progress", action="store_true", help="no progress bars")
LOAD_OWN_SESSION = _parent(
    "--load-own-session",
    action="store_true",
    help="run stress-ng in a session of its own, as navigation started from another terminal (default: in this"
    " one, as navigation started by the same launch file; Linux's autogroup scheduler makes the difference)",
)
