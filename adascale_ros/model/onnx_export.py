"""A torch module as an ONNX graph: what training (fast feature caching) and the runtime (fused segments) export."""

from __future__ import annotations

import io
import warnings
from typing import Any

ONNX_OPSET = 17


def export_module(module: Any, example: Any, dynamic_batch: bool = False, dynamic_size: bool = False) -> bytes:
    """One torch module as an ONNX graph with input ``x`` and output ``y`` (needs torch); with
    ``dynamic_batch`` the batch dimension is free, with ``dynamic_size`` the input's height and width
    (and a feature map output's)."""
    import torch

    axes: dict[str, dict[int, str]] = {"x": {}, "y": {}}
    if dynamic_batch:
        axes["x"][0] = axes["y"][0] = "batch"
    if dynamic_size:
        axes["x"] |= {2: "height", 3: "width"}
        with torch.inference_mode():
            if module(example).ndim == 4:
                axes["y"] |= {2: "out_height", 3: "out_width"}
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript-based exporter is deprecated in favour of torch.export,
        # which takes ~30x longer per module and needs onnxscript.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (example,),
            buffer,
            dynamo=False,
            opset_version=ONNX_OPSET,
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={name: dims for name, dims in axes.items() if dims} or None,
        )
    return buffer.getvalue()
