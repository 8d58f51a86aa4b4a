"""What a run trains with: data, model, optimizer, weight average and loaders, built once before the first epoch."""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import Config
from ..data import BatchLoader, Pipeline, channel_mean_std, load_splits, normalize
from ..device import seed_everything
from ..errors import CifarlabError
from ..models import count_params, create_model
from ..models.registry import check_model, resolve_model_args
from ..models.weights import head_of, load_weights, read_state_dict
from .distill import Teacher
from .distributed import DistContext, rewrap_model, wrap_model
from .ema import WeightAverage
from .engine import TTA_VIEWS
from .optim import OPTIMIZERS, make_optimizer
from .schedules import SCHEDULES, Plateau, make_plateau
from .select import HardSelector

log = logging.getLogger("cifarlab")

# The vocabularies whose names are the keys of an implementation table: a name is valid when it is implemented.
VALIDATION_METRICS = ("val_top1", "val_top2", "val_top3", "val_loss")
VOCABULARIES: dict[str, Any] = {"optimizer": OPTIMIZERS, "schedule": SCHEDULES, "tta": TTA_VIEWS,
                                "best_metric": VALIDATION_METRICS, "plateau_metric": VALIDATION_METRICS}


def check_vocabularies(cfg: Config) -> Config:
    """Each name-valued key against its table; an unknown name lists the known ones."""
    for key, table in VOCABULARIES.items():
        if getattr(cfg, key) not in table:
            raise CifarlabError(f"config key '{key}' must be one of {', '.join(table)}; got {getattr(cfg, key)!r}")
    return cfg


@dataclass
class Parts:
    splits: Any
    mean: list[float]
    std: list[float]
    model_args: dict[str, Any]  # what the model's factory was given (saved in checkpoints)
    model: nn.Module  # the trained weights
    eval_model: nn.Module  # what is evaluated and saved (the model itself, or the copy holding its average)
    train_model: nn.Module  # the model as stepped: DDP-wrapped and/or compiled
    optimizer: torch.optim.Optimizer
    plateau: Plateau | None
    average: WeightAverage | None
    train_loader: BatchLoader
    val_loader: BatchLoader | None
    started: float  # perf_counter before the data was read
    wrapped_for: tuple[bool, ...]  # which parameters trained when DDP was built
    teacher: Teacher | None = None  # distillation's teacher (config key `teacher`)
    selector: HardSelector | None = None  # hard-example selection's proxy (config key `select_keep`)

    @property
    def num_classes(self) -> int:
        return len(self.splits.classes)

    @property
    def head(self) -> str:
        return head_of(self.model) + "."

    def evaluated(self) -> nn.Module:
        """The weights that are evaluated and saved, with the average copied in."""
        if self.average is not None:
            self.average.copy_to(self.eval_model)
        return self.eval_model

    def rewrap_if_needed(self, cfg: Config, dist: DistContext, device: torch.device) -> None:
        """DDP reduces the gradients of a fixed set of parameters: renew it when freezing changed the set."""
        trainable = tuple(p.requires_grad for p in self.model.parameters())
        if dist.enabled and trainable != self.wrapped_for:
            wrapped = rewrap_model(self.model, device)
            self.train_model = torch.compile(wrapped) if cfg.compile else wrapped
            self.wrapped_for = trainable


def model_args_of(cfg: Config) -> dict[str, Any]:
    """The factory's arguments: dropout options only when set, so a net without them is not asked to take them."""
    extra = {k: getattr(cfg, k) for k in ("dropout", "block_dropout", "params") if getattr(cfg, k)}
    return {**extra, **cfg.model_args}


