"""Stratified train/validation splits with a fixed seed (study 002 used 45,000 / 5,000)."""

from __future__ import annotations

import numpy as np
import torch

from ..errors import CifarlabError


def val_count(n: int, val_split: float) -> int:
    """`val_split` < 1 is a fraction of n, >= 1 an absolute count."""
    count = int(round(val_split * n)) if val_split < 1 else int(val_split)
    if not 0 <= count < n:
        raise CifarlabError(f"val_split {val_split} leaves no training images out of {n}")
    return count


def stratified_split(labels: torch.Tensor, val_split: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (train_idx, val_idx), each class split in proportion; the same inputs give the same split."""
    n = len(labels)
    n_val = val_count(n, val_split)
    if n_val == 0:
        return torch.arange(n), torch.empty(0, dtype=torch.int64)
    y = labels.numpy()
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    # Largest-remainder allocation so class shares sum exactly to n_val.
    exact = counts * n_val / n
    alloc = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - alloc), kind="stable")[: n_val - alloc.sum()]:
        alloc[i] += 1
    val = []
    for c, k in zip(classes, alloc, strict=True):
        idx = np.flatnonzero(y == c)
        val.append(rng.permutation(idx)[:k])
    val_idx = np.sort(np.concatenate(val))
    mask = np.ones(n, dtype=bool)
    mask[val_idx] = False
    return torch.from_numpy(np.flatnonzero(mask)), torch.from_numpy(val_idx)
