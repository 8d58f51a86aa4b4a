"""The trainer: owns epochs, the run directory, checkpoints, best-model selection and early stopping.

A run directory holds:
- ``config.yaml``: the resolved config; ``cifarlab train --recipe RUN/config.yaml`` re-runs it
- ``metrics.jsonl``: one line per epoch (``"type": "epoch"``) plus one per optimizer step with its LR
- ``last.pt`` (every epoch) and ``best.pt`` (best ``best_metric`` so far)
- ``summary.json``: final figures
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import logging
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import __version__
from ..config import Config, make_config, to_yaml, validate
from ..data import BatchLoader, Pipeline, channel_mean_std, load_splits, normalize
from ..errors import CifarlabError, Interrupted
from ..models import count_params, create_model, list_models, summarize
from ..models.weights import head_of, load_weights, read_state_dict
from .checkpoint import load_checkpoint, save_checkpoint
from .distributed import DistContext, init_distributed, rewrap_model, wrap_model
from .ema import WeightAverage
from .engine import TTA_VIEWS, EpochState, evaluate_model, train_one_epoch
from .optim import make_optimizer
from .schedules import lr_at, make_plateau

log = logging.getLogger("cifarlab")


@dataclass
class RunResult:
    run_dir: Path
    summary: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Setup:
    """What a run trains with, built by `Trainer._setup` before the first epoch."""

    splits: Any
    mean: list[float]
    std: list[float]
    model_args: dict[str, Any]
    model: nn.Module  # the trained weights
    eval_model: nn.Module  # what is evaluated and saved (the model itself, or the copy holding its average)
    train_model: nn.Module  # the model as stepped: DDP-wrapped and/or compiled
    optimizer: torch.optim.Optimizer
    plateau: Any
    average: WeightAverage | None
    train_loader: BatchLoader
    val_loader: BatchLoader | None
    started: float  # perf_counter before the data was read


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise CifarlabError(f"device '{name}' requested but no CUDA GPU is available")
    try:
        return torch.device(name)
    except RuntimeError:
        raise CifarlabError(f"unknown device '{name}'; use auto, cpu, cuda or cuda:N") from None


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True


def _better(metric: str, value: float, best: float | None) -> bool:
    if best is None:
        return True
    return value < best if metric == "val_loss" else value > best


def _make_run_dir(cfg: Config) -> Path:
    if cfg.out:
        run_dir = Path(cfg.out)
    else:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        run_dir = Path("runs") / f"{cfg.recipe or cfg.model}-{stamp}"
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
        for stale in run_dir.glob(".*.pt.*.tmp"):  # temp files of a checkpoint write a SIGKILL cut short
            stale.unlink()
    except OSError as exc:
        raise CifarlabError(f"run directory {run_dir} is not writable: {exc.strerror or exc}") from None
    return run_dir


class Trainer:
    """`reporter(run_dir, **records)`, if given, is called when the run ends or is interrupted, with the
    final validation predictions, so that reports need no extra pass over the data. `on_epoch(row)`, if
    given, sees each epoch's metrics row after it is logged and checkpointed; an exception it raises ends
    the run (a sweep prunes trials this way)."""

    def __init__(self, cfg: Config, resume_from: dict[str, Any] | None = None,
                 reporter: Callable[..., Any] | None = None, on_epoch: Callable[[dict], Any] | None = None):
        self.cfg = validate(cfg)
        self.resume = resume_from
        self.reporter = reporter
        self.on_epoch = on_epoch
        self.dist = DistContext()
        self._signal: int | None = None
        self._previous: dict = {}

    def _catch_signals(self) -> None:
        """SIGINT/SIGTERM finish the current step, save last.pt and stop; a second signal acts at once."""
        self._signal = None
        self._previous = {}
        if threading.current_thread() is not threading.main_thread():
            return

        def handler(signum, frame):
            self._signal = signum
            signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))

        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, handler)

    def _restore_signals(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous = {}

    def fit(self) -> RunResult:
        self.dist, device = init_distributed(resolve_device(self.cfg.device))
        try:
            result = self._fit(device)
            self.dist.barrier()  # rank 0 ends with the final evaluation and summary; nobody leaves before it
            return result
        except Interrupted:
            self.dist.barrier()  # every rank stopped at the same step; rank 0 is saving last.pt
            raise
        finally:
            self.dist.close()

    def _setup(self, device: torch.device) -> _Setup:
        """Data, model (pretrained weights, data-set stem), optimizer, weight average and loaders."""
        cfg, dist = self.cfg, self.dist
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        seed_everything(cfg.seed, cfg.deterministic)
        if dist.enabled and cfg.batch_size < dist.world:
            raise CifarlabError(f"batch_size {cfg.batch_size} is smaller than the {dist.world} processes sharing it")
        pipeline = Pipeline(cfg.augment)  # validate augmentations and the model name before any data is read
        if cfg.model not in list_models():
            raise CifarlabError(f"unknown model '{cfg.model}'; known models: {', '.join(list_models())}")

        t0 = time.perf_counter()
        splits = load_splits(cfg.data, cfg.val_split, cfg.split_seed, cfg.label_mode)
        num_classes = len(splits.classes)
        auto_mean, auto_std = (channel_mean_std(splits.train.images) if "auto" in (cfg.mean, cfg.std)
                               else (None, None))
        mean = list(cfg.mean) if cfg.mean != "auto" else auto_mean
        std = list(cfg.std) if cfg.std != "auto" else auto_std
        log.info("data %s (%s): %d train / %d val images, %d classes, loaded in %.1fs", splits.source.path,
                 splits.source.kind, len(splits.train), len(splits.val) if splits.val else 0, num_classes,
                 time.perf_counter() - t0)

        model_args = {"dropout": cfg.dropout, "block_dropout": cfg.block_dropout, **cfg.model_args}
        model = create_model(cfg.model, num_classes=num_classes, **model_args)
        if cfg.pretrained and self.resume is None:
            skipped = load_weights(model, read_state_dict(cfg.pretrained, cfg.model), where=cfg.pretrained)
            log.info("weights from %s%s", cfg.pretrained, f" (new classifier: {', '.join(skipped)})" if skipped else "")
        if hasattr(model, "init_from_data"):  # e.g. the fast nets' patch-whitening stem
            # A seeded random subset: sources are often sorted by class (the JPEG tarball is).
            pick = torch.randperm(len(splits.train), generator=torch.Generator().manual_seed(cfg.seed))[:5000]
            model.init_from_data(normalize(splits.train.images[pick], mean, std))
        model = model.to(device)
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        optimizer = make_optimizer(model, cfg)
        average = WeightAverage(model, cfg.ema_decay, cfg.ema_every, cfg.lookahead) if cfg.ema_decay > 0 else None
        # What is evaluated and saved: the live model, or a copy that receives the weight average.
        eval_model = copy.deepcopy(model) if average is not None else model
        train_model = wrap_model(model, dist, device, cfg.sync_bn)
        train_loader = BatchLoader(splits.train, cfg.batch_size, mean=mean, std=std, shuffle=True, drop_last=False,
                                   pipeline=pipeline, seed=cfg.seed, device=device, channels_last=cfg.channels_last,
                                   resize_schedule=cfg.resize_schedule, shard=(dist.rank, dist.world),
                                   resize=cfg.resize, interpolation=cfg.interpolation)
        val_loader = (BatchLoader(splits.val, cfg.eval_batch_size, mean=mean, std=std, device=device,
                                  channels_last=cfg.channels_last, resize=cfg.resize, interpolation=cfg.interpolation)
                      if splits.val is not None else None)
        return _Setup(
            splits=splits, mean=mean, std=std, model_args=model_args, model=model, eval_model=eval_model,
            train_model=torch.compile(train_model) if cfg.compile else train_model,
            optimizer=optimizer, plateau=make_plateau(cfg), average=average,
            train_loader=train_loader, val_loader=val_loader, started=t0)

    def _fit(self, device: torch.device) -> RunResult:
        cfg, dist, main = self.cfg, self.dist, self.dist.main
        su = self._setup(device)
        splits, mean, std, model_args, model = su.splits, su.mean, su.std, su.model_args, su.model
        eval_model, train_model, optimizer, plateau, average = (su.eval_model, su.train_model, su.optimizer,
                                                                su.plateau, su.average)
        train_loader, val_loader, t0 = su.train_loader, su.val_loader, su.started
        num_classes = len(splits.classes)
        head = head_of(model) + "."
        wrapped_for = tuple(p.requires_grad for p in model.parameters())  # the parameters DDP was built for
        steps_per_epoch = len(train_loader)

        # Only rank 0 writes; the others learn its run directory's name.
        run_dir = Path(dist.broadcast(str(_make_run_dir(cfg)) if main else None))
        saved_cfg = dataclasses.replace(cfg, data=str(Path(cfg.data).expanduser().resolve()), out="")
        if main:
            (run_dir / "config.yaml").write_text(to_yaml(saved_cfg))

        start_epoch, step, best, best_epoch, bad_epochs = 0, 0, None, -1, 0
        partial: EpochState | None = None  # an epoch a resumed run stopped inside
        if self.resume is not None:
            r = self.resume
            model.load_state_dict(r.get("train_state_dict") or r["state_dict"])
            optimizer.load_state_dict(r["optimizer"])
            if average is not None and r.get("ema"):
                average.load_state_dict(r["ema"])
            if plateau is not None and r.get("plateau"):
                plateau.load_state_dict(r["plateau"])
            start_epoch, step = r["epoch"], r["step"]
            partial = EpochState(**r["partial"]) if r.get("partial") else None
            best, best_epoch, bad_epochs = r.get("best"), r.get("best_epoch", -1), r.get("bad_epochs", 0)
            _restore_rng(r, device)
            log.info("resuming %s at epoch %d (step %d)", run_dir, start_epoch + 1, step)
        elif main:
            (run_dir / "metrics.jsonl").write_text("")

        n_params = count_params(model)
        log.info("model %s: %s parameters; %d steps/epoch of %d images on %s", cfg.model, f"{n_params:,}",
                 steps_per_epoch, cfg.batch_size, device)

        budget_s = cfg.time_budget * 60
        total_steps = cfg.epochs * steps_per_epoch

        # Distributed: one collective per step, when the engine asks whether any rank diverged, also agrees on
        # the stop code (signal or budget) and the clock, so every rank sets the same LR and stops at one step.
        agreed = {"stop": 0, "elapsed": 0.0}
        # Seconds of the budget kept for the evaluation after the last epoch (and its test-time augmentation):
        # training anneals fully by budget - reserve, so the run still ends on time. Grows with each epoch's
        # measured evaluation; never more than half the budget.
        reserve = 0.0

        def train_budget() -> float:
            return budget_s - min(reserve, budget_s / 2)

        def progress_step(s: int) -> float:
            # With a time budget the schedules see the elapsed fraction of it, mapped onto the planned steps.
            # Distributed ranks read the clock agreed at the last step (the largest: the slowest rank's).
            if not budget_s:
                return s
            elapsed = agreed["elapsed"] if dist.enabled else time.perf_counter() - train_start
            return min(1.0, elapsed / train_budget()) * total_steps

        # lr given for a reference batch size scales linearly to the one used (the decay term is lr * wd,
        # so weight decay scales with it and stays decoupled from the batch size in wd's units)
        batch_scale = cfg.batch_size / cfg.lr_reference_batch if cfg.lr_reference_batch else 1.0

        def lr_fn(s: int) -> float:
            plateau_scale = plateau.scale if plateau is not None else 1.0
            return lr_at(cfg, progress_step(s), steps_per_epoch) * plateau_scale * batch_scale

        def past_budget() -> bool:  # this process's clock; `dist.any` makes every rank agree
            return bool(budget_s) and time.perf_counter() - train_start >= train_budget()

        def out_of_time() -> bool:
            return bool(dist.any(int(past_budget())))

        def after_step(s: int, state: EpochState) -> None:
            if average is not None:
                ramp = (progress_step(s + 1) / total_steps) ** cfg.ema_ramp if cfg.ema_ramp else 1.0
                average.update(model, s, keep=ramp * cfg.ema_decay ** cfg.ema_every)
            if main and cfg.checkpoint_every and (s + 1) % cfg.checkpoint_every == 0:
                save_checkpoint(checkpoint(state.epoch, {}, s + 1, state), run_dir / "last.pt")

        signalled = False  # a signal reached this process or, in a distributed run, any rank

        def stop_code() -> int:  # 2: a signal reached this process; 1: its budget is spent; 0: carry on
            return 2 if self._signal is not None else int(past_budget())

        def any_rank(diverged: bool) -> bool:  # the step's one collective, before its backward
            flag, agreed["stop"], agreed["elapsed"] = dist.max(
                [float(diverged), float(stop_code()), time.perf_counter() - train_start])
            return flag > 0

        def stop_now() -> bool:  # after the step: a distributed run acts on what its ranks agreed at that step
            nonlocal signalled
            code = int(agreed["stop"]) if dist.enabled else stop_code()
            signalled = code == 2
            return code > 0

        def evaluated() -> nn.Module:
            if average is not None:
                average.copy_to(eval_model)
            return eval_model

        def checkpoint(epoch_done: int, metrics: dict, step: int, state: EpochState | None = None) -> dict:
            return {"model": cfg.model, "model_args": model_args, "num_classes": num_classes,
                    "classes": splits.classes, "mean": mean, "std": std, "state_dict": evaluated().state_dict(),
                    "train_state_dict": model.state_dict() if average is not None else None,
                    "ema": average.state_dict() if average is not None else None,
                    "optimizer": optimizer.state_dict(), "plateau": plateau.state_dict() if plateau else None,
                    "epoch": epoch_done, "step": step, "best": best, "best_epoch": best_epoch,
                    "bad_epochs": bad_epochs, "config": dataclasses.asdict(saved_cfg), "metrics": metrics,
                    "torch_rng": torch.get_rng_state(), "python_rng": _python_rng(), "numpy_rng": _numpy_rng(),
                    "cuda_rng": torch.cuda.get_rng_state_all() if device.type == "cuda" else None,
                    "cifarlab_version": __version__,
                    "partial": state.state_dict() if state is not None else None}

        tb = _tensorboard_writer(run_dir) if cfg.tensorboard and main else None
        history: list[dict] = _previous_epochs(run_dir / "metrics.jsonl", start_epoch, main) if self.resume else []
        agreed["elapsed"] = history[-1]["elapsed"] if history else 0.0  # a resumed run's clock so far
        train_start = time.perf_counter() - agreed["elapsed"]
        last_metrics: dict = history[-1] if history else {}
        last_eval: dict = {}

        def report() -> None:
            if self.reporter is None or not main:
                return
            linear = [m for m in eval_model.modules() if isinstance(m, nn.Linear)]
            self.reporter(run_dir, classes=splits.classes, confusion=last_eval.get("confusion"),
                          val_images=splits.val.images if splits.val is not None else None,
                          val_labels=splits.val.labels if splits.val is not None else None,
                          val_probs=last_eval.get("probs"), classifier=linear[-1].weight if linear else None,
                          model_summary=summarize(eval_model).table())

        epochs = itertools.count(start_epoch) if budget_s else range(start_epoch, cfg.epochs)
        self._catch_signals()
        try:
            for epoch in epochs:
                if out_of_time():
                    break
                if cfg.freeze == "backbone":  # fine-tuning: the new classifier learns alone, then (maybe) all
                    frozen = cfg.unfreeze_epoch == 0 or epoch < cfg.unfreeze_epoch
                    for name, param in model.named_parameters():
                        param.requires_grad_(name.startswith(head) or not frozen)
                if cfg.stem_bias_epochs and epoch >= cfg.stem_bias_epochs and hasattr(model, "whiten"):
                    model.whiten.bias.requires_grad_(False)  # the stem's bias has settled; stop paying for it
                trainable = tuple(p.requires_grad for p in model.parameters())
                if dist.enabled and trainable != wrapped_for:  # DDP reduces the gradients of a fixed set: renew it
                    train_model = rewrap_model(model, device)
                    train_model = torch.compile(train_model) if cfg.compile else train_model
                    wrapped_for = trainable
                state = partial if partial is not None and partial.epoch == epoch else EpochState(epoch)
                done_before = state.batch
                state = train_one_epoch(
                    train_model, train_loader, optimizer, state, first_step=step, lr_fn=lr_fn,
                    label_smoothing=cfg.label_smoothing, grad_clip=cfg.grad_clip, progress=cfg.progress,
                    desc=f"epoch {epoch + 1}" + ("" if budget_s else f"/{cfg.epochs}"), after_step=after_step,
                    stop=stop_now, precision=cfg.precision,
                    any_rank=any_rank if dist.enabled else None)
                step += state.batch - done_before
                if signalled and not state.complete:
                    if main:
                        save_checkpoint(checkpoint(epoch, {}, step, state), run_dir / "last.pt")
                    raise Interrupted(self._signal or signal.SIGTERM, str(run_dir), step)
                stats, step_logs = state.totals(), state.steps
                if dist.enabled:  # the epoch's loss and accuracy over every rank's images
                    loss_sum, correct, seen = dist.sum([state.loss_sum, state.correct, state.seen])
                    stats.update(train_loss=loss_sum / max(1, seen), train_top1=correct / max(1, seen),
                                 images=int(seen))
                row = {"type": "epoch", "epoch": epoch + 1, **stats, "lr": step_logs[-1]["lr"] if step_logs else 0.0}
                if val_loader is not None and main:  # rank 0 evaluates the weights it saves; the others wait
                    eval_start = time.perf_counter()
                    ev = evaluate_model(evaluated(), val_loader, num_classes, precision=cfg.precision,
                                        return_outputs=self.reporter is not None)
                    row.update({f"val_{k}": ev[k] for k in ("loss", "top1", "top2", "top3")})
                    row["eval_time"] = time.perf_counter() - eval_start
                    last_eval = ev
                row["elapsed"] = time.perf_counter() - train_start
                row = dist.broadcast(row)  # every rank takes the same best/plateau/early-stop decisions
                if budget_s:
                    # the final evaluation: one plain pass, then one per TTA view
                    tta_passes = len(TTA_VIEWS[cfg.tta]) if cfg.tta != "none" else 0
                    reserve = max(reserve, row.get("eval_time", 0.0) * (1 + tta_passes))
                history.append(row)
                if tb is not None:
                    _log_tensorboard(tb, row, step_logs)
                if main:
                    with open(run_dir / "metrics.jsonl", "a") as fh:
                        for s in step_logs:
                            fh.write(json.dumps(s) + "\n")
                        fh.write(json.dumps(row) + "\n")

                metric = row.get(cfg.best_metric, -row["train_loss"])  # without a val split, lowest train loss wins
                improved = _better(cfg.best_metric if cfg.best_metric in row else "val_top1", metric, best)
                if improved:
                    best, best_epoch, bad_epochs = metric, epoch + 1, 0
                else:
                    bad_epochs += 1
                if plateau is not None and cfg.plateau_metric in row and plateau.step(row[cfg.plateau_metric]):
                    log.info("plateau: learning rate scaled to %.3g of its schedule", plateau.scale)
                last_metrics = row
                if main:
                    epoch_ckpt = checkpoint(epoch + 1, row, step)  # built once, written once or twice
                    save_checkpoint(epoch_ckpt, run_dir / "last.pt")
                    if improved:
                        save_checkpoint(epoch_ckpt, run_dir / "best.pt")
                log.info(_epoch_line(row, 0 if budget_s else cfg.epochs, improved))
                if self.on_epoch is not None:
                    self.on_epoch(row)
                if cfg.early_stop_patience and bad_epochs >= cfg.early_stop_patience:
                    log.info("early stop: no better %s for %d epochs (best %.4f at epoch %d)", cfg.best_metric,
                             bad_epochs, best, best_epoch)
                    break
        except (KeyboardInterrupt, Interrupted):
            report()  # the plots of what was trained so far
            raise
        finally:
            self._restore_signals()

        if not history and self.resume is None:
            raise CifarlabError("no epochs were run")
        if not main:
            return RunResult(run_dir, {}, history)
        final_tta = None
        if cfg.tta != "none" and val_loader is not None and history:
            ev = evaluate_model(evaluated(), val_loader, num_classes, tta=cfg.tta, precision=cfg.precision)
            final_tta = {f"val_{k}": ev[k] for k in ("loss", "top1", "top2", "top3")}
            log.info("final weights with %s test-time augmentation: val top1 %.2f%%", cfg.tta, 100 * ev["top1"])
        best_row = next((h for h in history if h["epoch"] == best_epoch), last_metrics)
        summary = {
            "run_dir": str(run_dir), "model": cfg.model, "recipe": cfg.recipe, "params": n_params,
            "classes": splits.classes, "epochs_run": last_metrics.get("epoch", start_epoch),
            "best_metric": cfg.best_metric, "best": best, "best_epoch": best_epoch,
            "final": {k: v for k, v in last_metrics.items() if k != "type"},
            "best_epoch_metrics": {k: v for k, v in best_row.items() if k != "type"},
            "final_tta": final_tta, "tta": cfg.tta,
            "train_seconds": sum(h["train_time"] for h in history),
            "wall_seconds": time.perf_counter() - t0, "device": str(device), "mean": mean, "std": std,
            "cifarlab_version": __version__,
        }
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        if tb is not None:
            tb.close()
        report()
        log.info("done: best %s %.4f at epoch %d; run directory %s", cfg.best_metric, best if best is not None
                 else float("nan"), best_epoch, run_dir)
        return RunResult(run_dir, summary, history)


def _python_rng() -> list:
    version, state, gauss = random.getstate()
    return [version, list(state), gauss]


def _numpy_rng() -> list:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return [kind, keys.tolist(), pos, has_gauss, gauss]


def _restore_rng(ckpt: dict, device: torch.device) -> None:
    """Every generator a step may draw from, as it was when the checkpoint was written."""
    if ckpt.get("torch_rng") is not None:
        torch.set_rng_state(ckpt["torch_rng"])
    if ckpt.get("python_rng") is not None:
        version, state, gauss = ckpt["python_rng"]
        random.setstate((version, tuple(state), gauss))
    if ckpt.get("numpy_rng") is not None:
        kind, keys, pos, has_gauss, gauss = ckpt["numpy_rng"]
        np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    if ckpt.get("cuda_rng") is not None and device.type == "cuda":
        torch.cuda.set_rng_state_all(ckpt["cuda_rng"])


def _tensorboard_writer(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise CifarlabError(
            "tensorboard logging needs the tensorboard package: pip install 'cifarlab[tensorboard]'") from None
    return SummaryWriter(str(run_dir / "tensorboard"))


def _log_tensorboard(tb, row: dict, step_logs: list[dict]) -> None:
    """The scalar names TensorBoard users know from the PyTorch tutorials: Loss/…, Accuracy/…, LR."""
    for s in step_logs:
        tb.add_scalar("LR", s["lr"], s["step"])
        tb.add_scalar("Loss/train_step", s["loss"], s["step"])
    epoch = row["epoch"]
    tb.add_scalar("Loss/train", row["train_loss"], epoch)
    tb.add_scalar("Accuracy/train", row["train_top1"], epoch)
    if "val_loss" in row:
        tb.add_scalar("Loss/val", row["val_loss"], epoch)
        for k in ("top1", "top2", "top3"):
            tb.add_scalar(f"Accuracy/val_{k}", row[f"val_{k}"], epoch)
    tb.flush()


def _previous_epochs(path: Path, upto: int, rewrite: bool = True) -> list[dict]:
    """The history a resumed run already wrote. Lines written after its checkpoint (a kill can land between
    the metrics line and the checkpoint) are dropped from the file, so no epoch or step appears twice."""
    rows, kept = [], []
    if path.is_file():
        for line in path.read_text().splitlines():
            row = json.loads(line) if line.strip() else {}
            if row.get("type") == "epoch" and row["epoch"] <= upto:
                rows.append(row)
                kept.append(line)
            elif row.get("type") == "step" and row["epoch"] < upto:
                kept.append(line)
        if rewrite:
            tmp = path.with_suffix(".tmp")
            tmp.write_text("".join(f"{line}\n" for line in kept))
            os.replace(tmp, path)
    return rows


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
    if not logging.getLogger().handlers and not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)


def train(recipe: str | None = None, data: str | None = None, *, resume: str | None = None,
          reporter: Callable[..., Any] | None = None, on_epoch: Callable[[dict], Any] | None = None,
          **overrides: Any) -> RunResult:
    """Train a model.

    ``recipe`` is a recipe name (``cifarlab.list_recipes()``) or a YAML path (a run's ``config.yaml`` works);
    ``data`` is any source the readers know; every other keyword overrides a config key
    (``epochs=3, lr=0.05, ...``). ``resume=RUN_DIR`` continues that run from its ``last.pt``.

    >>> result = cifarlab.train("seed001_small", data="cifar10-train-jpg.tar.gz", epochs=3)  # doctest: +SKIP
    >>> result.summary["best"]  # doctest: +SKIP
    """
    _ensure_logging()
    if resume is not None:
        ckpt = load_checkpoint(Path(resume) / "last.pt" if Path(resume).is_dir() else resume)
        base = {k: v for k, v in ckpt["config"].items()}
        base.update({k: v for k, v in overrides.items() if v is not None})
        if data is not None:
            base["data"] = data
        base["out"] = str(Path(resume) if Path(resume).is_dir() else Path(resume).parent)
        cfg = make_config(None, **base)
        return Trainer(cfg, resume_from=ckpt, reporter=reporter, on_epoch=on_epoch).fit()
    cfg = make_config(recipe, **({"data": data} if data is not None else {}), **overrides)
    return Trainer(cfg, reporter=reporter, on_epoch=on_epoch).fit()
