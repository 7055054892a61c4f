"""A pretrained backbone made elastic, AdaptiveNet's way: branches beside its stages, exits, resolutions.

EfficientNet-Lite's first stages (the *trunk*: its stem and stages 1-3 for
Lite0, at strides 2-8 where most of the pixels are) are kept as trained on
ImageNet and frozen; they are the elastic network's ``stem``. Every later
stage of the backbone becomes an elastic stage holding, beside the
pretrained blocks, branches generated from them (AdaptiveNet section 4.1)::

    pre     the pretrained blocks of the stage
    shrink  only the stage's first block (the one that changes stride and width)
            standing in for the whole stage: its residual blocks dropped
    merge   the first block and one block standing in for all the residual ones
    slim    for a one-block stage: the block with half its expansion channels,
            the ones with the largest weights kept (structured pruning)
    <op>    an operator of the compression pool (``operators.py``, e.g. dws)
            fitted to the stage's input and output shape

Every branch maps the stage's input to the pretrained stage's output shape;
new ones are first trained to reproduce that output (feature distillation,
AdaptiveNet eq. 1), then all are tuned on the task. An exit head follows
every elastic stage; the last one is the backbone's own head (1x1 conv to
1280 channels, pooling) with a classifier for the task's classes.

The input resolution is a further dimension: the network is fully
convolutional, so every variant runs at each of ``resolutions`` (variant id
``e2:pre-merge-dws@160``).
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from adascale_ros.model.efficientnet_lite import (
    HEAD_CHANNELS,
    INPUT_MULTIPLE,
    LITE_VARIANTS,
    ConvBNAct,
    EfficientNetLite,
    MBConv,
    pretrained_state_dict,
)
from adascale_ros.model.elastic import MultiExitNet
from adascale_ros.model.operators import OPERATORS, batch_norm, build_operator
from adascale_ros.model.variant import Variant

__all__ = ["BackboneConfig", "ElasticBackbone", "slim_block"]

# The branches generated from a stage's own blocks (pool operators come on top).
GENERATED_BRANCHES = ("pre", "shrink", "merge", "slim")
# Ordinary ImageNet inputs of EfficientNet-Lite: x / 255 then (x - 127/255) / (128/255), i.e. about [-1, 1].
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3


@dataclass(frozen=True)
class BackboneConfig:
    """Shape of the elastic backbone; stored in the model card (``network``)."""

    backbone: str = "lite0"
    num_classes: int = 10
    trunk_stages: int = 3  # backbone stages frozen in the stem
    resolutions: tuple[int, ...] = (128, 160, 224)
    pool_operators: tuple[str, ...] = ("dws",)
    exit_channels: int = 256  # width of the early exits' 3x3 conv
    dropout: float = 0.2
    slim_ratio: float = 0.5  # expansion channels a slim block keeps
    kind: str = "backbone"  # tells a model card's network apart from ElasticConfig's

    def __post_init__(self) -> None:
        if self.backbone not in LITE_VARIANTS:
            raise ValueError(f"backbone must be one of {sorted(LITE_VARIANTS)}, got {self.backbone!r}")
        if not self.resolutions or any(r < INPUT_MULTIPLE or r % INPUT_MULTIPLE for r in self.resolutions):
            raise ValueError(f"resolutions must be multiples of {INPUT_MULTIPLE}, got {list(self.resolutions)}")
        if len(set(self.resolutions)) != len(self.resolutions):
            raise ValueError(f"resolutions must be distinct, got {list(self.resolutions)}")
        unknown = [op for op in self.pool_operators if op not in OPERATORS]
        if unknown:
            raise ValueError(f"pool_operators must be names from {list(OPERATORS)}, got {unknown}")
        if not 1 <= self.trunk_stages <= 5:
            raise ValueError(
                f"trunk_stages must be in 1..5 (two stages at least stay elastic), got {self.trunk_stages}"
            )
        if min(self.num_classes, self.exit_channels) < 1 or not 0.0 < self.slim_ratio < 1.0:
            raise ValueError("num_classes and exit_channels must be >= 1 and slim_ratio in (0, 1)")

    @property
    def max_resolution(self) -> int:
        return max(self.resolutions)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BackboneConfig:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        for key in ("resolutions", "pool_operators"):
            if key in known:
                known[key] = tuple(known[key])
        return cls(**known)


def slim_block(block: MBConv, ratio: float) -> MBConv:
    """``block`` with ``ratio`` of its expansion channels: those whose expansion filters have the largest
    L1 norm, their weights copied (network slimming by structured pruning)."""
    if isinstance(block.expand, nn.Identity):
        raise ValueError("a block without an expansion has no channels to prune")
    hidden = block.hidden_channels
    keep_count = max(8, round(hidden * ratio / 8) * 8)
    keep = block.expand.conv.weight.detach().abs().sum(dim=(1, 2, 3)).argsort(descending=True)[:keep_count]
    keep = keep.sort().values
    slim = MBConv(block.in_channels, block.out_channels, block.kernel, block.stride, expand=1)
    slim.expand = ConvBNAct(block.in_channels, keep_count, 1)
    slim.depthwise = ConvBNAct(keep_count, keep_count, block.kernel, block.stride, groups=keep_count)
    slim.project = ConvBNAct(keep_count, block.out_channels, 1, activation=False)
    with torch.no_grad():
        slim.expand.conv.weight.copy_(block.expand.conv.weight[keep])
        slim.depthwise.conv.weight.copy_(block.depthwise.conv.weight[keep])
        slim.project.conv.weight.copy_(block.project.conv.weight[:, keep])
        for ours, theirs, index in (
            (slim.expand.bn, block.expand.bn, keep),
            (slim.depthwise.bn, block.depthwise.bn, keep),
            (slim.project.bn, block.project.bn, slice(None)),
        ):
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(ours, name).copy_(getattr(theirs, name)[index])
    return slim


class LiteExitHead(nn.Sequential):
    """An early exit: 3x3 conv with batch norm and ReLU6, global average pool, dropout, linear."""

    def __init__(self, in_channels: int, channels: int, num_classes: int, dropout: float) -> None:
        super().__init__(
            ConvBNAct(in_channels, channels, 3),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(channels, num_classes),
        )


class BackboneHead(nn.Sequential):
    """The last exit: the backbone's own head (pretrained 1x1 conv to 1280, pool) and a new classifier."""

    def __init__(self, head: ConvBNAct, num_classes: int, dropout: float) -> None:
        super().__init__(
            head,
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(HEAD_CHANNELS, num_classes),
        )


