"""Files shipped with the package (parameters, models, traces), from the source tree or the install.

The bottom of the package: every layer may import it, and it imports none of them.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE = "adascale_ros"
REPO_ROOT = Path(__file__).resolve().parent.parent


def shipped_path(relative: str) -> Path:
    """A file shipped with the package: from the source tree, or from the installed share dir."""
    source = REPO_ROOT / relative
    if source.exists():
        return source
    from ament_index_python.packages import get_package_share_directory

    return Path(get_package_share_directory(PACKAGE)) / relative


def default_params_file() -> Path:
    return shipped_path("config/adascale.yaml")


MODEL_DIR_VARIABLE = "ADASCALE_MODEL_DIR"
DEFAULT_MODEL = "models/lite0-fashion-mnist"
TINY_MODEL = "models/default"


def default_model_dir() -> Path:
    """The model a node or command uses when none is named: ``$ADASCALE_MODEL_DIR`` when set, else the
    embedded robot-scale model (EfficientNet-Lite0 fine-tuned to Fashion-MNIST)."""
    return Path(os.environ.get(MODEL_DIR_VARIABLE) or shipped_path(DEFAULT_MODEL))


def tiny_model_dir() -> Path:
    """The embedded tiny elastic network (28 x 28 grey, well under a millisecond): fast tests, weak devices."""
    return shipped_path(TINY_MODEL)
