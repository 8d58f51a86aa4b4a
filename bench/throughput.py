"""Training throughput: cifarlab's engine against a seed-style reference loop, in one process.

The reference is what study 000's notebook did: a DataLoader over a Dataset that turns each image into a PIL
image and applies its per-image Compose (ColorJitter 0.1/0.1/0.1/0.1, flip, pad-4 crop, flip, rotation 10,
pad-4 crop), then ToTensor/Normalize; NCHW; fp32; plain SGD. torchvision does not import beside the CPU torch
here, so those transforms are written with PIL directly, doing the same per-image work. The engine applies the
same augmentation list, taken from recipes/seed000_resnet9.yaml, batched. `--augment light` drops the colour
jitter and the second flip and crop from both (the lighter reference of earlier BENCHMARKS rows).

    python bench/throughput.py resnet9 --data ../shared/data/cifar10-train-jpg.tar.gz

Prints images/s for both, their ratio, and the machine; both use the same model, batch size and step count.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageEnhance, ImageOps

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, sgemm_peak  # noqa: E402

from cifarlab.config import load_recipe  # noqa: E402
from cifarlab.data import BatchLoader, Pipeline, load_splits  # noqa: E402
from cifarlab.models import create_model, summarize  # noqa: E402

LIGHT_AUGMENT = [{"name": "crop", "padding": 4}, {"name": "flip"}, {"name": "rotate", "degrees": 10}]


def _pil_color_jitter(img: Image.Image, brightness: float, contrast: float, saturation: float,
                      hue: float) -> Image.Image:
    """torchvision's ColorJitter on a PIL image: the four adjustments in a random order, each factor uniform."""
    def jitter_hue(im: Image.Image, shift: float) -> Image.Image:
        h, s_, v = im.convert("HSV").split()
        h = Image.fromarray((np.asarray(h, dtype=np.int16) + int(shift * 255)).astype(np.uint8), "L")
        return Image.merge("HSV", (h, s_, v)).convert("RGB")

    ops = []
    if brightness:
        ops.append(lambda im: ImageEnhance.Brightness(im).enhance(random.uniform(1 - brightness, 1 + brightness)))
    if contrast:
        ops.append(lambda im: ImageEnhance.Contrast(im).enhance(random.uniform(1 - contrast, 1 + contrast)))
    if saturation:
        ops.append(lambda im: ImageEnhance.Color(im).enhance(random.uniform(1 - saturation, 1 + saturation)))
    if hue:
        ops.append(lambda im: jitter_hue(im, random.uniform(-hue, hue)))
    random.shuffle(ops)
    for op in ops:
        img = op(img)
    return img


def _pil_op(img: Image.Image, spec: dict) -> Image.Image:
    """One augmentation of a recipe's list done the torchvision way, on one PIL image."""
    name = spec["name"]
    if name == "crop":
        pad, (w, h) = spec.get("padding", 4), img.size
        img = ImageOps.expand(img, border=pad, fill=0)
        x, y = random.randint(0, 2 * pad), random.randint(0, 2 * pad)
        return img.crop((x, y, x + w, y + h))
    if name == "flip":
        return img.transpose(Image.FLIP_LEFT_RIGHT) if random.random() < spec.get("p", 0.5) else img
    if name == "rotate":
        return img.rotate(random.uniform(-spec["degrees"], spec["degrees"]), resample=Image.NEAREST)
    if name == "color_jitter":
        return _pil_color_jitter(img, spec.get("brightness", 0), spec.get("contrast", 0),
                                 spec.get("saturation", 0), spec.get("hue", 0))
    raise SystemExit(f"the reference loop has no PIL version of augmentation '{name}'")


class PilDataset(torch.utils.data.Dataset):
    """Per-image PIL transforms in the recipe's order, then ToTensor and Normalize(0.5, 0.5)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, augment: list[dict]):
        self.images = images.permute(0, 2, 3, 1).numpy()
        self.labels = labels.tolist()
        self.augment = augment

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        img = Image.fromarray(self.images[i])
        for spec in self.augment:
            img = _pil_op(img, spec)
        t = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255).permute(2, 0, 1)
        return (t - 0.5) / 0.5, self.labels[i]


def timed_steps(model, batches, steps: int, warmup: int, lr: float = 0.01, bf16: bool = False) -> float:
    """Images per second over `steps` SGD steps after `warmup` untimed ones (data time included)."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    model.train()
    it = iter(batches)
    seen, start = 0, None
    for s in range(warmup + steps):
        if s == warmup:
            start = time.perf_counter()
            seen = 0
        x, y = next(it)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        seen += len(y)
    return seen / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--data", default="../shared/data/cifar10-train-jpg.tar.gz")
    p.add_argument("--batch-size", type=int, default=64, help="the reference loop's batch (study 000: 64)")
    p.add_argument("--engine-batch-size", type=int, default=0, help="cifarlab engine's batch (default: the same)")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--precision", choices=["fp32", "bf16"], default="bf16", help="cifarlab engine only")
    p.add_argument("--nchw", action="store_true", help="cifarlab engine in NCHW instead of channels_last")
    p.add_argument("--compile", action="store_true", help="torch.compile the engine's model (compile time untimed)")
    p.add_argument("--augment", choices=["seed000", "light"], default="seed000",
                   help="study 000's whole Compose (default) or crop/flip/rotate only")
    args = p.parse_args()

    augment = load_recipe("seed000_resnet9")["augment"] if args.augment == "seed000" else LIGHT_AUGMENT
    splits = load_splits(args.data)
    torch.manual_seed(0)
    random.seed(0)
    model = create_model(args.model)
    channels_last = not args.nchw
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    engine_batch = args.engine_batch_size or args.batch_size
    loader = BatchLoader(splits.train, engine_batch, mean=[0.5] * 3, std=[0.5] * 3, shuffle=True,
                         pipeline=Pipeline(augment), seed=0, channels_last=channels_last)
    engine_model = torch.compile(model) if args.compile else model
    ours = timed_steps(engine_model, loader.epoch(0), args.steps, args.warmup, bf16=args.precision == "bf16")

    ref_loader = torch.utils.data.DataLoader(PilDataset(splits.train.images, splits.train.labels, augment),
                                             batch_size=args.batch_size, shuffle=True, num_workers=0)
    ref = timed_steps(create_model(args.model), ref_loader, args.steps, args.warmup)

    peak = sgemm_peak()
    flop_per_img = 3 * 2 * summarize(create_model(args.model)).macs  # forward + backward ~ 3x forward
    print(f"machine: {machine()}")
    print(f"model {args.model}  {args.steps} timed steps after {args.warmup} warm-up; engine: batch {engine_batch}, "
          f"{args.precision}, {'NCHW' if args.nchw else 'channels_last'}{', compiled' if args.compile else ''}; "
          f"reference: batch {args.batch_size}, fp32 NCHW; both augment: {[a['name'] for a in augment]}")
    print(f"cifarlab engine     {ours:8.1f} img/s  {ours * flop_per_img / 1e9:6.0f} GFLOP/s")
    print(f"seed-style loop     {ref:8.1f} img/s  {ref * flop_per_img / 1e9:6.0f} GFLOP/s")
    print(f"ratio               {ours / ref:8.2f}x   (fp32 sgemm peak {peak:.0f} GFLOP/s)")


if __name__ == "__main__":
    main()
