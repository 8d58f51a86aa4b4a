"""Callbacks: what a run does besides training, attached to named hooks of the trainer's loop.

The trainer calls, in this order::

    on_fit_start                 once, after the model, data and (on resume) the saved state are in place
    on_epoch_start(epoch)        before each epoch (0-based), including a resumed partial one
    on_step_end(step_log)        after every optimizer step: {"type": "step", "step", "epoch", "lr", "loss"}
    on_epoch_end(row)            after each completed epoch, with its metrics row (the one in metrics.jsonl)
    on_interrupt                 when a signal or Ctrl-C stops the run (last.pt is already saved)
    on_fit_end(summary)          once, after the final evaluation, with the run's summary

Every hook receives the :class:`~cifarlab.training.trainer.Trainer` first. What a callback may read from it:
``cfg`` (the resolved :class:`~cifarlab.config.Config`), ``run_dir``, ``state`` (the
:class:`~cifarlab.training.state.TrainState`: ``epoch``, ``step``, ``best``, ``history`` ...), ``epoch_state`` (progress
through the current epoch), ``parts`` (model, optimizer, loaders), ``dist`` (rank and world).

A callback that writes files or talks to a service sets ``main_only = True``: in a distributed run only rank 0
calls it. The others run on every rank (weight averaging and freezing change what every rank trains).
An exception raised by a hook ends the run (the sweep prunes a trial this way).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from torch import nn

from ..files import append_lines, write_text
from ..models import summarize

if TYPE_CHECKING:
    from .trainer import Trainer

log = logging.getLogger("cifarlab")


class Callback:
    """Subclass and override the hooks you need; each default does nothing."""

    main_only: bool = False  # True: runs on rank 0 only (it writes files, logs to a service)

    def on_fit_start(self, trainer: Trainer) -> None:
        pass

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        pass

    def on_step_end(self, trainer: Trainer, step_log: dict[str, Any]) -> None:
        pass

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None:
        pass

    def on_interrupt(self, trainer: Trainer) -> None:
        pass

    def on_fit_end(self, trainer: Trainer, summary: dict[str, Any]) -> None:
        pass


HOOKS = ("on_fit_start", "on_epoch_start", "on_step_end", "on_epoch_end", "on_interrupt", "on_fit_end")


class CallbackList:
    """Calls one hook on every callback, in order, skipping main-only ones off rank 0."""

    def __init__(self, callbacks: list[Callback], main: bool):
        self.callbacks = [c for c in callbacks if main or not getattr(c, "main_only", False)]

    def call(self, hook: str, trainer: Trainer, *args: Any) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(trainer, *args)


# ---------------------------------------------------------------------------------------------------------
# The trainer's own callbacks: everything optional in a run, each one concern.
# ---------------------------------------------------------------------------------------------------------

class FreezeSchedule(Callback):
    """Which parameters train this epoch: ``freeze: backbone`` (the new classifier learns alone until
    ``unfreeze_epoch``), and the fast nets' whitening-stem bias, which stops after ``stem_bias_epochs``."""

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        cfg, model = trainer.cfg, trainer.parts.model
        if cfg.freeze == "backbone":
            frozen = cfg.unfreeze_epoch == 0 or epoch < cfg.unfreeze_epoch
            head = trainer.parts.head
            for name, param in model.named_parameters():
                param.requires_grad_(name.startswith(head) or not frozen)
        if cfg.stem_bias_epochs and epoch >= cfg.stem_bias_epochs and hasattr(model, "whiten"):
            model.whiten.bias.requires_grad_(False)  # the stem's bias has settled; stop paying for it


class WeightAveraging(Callback):
    """After each step, moves the weight average (``ema_decay``) towards the live weights; with ``ema_ramp`` its
    keep factor grows as the schedule's progress ** ema_ramp."""

    def on_step_end(self, trainer: Trainer, step_log: dict[str, Any]) -> None:
        cfg, clock, s = trainer.cfg, trainer.clock, step_log["step"]
        ramp = (clock.progress(s + 1) / clock.total_steps) ** cfg.ema_ramp if cfg.ema_ramp else 1.0
        trainer.parts.average.update(trainer.parts.model, s, keep=ramp * cfg.ema_decay ** cfg.ema_every)


class MetricsLog(Callback):
    """metrics.jsonl: each epoch's step lines, then its epoch row, appended when the epoch ends."""

    main_only = True

    def on_fit_start(self, trainer: Trainer) -> None:
        if not trainer.resuming:
            write_text(trainer.run_dir / "metrics.jsonl", "")

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None:
        # one durable append per epoch: a full disk cuts it back whole, and last.pt (written next) stays behind it
        append_lines(trainer.run_dir / "metrics.jsonl", [json.dumps(s) for s in trainer.epoch_state.steps]
                     + [json.dumps(row)])


class PlateauStep(Callback):
    """Feeds each epoch's ``plateau_metric`` to reduce-on-plateau, whose scale the LR of every step includes."""

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None:
        plateau, metric = trainer.parts.plateau, trainer.cfg.plateau_metric
        if metric in row and plateau.step(row[metric]):
            log.info("plateau: learning rate scaled to %.3g of its schedule", plateau.scale)


class Checkpointing(Callback):
    """last.pt at every epoch end (and every ``every`` steps inside one), best.pt when the epoch is the best so
    far, and last.pt inside the epoch a signal stopped."""

    main_only = True

    def __init__(self, every: int = 0):
        self.every = every  # optimizer steps between mid-epoch saves (0 = epoch ends only)

    def on_step_end(self, trainer: Trainer, step_log: dict[str, Any]) -> None:
        if self.every and (step_log["step"] + 1) % self.every == 0:
            trainer.save(("last.pt",), partial=trainer.epoch_state)

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None:
        best = trainer.state.best_epoch == row["epoch"]
        # best.pt before last.pt: if a write fails between them, last.pt still says the epoch is to be trained
        # again, so a resume rewrites both; the other order could leave a stale best.pt the state calls current
        trainer.save(("best.pt", "last.pt") if best else ("last.pt",), metrics=row)

    def on_interrupt(self, trainer: Trainer) -> None:
        if trainer.stopped_by_signal:
            trainer.save(("last.pt",), partial=trainer.epoch_state)


class RunReport(Callback):
    """Plots and report.html, from the final (or, when interrupted, the last) evaluation's outputs."""

    main_only = True

    def __init__(self, reporter: Callable[..., Any]):
        self.reporter = reporter  # reporter(run_dir, **records), e.g. cifarlab.evaluation.report.write_run_report

    def _report(self, trainer: Trainer) -> None:
        parts, last = trainer.parts, trainer.last_eval
        val = parts.splits.val
        linear = [m for m in parts.eval_model.modules() if isinstance(m, nn.Linear)]
        self.reporter(trainer.run_dir, classes=parts.splits.classes, confusion=last.get("confusion"),
                      val_images=val.images if val is not None else None,
                      val_labels=val.labels if val is not None else None,
                      val_probs=last.get("probs"), classifier=linear[-1].weight if linear else None,
                      model_summary=summarize(parts.eval_model).table())

    def on_interrupt(self, trainer: Trainer) -> None:
        self._report(trainer)

    def on_fit_end(self, trainer: Trainer, summary: dict[str, Any]) -> None:
        self._report(trainer)


class EpochHook(Callback):
    """Calls ``fn(row)`` after each epoch is logged and checkpointed (a sweep reports to Optuna this way, and
    prunes a trial by raising)."""

    def __init__(self, fn: Callable[[dict[str, Any]], Any]):
        self.fn = fn

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None:
        self.fn(row)
