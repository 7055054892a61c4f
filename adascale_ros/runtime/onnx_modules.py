"""The network as ONNX modules (stem, every stage's blocks, every exit head), and their on-disk cache.

Exporting the default network's 25 modules takes about a second and needs
torch, whose import takes two more; a restarted inference node should not pay
either. The first start exports and stores the modules under
``$ADASCALE_CACHE_DIR`` (default ``$XDG_CACHE_HOME/adascale_ros``, i.e.
``~/.cache/adascale_ros``), keyed by the SHA-256 of the weights and the model
card; later starts read them back without importing torch. ONNX files are
protobuf graphs: reading one runs no code from it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adascale_ros.model.directory import MODEL_CARD, WEIGHTS
from adascale_ros.model.onnx_export import ONNX_OPSET, export_module

CACHE_FORMAT = 1


@dataclass(frozen=True)
class OnnxModules:
    """Serialized ONNX graphs of every module, in execution order."""

    stem: bytes
    stages: tuple[dict[str, bytes], ...]  # per stage: operator -> block
    heads: tuple[bytes, ...]  # per stage: its exit head

    @property
    def stage_ops(self) -> tuple[tuple[str, ...], ...]:
        return tuple(tuple(blocks) for blocks in self.stages)


def export_modules(net: Any, input_shape: tuple[int, int, int]) -> OnnxModules:
    """Export every module of an elastic network (needs torch). A network with elastic resolution
    (``config.resolutions``) gets graphs of free height and width, one for every resolution."""
    import torch

    dynamic_size = bool(getattr(net.config, "resolutions", ()))

    def export(module: torch.nn.Module, example: torch.Tensor) -> bytes:
        return export_module(module, example, dynamic_size=dynamic_size)

    net = net.eval()
    with torch.inference_mode():
        x = torch.zeros(1, *input_shape)
        stem = export(net.stem, x)
        x = net.stem(x)
        stages, heads = [], []
        for index, blocks in enumerate(net.stages):
            stages.append({op: export(block, x) for op, block in blocks.items()})
            x = next(iter(blocks.values()))(x)  # every block of a stage has the same output shape
            heads.append(export(net.exits[index], x))
    return OnnxModules(stem, tuple(stages), tuple(heads))


def fuse(graphs: Sequence[bytes], keep_features: bool = False, softmax: bool = False) -> bytes:
    """One graph that runs ``graphs`` in order, each one's output the next one's input (``onnx.compose``).

    Its output is the last graph's, through a Softmax with ``softmax``; with
    ``keep_features`` the output of the graph before the last comes first, as
    another output (a block fused with its exit head still passes its features on). A fused
    graph costs one session call where the modules cost one each, and the
    softmax in the graph saves four numpy calls: on the cold CPU a camera frame
    meets every 100 ms, each call is 0.1-0.25 ms (a numpy soft-max of 10
    numbers about 0.14 ms, 5 us warm).
    """
    import onnx
    from onnx import compose, helper

    models = [compose.add_prefix(onnx.load_from_string(graph), f"m{i}_") for i, graph in enumerate(graphs)]
    fused = models[0]
    for i, model in enumerate(models[1:], start=1):
        features = fused.graph.output[0].name
        outputs = [features, model.graph.output[0].name] if keep_features and i == len(models) - 1 else None
        fused = compose.merge_models(fused, model, io_map=[(features, model.graph.input[0].name)], outputs=outputs)
    # merge_models lists every part's opset imports; one per domain is what the ONNX spec allows
    # (ONNX Runtime tolerates the repeats, its quantizer does not).
    opsets = {}
    for opset in fused.opset_import:
        opsets[opset.domain] = max(opsets.get(opset.domain, 0), opset.version)
    del fused.opset_import[:]
    fused.opset_import.extend(helper.make_opsetid(domain, version) for domain, version in opsets.items())
    if softmax:
        last = fused.graph.output[-1]
        fused.graph.node.append(helper.make_node("Softmax", [last.name], ["probabilities"], axis=-1))
        last.name = "probabilities"
    return fused.SerializeToString()


def cache_root() -> Path:
    explicit = os.environ.get("ADASCALE_CACHE_DIR")
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "adascale_ros"


def cache_key(model_dir: Path) -> str:
    """SHA-256 of the weights, the model card and the export settings."""
    digest = hashlib.sha256(f"onnx-modules {CACHE_FORMAT} opset {ONNX_OPSET}\n".encode())
    for name in (WEIGHTS, MODEL_CARD):
        with open(model_dir / name, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:32]


STEM_FILE = "stem.onnx"


def _stage_file(index: int, op: str) -> str:
    return f"stage{index}.{op}.onnx"


def _exit_file(index: int) -> str:
    return f"exit{index}.onnx"


def load_cached(model_dir: Path) -> OnnxModules | None:
    """The cached modules of this model, or None (not cached, or the cache entry is unusable)."""
    try:
        entry = cache_root() / "onnx" / cache_key(model_dir)
        index = json.loads((entry / "index.json").read_text())
        stage_ops = [list(ops) for ops in index["stage_ops"]]

        def read(name: str) -> bytes:
            return (entry / name).read_bytes()

        return OnnxModules(
            read(STEM_FILE),
            tuple({op: read(_stage_file(i, op)) for op in ops} for i, ops in enumerate(stage_ops)),
            tuple(read(_exit_file(i)) for i in range(len(stage_ops))),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def store(model_dir: Path, modules: OnnxModules) -> Path | None:
    """Write the modules to the cache (atomically: a whole entry or none); None when it cannot be written."""
    try:
        entry = cache_root() / "onnx" / cache_key(model_dir)
        entry.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=entry.parent, prefix=".incoming-"))
        files = {STEM_FILE: modules.stem}
        for i, (blocks, head) in enumerate(zip(modules.stages, modules.heads, strict=True)):
            files |= {_stage_file(i, op): graph for op, graph in blocks.items()} | {_exit_file(i): head}
        for name, graph in files.items():
            (staging / name).write_bytes(graph)
        index = {"format": CACHE_FORMAT, "opset": ONNX_OPSET, "stage_ops": [list(ops) for ops in modules.stage_ops]}
        (staging / "index.json").write_text(json.dumps(index) + "\n")
        if entry.exists():  # another process stored the same modules meanwhile, or a broken entry
            shutil.rmtree(entry, ignore_errors=True)
        os.replace(staging, entry)
        return entry
    except OSError:
        return None
