"""The studies' own non-standard networks, reproduced layer for layer (module names included)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .registry import register_model
from .resnet import BasicBlock, _inner_widths


class SimpleConvPack(nn.Module):
    """Study 002's ConvBlock: conv (with PyTorch's default bias) -> BN -> ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, padding: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, kernel, stride, padding)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn1(self.conv1(x)))


def _down_sample(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 1, 2, 0), nn.BatchNorm2d(cout))


class Seed002Net(nn.Module):
    """Study 002's ``myResnetStyleModel`` (code listing 1): a strided stem, three residual pairs of
    ConvBlocks with 1x1 stride-2 projections, average pool, dropout, linear; Kaiming fan_out init."""

    def __init__(self, num_classes: int = 10, dropout: float = 0.0, block_dropout: float = 0.0):
        super().__init__()
        self.relu = nn.ReLU()
        self.input_block_1 = SimpleConvPack(3, 64, 3, 2, 2)
        self.input_block_2 = SimpleConvPack(64, 64, 3, 1, 1)
        self.res_block_1_1 = SimpleConvPack(64, 128, 3, 1, 1)
        self.res_block_1_2 = SimpleConvPack(128, 128, 3, 2, 1)
        self.down_sample_1 = _down_sample(64, 128)
        self.res_block_2_1 = SimpleConvPack(128, 256, 3, 1, 1)
        self.res_block_2_2 = SimpleConvPack(256, 256, 3, 2, 1)
        self.down_sample_2 = _down_sample(128, 256)
        self.res_block_3_1 = SimpleConvPack(256, 512, 3, 1, 1)
        self.res_block_3_2 = SimpleConvPack(512, 512, 3, 2, 1)
        self.down_sample_3 = _down_sample(256, 512)
        self.block_dropout = nn.Dropout2d(block_dropout) if block_dropout else nn.Identity()
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(512, num_classes)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.input_block_2(self.input_block_1(x))
        for i in (1, 2, 3):
            identity = getattr(self, f"down_sample_{i}")(out)
            out = getattr(self, f"res_block_{i}_2")(getattr(self, f"res_block_{i}_1")(out))
            out = self.block_dropout(self.relu(out + identity))
        out = torch.flatten(self.avgpool(out), 1)
        return self.fc(self.dropout(out))


class Seed004ResNet(nn.Module):
    """Study 004's CIFAR-100 ResNet (course specification): conv3x3 32 -> BN -> ReLU -> Dropout ->
    BasicBlock stages of 2, 4, 4, 2 blocks at 32/64/128/256 channels with 3x3 projection shortcuts ->
    max-pool over the 4x4 map -> linear."""

    def __init__(self, num_classes: int = 100, dropout: float = 0.0, block_dropout: float = 0.0,
                 stem_dropout: float = 0.0, inner_widths: list[int] | None = None):
        super().__init__()
        inner = iter(_inner_widths(inner_widths, 12))
        self.conv1 = nn.Conv2d(3, 32, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        self.stem_dropout = nn.Dropout(stem_dropout)
        in_planes = 32
        for i, (width, n) in enumerate(zip((32, 64, 128, 256), (2, 4, 4, 2), strict=True)):
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(BasicBlock(in_planes, width, stride, block_dropout, shortcut_kernel=3, inner=next(inner)))
                in_planes = width
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.fc = nn.Linear(256, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.stem_dropout(F.relu(self.bn1(self.conv1(x))))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = torch.flatten(F.adaptive_max_pool2d(out, 1), 1)
        return self.fc(self.dropout(out))


@register_model
def seed002_net(num_classes: int = 10, dropout: float = 0.0, block_dropout: float = 0.0) -> Seed002Net:
    """Study 002's residual net, 4,869,066 parameters; `dropout` sits before the classifier."""
    return Seed002Net(num_classes, dropout, block_dropout)


@register_model
def seed004_resnet(num_classes: int = 100, dropout: float = 0.0, block_dropout: float = 0.0,
                   stem_dropout: float = 0.0, inner_widths: list[int] | None = None) -> Seed004ResNet:
    """Study 004's CIFAR-100 ResNet, 3,903,620 parameters at 100 classes."""
    return Seed004ResNet(num_classes, dropout, block_dropout, stem_dropout, inner_widths)
