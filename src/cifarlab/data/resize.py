"""Resizing whole batches with the six interpolation filters people know from PIL and torchvision.

Each output pixel is a weighted sum of input pixels; the weights come from a filter kernel centred on the
output pixel's position in input coordinates, widened by the scale factor when shrinking (so shrinking
averages instead of aliasing), cut off at the image border and renormalized to sum to one. That is the
resampling PIL does for ``Image.resize``, so a batch resized here matches PIL image by image within a
rounding step, without leaving the tensor world. The two 1-D passes are two small matrix products.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

from ..config import INTERPOLATIONS


def _box(x: torch.Tensor) -> torch.Tensor:
    return ((x > -0.5) & (x <= 0.5)).double()


def _triangle(x: torch.Tensor) -> torch.Tensor:
    return (1 - x.abs()).clamp(min=0)


def _cubic(x: torch.Tensor, a: float = -0.5) -> torch.Tensor:
    # Keys' cubic convolution kernel with a = -0.5 (PIL's and OpenCV's bicubic)
    x = x.abs()
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return torch.where(x < 1, near, torch.where(x < 2, far, torch.zeros_like(x)))


def _sinc(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x == 0, torch.ones_like(x), torch.sin(math.pi * x) / (math.pi * x))


def _hamming(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x.abs() < 1, _sinc(x) * (0.54 + 0.46 * torch.cos(math.pi * x)), torch.zeros_like(x))


def _lanczos(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x.abs() < 3, _sinc(x) * _sinc(x / 3), torch.zeros_like(x))


# name -> (kernel, support radius in input pixels at scale 1)
_FILTERS = {"box": (_box, 0.5), "bilinear": (_triangle, 1.0), "hamming": (_hamming, 1.0),
            "bicubic": (_cubic, 2.0), "lanczos": (_lanczos, 3.0)}


@lru_cache(maxsize=64)
def resize_matrix(n_in: int, n_out: int, mode: str) -> torch.Tensor:
    """(n_out, n_in) float64 weights: row i holds the input weights of output pixel i along one axis."""
    if mode not in INTERPOLATIONS:
        raise ValueError(f"unknown interpolation '{mode}'; use one of {', '.join(INTERPOLATIONS)}")
    scale = n_in / n_out
    centers = (torch.arange(n_out, dtype=torch.float64) + 0.5) * scale  # output pixel centres, input coordinates
    if mode == "nearest":  # the input pixel under each output centre
        m = torch.zeros(n_out, n_in, dtype=torch.float64)
        m[torch.arange(n_out), centers.floor().long().clamp(max=n_in - 1)] = 1.0
        return m
    kernel, support = _FILTERS[mode]
    stretch = max(scale, 1.0)  # shrinking widens the kernel: an anti-aliasing low-pass
    pos = torch.arange(n_in, dtype=torch.float64) + 0.5  # input pixel centres
    dist = (pos[None, :] - centers[:, None]) / stretch
    # only pixels within the widened support take part (PIL's window, rounded the same way)
    lo = (centers - support * stretch + 0.5).floor().clamp(min=0)
    hi = (centers + support * stretch + 0.5).floor().clamp(max=n_in)
    idx = torch.arange(n_in, dtype=torch.float64)[None, :]
    w = kernel(dist) * ((idx >= lo[:, None]) & (idx < hi[:, None]))
    return w / w.sum(1, keepdim=True)


def resize(x: torch.Tensor, size: int | tuple[int, int], mode: str = "bilinear", clamp: bool = True) -> torch.Tensor:
    """Resize a float batch (N, C, H, W) to `size`. `clamp` keeps values in [0, 1] as an 8-bit image would be
    (bicubic and lanczos overshoot near edges); pass False for normalized inputs."""
    h_out, w_out = (size, size) if isinstance(size, int) else size
    h_in, w_in = x.shape[-2:]
    if (h_in, w_in) == (h_out, w_out):
        return x
    rows = resize_matrix(h_in, h_out, mode).to(x.device, x.dtype)
    cols = resize_matrix(w_in, w_out, mode).to(x.device, x.dtype)
    out = x @ cols.T  # along rows first, as PIL does: (..., H_in, W_in) @ (W_in, W_out)
    if clamp:  # an 8-bit image cannot hold the overshoot of the first pass; PIL clips it before the second
        out = out.clamp_(0, 1)
    out = rows @ out  # (H_out, H_in) @ (..., H_in, W_out)
    return out.clamp_(0, 1) if clamp else out
