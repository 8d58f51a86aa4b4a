"""Classification metrics as pure tensor functions (no model needed to test them)."""

from __future__ import annotations

import torch


def topk_correct(logits: torch.Tensor, target: torch.Tensor, ks: tuple[int, ...] = (1, 2, 3)) -> list[int]:
    """Number of samples whose target is among the k highest logits, for each k (k capped at #classes)."""
    kmax = min(max(ks), logits.shape[1])
    top = logits.topk(kmax, dim=1).indices
    hit = top == target[:, None]
    return [int(hit[:, :min(k, kmax)].any(dim=1).sum()) for k in ks]


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """C[i, j] = number of samples of true class i predicted as j."""
    idx = target.long() * num_classes + pred.long()
    return torch.bincount(idx, minlength=num_classes**2).reshape(num_classes, num_classes)


def per_class_accuracy(confusion: torch.Tensor) -> torch.Tensor:
    totals = confusion.sum(1).clamp_min(1)
    return confusion.diag().double() / totals
