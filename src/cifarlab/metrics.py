"""Classification metrics as pure tensor functions (no model needed to test them)."""

from __future__ import annotations

import torch

from .errors import CifarlabError

# Every figure an epoch row holds, with the direction in which it gets better: the one place that says
# "val_loss is minimized". best_metric, plateau_metric and a sweep's metric are checked against it.
METRICS = {"val_top1": "max", "val_top2": "max", "val_top3": "max", "val_loss": "min",
           "train_top1": "max", "train_loss": "min"}


def direction(metric: str) -> str:
    """"max" or "min"; an unknown name is an error listing the known ones."""
    if metric not in METRICS:
        raise CifarlabError(f"unknown metric '{metric}'; known metrics: {', '.join(METRICS)}")
    return METRICS[metric]


def improves(metric: str, value: float, best: float | None) -> bool:
    """Whether `value` beats `best` (None: nothing to beat yet) in `metric`'s direction."""
    if best is None:
        return True
    return value < best if direction(metric) == "min" else value > best


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
