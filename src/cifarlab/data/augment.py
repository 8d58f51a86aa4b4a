"""Batched augmentations: whole-batch tensor ops, no per-image Python on the training path.

Each op is a pure function of (images, random draws); the pipeline draws its randomness from a
``torch.Generator`` seeded per epoch, so a run is reproducible and resumable. Images are float (N,C,H,W)
in [0, 1]; normalization happens after the pipeline (config keys ``mean``/``std``).

A recipe lists ops in order, e.g. study 000's pipeline::

    augment:
      - {name: color_jitter, brightness: 0.1, contrast: 0.1, saturation: 0.1, hue: 0.1}
      - {name: flip}
      - {name: crop, padding: 4}
      - {name: flip}
      - {name: rotate, degrees: 10}
      - {name: crop, padding: 4}
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..errors import CifarlabError

# --------------------------------------------------------------------------------------------------------
# Pure ops
# --------------------------------------------------------------------------------------------------------


def shift(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, mode: str = "zero") -> torch.Tensor:
    """Move each image's content by (dy[n], dx[n]) pixels (down/right positive); uncovered pixels are
    filled with zeros ("zero") or by reflecting the image ("reflect")."""
    n, c, h, w = x.shape
    p = int(max(dy.abs().max().item(), dx.abs().max().item(), 0)) if n else 0
    if p == 0:
        return x
    xp = F.pad(x, (p, p, p, p), mode="constant" if mode == "zero" else "reflect")
    dev = x.device
    rows = torch.arange(h, device=dev)[None, :] - dy.to(dev)[:, None] + p  # (N, H) source rows in padded
    cols = torch.arange(w, device=dev)[None, :] - dx.to(dev)[:, None] + p  # (N, W)
    flat = xp.reshape(n, c, -1)
    index = (rows[:, :, None] * (w + 2 * p) + cols[:, None, :]).reshape(n, 1, h * w).expand(n, c, h * w)
    return flat.gather(2, index).reshape(n, c, h, w)


def flip_lr(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mirror the images where `mask` is true."""
    return torch.where(mask.to(x.device)[:, None, None, None], x.flip(3), x)


