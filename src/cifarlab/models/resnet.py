"""ResNets for 32x32 inputs in the kuangliu/pytorch-cifar layout (3x3 stem, no max-pool, four stages).

Module names follow that layout (``conv1, bn1, layer1.0.conv1, ..., linear``), which is also what the
studies' notebooks used, so their state dicts map onto these models directly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CifarlabError
from .registry import register_model


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, block_dropout: float = 0.0,
                 shortcut_kernel: int = 1, inner: int | None = None):
        super().__init__()
        inner = inner or planes  # channels between the two convs: fewer once filters are pruned (models/prune.py)
        self.conv1 = nn.Conv2d(in_planes, inner, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(inner)
        self.conv2 = nn.Conv2d(inner, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        # Study 000 put Dropout2d after each conv-BN; 0 makes it an identity.
        self.dropout = nn.Dropout2d(block_dropout) if block_dropout else nn.Identity()
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            # 1x1 projection (He et al. option B); study 004's course used a 3x3 conv instead.
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, shortcut_kernel, stride, shortcut_kernel // 2, bias=False),
                nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.dropout(F.relu(self.bn1(self.conv1(x))))
        out = self.dropout(self.bn2(self.conv2(out)))
        return F.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1, block_dropout: float = 0.0):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.dropout = nn.Dropout2d(block_dropout) if block_dropout else nn.Identity()
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes * 4:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes * 4, 1, stride, bias=False),
                                          nn.BatchNorm2d(planes * 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.dropout(F.relu(self.bn2(self.conv2(out))))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """Stem conv3x3 -> stages (stride 1, then 2) -> global average pool -> [dropout] -> linear."""

    def __init__(self, block: type[nn.Module], num_blocks: list[int], widths: tuple[int, ...] = (64, 128, 256, 512),
                 num_classes: int = 10, dropout: float = 0.0, block_dropout: float = 0.0,
                 inner_widths: list[int] | None = None):
        super().__init__()
        self.in_planes = widths[0]
        inner = _inner_widths(inner_widths, sum(num_blocks))
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        for i, (w, n) in enumerate(zip(widths, num_blocks, strict=True)):
            first = sum(num_blocks[:i])
            self.add_module(f"layer{i + 1}", self._make_layer(block, w, n, 1 if i == 0 else 2, block_dropout,
                                                              inner[first:first + n]))
        self.num_stages = len(widths)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.linear = nn.Linear(widths[-1] * block.expansion, num_classes)

    def _make_layer(self, block, planes: int, n: int, stride: int, block_dropout: float,
                    inners: list[int | None]) -> nn.Sequential:
        layers = []
        for s, inner in zip([stride] + [1] * (n - 1), inners, strict=True):
            layers.append(block(self.in_planes, planes, s, block_dropout, **({"inner": inner} if inner else {})))
            self.in_planes = planes * block.expansion
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        for i in range(self.num_stages):
            out = getattr(self, f"layer{i + 1}")(out)
        out = torch.flatten(self.avgpool(out), 1)
        return self.linear(self.dropout(out))


@register_model
def resnet9(num_classes: int = 10, dropout: float = 0.0, block_dropout: float = 0.0,
            widths: tuple[int, ...] = (64, 128, 256, 512),
            inner_widths: list[int] | None = None) -> ResNet:
    """Study 000: ResNet(BasicBlock, [1,1,1,1]), 64-512 channels, 4,903,242 parameters."""
    return ResNet(BasicBlock, [1, 1, 1, 1], _widths(widths, 4), num_classes, dropout, block_dropout,
                  inner_widths)


@register_model
def resnet18(num_classes: int = 10, dropout: float = 0.0, block_dropout: float = 0.0,
             widths: tuple[int, ...] = (64, 128, 256, 512),
             inner_widths: list[int] | None = None) -> ResNet:
    return ResNet(BasicBlock, [2, 2, 2, 2], _widths(widths, 4), num_classes, dropout, block_dropout,
                  inner_widths)


@register_model
def resnet34(num_classes: int = 10, dropout: float = 0.0, block_dropout: float = 0.0,
             widths: tuple[int, ...] = (64, 128, 256, 512),
             inner_widths: list[int] | None = None) -> ResNet:
    return ResNet(BasicBlock, [3, 4, 6, 3], _widths(widths, 4), num_classes, dropout, block_dropout,
                  inner_widths)


@register_model
def resnet50(num_classes: int = 10, dropout: float = 0.0, block_dropout: float = 0.0,
             widths: tuple[int, ...] = (64, 128, 256, 512)) -> ResNet:
    return ResNet(Bottleneck, [3, 4, 6, 3], _widths(widths, 4), num_classes, dropout, block_dropout)


@register_model
def resnet_small(num_classes: int = 10, dropout: float = 0.0, block_dropout: float = 0.0,
                 widths: tuple[int, ...] = (16, 32, 64),
                 inner_widths: list[int] | None = None) -> ResNet:
    """Study 001's ResNetSmall: three one-block stages at 16/32/64 channels, 78,042 parameters."""
    return ResNet(BasicBlock, [1, 1, 1], _widths(widths, 3), num_classes, dropout, block_dropout,
                  inner_widths)


@register_model
def resnet_medium(num_classes: int = 10, dropout: float = 0.0, block_dropout: float = 0.0,
                  widths: tuple[int, ...] = (32, 64, 128, 256),
                  inner_widths: list[int] | None = None) -> ResNet:
    """Study 001's ResNetMedium: four one-block stages at 32-256 channels, 1,228,970 parameters."""
    return ResNet(BasicBlock, [1, 1, 1, 1], _widths(widths, 4), num_classes, dropout, block_dropout,
                  inner_widths)


@register_model
def resnet_large(num_classes: int = 10, dropout: float = 0.0, block_dropout: float = 0.0,
                 widths: tuple[int, ...] = (64, 128, 256, 512),
                 inner_widths: list[int] | None = None) -> ResNet:
    """Study 001's ResNetLarge: four one-block stages at 64-512 channels, 4,903,242 parameters."""
    return ResNet(BasicBlock, [1, 1, 1, 1], _widths(widths, 4), num_classes, dropout, block_dropout,
                  inner_widths)


def _widths(widths, stages: int) -> tuple[int, ...]:
    """A stage's channel counts from model_args, checked: `stages` positive whole numbers."""
    if (not isinstance(widths, (list, tuple)) or len(widths) != stages
            or any(not isinstance(w, int) or isinstance(w, bool) or w < 1 for w in widths)):
        raise CifarlabError(f"ResNet models: 'widths' takes {stages} positive integers (one a stage), not {widths!r}")
    return tuple(widths)


def _inner_widths(inner_widths, blocks: int) -> list[int | None]:
    """The channels inside each block, in block order (a pruned net's; None: each block's own width)."""
    if inner_widths is None:
        return [None] * blocks
    if (not isinstance(inner_widths, (list, tuple)) or len(inner_widths) != blocks
            or any(not isinstance(w, int) or isinstance(w, bool) or w < 1 for w in inner_widths)):
        raise CifarlabError(f"'inner_widths' takes {blocks} positive integers (one a residual block), "
                            f"not {inner_widths!r}")
    return list(inner_widths)
