"""Import torchvision where its compiled operators cannot load.

The only torchvision release that pairs with the CPU torch 2.13.0 wheel ships
CUDA builds of its ``_C`` extension. Where that extension fails to load,
``import torchvision`` itself fails ("operator torchvision::nms does not
exist") because it registers fake kernels for two ops the extension would
have defined. Declaring those two schemas first lets the import succeed; the
models and transforms work, only the detection ops (nms, roi_align, ...) stay
unavailable, as they would be anyway. Nothing is changed where ``_C`` loads.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import torch

_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_fragment: torch.library.Library | None = None  # kept alive: dropping it unregisters the schemas


def compiled_ops_load() -> bool:
    """Whether torchvision's compiled extension loads here (without importing torchvision)."""
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        raise ImportError("torchvision is not installed")
    for library in Path(spec.origin).parent.glob("_C*.so"):
        try:
            torch.ops.load_library(str(library))
            return True
        except OSError:
            return False
    return False


def import_torchvision() -> ModuleType:
    """``import torchvision``, declaring the missing op schemas first when needed."""
    global _fragment
    if "torchvision" not in sys.modules and _fragment is None and not compiled_ops_load():
        _fragment = torch.library.Library("torchvision", "FRAGMENT")
        for schema in _SCHEMAS:
            _fragment.define(schema)
    import torchvision

    return torchvision
