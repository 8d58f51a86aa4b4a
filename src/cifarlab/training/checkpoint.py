"""The checkpoint schema: one plain dict with fixed keys and a version, built here and nowhere else, written
atomically, read strictly with ``weights_only=True`` (no code from a checkpoint file ever runs).

Version 2. Every checkpoint (a training run's, an imported state dict's) holds the MODEL_KEYS, which is all that
eval, predict and export read; a training run's also holds the TRAINING_KEYS, which ``--resume`` reads. An
unknown key, or a missing one, is a one-line error naming it. Version 1 files (cifarlab 0.1 before the training
state moved into ``train_state``) are read by :func:`_from_v1` and load as version 2.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._version import __version__
from ..errors import CifarlabError
from ..files import atomic_write
from ..models import create_model
from ..models.weights import load_tensors

CHECKPOINT_VERSION = 2

MODEL_KEYS = {
    "version": "schema version of this dict (CHECKPOINT_VERSION)",
    "cifarlab_version": "the cifarlab that wrote it",
    "model": "registered model name (cifarlab models)",
    "model_args": "keyword arguments given to the model's factory (widths, dropout, ...)",
    "num_classes": "width of the classifier",
    "classes": "class names, in label order",
    "mean": "per-channel normalization mean the weights expect, in [0, 1] units",
    "std": "per-channel normalization std the weights expect, in [0, 1] units",
    "state_dict": "the weights that are evaluated: the weight average when the run keeps one",
    "config": "the run's resolved config (a dict; imported weights hold the few keys inference reads)",
    "metrics": "the epoch row these weights were saved after ({} mid-epoch or imported)",
    "epoch": "epochs completed when saved",
    "step": "optimizer steps completed when saved",
}
OPTIONAL_KEYS = {
    "imported_from": "the state-dict file an imported checkpoint was made from",
    "pruned_from": "the checkpoint a pruned one was cut from (cifarlab prune)",
    "selector": "hard-example selection's proxy (select_keep < 1): {model, optimizer} state dicts, for --resume",
}
TRAINING_KEYS = {
    "train_state": "the TrainState: epoch, step, best, best_epoch, bad_epochs, elapsed, partial epoch, history",
    "train_state_dict": "the live weights when they differ from state_dict (weight averaging), else None",
    "ema": "the weight average's buffers, or None",
    "optimizer": "the optimizer's state_dict",
    "plateau": "the reduce-on-plateau state, or None",
    "rng": "every generator a step draws from: {torch, python, numpy, cuda}",
}


def build_checkpoint(*, model: str, model_args: dict, classes: list[str], mean: list[float], std: list[float],
                     state_dict: dict, config: dict, metrics: dict, epoch: int, step: int,
                     training: dict[str, Any] | None = None, imported_from: str | None = None,
                     pruned_from: str | None = None) -> dict[str, Any]:
    """The checkpoint dict. `training` (a trainer's checkpoint) holds exactly the TRAINING_KEYS but `rng`,
    which is taken here, at the moment of saving."""
    ckpt = {"version": CHECKPOINT_VERSION, "cifarlab_version": __version__, "model": model,
            "model_args": dict(model_args), "num_classes": len(classes), "classes": list(classes),
            "mean": [float(v) for v in mean], "std": [float(v) for v in std], "state_dict": state_dict,
            "config": config, "metrics": metrics, "epoch": epoch, "step": step}
    if imported_from is not None:
        ckpt["imported_from"] = imported_from
    if pruned_from is not None:
        ckpt["pruned_from"] = pruned_from
    if training is not None:
        ckpt.update(training, rng=rng_state())
    check_keys(ckpt, "checkpoint")
    return ckpt


def check_keys(ckpt: dict[str, Any], where: str) -> None:
    """Every MODEL_KEY, the TRAINING_KEYS all or none, nothing else: a one-line error names the first misfit."""
    keys = set(ckpt)
    known = set(MODEL_KEYS) | set(OPTIONAL_KEYS) | set(TRAINING_KEYS)
    for key in sorted(keys - known):
        raise CifarlabError(f"{where} has an unknown key '{key}' (checkpoint version {ckpt.get('version')})")
    for key in MODEL_KEYS:
        if key not in keys:
            raise CifarlabError(f"{where} lacks the key '{key}' (checkpoint version {ckpt.get('version')})")
    training = keys & set(TRAINING_KEYS)
    for key in TRAINING_KEYS:
        if training and key not in keys:
            raise CifarlabError(f"{where} lacks the training key '{key}' that --resume needs")


def save_checkpoint(ckpt: dict[str, Any], path: str | Path) -> None:
    """Written whole or not at all (cifarlab.files): a crash or a full disk leaves the old file."""
    with atomic_write(path, "wb", what="checkpoint") as fh:
        torch.save(ckpt, fh)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint file (or a run directory's best.pt, else last.pt), upgraded to the current version.
    A ``.safetensors`` file written by ``cifarlab export`` and a Hub model (``hf-hub:USER/NAME``, a folder
    ``cifarlab push`` wrote) load too, as checkpoints without training state."""
    from ..hub import WEIGHTS_NAME, checkpoint_from_safetensors, hub_file, is_hub

    if is_hub(path):
        return checkpoint_from_safetensors(hub_file(str(path)))
    path = Path(path)
    if path.is_dir():
        for name in ("best.pt", "last.pt", WEIGHTS_NAME):
            if (path / name).is_file():
                path = path / name
                break
    if not path.is_file():
        raise CifarlabError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        return checkpoint_from_safetensors(path)
    ckpt = load_tensors(path, "cifarlab checkpoint")
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "model" not in ckpt:
        raise CifarlabError(f"{path} is not a cifarlab checkpoint (no 'model'/'state_dict' keys)")
    version = ckpt.get("version", 1)
    if not isinstance(version, int) or version > CHECKPOINT_VERSION:
        raise CifarlabError(f"{path} was written by a newer cifarlab (checkpoint version {version})")
    if version < 2:
        ckpt = _from_v1(ckpt)
    check_keys(ckpt, str(path))
    return ckpt


_V1_TRAINING = ("train_state_dict", "ema", "optimizer", "plateau")
_V1_STATE = ("best", "best_epoch", "bad_epochs", "partial")
_V1_RNG = {"torch_rng": "torch", "python_rng": "python", "numpy_rng": "numpy", "cuda_rng": "cuda"}


def _from_v1(old: dict[str, Any]) -> dict[str, Any]:
    """Version 1 kept the training state at the top level. Its elapsed time and history were not saved:
    ``elapsed`` comes from the last epoch row, and ``history`` None tells the trainer to read metrics.jsonl."""
    ckpt = {k: v for k, v in old.items() if k not in (*_V1_TRAINING, *_V1_STATE, *_V1_RNG, "version")}
    ckpt.setdefault("cifarlab_version", "0.1.0")
    # Version 1 passed dropout options to every factory; nets without them no longer take them.
    ckpt["model_args"] = {k: v for k, v in ckpt.get("model_args", {}).items()
                          if not (k in ("dropout", "block_dropout") and not v)}
    ckpt.setdefault("config", {})
    ckpt.setdefault("metrics", {})
    ckpt.setdefault("epoch", 0)
    ckpt.setdefault("step", 0)
    ckpt["version"] = CHECKPOINT_VERSION
    if "optimizer" in old:  # a trainer's checkpoint: it can be resumed
        ckpt.update({k: old.get(k) for k in _V1_TRAINING})
        ckpt["rng"] = {new: old.get(k) for k, new in _V1_RNG.items()}
        ckpt["train_state"] = {"epoch": ckpt["epoch"], "step": ckpt["step"], "best": old.get("best"),
                               "best_epoch": old.get("best_epoch", -1), "bad_epochs": old.get("bad_epochs", 0),
                               "elapsed": float(ckpt["metrics"].get("elapsed", 0.0)),
                               "partial": old.get("partial"), "history": None}
    return ckpt


def rng_state() -> dict[str, Any]:
    """Every generator a training step may draw from, as plain lists and tensors."""
    version, state, gauss = random.getstate()
    kind, keys, pos, has_gauss, np_gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": [version, list(state), gauss],
            "numpy": [kind, keys.tolist(), pos, has_gauss, np_gauss],
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None}