def _stage_branches(blocks: list[MBConv], config: BackboneConfig) -> dict[str, nn.Module]:
    first = blocks[0]
    branches: dict[str, nn.Module] = {"pre": nn.Sequential(*blocks)}
    if len(blocks) > 1:
        branches["shrink"] = nn.Sequential(copy.deepcopy(first))
    if len(blocks) > 2:
        branches["merge"] = nn.Sequential(copy.deepcopy(first), copy.deepcopy(blocks[1]))
    if len(blocks) == 1:
        branches["slim"] = nn.Sequential(slim_block(first, config.slim_ratio))
    for op in config.pool_operators:
        branches[op] = build_operator(op, first.in_channels, blocks[-1].out_channels, first.stride, batch_norm)
    return branches


class ElasticBackbone(MultiExitNet):
    """EfficientNet-Lite made elastic: frozen trunk (``stem``), elastic stages with generated branches,
    an exit after each, every variant at every resolution of the config.

    ``pretrained`` loads the ImageNet weights before the branches are generated from them; a model
    loaded from disk skips that (its own weights follow).
    """

    def __init__(self, config: BackboneConfig = BackboneConfig(), pretrained: bool = True) -> None:
        super().__init__()
        self.config = config
        base = EfficientNetLite(config.backbone)
        if pretrained:
            base.load_state_dict(pretrained_state_dict(config.backbone))
        num_stages = len(base.stage_specs)
        trunk = [base.blocks[i] for i in range(len(base.blocks)) if base.stage_of_block[i] < config.trunk_stages]
        self.stem = nn.Sequential(base.stem, *trunk)
        self.stages = nn.ModuleList()
        self.exits = nn.ModuleList()
        for stage in range(config.trunk_stages, num_stages):
            blocks = [base.blocks[i] for i in base.stage_blocks(stage)]
            self.stages.append(nn.ModuleDict(_stage_branches(blocks, config)))
            if stage < num_stages - 1:
                exit_head = LiteExitHead(
                    blocks[-1].out_channels, config.exit_channels, config.num_classes, config.dropout
                )
            else:
                exit_head = BackboneHead(base.head, config.num_classes, config.dropout)
            self.exits.append(exit_head)
        self.stem.requires_grad_(False)

    def variants(self) -> list[Variant]:
        """Every variant: by resolution (smallest first), then exit, then branches in stage order."""
        return [
            Variant(exit_index, ops, resolution)
            for resolution in sorted(self.config.resolutions)
            for exit_index in range(self.num_exits)
            for ops in itertools.product(*self.stage_operators[: exit_index + 1])
        ]

    def new_branches(self) -> dict[tuple[int, str], nn.Module]:
        """(stage, branch) -> module, for every branch not taken from the backbone as it was: the ones
        feature distillation trains."""
        return {(s, op): block for s, blocks in enumerate(self.stages) for op, block in blocks.items() if op != "pre"}

    def train(self, mode: bool = True) -> ElasticBackbone:
        """The trunk stays in eval mode: frozen, with its ImageNet batch-norm statistics."""
        super().train(mode)
        self.stem.eval()
        return self
