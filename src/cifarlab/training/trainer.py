"""The trainer: owns epochs, the run directory, the run's state and clock, and calls its callbacks.

A run directory holds:
- ``config.yaml``: the resolved config; ``cifarlab train --recipe RUN/config.yaml`` re-runs it
- ``metrics.jsonl``: one line per epoch (``"type": "epoch"``) plus one per optimizer step with its LR
- ``last.pt`` (every epoch) and ``best.pt`` (best ``best_metric`` so far): see train/checkpoint.py
- ``summary.json``: final figures

Everything optional in a run (metrics log, checkpoints, plateau, weight averaging, freezing, TensorBoard,
CSV/MLflow/W&B loggers, the report, a sweep's per-epoch hook) is a callback (train/callbacks.py); the trainer
runs the loop, keeps :class:`TrainState` and the :class:`Clock`, and agrees with the other ranks when to stop.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from .._version import __version__
from ..config import RESUMABLE, Config, apply_overrides, find_recipe, make_config, to_yaml, validate
from ..data.fetch import data_reference
from ..device import native_bf16, resolve_device, resolve_precision
from ..errors import CifarlabError, Interrupted
from ..files import RunLock, make_dir, read_jsonl, write_jsonl, write_text
from ..models import count_params
from ..models.registry import resolve_model_args
from . import probe
from .callbacks import (
    Callback,
    CallbackList,
    Checkpointing,
    EpochHook,
    FreezeSchedule,
    MetricsLog,
    PlateauStep,
    RunReport,
    WeightAveraging,
)
from .checkpoint import build_checkpoint, check_fits, load_checkpoint, restore_rng, save_checkpoint
from .clock import Clock
from .distill import distillation_loss
from .distributed import DistContext, init_distributed
from .engine import TTA_VIEWS, evaluate_model, train_one_epoch
from .loggers import loggers_from_config
from .optim import group_scales
from .schedules import step_lrs
from .setup import build_parts, model_args_of
from .state import EpochState, TrainState

log = logging.getLogger("cifarlab")


@dataclass
class RunResult:
    run_dir: Path
    summary: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)


def _make_run_dir(cfg: Config) -> tuple[Path, RunLock]:
    """The run directory, locked for this process (a second run on it is refused before it writes anything)."""
    if cfg.out:
        run_dir = Path(cfg.out)
    else:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        run_dir = Path("runs") / f"{cfg.recipe or cfg.model}-{stamp}"
    make_dir(run_dir, what="run directory")
    lock = RunLock(run_dir).acquire()
    try:
        for stale in run_dir.glob(".*.tmp"):  # temp files of a write (cifarlab.files) a SIGKILL cut short
            stale.unlink()
    except OSError as exc:
        lock.release()
        raise CifarlabError(f"run directory {run_dir} is not writable: {exc.strerror or exc}") from None
    return run_dir, lock


# Selective TTA's share of unsure images, assumed until a val pass has measured it (with `val_every: 0` only the
# last pass does): the fast recipes measured 0.24-0.32 at margin 0.5; 0.5 keeps room for a less-trained model without
# keeping back the time of every image's views (which ended 10-minute budget runs 2-3% early).
UNSURE_PRIOR = 0.5

# A budget run that ends more than this share past its budget says so (issue 13: "within 3% of its budget").
OVER_BUDGET = 0.03


class Trainer:
    """Trains one run. `callbacks` are user :class:`Callback` objects, called after the trainer's own.
    `reporter(run_dir, **records)`, if given, writes the plots and report when the run ends or is interrupted.
    `on_epoch(row)`, if given, sees each epoch's row after it is logged and checkpointed."""

    def __init__(self, cfg: Config, resume_from: dict[str, Any] | None = None,
                 reporter: Callable[..., Any] | None = None, on_epoch: Callable[[dict], Any] | None = None,
                 callbacks: Sequence[Callback] = ()):
        self.cfg = validate(cfg)
        self.resume = resume_from
        self.reporter = reporter
        self.on_epoch = on_epoch
        self.user_callbacks = list(callbacks)
        self.dist = DistContext()
        self._signal: int | None = None
        self._previous: dict = {}
        self.signalled = False  # a signal reached this process or, in a distributed run, any rank
        self.stopped_by_signal = False  # the run is ending inside an epoch because of a signal
        self._agreed_stop = 0.0  # distributed: the stop code agreed at the last step
        self.last_eval: dict[str, Any] = {}  # the latest validation pass (confusion, probabilities)
        self._final_tta: tuple[int, dict[str, Any]] = (-1, {})  # (step, the last pass's TTA figures)
        self._lock: RunLock | None = None  # rank 0's hold on the run directory
        self._ends_here = False  # the epoch just trained is the run's last
        self._image_size: int | None = None  # progressive resizing: the side of this epoch's images

    @property
    def resuming(self) -> bool:
        return self.resume is not None

    # --- signals ---------------------------------------------------------------------------------------------
    def _catch_signals(self) -> None:
        """SIGINT/SIGTERM finish the current step, save last.pt and stop; a second signal acts at once."""
        self._signal = None
        self._previous = {}
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._signal = signum
        signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))

    def _restore_signals(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous = {}

    # --- the run ---------------------------------------------------------------------------------------------
    def fit(self) -> RunResult:
        self.dist, device = init_distributed(resolve_device(self.cfg.device))
        # `threads` and `deterministic` are this run's settings; the caller's process gets its own back
        threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
        try:
            result = self._fit(device)
            self.dist.barrier()  # rank 0 ends with the final evaluation and summary; nobody leaves before it
            return result
        except Interrupted:
            self.dist.barrier()  # every rank stopped at the same step; rank 0 is saving last.pt
            raise
        finally:
            self.dist.close()
            if self._lock is not None:
                self._lock.release()
            torch.set_num_threads(threads)
            torch.use_deterministic_algorithms(deterministic)

    def _fit(self, device: torch.device) -> RunResult:
        self.device = device
        self._claim_run_dir()  # before the data is read: a second run on this --out stops here, having read nothing
        try:
            self.parts = build_parts(self.cfg, self.dist, device, self.resuming)
        except BaseException:
            if self._made_run_dir:  # a run that never started leaves no empty folder behind
                shutil.rmtree(self.run_dir, ignore_errors=True)
            raise
        self._open(device)
        self.callbacks.call("on_fit_start", self)
        self._catch_signals()
        try:
            self._loop()
        except (KeyboardInterrupt, Interrupted):
            self.callbacks.call("on_interrupt", self)  # last.pt (after a signal), the plots of what was trained
            raise
        finally:
            self._restore_signals()
        return self._finish()

    def _claim_run_dir(self) -> None:
        """The run directory, made and locked by rank 0; the other ranks learn its name."""
        made = None
        self._made_run_dir = False
        if self.dist.main:
            self._made_run_dir = not (self.cfg.out and Path(self.cfg.out).exists())
            made, self._lock = _make_run_dir(self.cfg)
        self.run_dir = Path(self.dist.broadcast(str(made) if self.dist.main else None))

    def _open(self, device: torch.device) -> None:
        """Resolved config, state and clock (restored on resume), callbacks."""
        cfg, dist = self.cfg, self.dist
        # files by absolute path, so that the run resumes (and re-runs from its config.yaml) from any folder
        saved_cfg = dataclasses.replace(cfg, data=data_reference(cfg.data), out="",
                                        teacher=str(Path(cfg.teacher).resolve()) if cfg.teacher else "")
        self.saved_config = dataclasses.asdict(saved_cfg)
        if dist.main:
            write_text(self.run_dir / "config.yaml", to_yaml(saved_cfg))
        self.state = TrainState(metric=cfg.best_metric, patience=cfg.early_stop_patience)
        if self.resume is not None:
            self._restore(self.resume, device)
        self.steps_per_epoch = len(self.parts.train_loader)
        self.clock = Clock(cfg.time_budget, cfg.epochs * self.steps_per_epoch, self.state.elapsed, dist.enabled,
                           setup=time.perf_counter() - self.parts.started + probe.take_unbilled())
        self.epoch_state = EpochState(self.state.epoch)
        if self.parts.selector is not None:  # the proxy follows the run's schedule (before group multipliers)
            self.parts.selector.base_lr = lambda step: self.lrs(step, [1.0])[0]
        self.callbacks = CallbackList(self._callbacks(), dist.main)
        log.info("model %s: %s parameters; %d steps/epoch of %d images on %s", cfg.model,
                 f"{count_params(self.parts.model):,}", self.steps_per_epoch, cfg.batch_size, device)
        if device.type == "cpu" and resolve_precision(cfg.precision, device) == "bf16" and not native_bf16():
            log.warning("this CPU has no bf16 instructions (avx512_bf16, AMX): bf16 autocast is emulated and "
                        "slower than fp32 here; --precision fp32 gives the same accuracy faster")

    def _restore(self, r: dict[str, Any], device: torch.device) -> None:
        p = self.parts
        p.model.load_state_dict(r["train_state_dict"] or r["state_dict"])
        p.optimizer.load_state_dict(r["optimizer"])
        if p.average is not None and r["ema"]:
            p.average.load_state_dict(r["ema"])
        if p.plateau is not None and r["plateau"]:
            p.plateau.load_state_dict(r["plateau"])
        if p.selector is not None and r.get("selector") is not None:
            p.selector.load_state_dict(r["selector"])
        saved = dict(r["train_state"])
        # metrics.jsonl loses what was written after the checkpoint; a version-1 checkpoint's history comes from it
        rows = _previous_epochs(self.run_dir / "metrics.jsonl", saved["epoch"], self.dist.main)
        saved["history"] = rows if saved["history"] is None else saved["history"]
        self.state.load_state_dict(saved)
        restore_rng(r["rng"], device)
        log.info("resuming %s at epoch %d (step %d)", self.run_dir, self.state.epoch + 1, self.state.step)

    def _callbacks(self) -> list[Callback]:
        cfg, p = self.cfg, self.parts
        own: list[Callback] = [FreezeSchedule()]
        own += [WeightAveraging()] if p.average is not None else []
        own += [MetricsLog()] + ([PlateauStep()] if p.plateau is not None else [])
        own += [Checkpointing(cfg.checkpoint_every)]
        own += loggers_from_config(cfg)
        own += [EpochHook(self.on_epoch)] if self.on_epoch is not None else []
        own += self.user_callbacks
        return own + ([RunReport(self.reporter)] if self.reporter is not None else [])

    def _loop(self) -> None:
        epoch = first = self.state.epoch
        while self.clock.budget_s or epoch < self.cfg.epochs:
            # a resumed run whose budget is already spent trains nothing (every rank agrees); after an epoch,
            # `_ends_here` alone ends the run, so the last epoch trained is always the one validated
            if epoch == first and self.dist.any(int(self.clock.past_budget())):
                if self.resume is not None:  # (a new run stops in _finish, with the reason)
                    log.warning("the --time-budget of %g minutes was spent before this resume (%.3g s of training):"
                                " no step trained", self.cfg.time_budget, self.clock.elapsed())
                break
            self.callbacks.call("on_epoch_start", self, epoch)
            self.parts.rewrap_if_needed(self.cfg, self.dist, self.device)
            self._record(self._train_epoch(epoch))
            if self.state.should_stop():
                log.info("early stop: no better %s for %d epochs (best %.4f at epoch %d)", self.cfg.best_metric,
                         self.state.bad_epochs, self.state.best, self.state.best_epoch)
                break
            if self._ends_here:  # the budget ran out in this epoch (decided with every rank before its val pass)
                break
            epoch += 1
        self._end_stopped_epoch()

    def _end_stopped_epoch(self) -> None:
        """A resumed run that trains no step (its budget already spent, or its epochs already done) but stopped
        inside an epoch ends that epoch where it stopped, as a budget running out there would have: its row, a val
        pass on the weights as they stand (with the final test-time augmentation), its rank, best.pt and last.pt."""
        st = self.state
        if st.partial is None or st.partial.epoch != st.epoch or not st.partial.batch:
            return  # every epoch begun was ended (at an epoch's end, _finish scores that epoch if it was not)
        self._start_epoch(st.epoch)
        self._record(self._epoch_row(self.epoch_state))

    def _record(self, row: dict[str, Any]) -> None:
        """An ended epoch: its row in the state (ranked if it had a val pass), its line, the callbacks' epoch end."""
        scored = "val_loss" in row or self.parts.val_loader is None  # an epoch without a val pass is not ranked
        improved = self.state.record_epoch(row, scored=scored)
        log.info(_epoch_line(row, 0 if self.clock.budget_s else self.cfg.epochs, improved))
        self.callbacks.call("on_epoch_end", self, row)

    def _start_epoch(self, epoch: int) -> EpochState:
        """The epoch's state (the saved one of an epoch a resumed run stopped inside), its size and LR groups."""
        cfg, p = self.cfg, self.parts
        partial = self.state.partial
        es = partial if partial is not None and partial.epoch == epoch else EpochState(epoch)
        self.epoch_state = es
        self._scales = group_scales(p.optimizer)
        if es.size_epoch is None:  # a resumed epoch finishes at the size it started with
            es.size_epoch = self._size_epoch(epoch)
        self._image_size = p.train_loader.size_at(es.size_epoch) if cfg.resize_schedule else None
        return es

    def _train_epoch(self, epoch: int) -> dict[str, Any]:
        """Train the epoch (or the rest of a resumed one) and return its metrics row, evaluated on rank 0."""
        cfg, p = self.cfg, self.parts
        es = self._start_epoch(epoch)
        size_epoch = es.size_epoch
        train_one_epoch(p.train_model, p.train_loader, p.optimizer, es, first_step=self.state.step,
                        lr_fn=self.lrs, label_smoothing=cfg.label_smoothing, grad_clip=cfg.grad_clip,
                        progress=cfg.progress, desc=f"epoch {epoch + 1}" + ("" if cfg.time_budget else
                                                                            f"/{cfg.epochs}"),
                        after_step=self._after_step, stop=self._stop_now, precision=cfg.precision,
                        any_rank=self._agree if self.dist.enabled else None, loss_fn=self._loss_fn(),
                        size_epoch=size_epoch, select=p.selector)
        if self.signalled and not es.complete:
            self.stopped_by_signal = True
            raise Interrupted(self._signal or signal.SIGTERM, str(self.run_dir), self.state.step)
        return self._epoch_row(es)

    def _size_epoch(self, epoch: int) -> float:
        """Where the resize schedule is read for this epoch: the epoch, or under a time budget the epoch the
        schedules have reached on the clock, so the last part of the budget trains at full size."""
        if not self.clock.budget_s or not self.cfg.resize_schedule:
            return epoch
        return self.clock.progress(self.state.step) / self.steps_per_epoch

    def _loss_fn(self) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None:
        """The step's loss when it is not plain cross-entropy: Hinton's distillation loss with a teacher."""
        cfg, teacher = self.cfg, self.parts.teacher
        if teacher is None:
            return None
        return lambda logits, x, y: distillation_loss(logits, teacher(x), y, alpha=cfg.distill_alpha,
                                                      temperature=cfg.distill_temperature,
                                                      label_smoothing=cfg.label_smoothing)

    def _epoch_row(self, es: EpochState) -> dict[str, Any]:
        cfg, p, dist = self.cfg, self.parts, self.dist
        stats = es.totals()
        if dist.enabled:  # the epoch's loss and accuracy over every rank's images
            loss_sum, correct, seen = dist.sum([es.loss_sum, es.correct, es.seen])
            stats.update(train_loss=loss_sum / max(1, seen), train_top1=correct / max(1, seen), images=int(seen))
        row = {"type": "epoch", "epoch": es.epoch + 1, **stats, "lr": es.steps[-1]["lr"] if es.steps else 0.0}
        if self._image_size is not None:  # progressive resizing: the side the epoch trained at
            row["image_size"] = self._image_size
        self._keep_time_for_evaluation(row)  # from this epoch's training time, before deciding it is the last
        # the last epoch: planned, or the one the budget ran out in (every rank agrees, so all end together)
        self._ends_here = bool(dist.any(int(self.clock.past_budget()))) if self.clock.budget_s else (
            es.epoch + 1 >= cfg.epochs)
        if p.val_loader is not None and dist.main and self._validate_after(es.epoch):
            self._validate(row)  # rank 0 evaluates the weights it saves; the others wait
        row["elapsed"] = self.clock.elapsed()
        row = dist.broadcast(row)  # every rank takes the same best/plateau/early-stop decisions
        self._keep_time_for_evaluation(row)
        return row

    def _validate_after(self, epoch: int) -> bool:
        """`val_every`: a val pass after every k-th epoch (0 = none), and always after the last."""
        every = self.cfg.val_every
        return self._ends_here or (every > 0 and (epoch + 1) % every == 0)

    def _validate(self, row: dict[str, Any], last: bool = False) -> None:
        """One plain pass over the validation split: its figures go into `row`. The run's last pass (`last`, or
        the epoch the run ends in) also gives the final test-time-augmented figures from the same forward passes,
        so the plain view is scored once."""
        cfg, p = self.cfg, self.parts
        eval_start = time.perf_counter()
        final = (last or self._ends_here) and cfg.tta != "none"
        ev = evaluate_model(p.evaluated(), p.val_loader, p.num_classes, precision=cfg.precision,
                            return_outputs=self.reporter is not None, tta_margin=cfg.tta_margin,
                            tta=cfg.tta if final else "none", plain_too=final)
        if final:  # kept for _finish, marked with the step whose weights it scored
            self._final_tta = (self.state.step, ev)
            ev = ev["plain"]
        row.update({f"val_{k}": ev[k] for k in ("loss", "top1", "top2", "top3")})
        row["eval_time"] = time.perf_counter() - eval_start
        if "unsure" in ev:
            row["val_unsure"] = ev["unsure"]
        self.last_eval = ev

    def _keep_time_for_evaluation(self, row: dict[str, Any]) -> None:
        """Under a budget, keep back the final evaluation's time: one plain pass, whose logits also serve the
        TTA, then the other views (only on the unsure share of the images with `tta_margin`). Before any val pass
        was timed, a pass is estimated as a third of the time training took per image (a forward pass is about a
        third of a step), and the unsure share as UNSURE_PRIOR."""
        cfg, p = self.cfg, self.parts
        if not self.clock.budget_s or p.val_loader is None:
            return
        seconds = row.get("eval_time")
        if seconds is None:
            seconds = row["train_time"] / max(1, row["images"]) * len(p.val_loader.labels) / 3
        views = len(TTA_VIEWS[cfg.tta]) - 1 if cfg.tta != "none" else 0
        share = row.get("val_unsure", UNSURE_PRIOR) if cfg.tta_margin > 0 else 1.0
        self.clock.keep_for_evaluation(seconds, 1 + views * share)

    # --- one step --------------------------------------------------------------------------------------------
    def lrs(self, step: int, scales: list[float] | None = None) -> list[float]:
        """The LR of each optimizer group at `step`, on the run's clock (of groups with multipliers `scales`:
        default, the model's optimizer's)."""
        plateau = self.parts.plateau
        return step_lrs(self.cfg, self.clock.progress(step), self.steps_per_epoch,
                        plateau.scale if plateau is not None else 1.0, self._scales if scales is None else scales)

    def _after_step(self, step: int, es: EpochState) -> None:
        self.state.step = step + 1
        self.callbacks.call("on_step_end", self, es.steps[-1])

    def _stop_code(self) -> int:
        """2: a signal reached this process; 1: its budget is spent; 0: carry on."""
        return 2 if self._signal is not None else int(self.clock.past_budget())

    def _agree(self, diverged: bool) -> bool:
        """The step's one collective, before its backward: did any rank diverge; the stop code; the clock."""
        flag, self._agreed_stop, self.clock.agreed = self.dist.max(
            [float(diverged), float(self._stop_code()), self.clock.elapsed()])
        return flag > 0

    def _stop_now(self) -> bool:
        """After the step: a distributed run acts on what its ranks agreed at that step."""
        code = int(self._agreed_stop) if self.dist.enabled else self._stop_code()
        self.signalled = code == 2
        return code > 0

    # --- checkpoints and the end -----------------------------------------------------------------------------
    def checkpoint(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """The checkpoint of the run as it stands (train/checkpoint.py documents every key)."""
        p, st = self.parts, self.state
        training = {"train_state": st.state_dict(),
                    "train_state_dict": p.model.state_dict() if p.average is not None else None,
                    "ema": p.average.state_dict() if p.average is not None else None,
                    "optimizer": p.optimizer.state_dict(),
                    "plateau": p.plateau.state_dict() if p.plateau is not None else None}
        if p.selector is not None:
            training["selector"] = p.selector.state_dict()
        return build_checkpoint(model=self.cfg.model, model_args=p.model_args, classes=p.splits.classes,
                                mean=p.mean, std=p.std, state_dict=p.evaluated().state_dict(),
                                config=self.saved_config, metrics=metrics, epoch=st.epoch, step=st.step,
                                training=training)

    def save(self, names: Sequence[str], metrics: dict[str, Any] | None = None,
             partial: EpochState | None = None) -> None:
        """Write the checkpoint once under each name; `partial` marks a save inside that epoch."""
        if partial is not None:
            self.state.partial = partial
            self.state.elapsed = self.clock.elapsed()
        ckpt = self.checkpoint(metrics or {})
        for name in names:
            save_checkpoint(ckpt, self.run_dir / name)

    def _finish(self) -> RunResult:
        """The final evaluation (with test-time augmentation), summary.json, and the callbacks' fit end."""
        cfg, p, st = self.cfg, self.parts, self.state
        if not st.history and self.resume is None:
            spent = (f": its --time-budget of {cfg.time_budget:g} minutes was spent before the first step"
                     if self.clock.budget_s and self.clock.past_budget() else "")
            raise CifarlabError(f"no epochs were run{spent}")
        if not self.dist.main:
            self.callbacks.call("on_fit_end", self, {})
            return RunResult(self.run_dir, {}, st.history)
        if p.val_loader is not None and st.history and "val_loss" not in st.history[-1]:
            # the run ended on an epoch without a val pass (resumed at an epoch's end, it trained nothing more):
            # that epoch's weights are scored now, and ranked, so best.pt is never missing from a run with a split
            self._validate(st.history[-1], last=True)
            _rewrite_epoch_row(self.run_dir / "metrics.jsonl", st.history[-1])  # its line now has the val figures
            log.info("final weights: val top1 %.2f%%", 100 * st.history[-1]["val_top1"])
            if st.rank_last():
                self.save(("best.pt", "last.pt"), metrics=st.history[-1])
        final_tta = None
        if cfg.tta != "none" and p.val_loader is not None and st.history:
            step, ev = self._final_tta
            if step != st.step:  # the last val pass scored other weights (early stopping ended the run earlier)
                ev = evaluate_model(p.evaluated(), p.val_loader, p.num_classes, tta=cfg.tta,
                                    precision=cfg.precision, tta_margin=cfg.tta_margin)
            final_tta = {f"val_{k}": ev[k] for k in ("loss", "top1", "top2", "top3")}
            only = f" (only images with a top-1 margin under {cfg.tta_margin:g})" if cfg.tta_margin > 0 else ""
            log.info("final weights with %s test-time augmentation%s: val top1 %.2f%%", cfg.tta, only,
                     100 * ev["top1"])
        last = st.history[-1] if st.history else {}
        best_row = next((h for h in st.history if h["epoch"] == st.best_epoch), last)
        # without a validation split the lowest training loss chose best.pt: say so under its own name
        metric, best = ((cfg.best_metric, st.best) if cfg.best_metric in best_row or st.best is None
                        else ("train_loss", -st.best))
        summary = {
            "run_dir": str(self.run_dir), "model": cfg.model, "recipe": cfg.recipe,
            "params": count_params(p.model), "classes": p.splits.classes, "epochs_run": last.get("epoch", st.epoch),
            "best_metric": metric, "best": best, "best_epoch": st.best_epoch,
            "final": {k: v for k, v in last.items() if k != "type"},
            "best_epoch_metrics": {k: v for k, v in best_row.items() if k != "type"},
            "final_tta": final_tta, "tta": cfg.tta, "train_seconds": sum(h["train_time"] for h in st.history),
            "wall_seconds": time.perf_counter() - p.started, "device": str(self.device), "mean": p.mean,
            "std": p.std, "cifarlab_version": __version__,
        }
        write_text(self.run_dir / "summary.json", json.dumps(summary, indent=2))
        self._warn_if_over_budget(summary)
        self.callbacks.call("on_fit_end", self, summary)
        shown = "n/a" if best is None else (f"{best:.4f}" if metric.endswith("loss") else f"{100 * best:.2f}%")
        note = " (no validation split: the lowest training loss)" if metric == "train_loss" else ""
        log.info("done: best %s %s at epoch %d%s; run directory %s", metric, shown, st.best_epoch, note,
                 self.run_dir)
        return RunResult(self.run_dir, summary, st.history)

    def _warn_if_over_budget(self, summary: dict[str, Any]) -> None:
        """A budget shorter than the run's fixed costs (reading the data, building the model, the final evaluation)
        cannot be kept: the clock always leaves training the budget less `Clock.OVERHEAD_SHARE` of it. Say by how
        much the run ended late and what budget would have held those costs, rather than let the overrun pass
        unseen."""
        budget = self.clock.budget_s
        spent = self.clock.setup + self.clock.elapsed()
        if not budget or spent <= budget * (1 + OVER_BUDGET):
            return
        fixed = max(0.0, spent - summary["train_seconds"])
        share = Clock.OVERHEAD_SHARE  # (a half: the line says so)
        need = math.ceil(fixed / share / 6) / 10  # minutes, rounded up to a tenth: never "at least 0.0"
        hint = (f", more than half the budget: a budget of at least {need:g} minutes holds them"
                if fixed > budget * share else "")
        log.warning("the run took %.0f s, %.0f%% over its --time-budget of %g minutes; %.0f s of it went to reading "
                    "the data, building the model and evaluating%s", spent, 100 * (spent / budget - 1),
                    self.cfg.time_budget, fixed, hint)


def _previous_epochs(path: Path, upto: int, rewrite: bool = True) -> list[dict]:
    """The epoch rows a resumed run already wrote. Lines written after its checkpoint (a kill can land between
    the metrics line and the checkpoint) are dropped from the file, so no epoch or step appears twice."""
    rows = read_jsonl(path) if path.is_file() else []
    kept = [r for r in rows if (r.get("type") == "epoch" and r["epoch"] <= upto)
            or (r.get("type") == "step" and r["epoch"] < upto)]
    if rewrite and path.is_file():
        write_jsonl(path, kept)
    return [r for r in kept if r["type"] == "epoch"]


def _rewrite_epoch_row(path: Path, row: dict) -> None:
    """Replace the line of `row`'s epoch in metrics.jsonl by `row` (scored after the line was written)."""
    if path.is_file():
        rows = [row if r.get("type") == "epoch" and r.get("epoch") == row["epoch"] else r for r in read_jsonl(path)]
        write_jsonl(path, rows)


def _epoch_line(row: dict, epochs: int, improved: bool) -> str:
    of = f"/{epochs}" if epochs else ""
    line = f"epoch {row['epoch']:>3}{of}  train loss {row['train_loss']:.4f} acc {100 * row['train_top1']:5.2f}%"
    if "val_top1" in row:
        line += (f"  val loss {row['val_loss']:.4f} top1 {100 * row['val_top1']:5.2f}% "
                 f"top3 {100 * row['val_top3']:5.2f}%")
    line += f"  lr {row['lr']:.3g}  {row['train_time']:.0f}s ({row['images'] / row['train_time']:.0f} img/s)"
    return line + ("  *best" if improved else "")


def _ensure_logging() -> None:
    # Notebook users call cifarlab.train() without configuring logging: give them the epoch lines anyway.
    if not log.hasHandlers():  # neither the cifarlab logger nor the root logger has been configured
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)


def resume_config(ckpt: dict[str, Any], run_dir: Path, recipe: str | None, data: str | None,
                  overrides: dict[str, Any]) -> Config:
    """The saved config with the changes a resumed run may make (RESUMABLE: how long it runs, what it reports).
    Any other change ends with one line naming each changed key and its two values, before anything is written:
    a run resumed with another batch size, optimizer, model or data would not be the run it continues."""
    saved = make_config(None, **ckpt["config"])
    given = {k.replace("-", "_"): v for k, v in overrides.items() if v is not None}
    if given.get("teacher"):  # recorded by absolute path: compare like with like
        given["teacher"] = str(Path(given["teacher"]).expanduser().resolve())
    new = apply_overrides(saved, given)
    changed = [(k, getattr(saved, k), getattr(new, k)) for k in given
               if k not in RESUMABLE and getattr(new, k) != getattr(saved, k)]
    if data is not None and data_reference(data) != saved.data:
        changed.append(("data", saved.data, data))
    if recipe is not None:
        name = find_recipe(recipe).stem
        if name not in ("config", saved.recipe):
            changed.append(("recipe", saved.recipe, name))
    if changed:
        what = ", ".join(f"{k} {old!r} -> {val!r}" for k, old, val in changed)
        raise CifarlabError(f"cannot resume {run_dir} with a changed {what}; a resumed run may change only "
                            f"{', '.join(k for k in RESUMABLE if k != 'out')} (start a new run to change more)")
    return make_config(None, **{**dataclasses.asdict(new), "out": str(run_dir)})


def train(recipe: str | None = None, data: str | None = None, *, resume: str | None = None,
          reporter: Callable[..., Any] | None = None, on_epoch: Callable[[dict], Any] | None = None,
          callbacks: Sequence[Callback] = (), **overrides: Any) -> RunResult:
    """Train a model.

    ``recipe`` is a recipe name (``cifarlab.list_recipes()``) or a YAML path (a run's ``config.yaml`` works);
    ``data`` is any source the readers know; every other keyword overrides a config key
    (``epochs=3, lr=0.05, ...``). ``resume=RUN_DIR`` continues that run from its ``last.pt`` (only the keys in
    ``cifarlab.config.RESUMABLE`` may change). ``callbacks`` are :class:`~cifarlab.training.callbacks.Callback`
    objects whose hooks the loop calls.

    >>> result = cifarlab.train("seed001_small", data="cifar10-train-jpg.tar.gz", epochs=3)  # doctest: +SKIP
    >>> result.summary["best"]  # doctest: +SKIP
    """
    _ensure_logging()
    if resume is not None:
        path = Path(resume)
        ckpt = load_checkpoint(path / "last.pt" if path.is_dir() else path)
        if "train_state" not in ckpt:
            raise CifarlabError(f"{resume} holds no training state to resume (an imported or exported checkpoint)")
        cfg = resume_config(ckpt, path if path.is_dir() else path.parent, recipe, data, overrides)
        # the net the saved config describes has the saved weights' shapes (checked without memory), before the
        # data is read or a net is built: a file cannot make the resume allocate what its weights do not hold
        check_fits({**ckpt, "model": cfg.model, "model_args": resolve_model_args(cfg.model, **model_args_of(cfg))})
        return Trainer(cfg, resume_from=ckpt, reporter=reporter, on_epoch=on_epoch, callbacks=callbacks).fit()
    cfg = make_config(recipe, **({"data": data} if data is not None else {}), **overrides)
    return Trainer(cfg, reporter=reporter, on_epoch=on_epoch, callbacks=callbacks).fit()
