"""An on-disk cache of decoded datasets: uint8 (N,3,H,W) images + labels + class names.

Decoding 50,000 JPEGs takes tens of seconds; the cache makes every later run start in about a second.
Entries are keyed by a hash of the source (file contents for an archive, names/sizes/mtimes for a folder)
plus the split, so a changed source is never served stale.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
from pathlib import Path

import numpy as np
import torch

from ..errors import CifarlabError
from ..files import atomic_write, make_dir
from .formats import ImageSet, Source

log = logging.getLogger(__name__)
CACHE_VERSION = 1


def cache_dir() -> Path:
    """$CIFARLAB_CACHE, else ~/.cache/cifarlab."""
    return Path(os.environ.get("CIFARLAB_CACHE") or Path.home() / ".cache" / "cifarlab")


def source_fingerprint(source: Source) -> str:
    h = hashlib.sha256(f"v{CACHE_VERSION}:{source.kind}".encode())
    if source.path.is_file():
        with open(source.path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    else:
        for p in sorted(source.path.rglob("*")):
            if p.is_file():
                st = p.stat()
                # os.fsencode: a file name that is not UTF-8 still hashes (as its original bytes)
                h.update(os.fsencode(p.relative_to(source.path)) + f":{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24]


def load_cached(source: Source, split: str, label_mode: str = "fine", use_cache: bool = True) -> ImageSet:
    """Read `split` of `source`, decoding image folders/archives only once."""
    if not use_cache or source.kind not in ("image-folder", "image-tar"):
        # CIFAR pickles and binary batches are already raw uint8: reading them is as fast as the cache.
        return source.read(split, label_mode)
    key = f"{source_fingerprint(source)}-{split}"
    path = cache_dir() / f"{key}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                return ImageSet(torch.from_numpy(z["images"]), torch.from_numpy(z["labels"]),
                                meta["classes"], meta["ids"])
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:  # e.g. a truncated entry
            log.warning("ignoring unreadable cache entry %s (%s); decoding again", path, exc)
    log.info("decoding %s split of %s once into the cache at %s", split, source.path, path)
    data = source.read(split, label_mode)
    try:
        make_dir(path.parent)
        with atomic_write(path, "wb", what="cache") as fh:
            np.savez(fh, images=data.images.numpy(), labels=data.labels.numpy(),
                     meta=np.array(json.dumps({"classes": data.classes, "ids": data.ids})))
    except CifarlabError as exc:  # a read-only or full cache directory only costs speed
        log.warning("%s (the data was read; only the cache is missing)", exc)
    return data
