"""Optimizers built from the config.

Parameters fall into two groups: filters/weights (ndim > 1) and the rest (biases, BatchNorm shifts). The
second group can be exempt from weight decay (`no_decay_bn_bias`) and can learn `bias_lr_scale` times faster
with its decay divided by the same factor, so its per-step shrinkage is unchanged (the airbench trick).
Every group carries an `lr_scale`, which :func:`cifarlab.training.schedules.step_lrs` multiplies in.

`optimizer: muon` updates conv filters with Muon (momentum, then the update orthogonalized by a Newton-Schulz
iteration) and everything else with Nesterov SGD.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..config import Config


def param_groups(model: nn.Module, cfg: Config) -> list[dict]:
    weights = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    others = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    other_wd = 0.0 if cfg.no_decay_bn_bias else cfg.weight_decay / cfg.bias_lr_scale
    groups = [{"params": weights, "weight_decay": cfg.weight_decay, "lr_scale": 1.0, "muon": cfg.optimizer == "muon"},
              {"params": others, "weight_decay": other_wd, "lr_scale": cfg.bias_lr_scale, "muon": False}]
    return [g for g in groups if g["params"]]


# name -> builder(param groups, cfg); config's `optimizer` is checked against this table.
OPTIMIZERS: dict[str, Callable[[list[dict], Config], torch.optim.Optimizer]] = {
    "sgd": lambda groups, cfg: torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum,
                                               nesterov=cfg.nesterov and cfg.momentum > 0),
    "adam": lambda groups, cfg: torch.optim.Adam(groups, lr=cfg.lr, betas=tuple(cfg.betas)),
    "adamw": lambda groups, cfg: torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas)),
    "muon": lambda groups, cfg: MuonSGD(groups, lr=cfg.lr, momentum=cfg.momentum, muon_lr_ratio=cfg.muon_lr_ratio,
                                        muon_momentum=cfg.muon_momentum, batched=cfg.muon_batched,
                                        ns_steps=cfg.muon_ns_steps,
                                        ns_dtype=torch.bfloat16 if cfg.muon_ns_precision == "bf16" else None),
}


def make_optimizer(model: nn.Module, cfg: Config) -> torch.optim.Optimizer:
    return OPTIMIZERS[cfg.optimizer](param_groups(model, cfg), cfg)


def set_lrs(optimizer: torch.optim.Optimizer, lrs: list[float]) -> None:
    """Give each parameter group its LR, as :func:`cifarlab.training.schedules.step_lrs` computed them."""
    for g, lr in zip(optimizer.param_groups, lrs, strict=True):
        g["lr"] = lr


def group_scales(optimizer: torch.optim.Optimizer) -> list[float]:
    """Each parameter group's LR multiplier."""
    return [g.get("lr_scale", 1.0) for g in optimizer.param_groups]


def orthogonalize(g: torch.Tensor, steps: int = 5, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Approximately replace g (a matrix, or a stack of same-shaped matrices) by U V^T from its SVD, with `steps`
    of a quintic Newton-Schulz iteration whose coefficients push all singular values towards 1 quickly (Muon's
    choice), computed in `dtype` (default: g's; bf16 halves its cost on CPUs with avx512_bf16) and returned in g's.
    A stack is iterated in one batched call; each matrix is scaled by its own norm, so the result equals
    orthogonalizing them one by one."""
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g / (g.norm(dim=(-2, -1), keepdim=True) + 1e-7)
    x = x.to(dtype) if dtype is not None else x
    transposed = x.shape[-2] > x.shape[-1]
    if transposed:
        x = x.mT
    for _ in range(steps):
        s = x @ x.mT
        x = a * x + (b * s + c * s @ s) @ x
    return (x.mT if transposed else x).to(g.dtype)


class MuonSGD(torch.optim.Optimizer):
    """Muon on groups marked `muon` (conv filters, flattened to out x in*k*k), Nesterov SGD elsewhere.

    Muon's learning rate is `lr * muon_lr_ratio`; its step size does not depend on the gradient's scale.
    With `batched`, the filters of one shape are orthogonalized together in one Newton-Schulz call."""

    def __init__(self, params, lr: float, momentum: float = 0.9, muon_lr_ratio: float = 1.0,
                 muon_momentum: float = 0.6, batched: bool = False, ns_steps: int = 5,
                 ns_dtype: torch.dtype | None = None):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=0.0, muon=False))
        self.muon_lr_ratio = muon_lr_ratio
        self.muon_momentum = muon_momentum
        self.batched = batched
        self.ns = dict(steps=ns_steps, dtype=ns_dtype)

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            muon = group["muon"]
            mom = self.muon_momentum if muon else group["momentum"]
            pending: dict[tuple[int, int], list[tuple[torch.Tensor, torch.Tensor]]] = {}
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if group["weight_decay"] and not muon:
                    g = g.add(p, alpha=group["weight_decay"])
                state = self.state[p]
                buf = state.get("momentum_buffer")
                if buf is None:
                    buf = state["momentum_buffer"] = g.clone()
                else:
                    buf.mul_(mom).add_(g)
                update = g.add(buf, alpha=mom)  # Nesterov
                if muon:
                    flat = update.reshape(len(update), -1)
                    pending.setdefault(tuple(flat.shape), []).append((p, flat))
                else:
                    p.add_(update, alpha=-group["lr"])
            for shape, items in pending.items():
                if self.batched:
                    done = orthogonalize(torch.stack([flat for _, flat in items]), **self.ns).unbind(0)
                else:
                    done = [orthogonalize(flat, **self.ns) for _, flat in items]
                gain = max(1.0, shape[0] / shape[1]) ** 0.5
                for (p, _), ortho in zip(items, done, strict=True):
                    if group["weight_decay"]:
                        p.mul_(1 - group["lr"] * self.muon_lr_ratio * group["weight_decay"])
                    p.add_(ortho.reshape(p.shape) * gain, alpha=-group["lr"] * self.muon_lr_ratio)
