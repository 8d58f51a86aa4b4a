"""Augmentation policies people bring from torchvision and timm recipes, as whole-batch ops: AutoAugment (the
CIFAR-10 policy), RandAugment, TrivialAugmentWide, RandomErasing, MixUp and CutMix.

Names, magnitude tables and probabilities follow torchvision's (``torchvision.transforms.AutoAugment`` and
friends, ``RandomErasing``, ``transforms.v2.MixUp``/``CutMix``); every image of a batch draws its own operation,
magnitude, sign and probability, so a batch is augmented as torchvision would augment its images one at a time.
Images are float (N, C, H, W) in [0, 1] made from uint8 pixels: posterize, solarize and equalize work on the
uint8 levels (x * 255), as torchvision's uint8 path does; geometric ops sample with nearest neighbours and fill
with 0. MixUp and CutMix also mix the labels: they take and return soft targets (N, classes).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .augment import (
    Context,
    adjust_brightness,
    adjust_contrast,
    adjust_saturation,
    box_tries,
    rotate,
    shift,
)

# --------------------------------------------------------------------------------------------------------
# The image operations, each with per-image magnitudes
# --------------------------------------------------------------------------------------------------------


def shear(x: torch.Tensor, m: torch.Tensor, axis: str) -> torch.Tensor:
    """ShearX: output(u, v) = input(u + m v, v); ShearY: output(u, v) = input(u, v + m u), in pixel coordinates
    from the top-left corner (torchvision's ``affine(shear=atan(m), center=[0, 0])``, PIL's (1, m, 0, 0, 1, 0))."""
    n, _, h, w = x.shape
    m = m.to(x.device, torch.float32)
    theta = torch.zeros(n, 2, 3, device=x.device)
    theta[:, 0, 0] = theta[:, 1, 1] = 1
    if axis == "x":  # normalized coordinates: x_in = x + m (H / W) (y + 1)
        theta[:, 0, 1] = theta[:, 0, 2] = m * h / w
    else:
        theta[:, 1, 0] = theta[:, 1, 2] = m * w / h
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid.to(x.dtype), mode="nearest", padding_mode="zeros", align_corners=False)


def sharpness(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Blend with a smoothed copy (kernel [[1,1,1],[1,5,1],[1,1,1]] / 13, rounded to uint8 levels as PIL and
    torchvision's uint8 path do; border pixels stay): f > 1 sharpens."""
    c = x.shape[1]
    kernel = torch.ones(3, 3, dtype=x.dtype, device=x.device)
    kernel[1, 1] = 5
    kernel = (kernel / kernel.sum()).expand(c, 1, 3, 3)
    blurred = x.clone()
    blurred[:, :, 1:-1, 1:-1] = (F.conv2d(x, kernel, groups=c) * 255).round() / 255
    f = f.to(x.device, x.dtype)[:, None, None, None]
    return (f * x + (1 - f) * blurred).clamp(0, 1)


def _levels(x: torch.Tensor) -> torch.Tensor:
    return (x * 255).round().to(torch.int64)


