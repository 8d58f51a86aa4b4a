"""One epoch of training and one pass of evaluation; the trainer owns everything across epochs."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..data import BatchLoader
from ..device import autocast
from ..errors import CifarlabError, Diverged
from ..metrics import confusion_matrix, topk_correct
from .optim import set_lrs
from .state import EpochState


def progress_bar(total: int, desc: str, enabled: bool):
    """tqdm's auto bar: a widget in notebooks, a text bar in terminals, nothing in logs."""
    from tqdm.auto import tqdm

    in_notebook = "ipykernel" in sys.modules
    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True,
                disable=not enabled or not (in_notebook or sys.stderr.isatty()))


def train_one_epoch(model: nn.Module, loader: BatchLoader, optimizer: torch.optim.Optimizer, state: EpochState, *,
                    first_step: int, lr_fn: Callable[[int], list[float]], label_smoothing: float = 0.0,
                    grad_clip: float = 0.0, progress: bool = True, desc: str = "",
                    after_step: Callable[[int, EpochState], None] | None = None,
                    stop: Callable[[], bool] | None = None, precision: str = "auto",
                    any_rank: Callable[[bool], bool] | None = None,
                    loss_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                    size_epoch: float | None = None,
                    select: Callable[[torch.Tensor, torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]] | None
                    = None) -> EpochState:
    """Train on the remaining batches of `state.epoch` (all of them, or until `stop()` says so), updating
    `state`. `lr_fn(step)` gives each optimizer group's LR; `after_step(step, state)` runs after each optimizer
    step (the trainer's callbacks: weight averaging, checkpoints, loggers).
    In a distributed run `any_rank(flag)` says whether any rank raised `flag`: every rank stops together
    when one of them diverges, instead of the others waiting for it in the next gradient all-reduce.
    `loss_fn(logits, x, y)` replaces the cross-entropy (e.g. distillation, which also needs the batch).
    `size_epoch` is where the loader reads its resize schedule (default: the epoch itself).
    `select(x, y, step)` returns the part of each batch the model trains on (hard-example selection)."""
    model.train()
    device = loader.device
    step = first_step
    start = time.perf_counter() - state.train_time
    with progress_bar(len(loader), desc, progress) as bar:
        bar.update(state.batch)
        for x, y in loader.epoch(state.epoch, start_batch=state.batch, size_epoch=size_epoch):
            if select is not None:
                x, y = select(x, y, step)
            lrs = lr_fn(step)
            set_lrs(optimizer, lrs)
            lr = lrs[0]  # the logged LR: the first group's (weights, multiplier 1)
            with autocast(device, precision):
                logits = model(x)
                if loss_fn is None:
                    loss = F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)
                else:
                    loss = loss_fn(logits.float(), x, y)
            loss_value = loss.item()  # one sync per step: a non-finite loss must stop before it reaches the weights
            diverged = not math.isfinite(loss_value)
            anywhere = any_rank(diverged) if any_rank is not None else diverged  # every rank asks, every step
            if anywhere:
                where = f"loss is {loss_value}" if diverged else "another rank's loss is not finite"
                raise Diverged(f"training diverged at step {step} (epoch {state.epoch + 1}): {where}"
                               "; lower the learning rate (the last good checkpoint is kept)")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
            state.batch += 1
            state.loss_sum += loss_value * len(y)
            hard = y.argmax(1) if y.is_floating_point() else y  # mixed targets: their larger share counts
            state.correct += int((logits.detach().argmax(1) == hard).sum())
            state.seen += len(y)
            state.steps.append({"type": "step", "step": step, "epoch": state.epoch, "lr": lr, "loss": loss_value})
            state.train_time = time.perf_counter() - start
            if after_step is not None:
                after_step(step, state)
            step += 1
            bar.update(1)
            if bar.n % 20 == 0 and not bar.disable:
                bar.set_postfix(loss=f"{loss_value:.3f}", lr=f"{lr:.2e}")
            if stop is not None and stop():
                break
        else:
            state.complete = True
    state.train_time = time.perf_counter() - start
    return state


def tta_mode(tta: str | bool) -> str:
    """True/False are shorthand for "flip"/"none"; strings must name a mode."""
    mode = ("flip" if tta else "none") if isinstance(tta, bool) else tta
    if mode not in TTA_VIEWS:
        raise CifarlabError(f"unknown test-time augmentation '{tta}'; use {', '.join(TTA_VIEWS)}")
    return mode


def tta_margin(margin: float) -> float:
    """Selective TTA's margin, checked: a number in [0, 1] (0 = every image gets the views)."""
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not 0 <= margin <= 1:
        raise CifarlabError(f"tta_margin must be a number in [0, 1], got {margin!r}")
    return float(margin)


# The views of each test-time augmentation mode: (one-pixel diagonal shift, mirrored, weight). "flip_translate"
# gives the plain image and its mirror half the weight, and the images shifted one pixel up-left and down-right
# (border reflected), each with its mirror, the other half. config's `tta` is checked against this table.
TTA_VIEWS = {
    "none": ((0, False, 1.0),),
    "flip": ((0, False, 0.5), (0, True, 0.5)),
    "flip_translate": ((0, False, 0.25), (0, True, 0.25), (-1, False, 0.125), (-1, True, 0.125),
                       (1, False, 0.125), (1, True, 0.125)),
}


def tta_logits(model: nn.Module, x: torch.Tensor, tta: str, margin: float = 0.0) -> torch.Tensor:
    """The weighted mean of the model's logits over the views of ``TTA_VIEWS[tta]``.

    Selective TTA (``margin`` > 0): the plain view is scored first, and only the images whose top-1 softmax
    probability exceeds the runner-up's by less than ``margin`` get the other views; a sure image keeps its
    plain logits. ``margin`` 0 gives every image every view."""
    views = TTA_VIEWS[tta]
    if margin <= 0 or len(views) == 1:
        return _views_logits(model, x, views)
    return tta_and_plain_logits(model, x, tta, margin)[0]


