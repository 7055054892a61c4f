"""Intrinsic metrics of modules and variants: parameters, FLOPs, storage, memory accesses.

Each module a variant is made of (the stem, one candidate block per stage, an
exit head) is measured once at its real batch-1 input shape; a variant's
metrics are the sums over its modules, since they run one after another.

- FLOPs: torch's own counter (``torch.utils.flop_counter.FlopCounterMode``),
  which counts convolutions and matrix products (2 per multiply-add).
- Storage: bytes of parameters and buffers as stored.
- Memory accesses (AdaScale eq. 4): sum over the module's layers of
  (input + output + weight + bias) elements x bytes per element, counted with
  forward hooks on every leaf layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from adascale_ros.model.elastic import MultiExitNet, Variant


@dataclass(frozen=True)
class ModuleMetrics:
    key: str  # "stem", "s<stage>:<op>", "exit<i>"
    kind: str  # "stem", the operator name, or "exit"
    in_shape: tuple[int, ...]  # (C, H, W) of its input
    out_shape: tuple[int, ...]
    params: int
    flops: int
    storage_bytes: int
    memory_accesses: int  # bytes

    def to_dict(self) -> dict:
        return asdict(self)


def _tensor_bytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def size_of(modules: Sequence[nn.Module]) -> tuple[int, int]:
    """(parameter count, storage bytes of parameters and buffers) of some modules."""
    tensors = [t for m in modules for t in [*m.parameters(), *m.buffers()]]
    params = sum(p.numel() for m in modules for p in m.parameters())
    return params, sum(_tensor_bytes(t) for t in tensors)


def memory_accesses(module: nn.Module, x: torch.Tensor) -> int:
    """AdaScale eq. 4 for one forward pass of ``module`` on ``x``, in bytes."""
    total = 0

    def hook(layer: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        total += sum(_tensor_bytes(i) for i in inputs if isinstance(i, torch.Tensor))
        total += _tensor_bytes(output) if isinstance(output, torch.Tensor) else 0
        total += sum(_tensor_bytes(p) for p in layer.parameters(recurse=False))

    leaves = [m for m in module.modules() if not any(True for _ in m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        module(x)
    finally:
        for h in handles:
            h.remove()
    return total


def measure_module(key: str, kind: str, module: nn.Module, x: torch.Tensor) -> tuple[ModuleMetrics, torch.Tensor]:
    counter = FlopCounterMode(display=False)
    with counter:
        out = module(x)
    params, storage = size_of([module])
    metrics = ModuleMetrics(
        key=key,
        kind=kind,
        in_shape=tuple(x.shape[1:]),
        out_shape=tuple(out.shape[1:]),
        params=params,
        flops=int(counter.get_total_flops()),
        storage_bytes=storage,
        memory_accesses=memory_accesses(module, x),
    )
    return metrics, out


@torch.inference_mode()
def module_table(net: MultiExitNet, input_shape: tuple[int, int, int], suffix: str = "") -> dict[str, ModuleMetrics]:
    """Metrics of every module of ``net`` at batch 1, keyed by module key (``suffix`` appended: a
    network with elastic resolution has one table per resolution, ``@<side>``)."""
    was_training = net.training
    net.eval()
    try:
        table: dict[str, ModuleMetrics] = {}
        key = "stem" + suffix
        table[key], x = measure_module(key, "stem", net.stem, torch.zeros(1, *input_shape))
        for stage, candidates in enumerate(net.stages):
            out = None
            for op, block in candidates.items():
                key = f"s{stage}:{op}{suffix}"
                table[key], out = measure_module(key, op, block, x)
            key = f"exit{stage}{suffix}"
            table[key], _ = measure_module(key, "exit", net.exits[stage], out)
            x = out  # every candidate has the same output shape
    finally:
        net.train(was_training)
    return table


def module_keys(variant: Variant) -> list[str]:
    """Keys of the modules a variant runs, in order."""
    suffix = resolution_suffix(variant.resolution)
    stages = (f"s{s}:{op}{suffix}" for s, op in enumerate(variant.operators))
    return [f"stem{suffix}", *stages, f"exit{variant.exit_index}{suffix}"]


def resolution_suffix(resolution: int | None) -> str:
    """What module keys of a variant at ``resolution`` end with ("" for a one-resolution network)."""
    return "" if resolution is None else f"@{resolution}"


def variant_metrics(variant: Variant, table: dict[str, ModuleMetrics]) -> dict[str, int]:
    modules = [table[k] for k in module_keys(variant)]
    return {
        "params": sum(m.params for m in modules),
        "flops": sum(m.flops for m in modules),
        "storage_bytes": sum(m.storage_bytes for m in modules),
        "memory_accesses": sum(m.memory_accesses for m in modules),
    }
