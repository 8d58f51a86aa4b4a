"""ImageNet-layout networks whose state-dict keys and shapes are those of torchvision's published weights.

``resnet18_imagenet`` (7x7 stride-2 stem, max-pool, four stages, ``downsample`` projections, ``fc``) and
``densenet121_imagenet`` (``features.denseblockN.denselayerM.norm1/conv1/norm2/conv2``, transitions,
``features.norm5``, ``classifier``). They expect large inputs (224 px: set ``resize: 224``) and are built to
be fine-tuned from those weights (``pretrained:``); a new head replaces the 1,000-class one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .registry import register_model


class ImageNetBasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class ImageNetResNet(nn.Module):
    def __init__(self, blocks: list[int], num_classes: int = 1000, dropout: float = 0.0):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = 64
        for i, (width, n) in enumerate(zip((64, 128, 256, 512), blocks, strict=True)):
            stride = 1 if i == 0 else 2
            layers = [ImageNetBasicBlock(cin, width, stride)] + [ImageNetBasicBlock(width, width) for _ in range(n - 1)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*layers))
            cin = width
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.fc = nn.Linear(512, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))


class DenseLayer(nn.Module):
    """BN-ReLU-1x1 conv to `bottleneck` channels, BN-ReLU-3x3 conv to `growth` new channels."""

    def __init__(self, cin: int, growth: int, bottleneck: int):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(cin)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(cin, bottleneck, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bottleneck)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(bottleneck, growth, 3, 1, 1, bias=False)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = self.conv1(self.relu1(self.norm1(torch.cat(features, 1))))
        return self.conv2(self.relu2(self.norm2(x)))


class DenseBlock(nn.ModuleDict):
    def __init__(self, n: int, cin: int, growth: int, bottleneck: int):
        super().__init__()
        for i in range(n):
            self.add_module(f"denselayer{i + 1}", DenseLayer(cin + i * growth, growth, bottleneck))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.values():
            features.append(layer(features))  # every layer sees all earlier feature maps
        return torch.cat(features, 1)


class Transition(nn.Sequential):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.add_module("norm", nn.BatchNorm2d(cin))
        self.add_module("relu", nn.ReLU(inplace=True))
        self.add_module("conv", nn.Conv2d(cin, cout, 1, bias=False))
        self.add_module("pool", nn.AvgPool2d(2, 2))


class DenseNet(nn.Module):
    def __init__(self, blocks: tuple[int, ...] = (6, 12, 24, 16), growth: int = 32, stem: int = 64,
                 bn_size: int = 4, num_classes: int = 1000, dropout: float = 0.0):
        super().__init__()
        self.features = nn.Sequential()
        self.features.add_module("conv0", nn.Conv2d(3, stem, 7, 2, 3, bias=False))
        self.features.add_module("norm0", nn.BatchNorm2d(stem))
        self.features.add_module("relu0", nn.ReLU(inplace=True))
        self.features.add_module("pool0", nn.MaxPool2d(3, 2, 1))
        c = stem
        for i, n in enumerate(blocks):
            self.features.add_module(f"denseblock{i + 1}", DenseBlock(n, c, growth, bn_size * growth))
            c += n * growth
            if i < len(blocks) - 1:  # transitions halve channels and resolution
                self.features.add_module(f"transition{i + 1}", Transition(c, c // 2))
                c //= 2
        self.features.add_module("norm5", nn.BatchNorm2d(c))
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.classifier = nn.Linear(c, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.features(x))
        return self.classifier(self.dropout(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)))


@register_model
def resnet18_imagenet(num_classes: int = 10, dropout: float = 0.0) -> ImageNetResNet:
    """torchvision's ResNet-18 layout (11,689,512 parameters at 1,000 classes); for 224-px fine-tuning."""
    return ImageNetResNet([2, 2, 2, 2], num_classes, dropout)


@register_model
def densenet121_imagenet(num_classes: int = 10, dropout: float = 0.0) -> DenseNet:
    """torchvision's DenseNet-121 layout (7,978,856 parameters at 1,000 classes); for 224-px fine-tuning."""
    return DenseNet((6, 12, 24, 16), 32, 64, 4, num_classes, dropout)