def build_parts(cfg: Config, dist: DistContext, device: torch.device, resuming: bool) -> Parts:
    """Data, model (pretrained weights, data-set stem), optimizer, weight average and loaders."""
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed, cfg.deterministic)
    if dist.enabled and cfg.batch_size < dist.world:
        raise CifarlabError(f"batch_size {cfg.batch_size} is smaller than the {dist.world} processes sharing it")
    pipeline = Pipeline(cfg.augment)  # augmentations, model name and options are checked before any data is read
    check_model(cfg.model, **model_args_of(cfg))
    if cfg.teacher and not Path(cfg.teacher).is_file():
        raise CifarlabError(f"teacher {cfg.teacher} is not a file (a cifarlab checkpoint or an exported .onnx)")
    if cfg.select_keep < 1 and dist.enabled:
        raise CifarlabError("select_keep < 1 (hard-example selection) does not run under torchrun yet: each "
                            "process would train its own proxy; train on one process or set select_keep 1")

    t0 = time.perf_counter()
    splits = load_splits(cfg.data, cfg.val_split, cfg.split_seed, cfg.label_mode)
    height, width = splits.train.images.shape[-2:]
    if min(height, width) < 8 and not cfg.resize:  # every registered net downsamples at least 8x
        raise CifarlabError(f"{cfg.data}: images are {width}x{height} pixels; the models need at least 8x8 "
                            "(set resize to scale them up)")
    if len(splits.classes) < 2:
        raise CifarlabError(f"{cfg.data}: only one class ({', '.join(splits.classes) or 'none'}) in the training "
                            "split; a classifier needs two or more")
    auto_mean, auto_std = (channel_mean_std(splits.train.images) if "auto" in (cfg.mean, cfg.std) else (None, None))
    mean = list(cfg.mean) if cfg.mean != "auto" else auto_mean
    std = list(cfg.std) if cfg.std != "auto" else auto_std
    log.info("data %s (%s): %d train / %d val images, %d classes, loaded in %.1fs", splits.source.path,
             splits.source.kind, len(splits.train), len(splits.val) if splits.val else 0, len(splits.classes),
             time.perf_counter() - t0)

    requested = model_args_of(cfg)
    # resolved: the checkpoint keeps the widths a parameter budget bought, not the budget
    model_args = {k: v for k, v in resolve_model_args(cfg.model, len(splits.classes), **requested).items()
                  if k != "num_classes"}
    model = create_model(cfg.model, num_classes=len(splits.classes), **model_args)
    if "params" in requested:
        log.info("parameter budget %s: widths %s, %s parameters", requested["params"], model_args["widths"],
                 f"{count_params(model):,}")
    if cfg.pretrained and not resuming:
        skipped = load_weights(model, read_state_dict(cfg.pretrained, cfg.model), where=cfg.pretrained)
        log.info("weights from %s%s", cfg.pretrained, f" (new classifier: {', '.join(skipped)})" if skipped else "")
    whitening = None  # a seeded random subset for data-set stems: sources are often sorted by class
    if hasattr(model, "init_from_data") or cfg.select_keep < 1:
        pick = torch.randperm(len(splits.train), generator=torch.Generator().manual_seed(cfg.seed))[:5000]
        whitening = normalize(splits.train.images[pick], mean, std)
    if hasattr(model, "init_from_data"):  # e.g. the fast nets' patch-whitening stem
        model.init_from_data(whitening)
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
    selector = HardSelector(cfg, len(splits.classes), whitening, device) if cfg.select_keep < 1 else None
    teacher = (Teacher(cfg.teacher, num_classes=len(splits.classes), mean=mean, std=std, resize=cfg.resize,
                       device=device) if cfg.teacher else None)
    return Parts(splits=splits, mean=mean, std=std, model_args=model_args, model=model, eval_model=eval_model,
                 train_model=torch.compile(train_model) if cfg.compile else train_model, optimizer=optimizer,
                 plateau=make_plateau(cfg), average=average, train_loader=train_loader, val_loader=val_loader,
                 started=t0, wrapped_for=tuple(p.requires_grad for p in model.parameters()), teacher=teacher,
                 selector=selector)
