"""Learning-rate schedules as pure functions of the step (nanoGPT's ``get_lr(it)``), plus reduce-on-plateau,
the one schedule that needs the validation metric and so keeps a little state.

``lr_at(cfg, step, steps_per_epoch)`` returns the learning rate for optimizer step `step` (0-based).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from ..config import Config


def _warmup(cfg: Config, step: int, steps_per_epoch: int) -> float:
    warm = cfg.warmup_epochs * steps_per_epoch
    return min(1.0, (step + 1) / warm) if warm > 0 else 1.0


def lr_at(cfg: Config, step: int, steps_per_epoch: int) -> float:
    total = cfg.epochs * steps_per_epoch
    if cfg.schedule_interval == "epoch":
        step = (step // steps_per_epoch) * steps_per_epoch  # held constant within an epoch, like .step() per epoch
    epoch = step / steps_per_epoch
    if cfg.schedule in ("constant", "plateau"):
        return cfg.lr * _warmup(cfg, step, steps_per_epoch)
    if cfg.schedule == "multistep":
        passed = sum(1 for m in cfg.milestones if epoch >= m)
        return cfg.lr * cfg.gamma**passed * _warmup(cfg, step, steps_per_epoch)
    if cfg.schedule == "exponential":
        return cfg.lr * cfg.gamma ** math.floor(epoch) * _warmup(cfg, step, steps_per_epoch)
    if cfg.schedule == "cosine":
        warm = cfg.warmup_epochs * steps_per_epoch
        if step < warm:
            return cfg.lr * (step + 1) / warm
        span = cfg.epochs if cfg.schedule_interval == "epoch" else total - warm
        pos = (epoch if cfg.schedule_interval == "epoch" else step - warm) / max(1, span)
        return cfg.min_lr + (cfg.lr - cfg.min_lr) * 0.5 * (1 + math.cos(math.pi * min(1.0, pos)))
    if cfg.schedule == "cyclic":
        return cyclic_lr(step, cfg.cyclic_base_lr, cfg.lr, cfg.cyclic_step_size, cfg.cyclic_mode, cfg.gamma)
    if cfg.schedule == "triangle":
        return triangle_lr(step, total, cfg.lr, cfg.onecycle_pct_start, cfg.onecycle_div_factor, cfg.final_lr_frac)
    if cfg.schedule == "onecycle":
        return onecycle_lr(step, total, cfg.lr, cfg.onecycle_pct_start, cfg.onecycle_div_factor,
                           cfg.onecycle_final_div_factor)
    raise ValueError(cfg.schedule)


def cyclic_lr(step: int, base_lr: float, max_lr: float, step_size: int, mode: str, gamma: float) -> float:
    """Smith's cyclical LR, as torch's CyclicLR with equal up and down half-cycles."""
    cycle = math.floor(1 + step / (2 * step_size))
    x = abs(step / step_size - 2 * cycle + 1)
    scale = {"triangular": 1.0, "triangular2": 1 / 2 ** (cycle - 1), "exp_range": gamma**step}[mode]
    return base_lr + (max_lr - base_lr) * max(0.0, 1 - x) * scale


def onecycle_lr(step: int, total: int, max_lr: float, pct_start: float, div: float, final_div: float) -> float:
    """Cosine warm-up from max_lr/div to max_lr, then cosine annealing to max_lr/div/final_div."""
    start, end = max_lr / div, max_lr / div / final_div
    up = max(1.0, pct_start * total - 1)
    if step <= up:
        a, b, pos = start, max_lr, step / up
    else:
        a, b, pos = max_lr, end, (step - up) / max(1.0, total - 1 - up)
    return b + (a - b) * 0.5 * (1 + math.cos(math.pi * min(1.0, pos)))


def triangle_lr(step: float, total: int, max_lr: float, pct_start: float, div: float, final_frac: float) -> float:
    """Piecewise linear: lr/div at step 0, lr at pct_start of training, lr*final_frac at the end."""
    peak = pct_start * total
    if step < peak:
        return max_lr * (1 / div + (1 - 1 / div) * step / peak)
    pos = min(1.0, (step - peak) / max(1.0, total - peak))
    return max_lr * (1 + (final_frac - 1) * pos)


@dataclass
class Plateau:
    """Reduce-on-plateau with patience and cool-down (study 002's scheduler); its scale multiplies lr_at."""

    mode: str = "max"
    factor: float = 0.1
    patience: int = 10
    cooldown: int = 0
    threshold: float = 1e-4
    best: float | None = None
    bad_epochs: int = 0
    cooldown_left: int = 0
    scale: float = 1.0

    def step(self, value: float) -> bool:
        """Feed one epoch's metric; returns True when the LR was just reduced."""
        better = self.best is None or (value > self.best * (1 + self.threshold) if self.mode == "max"
                                       else value < self.best * (1 - self.threshold))
        if better:
            self.best, self.bad_epochs = value, 0
        elif self.cooldown_left > 0:
            self.cooldown_left -= 1
        else:
            self.bad_epochs += 1
        if self.bad_epochs > self.patience:
            self.scale *= self.factor
            self.bad_epochs, self.cooldown_left = 0, self.cooldown
            return True
        return False

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for k, v in state.items():
            setattr(self, k, v)


def make_plateau(cfg: Config) -> Plateau | None:
    if cfg.schedule != "plateau":
        return None
    return Plateau("min" if cfg.plateau_metric == "val_loss" else "max", cfg.plateau_factor, cfg.plateau_patience,
                   cfg.plateau_cooldown, cfg.plateau_threshold)
