"""Training: optimizers, LR schedules (pure functions of the step), the per-epoch engine and the trainer."""

from .checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from .schedules import lr_at
from .trainer import RunResult, Trainer, train

__all__ = ["RunResult", "Trainer", "load_checkpoint", "lr_at", "model_from_checkpoint", "save_checkpoint", "train"]