def restore_rng(rng: dict[str, Any], device: torch.device) -> None:
    """Put every generator back as :func:`rng_state` saw it."""
    if rng.get("torch") is not None:
        torch.set_rng_state(rng["torch"])
    if rng.get("python") is not None:
        version, state, gauss = rng["python"]
        random.setstate((version, tuple(state), gauss))
    if rng.get("numpy") is not None:
        kind, keys, pos, has_gauss, gauss = rng["numpy"]
        np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    if rng.get("cuda") is not None and device.type == "cuda":
        torch.cuda.set_rng_state_all(rng["cuda"])


def model_from_checkpoint(ckpt: dict[str, Any]) -> nn.Module:
    check_fits(ckpt)
    model = create_model(ckpt["model"], num_classes=ckpt["num_classes"], **ckpt.get("model_args", {}))
    try:
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except RuntimeError as exc:
        raise CifarlabError(f"checkpoint weights do not fit model '{ckpt['model']}': "
                            f"{str(exc).splitlines()[0]}") from None
    return model


def check_fits(ckpt: dict[str, Any]) -> None:
    """The net that `model` and `model_args` describe has exactly the state dict's tensor shapes, checked on the
    meta device (no memory) before anything is built: a file that names huge widths beside small weights would
    otherwise make its reader allocate whatever it asks for."""
    try:
        with torch.device("meta"):
            shell = create_model(ckpt["model"], num_classes=ckpt["num_classes"], **ckpt.get("model_args", {}))
    except (TypeError, ValueError, RuntimeError) as exc:  # model_args the factory cannot take
        raise CifarlabError(f"checkpoint's model_args do not build model '{ckpt['model']}': "
                            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    want = {k: tuple(v.shape) for k, v in shell.state_dict().items()}
    have = {k: tuple(v.shape) for k, v in ckpt["state_dict"].items() if isinstance(v, torch.Tensor)}
    if want != have:
        odd = sorted(k for k in set(want) | set(have) if want.get(k) != have.get(k))
        raise CifarlabError(f"checkpoint weights do not fit model '{ckpt['model']}' with its model_args: "
                            f"{len(odd)} tensors differ ({', '.join(odd[:3])}{', ...' if len(odd) > 3 else ''})")
