"""Hard-example selection: a small proxy net scores each batch and the model trains on the hardest share of it.

`select_keep: 0.5` makes every step train the model on the half of its batch with the highest loss under a
proxy, a fast net several times narrower than the model (`select_proxy_widths`). The proxy learns alongside: every
`select_proxy_every`-th step it takes an SGD step on the images it selected, with the run's optimizer settings
and learning-rate schedule. The idea is airbench96_faster's (a proxy chooses the examples a larger net trains
on); here the proxy runs inside the step instead of in a separate run before it. The model's compute per step
falls to the kept share, the proxy's forward pass costs a few percent of it.

The selection is a pure function of the proxy's weights and the batch, and the proxy's weights and optimizer
state are saved in every checkpoint, so a resumed run selects exactly what the uninterrupted one would have.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from ..config import Config
from ..device import autocast
from ..errors import Diverged
from ..models.fast import FastNet
from .optim import group_scales, make_optimizer, set_lrs


class HardSelector:
    """Keeps the `keep` share of each batch that the proxy finds hardest; trains the proxy every `every` steps.

    `base_lr(step)` is the schedule's LR at a step before any group's multiplier (each proxy group applies its
    own, as the model's groups do)."""

    def __init__(self, cfg: Config, num_classes: int, whitening_images: torch.Tensor, device: torch.device,
                 base_lr: Callable[[int], float] | None = None):
        self.keep, self.every = cfg.select_keep, cfg.select_proxy_every
        self.label_smoothing, self.precision, self.device = cfg.label_smoothing, cfg.precision, device
        self.model = FastNet(tuple(cfg.select_proxy_widths), num_classes)
        self.model.init_from_data(whitening_images)
        self.model.whiten.bias.requires_grad_(False)  # the proxy's stem stays as the data set it
        self.model = self.model.to(device)
        if cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = make_optimizer(self.model, cfg)
        self.base_lr = base_lr

    def count(self, batch: int) -> int:
        """How many images of a batch of `batch` the model trains on (at least one)."""
        return max(1, min(batch, round(self.keep * batch)))

    def __call__(self, x: torch.Tensor, y: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The hardest `keep` share of the batch (in the batch's order); a proxy step on it every `every` steps."""
        k = self.count(len(x))
        learn = step % self.every == 0
        self.model.train()
        with torch.set_grad_enabled(learn), autocast(self.device, self.precision):
            logits = self.model(x).float()
        losses = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing, reduction="none")
        # ties broken by position, so the selection does not depend on the sort's internals
        order = torch.argsort(losses.detach(), descending=True, stable=True)
        idx = order[:k].sort().values
        if learn:
            if self.base_lr is not None:
                base = self.base_lr(step)
                set_lrs(self.optimizer, [base * s for s in group_scales(self.optimizer)])
            loss = losses[idx].mean()
            if not math.isfinite(loss.item()):  # a diverged proxy would choose at random from then on
                raise Diverged(f"the selection proxy's loss is {loss.item()} at step {step}; lower the learning "
                               "rate or select_proxy_widths (the last good checkpoint is kept)")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        return x[idx], y[idx]

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
