"""An exponential moving average of the weights, optionally used as lookahead.

Every `every` steps the average moves towards the live weights with decay `decay ** every`; with
`lookahead` the live weights then jump to the average (hlb-cifar10/airbench style), which only pays off with
a fast BatchNorm momentum. Buffers (BN running stats) are averaged too, so the average is a usable model.
"""

from __future__ import annotations

import torch
from torch import nn


class WeightAverage:
    def __init__(self, model: nn.Module, decay: float, every: int = 5, lookahead: bool = False):
        self.decay = decay
        self.every = max(1, every)
        self.lookahead = lookahead
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}

    @torch.no_grad()
    def update(self, model: nn.Module, step: int, keep: float | None = None) -> None:
        """Every `every` steps: average <- keep * average + (1 - keep) * weights (keep = decay ** every)."""
        if (step + 1) % self.every:
            return
        d = self.decay**self.every if keep is None else keep
        state = model.state_dict()
        for k, avg in self.shadow.items():
            avg.lerp_(state[k], 1 - d)
            if self.lookahead:
                state[k].copy_(avg)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        state = model.state_dict()
        for k, avg in self.shadow.items():
            state[k].copy_(avg)

    def state_dict(self) -> dict:
        return dict(self.shadow)

    def load_state_dict(self, state: dict) -> None:
        for k, v in state.items():
            self.shadow[k].copy_(v)
