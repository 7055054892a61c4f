"""The elastic multi-exit network and its variants.

A stem, then ``N`` stages that each hold one candidate block per operator
family (weight sharing: every variant that picks operator ``o`` at stage
``s`` uses the same block), and an exit head after every stage. A *variant*
is an exit plus the operator chosen at each stage up to it; running it runs
the stem, exactly those blocks, and that exit head.

    stem -> stage0[op0] -> stage1[op1] -> ... -> stageK[opK] -> exitK
                 |               |
               exit0           exit1     (the exits a variant stops at)
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from adascale_ros.model.operators import NORMS, OPERATORS, build_operator, conv_norm
from adascale_ros.model.variant import Variant

__all__ = ["ElasticConfig", "ElasticNet", "ExitHead", "MultiExitNet", "Variant"]


@dataclass(frozen=True)
class ElasticConfig:
    """Shape of the elastic network; stored in the model card."""

    in_channels: int = 1
    num_classes: int = 10
    stem_channels: int = 24
    # 1 keeps the input resolution; 2 halves it in the stem, which doubles the
    # receptive field of the first exit (what a shallow exit lacks) and leaves
    # a quarter of the positions for the stages after it.
    stem_stride: int = 1
    stage_channels: tuple[int, ...] = (32, 64, 96, 128)
    stage_strides: tuple[int, ...] = (2, 2, 2, 1)
    operators: tuple[str, ...] = tuple(OPERATORS)
    head_channels: int = 128
    dropout: float = 0.2
    # "group" (GroupNorm, per sample) or "batch" (BatchNorm, running statistics shared by every
    # path through a block). Model cards written before this field was added used "group".
    norm: str = "group"

    def __post_init__(self) -> None:
        if len(self.stage_channels) != len(self.stage_strides) or not self.stage_channels:
            raise ValueError("stage_channels and stage_strides must be non-empty and of equal length")
        unknown = [op for op in self.operators if op not in OPERATORS]
        if unknown or not self.operators or len(set(self.operators)) != len(self.operators):
            raise ValueError(f"operators must be distinct names from {list(OPERATORS)}, got {list(self.operators)}")
        if min(*self.stage_channels, self.stem_channels, self.head_channels, self.num_classes) < 1:
            raise ValueError("channel and class counts must be >= 1")
        if min(self.stem_stride, *self.stage_strides) < 1:
            raise ValueError("strides must be >= 1")
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {list(NORMS)}, got {self.norm!r}")

    @property
    def num_stages(self) -> int:
        return len(self.stage_channels)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ElasticConfig:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        for key in ("stage_channels", "stage_strides", "operators"):
            if key in known:
                known[key] = tuple(known[key])
        return cls(**known)


class ExitHead(nn.Sequential):
    """AdaScale's exit branch: 3x3 conv stride 2, adaptive average pool to 1x1, dropout, linear.

    No normalisation between the conv and the pooling (the paper has none):
    a per-sample normalisation there would remove the very channel magnitudes
    the average pool passes on to the classifier.
    """

    def __init__(self, in_channels: int, head_channels: int, num_classes: int, dropout: float) -> None:
        super().__init__(
            nn.Conv2d(in_channels, head_channels, 3, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(head_channels, num_classes),
        )


class MultiExitNet(nn.Module):
    """What every elastic network shares: ``stem``, ``stages`` (per stage, branch name -> block) and
    ``exits`` (one head per stage), and running one variant's path through them.

    Subclasses build those three and list their ``variants()``.
    """

    stem: nn.Module
    stages: nn.ModuleList
    exits: nn.ModuleList

    @property
    def num_exits(self) -> int:
        return len(self.exits)

    @property
    def stage_operators(self) -> tuple[tuple[str, ...], ...]:
        """Per stage, the names of its branches."""
        return tuple(tuple(blocks) for blocks in self.stages)

    def variants(self) -> list[Variant]:
        raise NotImplementedError

    def check_variant(self, variant: Variant) -> None:
        if not 0 <= variant.exit_index < self.num_exits:
            raise ValueError(f"variant {variant}: no exit {variant.exit_index} (exits 0..{self.num_exits - 1})")
        unknown = [op for stage, op in enumerate(variant.operators) if op not in self.stages[stage]]
        if unknown:
            raise ValueError(f"variant {variant}: unknown operators {unknown}")
        resolutions = tuple(getattr(self.config, "resolutions", ())) or (None,)
        if variant.resolution not in resolutions:
            raise ValueError(f"variant {variant}: resolution {variant.resolution} not among {list(resolutions)}")

    def run_stage(self, x: torch.Tensor, stage: int, op: str) -> torch.Tensor:
        return self.stages[stage][op](x)

    def iter_exits(self, x: torch.Tensor, variant: Variant) -> Iterator[tuple[int, torch.Tensor]]:
        """Run the variant's path, yielding ``(exit_index, logits)`` at every exit on it.

        Stop consuming early and the later stages are never computed: this is
        what a confidence early exit uses.
        """
        self.check_variant(variant)
        x = self.stem(x)
        for stage, op in enumerate(variant.operators):
            x = self.run_stage(x, stage, op)
            yield stage, self.exits[stage](x)

    def forward(self, x: torch.Tensor, variant: Variant) -> torch.Tensor:
        """Logits of ``variant``; computes the stem, its blocks and its exit head only."""
        self.check_variant(variant)
        x = self.stem(x)
        for stage, op in enumerate(variant.operators):
            x = self.run_stage(x, stage, op)
        return self.exits[variant.exit_index](x)

    def modules_of(self, variant: Variant) -> list[nn.Module]:
        """The modules a variant runs, in order: stem, one block per stage, its exit head."""
        self.check_variant(variant)
        blocks = [self.stages[s][op] for s, op in enumerate(variant.operators)]
        return [self.stem, *blocks, self.exits[variant.exit_index]]


class ElasticNet(MultiExitNet):
    """Multi-exit network whose stages each hold one block per operator family."""

    def __init__(self, config: ElasticConfig = ElasticConfig()) -> None:
        super().__init__()
        self.config = config
        norm_layer = NORMS[config.norm]
        self.stem = conv_norm(config.in_channels, config.stem_channels, 3, config.stem_stride, norm_layer=norm_layer)
        self.stages = nn.ModuleList()
        self.exits = nn.ModuleList()
        in_channels = config.stem_channels
        for out_channels, stride in zip(config.stage_channels, config.stage_strides, strict=True):
            self.stages.append(
                nn.ModuleDict(
                    {op: build_operator(op, in_channels, out_channels, stride, norm_layer) for op in config.operators}
                )
            )
            self.exits.append(ExitHead(out_channels, config.head_channels, config.num_classes, config.dropout))
            in_channels = out_channels

    def variants(self) -> list[Variant]:
        """Every variant, ordered by exit then operators."""
        return [
            Variant(exit_index, ops)
            for exit_index in range(self.num_exits)
            for ops in itertools.product(self.config.operators, repeat=exit_index + 1)
        ]
