"""Learning-rate schedules as pure functions of the step (nanoGPT's ``get_lr(it)``), plus reduce-on-plateau,
the one schedule that needs the validation metric and so keeps a little state.

``lr_at(cfg, step, steps_per_epoch)`` returns the schedule's learning rate for optimizer step `step` (0-based);
``step_lrs`` adds the plateau, batch scaling and per-group multipliers: it is what the optimizer is given.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

from ..config import Config
from ..metrics import direction


def _warmup(cfg: Config, step: int, steps_per_epoch: int) -> float:
    warm = cfg.warmup_epochs * steps_per_epoch
    return min(1.0, (step + 1) / warm) if warm > 0 else 1.0


# name -> f(cfg, step, steps_per_epoch) -> LR; `step` is already held per epoch where schedule_interval says so.
# config's `schedule` is checked against this table.
SCHEDULES: dict[str, Callable[[Config, float, int], float]] = {}


def _schedule(*names: str):
    def register(fn):
        for name in names:
            SCHEDULES[name] = fn
        return fn
    return register


@_schedule("constant", "plateau")  # plateau: constant, scaled by the Plateau's factor on each plateau
def _constant(cfg: Config, step: float, steps_per_epoch: int) -> float:
    return cfg.lr * _warmup(cfg, step, steps_per_epoch)


@_schedule("multistep")
def _multistep(cfg: Config, step: float, steps_per_epoch: int) -> float:
    passed = sum(1 for m in cfg.milestones if step / steps_per_epoch >= m)
    return cfg.lr * cfg.gamma**passed * _warmup(cfg, step, steps_per_epoch)


@_schedule("exponential")
def _exponential(cfg: Config, step: float, steps_per_epoch: int) -> float:
    return cfg.lr * cfg.gamma ** math.floor(step / steps_per_epoch) * _warmup(cfg, step, steps_per_epoch)


@_schedule("cosine")
def _cosine(cfg: Config, step: float, steps_per_epoch: int) -> float:
    warm = cfg.warmup_epochs * steps_per_epoch
    if step < warm:
        return cfg.lr * (step + 1) / warm
    per_epoch = cfg.schedule_interval == "epoch"
    span = cfg.epochs if per_epoch else cfg.epochs * steps_per_epoch - warm
    pos = (step / steps_per_epoch if per_epoch else step - warm) / max(1, span)
    return cfg.min_lr + (cfg.lr - cfg.min_lr) * 0.5 * (1 + math.cos(math.pi * min(1.0, pos)))


@_schedule("cyclic")
def _cyclic(cfg: Config, step: float, steps_per_epoch: int) -> float:
    return cyclic_lr(step, cfg.cyclic_base_lr, cfg.lr, cfg.cyclic_step_size, cfg.cyclic_mode, cfg.gamma)


@_schedule("triangle")
def _triangle(cfg: Config, step: float, steps_per_epoch: int) -> float:
    return triangle_lr(step, cfg.epochs * steps_per_epoch, cfg.lr, cfg.onecycle_pct_start, cfg.onecycle_div_factor,
                       cfg.final_lr_frac)


@_schedule("onecycle")
def _onecycle(cfg: Config, step: float, steps_per_epoch: int) -> float:
    return onecycle_lr(step, cfg.epochs * steps_per_epoch, cfg.lr, cfg.onecycle_pct_start, cfg.onecycle_div_factor,
                       cfg.onecycle_final_div_factor)


def lr_at(cfg: Config, step: float, steps_per_epoch: int) -> float:
    """The schedule's LR at optimizer step `step` (0-based; a float under a time budget)."""
    if cfg.schedule_interval == "epoch":
        step = (step // steps_per_epoch) * steps_per_epoch  # held constant within an epoch, like .step() per epoch
    return SCHEDULES[cfg.schedule](cfg, step, steps_per_epoch)


def step_lrs(cfg: Config, step: float, steps_per_epoch: int, plateau_scale: float,
             group_scales: list[float]) -> list[float]:
    """The one answer to "what is the LR of this step": for each optimizer group, the schedule at `step` times
    the plateau's scale, the batch scaling and the group's multiplier (`lr_scale`, e.g. bias_lr_scale).

    An LR stated for `lr_reference_batch` scales linearly to the batch the model trains on: `batch_size`, or
    with hard-example selection the `select_keep` share of it (the decay term is lr * wd, so weight decay scales
    with it and stays decoupled from the batch size in wd's units)."""
    trained = max(1, round(cfg.batch_size * cfg.select_keep))  # HardSelector.count's rule
    batch_scale = trained / cfg.lr_reference_batch if cfg.lr_reference_batch else 1.0
    base = lr_at(cfg, step, steps_per_epoch) * plateau_scale * batch_scale
    return [base * g for g in group_scales]


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
    return Plateau(direction(cfg.plateau_metric), cfg.plateau_factor, cfg.plateau_patience,
                   cfg.plateau_cooldown, cfg.plateau_threshold)