def tta_and_plain_logits(model: nn.Module, x: torch.Tensor, tta: str, margin: float = 0.0
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """(TTA logits, plain-view logits) from one pass of each view: the plain view is scored once and serves
    both, so a run's last validation and its final TTA evaluation need not score the plain view twice.
    The views and the margin rule are :func:`tta_logits`'s."""
    views = TTA_VIEWS[tta]
    plain = model(x).float()
    if len(views) == 1:
        return plain, plain
    weight = sum(w for d, m, w in views if (d, m) == (0, False))
    rest = tuple(v for v in views if v[:2] != (0, False))
    if margin <= 0:
        return weight * plain + _views_logits(model, x, rest), plain
    unsure = _unsure(plain, margin).nonzero().squeeze(1)
    if not len(unsure):
        return plain, plain
    # the plain view is already scored: weight it in, and run only the others on the unsure images
    mixed = weight * plain[unsure] + _views_logits(model, x[unsure], rest)
    return plain.index_copy(0, unsure, mixed), plain


def _unsure(logits: torch.Tensor, margin: float) -> torch.Tensor:
    """Which images selective TTA sends through every view: top-1 softmax probability less the runner-up's under
    `margin` (with one class, every image)."""
    top2 = logits.float().softmax(1).topk(min(2, logits.shape[1]), dim=1).values
    return top2[:, 0] - top2[:, -1] < margin


def _views_logits(model: nn.Module, x: torch.Tensor, views: tuple) -> torch.Tensor:
    total = 0.0
    for d, mirrored, weight in views:
        v = _moved(x, d) if d else x
        total = total + weight * model(v.flip(3) if mirrored else v).float()
    return total


def _moved(x: torch.Tensor, d: int) -> torch.Tensor:
    """Every image's content moved `d` pixels down and right, the border reflected (as :func:`shift` with one `d`
    for all): a pad and a slice, kept in the input's memory format so the model's fast convolutions see it."""
    h, w = x.shape[-2:]
    p = abs(d)
    v = F.pad(x, (p, p, p, p), mode="reflect")[:, :, p - d:p - d + h, p - d:p - d + w]
    channels_last = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    return v.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


class _Tally:
    """Loss, top-1/2/3 and the confusion matrix of one evaluation, batch by batch (label -1: unlabeled)."""

    def __init__(self, num_classes: int, margin: float = 0.0, keep_outputs: bool = False):
        self.margin, self.keep_outputs = margin, keep_outputs
        self.loss_sum, self.n, self.images, self.unsure = 0.0, 0, 0, 0
        self.hits = [0, 0, 0]
        self.conf = torch.zeros(num_classes, num_classes, dtype=torch.long)
        self.outputs: list[torch.Tensor] = []

    def add(self, logits: torch.Tensor, y: torch.Tensor) -> None:
        self.images += len(y)
        if self.margin > 0:  # how many images a selective TTA at this margin sends through every view
            self.unsure += int(_unsure(logits, self.margin).sum())
        labeled = y >= 0
        if labeled.any():
            yl, ll = y[labeled], logits[labeled]
            self.loss_sum += float(F.cross_entropy(ll, yl, reduction="sum"))
            for i, h in enumerate(topk_correct(ll, yl)):
                self.hits[i] += h
            self.conf += confusion_matrix(ll.argmax(1).cpu(), yl.cpu(), self.conf.shape[0])
            self.n += int(labeled.sum())
        if self.keep_outputs:
            self.outputs.append(logits.softmax(1).cpu())

    def result(self) -> dict:
        n = max(1, self.n)
        out = {"loss": self.loss_sum / n, "top1": self.hits[0] / n, "top2": self.hits[1] / n,
               "top3": self.hits[2] / n, "count": self.n, "confusion": self.conf}
        if self.margin > 0:
            out["unsure"] = self.unsure / max(1, self.images)
        if self.keep_outputs:
            k = self.conf.shape[0]
            out["probs"] = torch.cat(self.outputs) if self.outputs else torch.empty(0, k)
        return out


@torch.no_grad()
def evaluate_model(model: nn.Module, loader: BatchLoader, num_classes: int, *, tta: str = "none",
                   return_outputs: bool = False, progress: bool = False, precision: str = "auto",
                   tta_margin: float = 0.0, plain_too: bool = False) -> dict:
    """Loss, top-1/2/3 and the confusion matrix over every batch; optionally the softmax outputs.
    `tta` is none | flip | flip_translate; with `tta_margin` > 0 only unsure images get the views
    (:func:`tta_logits`). A plain pass with `tta_margin` > 0 also reports the share of images that margin
    finds unsure. `plain_too` (with a `tta`): the plain view's figures as well, under "plain", from the same
    forward passes; the outputs and the unsure share are then the plain view's."""
    model.eval()
    device = loader.device
    both = plain_too and tta != "none"
    shown = _Tally(num_classes, tta_margin if tta == "none" else 0.0, return_outputs and not both)
    plain = _Tally(num_classes, tta_margin, return_outputs) if both else None
    with progress_bar(len(loader), "eval", progress) as bar:
        for x, y in loader.epoch(0):
            with autocast(device, precision):
                if both:
                    logits, plain_logits = tta_and_plain_logits(model, x, tta, tta_margin)
                    plain.add(plain_logits, y)
                else:
                    logits = tta_logits(model, x, tta, tta_margin)
            shown.add(logits, y)
            bar.update(1)
    result = shown.result()
    if plain is not None:
        result["plain"] = plain.result()
    return result
