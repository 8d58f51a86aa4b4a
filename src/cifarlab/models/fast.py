"""The `fast` family: small-FLOP CIFAR nets built for time-to-accuracy (the airbench class of designs).

- a 2x2 patch-whitening stem whose filters are set from training-data statistics and then frozen
  (the eigenvectors of the patch covariance, scaled by 1/sqrt(eigenvalue), plus their negatives);
- three conv groups (conv -> max-pool -> BN -> GELU -> conv -> BN -> GELU), optionally with a residual
  connection around the second conv for the wider variants;
- BatchNorm with its scale frozen at 1 and a fast-moving running average;
- partial identity (dirac) initialization of every group conv, so the net starts close to a shallow one;
- a global max-pool and a bias-free linear head whose output is scaled down (a cooler softmax at init).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CifarlabError
from .registry import register_model


def _widths(widths) -> tuple[int, int, int]:
    if (not isinstance(widths, (list, tuple)) or len(widths) != 3
            or any(not isinstance(w, int) or isinstance(w, bool) or w < 1 for w in widths)):
        raise CifarlabError(f"fast models: 'widths' takes three positive integers, not {widths!r}")
    return tuple(widths)


def _convs(convs) -> int:
    if not isinstance(convs, int) or isinstance(convs, bool) or convs < 1:
        raise CifarlabError(f"fast models: 'convs' (convolutions per group) must be a positive integer, "
                            f"not {convs!r}")
    return convs


class FrozenScaleBN(nn.BatchNorm2d):
    """BatchNorm whose affine scale stays 1: only the shift learns (fewer, better-conditioned parameters)."""

    def __init__(self, channels: int, momentum: float = 0.4, eps: float = 1e-12):
        super().__init__(channels, eps=eps, momentum=momentum)
        self.weight.requires_grad_(False)


class ConvGroup(nn.Module):
    """conv -> max-pool -> BN -> GELU, then ``convs - 1`` more conv -> BN -> GELU at the pooled size. With
    ``residual`` the pooled activation is added back at the end: after the last GELU in two-conv groups, before it
    in deeper ones (airbench96's later form, which trains faster)."""

    def __init__(self, cin: int, cout: int, residual: bool, bn_momentum: float, block_dropout: float,
                 convs: int = 2):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn1 = FrozenScaleBN(cout, bn_momentum)
        for i in range(2, convs + 1):
            self.add_module(f"conv{i}", nn.Conv2d(cout, cout, 3, padding=1, bias=False))
            self.add_module(f"bn{i}", FrozenScaleBN(cout, bn_momentum))
        self.convs = convs
        self.residual = residual
        self.dropout = nn.Dropout2d(block_dropout) if block_dropout else nn.Identity()
        for i in range(1, convs + 1):
            w = getattr(self, f"conv{i}").weight.data
            # identity on the first min(cin, cout) channels; the rest keep PyTorch's default init
            torch.nn.init.dirac_(w[: w.size(1)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.bn1(F.max_pool2d(self.conv1(x), 2)))
        if self.convs == 1:
            return self.dropout(x)
        y = x
        for i in range(2, self.convs):
            y = F.gelu(getattr(self, f"bn{i}")(getattr(self, f"conv{i}")(y)))
        y = getattr(self, f"bn{self.convs}")(getattr(self, f"conv{self.convs}")(y))
        if not self.residual:
            return self.dropout(F.gelu(y))
        if self.convs == 2:
            return self.dropout(x + F.gelu(y))
        return self.dropout(F.gelu(x + y))


class FastNet(nn.Module):
    def __init__(self, widths: tuple[int, int, int] = (64, 256, 256), num_classes: int = 10, residual: bool = False,
                 bn_momentum: float = 0.4, head_scale: float = 1 / 9, dropout: float = 0.0,
                 block_dropout: float = 0.0, convs: int = 2):
        super().__init__()
        widths, convs = _widths(widths), _convs(convs)
        self.whiten = nn.Conv2d(3, 24, 2, bias=True)  # 2x2x3 = 12 patch directions, each with its negative
        self.whiten.weight.requires_grad_(False)
        cin = 24
        groups = []
        for w in widths:
            groups.append(ConvGroup(cin, w, residual, bn_momentum, block_dropout, convs))
            cin = w
        self.groups = nn.Sequential(*groups)
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.head = nn.Linear(cin, num_classes, bias=False)
        self.head_scale = head_scale

    @torch.no_grad()
    def init_from_data(self, images: torch.Tensor, eps: float = 5e-4) -> None:
        """Set the whitening filters from (normalized, float) training images: ZCA-like patch whitening."""
        x = images.float()
        patches = x.unfold(2, 2, 1).unfold(3, 2, 1)  # N, C, H-1, W-1, 2, 2
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, 12).double()
        patches = patches - patches.mean(0)
        cov = patches.T @ patches / len(patches)
        eigval, eigvec = torch.linalg.eigh(cov)
        filters = (eigvec.T / torch.sqrt(eigval + eps)[:, None]).reshape(12, 3, 2, 2).float()
        self.whiten.weight.copy_(torch.cat([filters, -filters]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.whiten(x))
        x = self.groups(x)
        x = torch.amax(x, dim=(2, 3))  # global max-pool over the 3x3 map
        return self.head(self.dropout(x)) * self.head_scale


@register_model
def fast94(num_classes: int = 10, dropout: float = 0.0, block_dropout: float = 0.0,
           widths: tuple[int, int, int] = (64, 256, 256), convs: int = 2) -> FastNet:
    """The 94%-class net: widths 64/256/256, about 2M parameters."""
    return FastNet(widths, num_classes, dropout=dropout, block_dropout=block_dropout, convs=convs)


@register_model
def fast95(num_classes: int = 10, dropout: float = 0.0, block_dropout: float = 0.0,
           widths: tuple[int, int, int] = (128, 384, 384), convs: int = 2) -> FastNet:
    """The 95%-class net under the 5M budget: residual groups at 128/384/384."""
    return FastNet(widths, num_classes, residual=True, dropout=dropout, block_dropout=block_dropout, convs=convs)


@register_model
def fast96(num_classes: int = 10, dropout: float = 0.0, block_dropout: float = 0.0,
           widths: tuple[int, int, int] = (128, 512, 512), convs: int = 2) -> FastNet:
    """The 96%-class net: residual groups at 128/512/512; over the 5M budget."""
    return FastNet(widths, num_classes, residual=True, dropout=dropout, block_dropout=block_dropout, convs=convs)