def posterize(x: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """Keep the top `bits` bits of each uint8 level."""
    mask = (0xFF << (8 - bits.to(x.device, torch.int64))) & 0xFF
    return (_levels(x) & mask[:, None, None, None]).to(x.dtype) / 255


def solarize(x: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """Invert every level at or above `threshold` (in uint8 levels, 0-255)."""
    t = threshold.to(x.device, x.dtype)[:, None, None, None] / 255
    return torch.where(x >= t, 1 - x, x)


def autocontrast(x: torch.Tensor) -> torch.Tensor:
    """Stretch each channel of each image to span [0, 1]; a constant channel stays as it is."""
    lo = x.amin(dim=(2, 3), keepdim=True)
    hi = x.amax(dim=(2, 3), keepdim=True)
    flat = hi == lo
    lo = torch.where(flat, torch.zeros_like(lo), lo)
    scale = 1 / torch.where(flat, torch.ones_like(hi), hi - lo)
    return ((x - lo) * scale).clamp(0, 1)


def equalize(x: torch.Tensor) -> torch.Tensor:
    """Histogram equalization of each channel's uint8 levels, PIL's rule: step = (pixels - the count of the last
    occupied level) // 255; level v maps to (pixels below v + step // 2) // step; step 0 leaves the channel."""
    n, c, h, w = x.shape
    levels = _levels(x).reshape(n * c, h * w)
    hist = torch.zeros(n * c, 256, dtype=torch.int64, device=x.device).scatter_add_(1, levels,
                                                                                     torch.ones_like(levels))
    last = 255 - (hist.flip(1) > 0).to(torch.int64).argmax(1)  # highest occupied level
    step = (h * w - hist.gather(1, last[:, None])[:, 0]) // 255
    below = hist.cumsum(1) - hist  # pixels strictly below each level
    lut = ((below + (step // 2)[:, None]) // step.clamp(min=1)[:, None]).clamp(0, 255)
    out = lut.gather(1, levels)
    out = torch.where((step > 0)[:, None], out, levels)
    return (out.reshape(n, c, h, w).to(x.dtype)) / 255


def translate(x: torch.Tensor, pixels: torch.Tensor, axis: str) -> torch.Tensor:
    """Move content right (TranslateX) or down (TranslateY) by int(pixels), zero fill."""
    t = pixels.to(torch.float32).trunc().to(torch.int64)
    zero = torch.zeros_like(t)
    return shift(x, zero, t) if axis == "x" else shift(x, t, zero)


# name -> (function of (images, per-image magnitudes), whether the magnitude's sign is drawn)
OPS = {
    "Identity": (lambda x, m: x, False),
    "ShearX": (lambda x, m: shear(x, m, "x"), True),
    "ShearY": (lambda x, m: shear(x, m, "y"), True),
    "TranslateX": (lambda x, m: translate(x, m, "x"), True),
    "TranslateY": (lambda x, m: translate(x, m, "y"), True),
    "Rotate": (lambda x, m: rotate(x, m), True),
    "Brightness": (lambda x, m: adjust_brightness(x, 1 + m), True),
    "Color": (lambda x, m: adjust_saturation(x, 1 + m), True),
    "Contrast": (lambda x, m: adjust_contrast(x, 1 + m), True),
    "Sharpness": (lambda x, m: sharpness(x, 1 + m), True),
    "Posterize": (lambda x, m: posterize(x, m.round().to(torch.int64)), False),
    "Solarize": (lambda x, m: solarize(x, m), False),
    "AutoContrast": (lambda x, m: autocontrast(x), False),
    "Equalize": (lambda x, m: equalize(x), False),
    "Invert": (lambda x, m: 1 - x, False),
}


def apply_ops(x: torch.Tensor, names: list[str], op: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """Image i gets operation names[op[i]] with magnitude[i] (already signed); op[i] < 0 leaves it."""
    x = x.clone()
    for j, name in enumerate(names):
        sel = (op == j).nonzero().flatten()
        if len(sel) and name != "Identity":
            on = sel.to(x.device)
            x[on] = OPS[name][0](x[on], magnitude[sel])
    return x


# --------------------------------------------------------------------------------------------------------
# Magnitude tables (torchvision's), and the policies
# --------------------------------------------------------------------------------------------------------


def magnitude_table(name: str, bins: int, size: int, wide: bool = False) -> torch.Tensor:
    """The magnitudes an op takes at bins 0 .. bins-1: RandAugment's and AutoAugment's ranges, or with ``wide``
    TrivialAugmentWide's."""
    top = {"ShearX": (0.3, 0.99), "ShearY": (0.3, 0.99), "TranslateX": (150 / 331 * size, 32.0),
           "TranslateY": (150 / 331 * size, 32.0), "Rotate": (30.0, 135.0), "Brightness": (0.9, 0.99),
           "Color": (0.9, 0.99), "Contrast": (0.9, 0.99), "Sharpness": (0.9, 0.99)}
    if name in top:
        return torch.linspace(0.0, top[name][wide], bins)
    if name == "Posterize":
        return (8 - (torch.arange(bins) / ((bins - 1) / (6 if wide else 4))).round()).float()
    if name == "Solarize":
        return torch.linspace(255.0, 0.0, bins)
    return torch.zeros(bins)


def _signs(ctx: Context, names: list[str], op: torch.Tensor) -> torch.Tensor:
    """+1 or -1 per image, drawn for every image; only signed ops use it."""
    signed = torch.tensor([OPS[n][1] for n in names])[op.clamp(min=0)]
    draw = torch.randint(0, 2, (len(op),), generator=ctx.generator) * 2 - 1
    return torch.where(signed, draw, torch.ones_like(draw)).float()


RAND_OPS = ["Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color", "Contrast",
            "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize"]


def op_randaugment(x, ctx, num_ops: int = 2, magnitude: int = 9, num_magnitude_bins: int = 31):
    """torchvision RandAugment: `num_ops` times, each image takes one of 14 ops uniformly at bin `magnitude`
    (a random sign for the signed ones)."""
    n = len(x)
    tables = torch.stack([magnitude_table(name, num_magnitude_bins, x.shape[-1]) for name in RAND_OPS])
    for _ in range(int(num_ops)):
        op = torch.randint(0, len(RAND_OPS), (n,), generator=ctx.generator)
        mag = tables[op, int(magnitude)] * _signs(ctx, RAND_OPS, op)
        x = apply_ops(x, RAND_OPS, op, mag)
    return x


def op_trivial_augment_wide(x, ctx, num_magnitude_bins: int = 31):
    """torchvision TrivialAugmentWide: each image takes one of 14 ops uniformly, at a uniformly drawn bin of the
    wide ranges, with a random sign for the signed ones."""
    n = len(x)
    tables = torch.stack([magnitude_table(name, num_magnitude_bins, x.shape[-1], wide=True) for name in RAND_OPS])
    op = torch.randint(0, len(RAND_OPS), (n,), generator=ctx.generator)
    level = torch.randint(0, int(num_magnitude_bins), (n,), generator=ctx.generator)
    return apply_ops(x, RAND_OPS, op, tables[op, level] * _signs(ctx, RAND_OPS, op))


# AutoAugment's CIFAR-10 policy (Cubuk et al. 2019, as torchvision lists it): 25 sub-policies of two
# (operation, probability, magnitude bin out of 10) steps.
CIFAR10_POLICY = [
    (("Invert", 0.1, None), ("Contrast", 0.2, 6)), (("Rotate", 0.7, 2), ("TranslateX", 0.3, 9)),
    (("Sharpness", 0.8, 1), ("Sharpness", 0.9, 3)), (("ShearY", 0.5, 8), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.5, None), ("Equalize", 0.9, None)), (("ShearY", 0.2, 7), ("Posterize", 0.3, 7)),
    (("Color", 0.4, 3), ("Brightness", 0.6, 7)), (("Sharpness", 0.3, 9), ("Brightness", 0.7, 9)),
    (("Equalize", 0.6, None), ("Equalize", 0.5, None)), (("Contrast", 0.6, 7), ("Sharpness", 0.6, 5)),
    (("Color", 0.7, 7), ("TranslateX", 0.5, 8)), (("Equalize", 0.3, None), ("AutoContrast", 0.4, None)),
    (("TranslateY", 0.4, 3), ("Sharpness", 0.2, 6)), (("Brightness", 0.9, 6), ("Color", 0.2, 8)),
    (("Solarize", 0.5, 2), ("Invert", 0.0, None)), (("Equalize", 0.2, None), ("AutoContrast", 0.6, None)),
    (("Equalize", 0.2, None), ("Equalize", 0.6, None)), (("Color", 0.9, 9), ("Equalize", 0.6, None)),
    (("AutoContrast", 0.8, None), ("Solarize", 0.2, 8)), (("Brightness", 0.1, 3), ("Color", 0.7, 0)),
    (("Solarize", 0.4, 5), ("AutoContrast", 0.9, None)), (("TranslateY", 0.9, 9), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.9, None), ("Solarize", 0.8, 3)), (("Equalize", 0.8, None), ("Invert", 0.1, None)),
    (("TranslateY", 0.7, 9), ("AutoContrast", 0.9, None)),
]
POLICY_OPS = sorted({name for pair in CIFAR10_POLICY for name, _, _ in pair})


def op_autoaugment(x, ctx):
    """torchvision AutoAugment(CIFAR10): each image takes one sub-policy uniformly; each of its two steps applies
    when a uniform draw is <= its probability, at its magnitude bin of 10, with a random sign for signed ops."""
    n = len(x)
    choice = torch.randint(0, len(CIFAR10_POLICY), (n,), generator=ctx.generator)
    draws = torch.rand(n, 2, generator=ctx.generator)
    for k in range(2):
        names = [CIFAR10_POLICY[int(c)][k][0] for c in choice]
        op = torch.tensor([POLICY_OPS.index(name) for name in names])
        prob = torch.tensor([CIFAR10_POLICY[int(c)][k][1] for c in choice])
        mag = torch.tensor([0.0 if CIFAR10_POLICY[int(c)][k][2] is None else
                            float(magnitude_table(CIFAR10_POLICY[int(c)][k][0], 10, x.shape[-1])
                                  [CIFAR10_POLICY[int(c)][k][2]]) for c in choice])
        op = torch.where(draws[:, k] <= prob, op, torch.full_like(op, -1))
        x = apply_ops(x, POLICY_OPS, op, mag * _signs(ctx, POLICY_OPS, op))
    return x


def op_random_erasing(x, ctx, p: float = 0.5, scale_min: float = 0.02, scale_max: float = 0.33,
                      ratio_min: float = 0.3, ratio_max: float = 3.3, value: float = 0.0):
    """torchvision RandomErasing: with probability p, up to 10 tries at a box of area fraction uniform in
    [scale_min, scale_max] and aspect ratio log-uniform in [ratio_min, ratio_max]; the first box that fits
    (h < H and w < W) is filled with `value` (pixel units before normalization: torchvision's usual place after
    Normalize, where 0 is the mean colour, would be value = the mean here)."""
    n, _, h, w = x.shape
    eh, ew = box_tries(ctx, n, h * w, scale_min, scale_max, ratio_min, ratio_max)
    ok = (eh < h) & (ew < w)
    first = ok.float().argmax(1)[:, None]
    eh, ew = eh.gather(1, first)[:, 0], ew.gather(1, first)[:, 0]
    top = (torch.rand(n, generator=ctx.generator) * (h - eh + 1)).floor()
    left = (torch.rand(n, generator=ctx.generator) * (w - ew + 1)).floor()
    apply = (torch.rand(n, generator=ctx.generator) < p) & ok.any(1)
    rows = torch.arange(h)[None, :]
    cols = torch.arange(w)[None, :]
    in_r = (rows >= top[:, None]) & (rows < (top + eh)[:, None])
    in_c = (cols >= left[:, None]) & (cols < (left + ew)[:, None])
    mask = (in_r[:, :, None] & in_c[:, None, :] & apply[:, None, None]).unsqueeze(1).to(x.device)
    return x.masked_fill(mask, float(value))


# --------------------------------------------------------------------------------------------------------
# Batch mixing: images and soft targets together
# --------------------------------------------------------------------------------------------------------


def _beta(ctx: Context, alpha: float) -> float:
    """One draw of Beta(alpha, alpha), seeded from the epoch's generator (torch's Beta takes no generator)."""
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=ctx.generator))
    return float(np.random.default_rng(seed).beta(alpha, alpha))


def op_mixup(x, y, ctx, alpha: float = 1.0, p: float = 1.0):
    """torchvision v2 MixUp: with probability p, one lambda ~ Beta(alpha, alpha) for the batch; each image and its
    target become lambda * itself + (1 - lambda) * the previous image's (the batch rolled by one)."""
    lam = _beta(ctx, alpha)
    if float(torch.rand(1, generator=ctx.generator)) >= p or len(x) < 2:
        return x, y
    return x * lam + x.roll(1, 0) * (1 - lam), y * lam + y.roll(1, 0) * (1 - lam)


def op_cutmix(x, y, ctx, alpha: float = 1.0, p: float = 1.0):
    """torchvision v2 CutMix: with probability p, lambda ~ Beta(alpha, alpha); a box of side sqrt(1 - lambda) of
    the image, centred uniformly and clipped at the border, is pasted from the previous image (the batch rolled by
    one); targets mix by the share of pixels each image keeps."""
    lam = _beta(ctx, alpha)
    _, _, h, w = x.shape
    cx = int(torch.randint(0, w, (1,), generator=ctx.generator))
    cy = int(torch.randint(0, h, (1,), generator=ctx.generator))
    if float(torch.rand(1, generator=ctx.generator)) >= p or len(x) < 2:
        return x, y
    r = 0.5 * math.sqrt(1.0 - lam)
    rw, rh = int(r * w), int(r * h)
    x1, y1, x2, y2 = max(cx - rw, 0), max(cy - rh, 0), min(cx + rw, w), min(cy + rh, h)
    out = x.clone()
    out[:, :, y1:y2, x1:x2] = x.roll(1, 0)[:, :, y1:y2, x1:x2]
    kept = 1.0 - (x2 - x1) * (y2 - y1) / (w * h)
    return out, y * kept + y.roll(1, 0) * (1 - kept)


MIX_OPS = {"mixup": op_mixup, "cutmix": op_cutmix}
IMAGE_OPS = {"autoaugment": op_autoaugment, "randaugment": op_randaugment,
             "trivial_augment_wide": op_trivial_augment_wide, "random_erasing": op_random_erasing}
