"""What the data path costs: one epoch of fast94's loader (flip + translate, normalize, channels_last) with no
model, at each image size of a resize schedule.

    python bench/loader_epoch.py --sizes 32 24 16 --repeat 2

Random uint8 images of CIFAR's shape (45,000 x 3 x 32 x 32), batch 256: the seconds an epoch's batches take
to be gathered, augmented and resized; compare them with the epoch times of a training run at the same size.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine  # noqa: E402

from cifarlab.data import BatchLoader  # noqa: E402
from cifarlab.data.augment import Pipeline  # noqa: E402
from cifarlab.data.formats import ImageSet  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[32, 24, 16])
    p.add_argument("--images", type=int, default=45_000)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--repeat", type=int, default=2)
    args = p.parse_args()
    print(machine())
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (args.images, 3, 32, 32), dtype=torch.uint8, generator=g)
    data = ImageSet(images, torch.randint(0, 10, (args.images,), generator=g), [str(i) for i in range(10)])
    pipeline = Pipeline([{"name": "alternating_flip"}, {"name": "translate", "max_shift": 2}])
    print("| image size | batches | seconds per epoch (each repeat) |\n| ---: | ---: | --- |")
    for size in args.sizes:
        loader = BatchLoader(data, args.batch_size, mean=[0.5] * 3, std=[0.25] * 3, shuffle=True, drop_last=True,
                             pipeline=pipeline, channels_last=True, resize_schedule=[[0, size]])
        times = []
        for r in range(args.repeat):
            start = time.perf_counter()
            batches = sum(1 for _ in loader.epoch(r))
            times.append(time.perf_counter() - start)
        print(f"| {size} | {batches} | {', '.join(f'{t:.2f}' for t in times)} |")


if __name__ == "__main__":
    main()