def rotate(x: torch.Tensor, degrees: torch.Tensor, interpolation: str = "nearest") -> torch.Tensor:
    """Rotate each image about its centre by degrees[n] (counter-clockwise), zero fill outside."""
    theta = degrees.to(x.device, torch.float32) * (math.pi / 180)
    cos, sin = theta.cos(), theta.sin()
    zero = torch.zeros_like(cos)
    # affine_grid maps output to input coordinates, so the inverse rotation goes here.
    mat = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(mat, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode=interpolation, padding_mode="zeros", align_corners=False)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma, as PIL and torchvision compute it: (N,1,H,W)."""
    return (0.2989 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(1)
    maxc, _ = x.max(1)
    minc, _ = x.min(1)
    delta = maxc - minc
    s = delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc))
    dc = torch.where(delta > 0, delta, torch.ones_like(delta))
    rc, gc, bc = (maxc - r) / dc, (maxc - g) / dc, (maxc - b) / dc
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(delta > 0, (h / 6.0) % 1.0, torch.zeros_like(h))
    return torch.stack([h, s, maxc], 1)


def hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    h, s, v = x.unbind(1)
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.long() % 6
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    # Each sector of the hue circle picks a different arrangement of (v, q, p, t).
    r = torch.stack([v, q, p, p, t, v], 1).gather(1, i.unsqueeze(1))
    g = torch.stack([t, v, v, q, p, p], 1).gather(1, i.unsqueeze(1))
    b = torch.stack([p, p, t, v, v, q], 1).gather(1, i.unsqueeze(1))
    return torch.cat([r, g, b], 1)


def _per_image(f: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return f.to(x.device, x.dtype)[:, None, None, None]


def adjust_brightness(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return (x * _per_image(f, x)).clamp(0, 1)


def adjust_contrast(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    mean = grayscale(x).mean(dim=(1, 2, 3), keepdim=True)
    f = _per_image(f, x)
    return (f * x + (1 - f) * mean).clamp(0, 1)


def adjust_saturation(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    f = _per_image(f, x)
    return (f * x + (1 - f) * grayscale(x)).clamp(0, 1)


def adjust_hue(x: torch.Tensor, shift_frac: torch.Tensor) -> torch.Tensor:
    hsv = rgb_to_hsv(x)
    h = (hsv[:, 0] + shift_frac.to(x.device, x.dtype)[:, None, None]) % 1.0
    return hsv_to_rgb(torch.stack([h, hsv[:, 1], hsv[:, 2]], 1))


def cutout(x: torch.Tensor, cy: torch.Tensor, cx: torch.Tensor, size: int) -> torch.Tensor:
    """Zero a size x size square centred at (cy, cx) in each image (clipped at the border)."""
    _, _, h, w = x.shape
    top = (cy - size // 2).to(x.device)
    left = (cx - size // 2).to(x.device)
    rows = torch.arange(h, device=x.device)[None, :]
    cols = torch.arange(w, device=x.device)[None, :]
    in_r = (rows >= top[:, None]) & (rows < top[:, None] + size)
    in_c = (cols >= left[:, None]) & (cols < left[:, None] + size)
    mask = (in_r[:, :, None] & in_c[:, None, :]).unsqueeze(1)
    return x.masked_fill(mask, 0.0)


def resized_crop(x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, height: torch.Tensor,
                 width: torch.Tensor) -> torch.Tensor:
    """Cut the box (top, left, height, width) out of each image and resize it bilinearly to the image's size
    (pixel centres as PIL and torchvision place them)."""
    n, _, h, w = x.shape
    top, left, height, width = (t.to(x.device, torch.float32) for t in (top, left, height, width))
    theta = torch.zeros(n, 2, 3, device=x.device)
    theta[:, 0, 0] = width / w
    theta[:, 0, 2] = (2 * left + width) / w - 1
    theta[:, 1, 1] = height / h
    theta[:, 1, 2] = (2 * top + height) / h - 1
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    # Samples stay between the box's first and last pixel centres: the crop's edge repeats, as when the
    # crop is cut out first and then resized (it never blends in the pixels just outside the box).
    lo = torch.stack([(2 * left + 1) / w - 1, (2 * top + 1) / h - 1], 1)[:, None, None, :]
    hi = torch.stack([(2 * (left + width) - 1) / w - 1, (2 * (top + height) - 1) / h - 1], 1)[:, None, None, :]
    grid = torch.maximum(torch.minimum(grid, hi), lo)
    return F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="border", align_corners=False)


# --------------------------------------------------------------------------------------------------------
# Recipe-level ops: each draws its randomness and calls a pure op
# --------------------------------------------------------------------------------------------------------


@dataclass
class Context:
    """What an op may depend on besides the images."""

    generator: torch.Generator  # CPU generator, reseeded per epoch
    epoch: int = 0
    index: torch.Tensor | None = None  # dataset indices of the batch's images
    flip_bits: torch.Tensor | None = None  # per-image base bits for alternating flip


def _uniform(ctx: Context, n: int, lo: float, hi: float) -> torch.Tensor:
    return torch.rand(n, generator=ctx.generator) * (hi - lo) + lo


def _randint(ctx: Context, n: int, lo: int, hi: int) -> torch.Tensor:
    """Integers in [lo, hi] inclusive."""
    return torch.randint(lo, hi + 1, (n,), generator=ctx.generator)


def _apply_with_p(ctx: Context, x: torch.Tensor, y: torch.Tensor, p: float) -> torch.Tensor:
    if p >= 1:
        return y
    keep = torch.rand(len(x), generator=ctx.generator) < p
    return torch.where(keep.to(x.device)[:, None, None, None], y, x)


def op_crop(x, ctx, padding: int = 4, mode: str = "zero"):
    """torchvision RandomCrop(size, padding): pad by `padding`, take a random crop of the original size."""
    n = len(x)
    return shift(x, _randint(ctx, n, -padding, padding), _randint(ctx, n, -padding, padding), mode)


def op_translate(x, ctx, max_shift: int = 2, mode: str = "reflect"):
    """Shift content by up to `max_shift` pixels each way; the border is reflected (airbench style)."""
    n = len(x)
    return shift(x, _randint(ctx, n, -max_shift, max_shift), _randint(ctx, n, -max_shift, max_shift), mode)


def op_flip(x, ctx, p: float = 0.5):
    """Mirror each image with probability p."""
    return flip_lr(x, torch.rand(len(x), generator=ctx.generator) < p)


def op_alternating_flip(x, ctx):
    """Mirror each image exactly every other epoch: a fixed random bit per image decides epoch 0, and each
    later epoch inverts the previous choice (airbench's trick: every view is seen, with less variance)."""
    bits = ctx.flip_bits[ctx.index] if ctx.flip_bits is not None else torch.zeros(len(x), dtype=torch.bool)
    return flip_lr(x, bits ^ bool(ctx.epoch % 2))


def op_rotate(x, ctx, degrees: float = 10.0, p: float = 1.0, interpolation: str = "nearest"):
    """Rotate by an angle uniform in [-degrees, degrees] with probability p (nearest, as torchvision)."""
    return _apply_with_p(ctx, x, rotate(x, _uniform(ctx, len(x), -degrees, degrees), interpolation), p)


# torchvision ColorJitter's four adjustments, in its fixed listing order (indices of a per-image order)
_JITTERS = {"brightness": adjust_brightness, "contrast": adjust_contrast, "saturation": adjust_saturation,
            "hue": adjust_hue}


def color_jitter(x: torch.Tensor, factors: dict[str, torch.Tensor], order: torch.Tensor) -> torch.Tensor:
    """Apply the jitters named in ``factors`` (per-image factors; hue as a shift in turns) to each image in its
    own order: ``order[i]`` lists indices into ``_JITTERS``, and step k applies jitter ``order[i, k]`` to image i."""
    x = x.clone()
    for k in range(order.size(1)):
        for j, (name, adjust) in enumerate(_JITTERS.items()):
            if name not in factors:
                continue
            sel = (order[:, k] == j).nonzero().flatten()
            if len(sel):
                on_device = sel.to(x.device)
                x[on_device] = adjust(x[on_device], factors[name][sel])
    return x


def op_color_jitter(x, ctx, brightness: float = 0.0, contrast: float = 0.0, saturation: float = 0.0,
                    hue: float = 0.0, order: str = "random"):
    """torchvision ColorJitter: factors uniform in [1 - s, 1 + s] (hue shift in [-h, h]), applied to each image in
    its own random order as torchvision does (``order: fixed``: brightness, contrast, saturation, hue)."""
    n = len(x)
    strengths = {"brightness": brightness, "contrast": contrast, "saturation": saturation, "hue": hue}
    factors = {name: (_uniform(ctx, n, -s, s) if name == "hue" else _uniform(ctx, n, max(0.0, 1 - s), 1 + s))
               for name, s in strengths.items() if s}
    if order == "random":
        perm = torch.rand(n, len(_JITTERS), generator=ctx.generator).argsort(dim=1)
    else:
        perm = torch.arange(len(_JITTERS)).expand(n, -1)
    return color_jitter(x, factors, perm)


def op_cutout(x, ctx, size: int = 8, p: float = 1.0):
    """Zero a random size x size square (its centre anywhere in the image) with probability p."""
    n, _, h, w = x.shape
    return _apply_with_p(ctx, x, cutout(x, _randint(ctx, n, 0, h - 1), _randint(ctx, n, 0, w - 1), size), p)


def box_tries(ctx: Context, n: int, area: int, scale_min: float, scale_max: float, ratio_min: float,
              ratio_max: float, tries: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """(sqrt(a r), sqrt(a / r)), rounded, for `tries` boxes per image: area a uniform in [scale_min, scale_max] of
    `area`, aspect ratio r log-uniform in [ratio_min, ratio_max] (torchvision's RandomResizedCrop and
    RandomErasing draw their boxes so)."""
    a = area * (torch.rand(n, tries, generator=ctx.generator) * (scale_max - scale_min) + scale_min)
    log_r = torch.rand(n, tries, generator=ctx.generator) * (math.log(ratio_max) - math.log(ratio_min))
    r = torch.exp(log_r + math.log(ratio_min))
    return torch.sqrt(a * r).round(), torch.sqrt(a / r).round()


def op_random_resized_crop(x, ctx, scale_min: float = 0.08, scale_max: float = 1.0, ratio_min: float = 3 / 4,
                           ratio_max: float = 4 / 3):
    """torchvision RandomResizedCrop at the image's own size: a box of area fraction uniform in [scale_min,
    scale_max] and aspect ratio log-uniform in [ratio_min, ratio_max] (10 tries; else the whole image), resized
    back bilinearly. Resizing to a larger training size is the loader's `resize`, applied after."""
    n, _, h, w = x.shape
    cw, ch = box_tries(ctx, n, h * w, scale_min, scale_max, ratio_min, ratio_max)
    ok = (cw >= 1) & (cw <= w) & (ch >= 1) & (ch <= h)
    first = torch.where(ok.any(1), ok.float().argmax(1), torch.full((n,), -1))
    pick = first.clamp(min=0)[:, None]
    cw = torch.where(first >= 0, cw.gather(1, pick)[:, 0], torch.full((n,), float(w)))
    ch = torch.where(first >= 0, ch.gather(1, pick)[:, 0], torch.full((n,), float(h)))
    top = (torch.rand(n, generator=ctx.generator) * (h - ch + 1)).floor()
    left = (torch.rand(n, generator=ctx.generator) * (w - cw + 1)).floor()
    return resized_crop(x, top, left, ch, cw)


OPS: dict[str, Callable] = {
    "crop": op_crop,
    "translate": op_translate,
    "flip": op_flip,
    "alternating_flip": op_alternating_flip,
    "rotate": op_rotate,
    "color_jitter": op_color_jitter,
    "cutout": op_cutout,
    "random_resized_crop": op_random_resized_crop,
}

_MODES = {"mode": ("zero", "reflect"), "interpolation": ("nearest", "bilinear"), "order": ("random", "fixed")}
# Options with bounds beyond ">= 0": (low, high, whole number); p and the like are probabilities.
_BOUNDS = {"p": (0, 1, False), "num_ops": (0, 10, True), "magnitude": (0, 1000, True),
           "num_magnitude_bins": (2, 1000, True), "alpha": (1e-6, 1e6, False), "scale_min": (0, 1, False),
           "scale_max": (0, 1, False), "ratio_min": (1e-3, 1e3, False), "ratio_max": (1e-3, 1e3, False),
           "value": (0, 1, False)}


def _all_ops() -> tuple[dict[str, Callable], dict[str, Callable]]:
    """(image ops, batch-mixing ops): this module's and the policies' (data/policies.py)."""
    from .policies import IMAGE_OPS, MIX_OPS

    return {**OPS, **IMAGE_OPS}, MIX_OPS


def _check_option(name: str, key: str, value, valid: list[str]) -> None:
    if key not in valid:
        raise CifarlabError(f"augmentation '{name}' has no option '{key}'; valid: {', '.join(valid)}")
    if key in _MODES:
        if value not in _MODES[key]:
            raise CifarlabError(f"augmentation '{name}' option '{key}' must be one of {_MODES[key]}; got {value!r}")
        return
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
        raise CifarlabError(f"augmentation '{name}' option '{key}' must be a number >= 0; got {value!r}")
    low, high, whole = _BOUNDS.get(key, (0, math.inf, False))
    if not low <= value <= high or (whole and value != int(value)):
        kind = "a whole number" if whole else "a number"
        raise CifarlabError(f"augmentation '{name}' option '{key}' must be {kind} in [{low:g}, {high:g}]; "
                            f"got {value!r}")


@dataclass
class Pipeline:
    """An ordered list of ops built from recipe specs; validates names and options up front. Batch-mixing ops
    (mixup, cutmix) mix the targets too: a pipeline holding one takes and returns soft targets."""

    specs: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        import inspect

        image_ops, mix_ops = _all_ops()
        self.steps = []
        for spec in self.specs:
            spec = dict(spec)
            name = spec.pop("name", None)
            fn = image_ops.get(name) or mix_ops.get(name)
            if fn is None:
                raise CifarlabError(f"unknown augmentation '{name}'; valid: {', '.join([*image_ops, *mix_ops])}")
            valid = [k for k in inspect.signature(fn).parameters if k not in ("x", "y", "ctx")]
            for k, v in spec.items():
                _check_option(name, k, v, valid)
            if spec.get("scale_min", 0) > spec.get("scale_max", 1) or \
                    spec.get("ratio_min", 0.3) > spec.get("ratio_max", 3.3):
                raise CifarlabError(f"augmentation '{name}': the *_min options must not exceed the *_max ones")
            if name == "randaugment" and spec.get("magnitude", 9) >= spec.get("num_magnitude_bins", 31):
                raise CifarlabError("augmentation 'randaugment' option 'magnitude' must be below num_magnitude_bins")
            self.steps.append((fn, spec, name in mix_ops))

    @property
    def needs_flip_bits(self) -> bool:
        return any(f is op_alternating_flip for f, _, _ in self.steps)

    @property
    def mixes(self) -> bool:
        """Whether a step mixes images across the batch (the targets become soft)."""
        return any(mix for _, _, mix in self.steps)

    def __call__(self, x: torch.Tensor, ctx: Context, y: torch.Tensor | None = None):
        """The augmented images; with soft targets `y` (N, classes), (images, targets)."""
        for f, kwargs, mix in self.steps:
            if mix:
                x, y = f(x, y if y is not None else x.new_zeros(len(x), 1), ctx, **kwargs)
            else:
                x = f(x, ctx, **kwargs)
        return x if y is None else (x, y)
