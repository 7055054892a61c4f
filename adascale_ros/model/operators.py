"""The compression-operator pool: interchangeable blocks with one interface.

Every operator is an ``nn.Module`` built as ``Operator(in_channels,
out_channels, stride, norm_layer)`` that maps ``(N, in, H, W)`` to
``(N, out, ceil(H / stride), ceil(W / stride))``, so any of them can fill any
stage of the elastic network (``norm_layer``, default GroupNorm, builds every
normalisation in it). They cover AdaScale's categories:

========  ===================================  ==============================
name      block                                category
========  ===================================  ==============================
``res``   basic residual block (ResNet)        reference
``dws``   depthwise-separable conv (MobileNet) structural optimisation
``mbc``   inverted residual / MBConv           structural optimisation
``dense`` dense-connection block (DenseNet)    advanced connectivity
``fac``   factorised low-rank conv (3x1, 1x3)  mathematical decomposition
========  ===================================  ==============================
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

NormLayer = Callable[[int], nn.Module]


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 8 groups of at least 4 channels.

    It normalises each sample by itself, so a block shared by many variants
    needs no statistics that fit all of them. Groups keep >= 4 channels so
    relative channel magnitudes survive (one channel per group would be
    instance norm, which erases them).
    """
    groups = next(g for g in (8, 4, 2, 1) if (channels % g == 0 and channels // g >= 4) or g == 1)
    return nn.GroupNorm(groups, channels)


def batch_norm(channels: int) -> nn.BatchNorm2d:
    """BatchNorm. With weight sharing its running statistics average the
    features of every path through a block; the variant table measures what
    that costs each variant. In eval mode it is an affine map that onnxruntime
    can fuse into the conv before it."""
    return nn.BatchNorm2d(channels)


# The ``norm`` of an ElasticConfig -> the layer every operator normalises with.
NORMS: dict[str, NormLayer] = {"group": group_norm, "batch": batch_norm}


def conv_norm(
    in_channels: int,
    out_channels: int,
    kernel_size: int | tuple[int, int] = 3,
    stride: int | tuple[int, int] = 1,
    groups: int = 1,
    activation: type[nn.Module] | None = nn.ReLU,
    norm_layer: NormLayer = group_norm,
) -> nn.Sequential:
    """Conv (no bias) -> normalisation -> optional activation, with 'same' padding."""
    k = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
    layers: list[nn.Module] = [
        nn.Conv2d(
            in_channels,
            out_channels,
            k,
            stride=stride,
            padding=(k[0] // 2, k[1] // 2),
            groups=groups,
            bias=False,
        ),
        norm_layer(out_channels),
    ]
    if activation is not None:
        layers.append(activation(inplace=True))
    return nn.Sequential(*layers)


def shortcut(in_channels: int, out_channels: int, stride: int, norm_layer: NormLayer = group_norm) -> nn.Module:
    """Identity when shapes match, else a strided 1x1 projection."""
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    return conv_norm(in_channels, out_channels, 1, stride, activation=None, norm_layer=norm_layer)


class ResidualBlock(nn.Module):
    """ResNet basic block: two 3x3 convs and a shortcut. The reference operator."""

    def __init__(
        self, in_channels: int, out_channels: int, stride: int = 1, norm_layer: NormLayer = group_norm
    ) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv_norm(in_channels, out_channels, 3, stride, norm_layer=norm_layer),
            conv_norm(out_channels, out_channels, 3, 1, activation=None, norm_layer=norm_layer),
        )
        self.shortcut = shortcut(in_channels, out_channels, stride, norm_layer)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class DepthwiseSeparableBlock(nn.Module):
    """MobileNetV1 unit: a 3x3 depthwise conv, then a 1x1 pointwise conv."""

    def __init__(
        self, in_channels: int, out_channels: int, stride: int = 1, norm_layer: NormLayer = group_norm
    ) -> None:
        super().__init__()
        self.depthwise = conv_norm(in_channels, in_channels, 3, stride, groups=in_channels, norm_layer=norm_layer)
        self.pointwise = conv_norm(in_channels, out_channels, 1, norm_layer=norm_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class InvertedResidualBlock(nn.Module):
    """MobileNetV2 / MBConv: 1x1 expand, 3x3 depthwise, linear 1x1 project, skip when shapes match."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        norm_layer: NormLayer = group_norm,
        expansion: int = 3,
    ) -> None:
        super().__init__()
        hidden = in_channels * expansion
        self.body = nn.Sequential(
            conv_norm(in_channels, hidden, 1, activation=nn.ReLU6, norm_layer=norm_layer),
            conv_norm(hidden, hidden, 3, stride, groups=hidden, activation=nn.ReLU6, norm_layer=norm_layer),
            conv_norm(hidden, out_channels, 1, activation=None, norm_layer=norm_layer),
        )
        self.use_skip = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return out + x if self.use_skip else out


class DenseBlock(nn.Module):
    """DenseNet block: each layer sees the concatenation of all earlier outputs.

    ``layers`` norm-ReLU-conv3x3 layers each add ``growth`` channels; a 1x1
    transition (strided when downsampling) maps the concatenation to
    ``out_channels``.
    """

    def __init__(
        self, in_channels: int, out_channels: int, stride: int = 1, norm_layer: NormLayer = group_norm, layers: int = 2
    ) -> None:
        super().__init__()
        growth = max(8, out_channels // 4)
        self.layers = nn.ModuleList(
            nn.Sequential(
                norm_layer(in_channels + i * growth),
                nn.ReLU(inplace=False),  # the input is also concatenated: no in-place
                nn.Conv2d(in_channels + i * growth, growth, 3, padding=1, bias=False),
            )
            for i in range(layers)
        )
        self.transition = conv_norm(in_channels + layers * growth, out_channels, 1, stride, norm_layer=norm_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.layers:
            features.append(layer(torch.cat(features, dim=1)))
        return self.transition(torch.cat(features, dim=1))


class FactorizedBlock(nn.Module):
    """Low-rank factorised conv: a 3x3 conv decomposed into 3x1 then 1x3 through a rank bottleneck.

    Two such factorised convs with a residual shortcut; ``rank`` (default half
    the output channels) is the width of the bottleneck between 3x1 and 1x3.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        norm_layer: NormLayer = group_norm,
        rank: int | None = None,
    ) -> None:
        super().__init__()
        rank = rank or max(8, out_channels // 2)
        self.body = nn.Sequential(
            conv_norm(in_channels, rank, (3, 1), (stride, 1), activation=None, norm_layer=norm_layer),
            conv_norm(rank, out_channels, (1, 3), (1, stride), norm_layer=norm_layer),
            conv_norm(out_channels, rank, (3, 1), 1, activation=None, norm_layer=norm_layer),
            conv_norm(rank, out_channels, (1, 3), 1, activation=None, norm_layer=norm_layer),
        )
        self.shortcut = shortcut(in_channels, out_channels, stride, norm_layer)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


# name -> (class, category). Order is the order of candidates in each stage.
OPERATORS: dict[str, tuple[type[nn.Module], str]] = {
    "res": (ResidualBlock, "reference"),
    "dws": (DepthwiseSeparableBlock, "structural"),
    "mbc": (InvertedResidualBlock, "structural"),
    "dense": (DenseBlock, "connectivity"),
    "fac": (FactorizedBlock, "decomposition"),
}


def build_operator(
    name: str, in_channels: int, out_channels: int, stride: int, norm_layer: NormLayer = group_norm
) -> nn.Module:
    try:
        cls, _ = OPERATORS[name]
    except KeyError:
        raise ValueError(f"unknown operator {name!r}; known: {', '.join(OPERATORS)}") from None
    return cls(in_channels, out_channels, stride, norm_layer)
