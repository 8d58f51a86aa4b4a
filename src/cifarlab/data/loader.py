"""The training data path: uint8 tensors in memory, batches gathered by index, augmented as whole batches.

No worker processes and no per-image Python: one epoch is a permutation, a slice per batch, and a few
tensor ops. Randomness for epoch e comes from a generator seeded by (seed, e), so any epoch can be
replayed exactly, which is what makes resuming reproducible.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F

from .augment import Context, Pipeline
from .formats import ImageSet
from .resize import resize as resize_images


def epoch_generator(seed: int, epoch: int, stream: int = 0) -> torch.Generator:
    # Mix seed, epoch and stream into one 63-bit value so nearby seeds do not share streams.
    g = torch.Generator()
    g.manual_seed((seed * 1_000_003 + epoch * 7919 + stream * 104_729) % (2**63 - 1))
    return g


class BatchLoader:
    """Iterate (images, labels) batches of an :class:`ImageSet`, normalized and optionally augmented."""

    def __init__(self, data: ImageSet, batch_size: int, *, mean: Sequence[float], std: Sequence[float],
                 shuffle: bool = False, drop_last: bool = False, pipeline: Pipeline | None = None,
                 seed: int = 0, device: torch.device | str = "cpu", channels_last: bool = False,
                 resize_schedule: Sequence[Sequence[float]] = (), shard: tuple[int, int] = (0, 1),
                 resize: int = 0, interpolation: str = "bilinear"):
        self.device = torch.device(device)
        # Keep the whole uint8 set where the model runs: 150 MB for CIFAR, gathered per batch.
        self.images = data.images.to(self.device)
        self.labels = data.labels.to(self.device)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.pipeline = pipeline
        self.seed = seed
        self.channels_last = channels_last
        self.resize, self.interpolation = resize, interpolation  # e.g. 224 px for ImageNet-pretrained nets
        # (rank, world): each of `world` data-parallel ranks builds the same global batch and keeps its slice,
        # so the augmentation a batch gets does not depend on how many processes train it.
        self.rank, self.world = shard
        if not 0 <= self.rank < self.world:
            raise ValueError(f"shard {shard}: rank must be in [0, world)")
        self.resize_schedule = sorted((float(e), int(size)) for e, size in resize_schedule)
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self.num_classes = len(data.classes) or (int(data.labels.max()) + 1 if len(data.labels) else 1)
        self.flip_bits = None
        if pipeline is not None and pipeline.needs_flip_bits:
            self.flip_bits = torch.rand(len(data), generator=epoch_generator(seed, 0, stream=2)) < 0.5

    def __len__(self) -> int:
        n = len(self.labels)
        full, tail = divmod(n, self.batch_size)
        # a tail too small to give every rank an image is dropped on all ranks alike
        return full + (tail > 0 and not self.drop_last and tail >= self.world)

    def size_at(self, epoch: float) -> int | None:
        """Image side for `epoch` under the resize schedule (None = native size). Under a time budget the trainer
        passes the epoch the schedules have reached (a fraction), so the sizes follow the clock."""
        size = None
        for start, side in self.resize_schedule:
            if epoch >= start:
                size = side
        return size

    def order(self, epoch: int) -> torch.Tensor:
        n = len(self.labels)
        if not self.shuffle:
            return torch.arange(n)
        return torch.randperm(n, generator=epoch_generator(self.seed, epoch, stream=0))

    def epoch(self, epoch: int = 0, start_batch: int = 0, size_epoch: float | None = None
              ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches of `epoch`, starting at batch `start_batch` (for resuming mid-epoch); the resize schedule is
        read at `size_epoch` when given (a time-budgeted run's progress), else at `epoch`."""
        order = self.order(epoch)
        ctx = Context(epoch_generator(self.seed, epoch, stream=1), epoch, None, self.flip_bits)
        size = self.size_at(epoch if size_epoch is None else size_epoch)
        if size == self.images.shape[-1]:
            size = None
        for b in range(len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            # Draw the augmentation randomness for skipped batches too, so a resumed epoch matches.
            x = self.images[idx.to(self.device)].float().div_(255)
            y = self.labels[idx.to(self.device)]
            if self.pipeline is not None:
                ctx.index = idx
                if b < start_batch:
                    self.pipeline(x[:1].expand(len(idx), -1, -1, -1), ctx)
                    continue
                if self.pipeline.mixes:  # mixup/cutmix: targets become class probabilities
                    x, y = self.pipeline(x, ctx, F.one_hot(y, self.num_classes).float())
                else:
                    x = self.pipeline(x, ctx)
            elif b < start_batch:
                continue
            if self.world > 1:  # augmented as one global batch; the per-image steps below run on this rank's slice
                x = torch.tensor_split(x, self.world)[self.rank]
                y = torch.tensor_split(y, self.world)[self.rank]
            if self.resize:
                x = resize_images(x, self.resize, self.interpolation)
            x = (x - self.mean) / self.std
            if size is not None:  # progressive resizing: early epochs see smaller, cheaper images
                x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y

    def __iter__(self):
        return self.epoch(0)


def normalize(images_uint8: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    m = torch.tensor(mean, dtype=torch.float32, device=images_uint8.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=images_uint8.device).view(1, -1, 1, 1)
    return (images_uint8.float() / 255 - m) / s
