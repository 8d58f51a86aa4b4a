"""Data: format readers, the decoded-image cache, splits, statistics and batched augmentation."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import CifarlabError
from .augment import OPS as AUGMENTATIONS
from .augment import Pipeline
from .cache import load_cached
from .fetch import download
from .formats import ImageSet, Source, open_source, read_unlabeled_pickle
from .loader import BatchLoader, normalize
from .split import stratified_split
from .stats import channel_mean_std, dataset_stats

__all__ = [
    "AUGMENTATIONS", "BatchLoader", "ImageSet", "Pipeline", "Source", "Splits", "channel_mean_std",
    "dataset_stats", "download", "load_cached", "load_splits", "normalize", "open_source",
    "read_unlabeled_pickle", "stratified_split",
]


@dataclass
class Splits:
    source: Source
    train: ImageSet
    val: ImageSet | None
    classes: list[str]


def load_splits(data: str, val_split: float = 0.1, split_seed: int = 0, label_mode: str = "fine") -> Splits:
    """The training split of `data`, divided into stratified train/val parts (val is None for val_split 0)."""
    source = open_source(data)
    if "train" not in source.splits:
        raise CifarlabError(f"{source.path} has no 'train' split to train on; it has: {', '.join(source.splits)}")
    full = load_cached(source, "train", label_mode)
    if len(full) == 0:
        raise CifarlabError(f"{source.path}: the training split is empty")
    train_idx, val_idx = stratified_split(full.labels, val_split, split_seed)
    train = full.subset(train_idx)
    val = full.subset(val_idx) if len(val_idx) else None
    return Splits(source, train, val, full.classes)


def load_eval_split(data: str, split: str, val_split: float, split_seed: int, label_mode: str = "fine") -> ImageSet:
    """`split` is a split of the source (train/test), or "val": the held-out part a run was validated on."""
    if split == "val":
        splits = load_splits(data, val_split, split_seed, label_mode)
        if splits.val is None:
            raise CifarlabError("this run trained with val_split 0: there is no validation part; use --split test")
        return splits.val
    source = open_source(data)
    return load_cached(source, split, label_mode)
