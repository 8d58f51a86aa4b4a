"""Training: optimizers, LR schedules (pure functions of the step), the run's state and clock, the per-epoch
engine, callbacks and loggers, and the trainer that runs them."""

from .callbacks import Callback
from .checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from .schedules import lr_at
from .state import TrainState
from .trainer import RunResult, Trainer, train

__all__ = ["Callback", "RunResult", "TrainState", "Trainer", "load_checkpoint", "lr_at", "model_from_checkpoint",
           "save_checkpoint", "train"]
