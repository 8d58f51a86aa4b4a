"""Where a run is: epochs and steps done, the best epoch so far, elapsed training time and the epoch rows.

:class:`TrainState` is everything across epochs that a resumed run needs to carry on as if never stopped (the
weights, optimizer and generators are saved beside it); :class:`EpochState` is the progress inside one epoch,
saved in mid-epoch checkpoints. Both are plain data with strict ``state_dict``/``load_state_dict``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ..errors import CifarlabError
from ..metrics import improves


@dataclass
class EpochState:
    """Progress through one epoch. Saved in mid-epoch checkpoints, so a resumed epoch carries on exactly
    where it stopped: the same remaining batches, the same running totals, the same step log."""

    epoch: int
    batch: int = 0  # batches already trained in this epoch
    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0
    train_time: float = 0.0
    steps: list = field(default_factory=list)
    complete: bool = False
    size_epoch: float | None = None  # where the resize schedule was read at the epoch's start (a budget's clock)

    def totals(self) -> dict:
        return {"train_loss": self.loss_sum / max(1, self.seen), "train_top1": self.correct / max(1, self.seen),
                "train_time": self.train_time, "images": self.seen}

    def state_dict(self) -> dict:
        return asdict(self)


def _check_keys(kind: str, state: dict, expected: set[str]) -> None:
    missing, unknown = expected - set(state), set(state) - expected
    if missing or unknown:
        what = "; ".join(x for x in (f"missing {', '.join(sorted(missing))}" if missing else "",
                                     f"unknown {', '.join(sorted(unknown))}" if unknown else "") if x)
        raise CifarlabError(f"{kind} in the checkpoint does not match this cifarlab: {what}")


@dataclass
class TrainState:
    """Progress of a run across epochs. ``metric`` and ``patience`` come from the config and are not saved."""

    metric: str = "val_top1"  # what selects the best epoch (its direction comes from cifarlab.metrics)
    patience: int = 0  # early stopping: epochs without a new best before the run stops (0 = never)
    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps completed
    best: float | None = None  # best value of `metric` so far
    best_epoch: int = -1  # 1-based epoch of `best` (-1: none yet)
    bad_epochs: int = 0  # epochs since the last new best
    elapsed: float = 0.0  # seconds of training so far, across restarts, up to the last save (the budget's clock)
    partial: EpochState | None = None  # the epoch a mid-epoch checkpoint stopped inside
    history: list[dict[str, Any]] = field(default_factory=list)  # every completed epoch's metrics row

    _SAVED = ("epoch", "step", "best", "best_epoch", "bad_epochs", "elapsed", "partial", "history")

    def record_epoch(self, row: dict[str, Any], scored: bool = True) -> bool:
        """Add a completed epoch's row; returns whether it is the best so far. Without a validation split the
        lowest training loss wins (recorded as its negative under the configured metric's direction). An epoch
        not `scored` (no val pass after it, with `val_every`) is neither a new best nor a bad epoch."""
        improved = scored and self._rank(row)
        if scored and not improved:
            self.bad_epochs += 1
        self.epoch = row["epoch"]
        self.elapsed = row["elapsed"]
        self.partial = None
        self.history.append(row)
        return improved

    def rank_last(self) -> bool:
        """Rank the last epoch, validated after it was recorded (a run that ends on an epoch without a val pass);
        returns whether it is the best so far."""
        return self._rank(self.history[-1])

    def _rank(self, row: dict[str, Any]) -> bool:
        """Whether the row beats the best so far (then it is the best); see `record_epoch`."""
        value = row.get(self.metric, -row["train_loss"])
        improved = improves(self.metric if self.metric in row else "val_top1", value, self.best)
        if improved:
            self.best, self.best_epoch, self.bad_epochs = value, row["epoch"], 0
        return improved

    def should_stop(self) -> bool:
        """Early stopping: `patience` epochs in a row without a new best."""
        return bool(self.patience) and self.bad_epochs >= self.patience

    def state_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self._SAVED}
        out["partial"] = self.partial.state_dict() if self.partial is not None else None
        out["history"] = list(self.history)
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        _check_keys("train_state", state, set(self._SAVED))
        partial = state["partial"]
        if partial is not None:
            partial = {"size_epoch": None, **partial}  # (checkpoints from before it was kept)
            _check_keys("train_state.partial", partial, {f.name for f in fields(EpochState)})
        for k in self._SAVED:
            setattr(self, k, state[k])
        self.partial = EpochState(**partial) if partial is not None else None
        self.history = list(state["history"])
