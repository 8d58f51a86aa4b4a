"""Checkpoints: one plain dict with fixed keys and a version, written atomically, loaded with
``weights_only=True`` (no code from a checkpoint file ever runs).

Keys: version, model (name), model_args, num_classes, classes, mean, std, state_dict, optimizer, plateau,
epoch (completed), step, best, best_epoch, bad_epochs, config, metrics.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CifarlabError
from ..models import create_model
from ..models.weights import load_tensors

CHECKPOINT_VERSION = 1


def save_checkpoint(ckpt: dict[str, Any], path: str | Path) -> None:
    """Write to a temp file in the same directory, fsync, then rename: a crash leaves the old file whole."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save({"version": CHECKPOINT_VERSION, **ckpt}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise CifarlabError(f"could not write checkpoint {path}: {exc.strerror or exc}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / name).is_file():
                path = path / name
                break
    if not path.is_file():
        raise CifarlabError(f"checkpoint not found: {path}")
    ckpt = load_tensors(path, "cifarlab checkpoint")
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "model" not in ckpt:
        raise CifarlabError(f"{path} is not a cifarlab checkpoint (no 'model'/'state_dict' keys)")
    if ckpt.get("version", 0) > CHECKPOINT_VERSION:
        raise CifarlabError(f"{path} was written by a newer cifarlab (checkpoint version {ckpt['version']})")
    return ckpt


def model_from_checkpoint(ckpt: dict[str, Any]) -> nn.Module:
    model = create_model(ckpt["model"], num_classes=ckpt["num_classes"], **ckpt.get("model_args", {}))
    try:
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except RuntimeError as exc:
        raise CifarlabError(f"checkpoint weights do not fit model '{ckpt['model']}': "
                            f"{str(exc).splitlines()[0]}") from None
    return model
