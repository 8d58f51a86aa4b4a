"""Dataset statistics computed the careful way.

Mean and std are accumulated in float64 per chunk: float32 sums over 51M values lose digits, and study 002's
table I (0.0100 / 0.0773) shows what a scale slip does. Values are reported in [0, 1] units.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .resize import resize as resize_images


@dataclass
class Stats:
    mean: list[float]
    std: list[float]
    class_counts: dict[str, int]
    grayscale: int
    count: int


def channel_mean_std(images: torch.Tensor, chunk: int = 4096, resize: int = 0,
                     interpolation: str = "bilinear") -> tuple[list[float], list[float]]:
    """Per-channel mean and population std of uint8 (N,C,H,W) images, in [0,1] units, in float64.
    With `resize`, of the images resized to that size and rounded back to 8 bits, as a resized image file
    holds them (study 002's table II)."""
    c = images.shape[1]
    s = torch.zeros(c, dtype=torch.float64)
    s2 = torch.zeros(c, dtype=torch.float64)
    n = 0
    if resize:  # at most ~150 MB of float64 a chunk: 128 images at 224 px, 5 at 1,024 px
        chunk = max(1, min(chunk, (150 << 20) // (c * resize * resize * 8)))
    for i in range(0, len(images), chunk):
        x = images[i:i + chunk].to(torch.float64) / 255.0
        if resize:
            x = (resize_images(x, resize, interpolation) * 255).round_() / 255
        s += x.sum(dim=(0, 2, 3))
        s2 += (x * x).sum(dim=(0, 2, 3))
        n += x.numel() // c
    mean = s / n
    var = (s2 / n - mean * mean).clamp_min(0)
    return mean.tolist(), var.sqrt().tolist()


def grayscale_count(images: torch.Tensor, chunk: int = 4096) -> int:
    """Images whose three channels are identical everywhere."""
    total = 0
    for i in range(0, len(images), chunk):
        x = images[i:i + chunk]
        same = (x[:, 0] == x[:, 1]) & (x[:, 1] == x[:, 2])
        total += int(same.flatten(1).all(dim=1).sum())
    return total


def dataset_stats(images: torch.Tensor, labels: torch.Tensor, classes: list[str], resize: int = 0,
                  interpolation: str = "bilinear") -> Stats:
    mean, std = channel_mean_std(images, resize=resize, interpolation=interpolation)
    counts = torch.bincount(labels[labels >= 0], minlength=len(classes)).tolist()
    names = classes or [str(i) for i in range(len(counts))]
    return Stats(mean, std, dict(zip(names, counts, strict=False)), grayscale_count(images), len(images))
