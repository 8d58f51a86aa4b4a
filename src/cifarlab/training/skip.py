"""Skipping easy images: each epoch trains on fewer of the images the model already fits (InfoBatch's rule).

`skip_easy: 0.5` keeps, for every training image, the loss it had the last time it was trained on (the step's
own forward pass: no extra compute). At each epoch's start, an image whose loss is below the mean of them all is
skipped for that epoch with probability 0.5; the below-mean images that are kept weigh 1 / (1 - 0.5) in the loss,
so that the expected gradient over the epoch is the full data set's. Images never trained on are always kept,
and from `skip_easy_until` of the run's clock on every image trains, at weight 1 (the annealing of Qin et al.,
"InfoBatch: lossless training speed up by unbiased dynamic data pruning", ICLR 2024).

An epoch thus has fewer steps than the data set has batches, so the option runs under a time budget, whose
schedules follow the clock rather than the step count. The scores and the current epoch's choice are saved in
every checkpoint, so a run resumed inside an epoch trains the same images that epoch as it would have.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..data.loader import epoch_generator


class EasySkipper:
    """The per-image scores and each epoch's kept images (`kept`: indices into the training split, or None for
    all of them) with their loss weights."""

    def __init__(self, num_images: int, probability: float, until: float, seed: int):
        self.probability, self.until, self.seed = probability, until, seed
        self.scores = torch.full((num_images,), float("inf"))  # inf: not trained on yet
        self.weights = torch.ones(num_images)
        self.kept: torch.Tensor | None = None
        self.epoch = -1  # the epoch `kept` was chosen for

    def begin_epoch(self, epoch: int, progress: float) -> None:
        """Choose epoch `epoch`'s images, at `progress` (0-1) of the run's clock; a resumed run keeps its choice."""
        if epoch == self.epoch:
            return
        self.epoch = epoch
        self.kept, self.weights = None, torch.ones_like(self.scores)
        seen = torch.isfinite(self.scores)
        if progress >= self.until or self.probability <= 0 or not seen.any():
            return
        easy = seen & (self.scores < self.scores[seen].mean())
        draw = torch.rand(len(self.scores), generator=epoch_generator(self.seed, epoch, stream=3))
        skipped = easy & (draw < self.probability)
        self.weights[easy & ~skipped] = 1 / (1 - self.probability)
        self.kept = (~skipped).nonzero().squeeze(1) if skipped.any() else None

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, index: torch.Tensor,
             label_smoothing: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        """(the batch's weighted mean cross-entropy, which trains; its plain mean, which is logged); each image's
        loss becomes its score."""
        losses = F.cross_entropy(logits, targets, label_smoothing=label_smoothing, reduction="none")
        index = index.to(self.scores.device)
        plain = losses.detach().float()
        self.scores[index] = plain.to(self.scores.device)
        return (losses * self.weights[index].to(losses.device)).mean(), plain.mean()

    def state_dict(self) -> dict[str, Any]:
        return {"scores": self.scores.clone(), "weights": self.weights.clone(),
                "kept": None if self.kept is None else self.kept.clone(), "epoch": self.epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scores = state["scores"].clone()
        self.weights = state["weights"].clone()
        self.kept = None if state["kept"] is None else state["kept"].clone()
        self.epoch = int(state["epoch"])
