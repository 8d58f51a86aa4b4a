"""``cifarlab prune``: cut a trained checkpoint's residual blocks down (models/prune.py), save the smaller net, and
fine-tune it with the run's own recipe.

The fine-tuning is an ordinary training run in the same folder: its config is the pruned checkpoint's (the
original run's, with the pruned ``model_args``), starting from the pruned weights (``pretrained``), so
``--resume``, reports, ``eval`` and ``export`` all work on it unchanged.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from .config import make_config
from .errors import CifarlabError
from .files import make_dir, write_text
from .models.prune import Pruned, amount_for_budget, prune_filters
from .training.checkpoint import build_checkpoint, check_fits, load_checkpoint, save_checkpoint

PRUNED_FILE = "pruned.pt"
FINE_TUNE_FILE = "finetune.yaml"


# Keys a fine-tuning run cannot change: they are what pruned.pt is
_FIXED = ("model", "model_args", "params", "pretrained", "out")


def prune_checkpoint(checkpoint: str | Path, out: str | Path, *, amount: float | None = None,
                     params: str | int | None = None, epochs: int = 0, data: str | None = None,
                     overrides: dict[str, Any] | None = None) -> tuple[Path, Pruned, Path | None]:
    """Write ``OUT/pruned.pt``: the checkpoint with `amount` of each block's filters dropped (or as few as bring
    it within `params` parameters). With `epochs`, also ``OUT/finetune.yaml``: the recipe of a fine-tuning run of
    that many epochs in OUT (the original run's config from the pruned weights, with `data` and `overrides`),
    checked before anything is written. Returns the two paths (the second None without `epochs`) and what was cut."""
    overrides = dict(overrides or {})
    if os.environ.get("WORLD_SIZE", "1") not in ("", "1"):  # every rank would cut and write the same files
        raise CifarlabError("cifarlab prune runs in one process: cut without torchrun (no --epochs), then fine-tune "
                            "under torchrun with the train command it prints")
    if (amount is None) == (params is None):
        raise CifarlabError("give the share of filters to prune (--amount 0.3) or a parameter budget "
                            "(--params 3M), one of the two")
    fixed = [k for k in _FIXED if k in overrides]
    if fixed:
        raise CifarlabError(f"--{fixed[0].replace('_', '-')} cannot change in a fine-tuning run: it is the pruned net")
    if overrides and not epochs:
        raise CifarlabError(f"--{next(iter(overrides)).replace('_', '-')} is a config key of the fine-tuning run: "
                            "give --epochs N to fine-tune")
    ckpt = load_checkpoint(checkpoint)
    out = Path(out)
    taken = [n for n in (PRUNED_FILE, FINE_TUNE_FILE, "last.pt", "best.pt", "config.yaml") if (out / n).exists()]
    if taken:
        raise CifarlabError(f"{out} already holds {', '.join(taken)}; give an empty or new folder")
    check_fits(ckpt)  # before any net is built from its model_args
    args = dict(ckpt.get("model_args") or {})
    if amount is None:
        amount = amount_for_budget(ckpt["model"], ckpt["num_classes"], args, params)
    cut = prune_filters(ckpt["model"], ckpt["num_classes"], args, ckpt["state_dict"], amount)
    # The run's own config with the pruned net's arguments (a parameter budget, already turned into widths in
    # model_args, is not searched again).
    config = {**(ckpt.get("config") or {}), "model_args": cut.model_args, "params": ""}
    path = out.resolve() / PRUNED_FILE
    recipe = None
    if epochs:
        if data is not None:
            config["data"] = data
        if not config.get("data"):
            raise CifarlabError(f"{checkpoint} names no training data (an imported checkpoint); give --data")
        # from the pruned weights, with the normalization they were trained with (not a new "auto" over whatever
        # data is given now); a time budget of the original run does not carry over
        tune = {**config, "epochs": epochs, "time_budget": 0, "pretrained": str(path), "out": str(out),
                "mean": list(ckpt["mean"]), "std": list(ckpt["std"])}
        make_config(None, **{**tune, **overrides})  # a bad key or value stops here, before anything is written
        recipe = out / FINE_TUNE_FILE
    pruned = build_checkpoint(model=ckpt["model"], model_args=cut.model_args, classes=ckpt["classes"],
                              mean=ckpt["mean"], std=ckpt["std"], state_dict=cut.state_dict, metrics={},
                              epoch=0, step=0, config=config, pruned_from=str(checkpoint))
    make_dir(out)
    save_checkpoint(pruned, path)
    if recipe is not None:
        write_text(recipe, "# cifarlab prune: the fine-tuning run of pruned.pt (command-line keys come on top)\n"
                   + yaml.safe_dump(tune, sort_keys=False))
    return path, cut, recipe
