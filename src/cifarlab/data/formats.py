"""Readers for every dataset format cifarlab accepts, each in its exact real layout.

All readers return an :class:`ImageSet`: uint8 images (N, 3, H, W), int64 labels (-1 when unlabeled),
class names, and optional ids. :func:`open_source` looks at a path and picks the reader.

Formats:
- CIFAR-10 python batches: ``cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}``
- CIFAR-10 binary batches: ``cifar-10-batches-bin/{data_batch_1..5.bin, test_batch.bin, batches.meta.txt}``
- CIFAR-100 python: ``cifar-100-python/{train, test, meta}`` with fine and coarse labels
- image folders: ``<split>/<class>/*.jpg|png`` (or ``<class>/*``), from a folder or a .tar/.tar.gz
- the unlabeled Kaggle pickle: ``{b'data': (N, 3072) or (N, 32, 32, 3) uint8, b'ids': ...}``
"""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..errors import CifarlabError
from .fetch import resolve_data
from .safe_pickle import safe_load

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"}
SPLIT_NAMES = {"train", "test", "val", "valid", "validation"}
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR_RECORD = 3 * 32 * 32


@dataclass
class ImageSet:
    images: torch.Tensor  # uint8 (N, 3, H, W)
    labels: torch.Tensor  # int64 (N,); -1 where unlabeled
    classes: list[str] = field(default_factory=list)
    ids: list | None = None  # per-image identifiers (Kaggle ids, file names)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: torch.Tensor) -> ImageSet:
        ids = [self.ids[i] for i in index.tolist()] if self.ids is not None else None
        return ImageSet(self.images[index], self.labels[index], self.classes, ids)


def _key(d: dict, name: str):
    """CIFAR pickles use bytes keys (read with encoding='bytes'); tolerate str keys too."""
    if name.encode() in d:
        return d[name.encode()]
    if name in d:
        return d[name]
    raise KeyError(name)


def _decode_names(names: Iterable, what: str = "class names") -> list[str]:
    """Class names as text: a list of UTF-8 bytes or strings, or a one-line error naming `what`."""
    if not isinstance(names, (list, tuple)):
        raise CifarlabError(f"{what} must be a list of names, got {type(names).__name__}")
    try:
        return [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names]
    except UnicodeDecodeError as exc:
        raise CifarlabError(f"{what}: a name is not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _records_to_images(data: np.ndarray, what: str) -> torch.Tensor:
    """CIFAR rows are channel-major: 1024 red, 1024 green, 1024 blue values, each row-major 32x32."""
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8:
        raise CifarlabError(f"{what}: 'data' must be a uint8 array, got {type(data).__name__}"
                            f"{'' if not isinstance(data, np.ndarray) else ' of ' + str(data.dtype)}")
    if data.ndim == 2 and data.shape[1] == CIFAR_RECORD:
        return torch.from_numpy(np.ascontiguousarray(data.reshape(-1, 3, 32, 32)))
    if data.ndim == 4 and data.shape[1:] == (32, 32, 3):
        return torch.from_numpy(np.ascontiguousarray(data.transpose(0, 3, 1, 2)))
    raise CifarlabError(f"{what}: 'data' has shape {data.shape}; expected (N, 3072) or (N, 32, 32, 3)")


def _labels(values, n: int, what: str, num_classes: int) -> torch.Tensor:
    labels = np.asarray(values)
    if labels.ndim != 1 or len(labels) != n or not np.issubdtype(labels.dtype, np.integer):
        raise CifarlabError(f"{what}: labels must be {n} integers, got shape {labels.shape} of {labels.dtype}")
    if n and (labels.min() < 0 or labels.max() >= num_classes):
        raise CifarlabError(f"{what}: labels must lie in [0, {num_classes}), found {labels.min()}..{labels.max()}")
    return torch.from_numpy(labels.astype(np.int64))


def _load_dict(path: Path) -> dict:
    obj = safe_load(str(path), what=str(path))
    if not isinstance(obj, dict):
        raise CifarlabError(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    return obj


# --------------------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100 python pickles
# --------------------------------------------------------------------------------------------------------

def read_cifar10_python(root: Path, split: str) -> ImageSet:
    meta = _load_dict(root / "batches.meta")
    try:
        classes = _decode_names(_key(meta, "label_names"), f"{root / 'batches.meta'}: 'label_names'")
    except KeyError:
        raise CifarlabError(f"{root / 'batches.meta'}: missing 'label_names'") from None
    files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    images, labels = [], []
    for name in files:
        path = root / name
        if not path.is_file():
            raise CifarlabError(f"CIFAR-10 batch missing: {path}")
        batch = _load_dict(path)
        try:
            imgs = _records_to_images(_key(batch, "data"), str(path))
            labels.append(_labels(_key(batch, "labels"), len(imgs), str(path), len(classes)))
        except KeyError as exc:
            raise CifarlabError(f"{path}: missing key {exc}") from None
        images.append(imgs)
    return ImageSet(torch.cat(images), torch.cat(labels), classes)


def read_cifar100_python(root: Path, split: str, label_mode: str = "fine") -> ImageSet:
    meta = _load_dict(root / "meta")
    path = root / ("train" if split == "train" else "test")
    if not path.is_file():
        raise CifarlabError(f"CIFAR-100 file missing: {path}")
    batch = _load_dict(path)
    try:
        classes = _decode_names(_key(meta, f"{label_mode}_label_names"), f"{root / 'meta'}: label names")
        imgs = _records_to_images(_key(batch, "data"), str(path))
        labels = _labels(_key(batch, f"{label_mode}_labels"), len(imgs), str(path), len(classes))
    except KeyError as exc:
        raise CifarlabError(f"{path}: missing key {exc}") from None
    return ImageSet(imgs, labels, classes)


# --------------------------------------------------------------------------------------------------------
# CIFAR-10 binary batches: records of 1 label byte + 3072 pixel bytes
# --------------------------------------------------------------------------------------------------------

def read_cifar10_binary(root: Path, split: str) -> ImageSet:
    meta = root / "batches.meta.txt"
    classes = [line.strip() for line in meta.read_text().splitlines() if line.strip()] if meta.is_file() \
        else list(CIFAR10_CLASSES)
    files = [f"data_batch_{i}.bin" for i in range(1, 6)] if split == "train" else ["test_batch.bin"]
    images, labels = [], []
    for name in files:
        path = root / name
        if not path.is_file():
            raise CifarlabError(f"CIFAR-10 binary batch missing: {path}")
        raw = np.fromfile(path, dtype=np.uint8)
        if raw.size == 0 or raw.size % (CIFAR_RECORD + 1):
            raise CifarlabError(f"{path}: size {raw.size} is not a whole number of 3073-byte records")
        rec = raw.reshape(-1, CIFAR_RECORD + 1)
        labels.append(_labels(rec[:, 0].astype(np.int64), len(rec), str(path), len(classes)))
        images.append(torch.from_numpy(np.ascontiguousarray(rec[:, 1:]).reshape(-1, 3, 32, 32)))
    return ImageSet(torch.cat(images), torch.cat(labels), classes)


# --------------------------------------------------------------------------------------------------------
# Image folders, plain or inside a tarball
# --------------------------------------------------------------------------------------------------------

def _split_and_class(parts: tuple[str, ...], where: str) -> tuple[str, str] | None:
    """('train','cat','1.jpg') -> ('train','cat'); ('cat','1.jpg') -> ('train','cat'); folders above a split
    folder are allowed. A path with '..', or nested deeper than <class>/<image> without a split folder, is an
    error: its class would be a guess (train/cat/a/1.jpg and train/dog/a/1.jpg would both become class 'a')."""
    if ".." in parts or (parts and parts[0].startswith("/")):
        raise CifarlabError(f"{where}: image path {'/'.join(parts)} leaves its folder ('..' or absolute)")
    if len(parts) < 2:
        return None
    if len(parts) >= 3 and parts[-3].lower() in SPLIT_NAMES:
        return parts[-3].lower(), parts[-2]
    if len(parts) > 2:
        raise CifarlabError(f"{where}: image {'/'.join(parts)} is nested deeper than <split>/<class>/<image>; "
                            "its class is ambiguous")
    return "train", parts[-2]


def _decode(blob: bytes, name: str) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(blob)) as img:
            return np.asarray(img.convert("RGB"))
    except Image.DecompressionBombError:
        raise CifarlabError(f"image {name} is too large to decode: over {2 * Image.MAX_IMAGE_PIXELS:,} pixels "
                            "(PIL's decompression-bomb limit)") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise CifarlabError(f"cannot decode image {name}: {exc}") from None


def _decode_all(items: list[tuple[str, bytes]]) -> np.ndarray:
    # PIL releases the GIL while decoding, so threads use every core without worker processes.
    with ThreadPoolExecutor(max_workers=max(1, min(8, torch.get_num_threads()))) as pool:
        arrays = list(pool.map(lambda it: _decode(it[1], it[0]), items, chunksize=256))
    first = arrays[0].shape
    for (name, _), a in zip(items, arrays, strict=True):
        if a.shape != first:
            raise CifarlabError(f"images differ in size: {name} is {a.shape[1]}x{a.shape[0]}, "
                                f"{items[0][0]} is {first[1]}x{first[0]}")
    return np.stack(arrays).transpose(0, 3, 1, 2)


def _build_imageset(entries: list[tuple[str, str, str]], read, split: str, where: str) -> ImageSet:
    """entries: (split, class, name); read(name) -> bytes."""
    chosen = sorted((c, n) for s, c, n in entries if s == split)
    if not chosen:
        splits = sorted({s for s, _, _ in entries})
        raise CifarlabError(f"{where} has no '{split}' images; splits found: {', '.join(splits) or 'none'}")
    classes = sorted({c for c, _ in chosen})
    index = {c: i for i, c in enumerate(classes)}
    items = [(n, read(n)) for _, n in chosen]
    images = torch.from_numpy(np.ascontiguousarray(_decode_all(items)))
    labels = torch.tensor([index[c] for c, _ in chosen], dtype=torch.int64)
    return ImageSet(images, labels, classes, ids=[n for _, n in chosen])


def _folder_entries(root: Path) -> list[tuple[str, str, str]]:
    entries = []
    for p in root.rglob("*"):
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file():
            sc = _split_and_class(p.relative_to(root).parts, str(root))
            if sc:
                entries.append((*sc, str(p.relative_to(root))))
    return entries


def read_image_folder(root: Path, split: str) -> ImageSet:
    entries = _folder_entries(root)
    if not entries:
        raise CifarlabError(f"{root}: no images found (expected <split>/<class>/*.jpg|png or <class>/*)")
    return _build_imageset(entries, lambda n: (root / n).read_bytes(), split, str(root))


def _open_tar(path: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(path, "r:*")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise CifarlabError(f"{path}: not a readable tar archive ({exc})") from None


def archive_limits() -> dict[str, int]:
    """What an image archive may hold before it is refused (a few-KB archive can unpack to gigabytes): members
    and unpacked bytes, from $CIFARLAB_MAX_ARCHIVE_MEMBERS and $CIFARLAB_MAX_ARCHIVE_BYTES."""
    out = {}
    for key, env, default in (("members", "CIFARLAB_MAX_ARCHIVE_MEMBERS", 250_000),
                              ("bytes", "CIFARLAB_MAX_ARCHIVE_BYTES", 4 << 30)):
        raw = os.environ.get(env, "")
        try:
            out[key] = int(raw) if raw else default
        except ValueError:
            raise CifarlabError(f"${env} must be a whole number; got {raw!r}") from None
    return out


def tar_entries(path: Path) -> list[tuple[str, str, str]]:
    with _open_tar(path) as tar:
        try:
            members = tar.getmembers()
        except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
            raise CifarlabError(f"{path}: corrupt tar archive ({exc})") from None
    limits = archive_limits()
    if len(members) > limits["members"]:
        raise CifarlabError(f"{path}: {len(members):,} archive members, over the limit of {limits['members']:,} "
                            "(set CIFARLAB_MAX_ARCHIVE_MEMBERS to allow more)")
    total = sum(m.size for m in members if m.isfile())
    if total > limits["bytes"]:
        raise CifarlabError(f"{path}: {total:,} bytes unpacked, over the limit of {limits['bytes']:,} "
                            "(set CIFARLAB_MAX_ARCHIVE_BYTES to allow more)")
    entries = []
    for m in members:
        if m.isfile() and Path(m.name).suffix.lower() in IMAGE_SUFFIXES:
            sc = _split_and_class(Path(m.name).parts, str(path))
            if sc:
                entries.append((*sc, m.name))
    return entries


def read_image_tar(path: Path, split: str) -> ImageSet:
    """Read images straight out of the archive: nothing is extracted, so nothing can escape the target."""
    entries = tar_entries(path)
    if not entries:
        raise CifarlabError(f"{path}: archive holds no images (expected <split>/<class>/*.jpg|png)")
    blobs: dict[str, bytes] = {}
    wanted = {n for s, _, n in entries if s == split}
    with _open_tar(path) as tar:
        try:
            for m in tar:
                if m.name in wanted:
                    fh = tar.extractfile(m)
                    if fh is not None:
                        blobs[m.name] = fh.read()
        except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
            raise CifarlabError(f"{path}: corrupt tar archive ({exc})") from None
    return _build_imageset(entries, blobs.__getitem__, split, str(path))


# --------------------------------------------------------------------------------------------------------
# The unlabeled Kaggle pickle of study 000
# --------------------------------------------------------------------------------------------------------

def read_unlabeled_pickle(path: Path) -> ImageSet:
    obj = safe_load(str(path), what=str(path))
    if not isinstance(obj, dict):
        raise CifarlabError(f"{path}: expected a dict with 'data' and 'ids', got {type(obj).__name__}")
    try:
        data = _key(obj, "data")
    except KeyError:
        raise CifarlabError(f"{path}: missing key 'data'") from None
    images = _records_to_images(data, str(path))
    try:
        ids = _key(obj, "ids")
        ids = [int(i) if isinstance(i, (int, np.integer)) else (i.decode("utf-8") if isinstance(i, bytes) else str(i))
               for i in list(ids)]
    except KeyError:
        ids = list(range(len(images)))
    except TypeError:
        raise CifarlabError(f"{path}: 'ids' must be a sequence") from None
    except UnicodeDecodeError as exc:
        raise CifarlabError(f"{path}: an id is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if len(ids) != len(images):
        raise CifarlabError(f"{path}: {len(ids)} ids for {len(images)} images")
    return ImageSet(images, torch.full((len(images),), -1, dtype=torch.int64), [], ids=ids)


# --------------------------------------------------------------------------------------------------------
# Picking a reader
# --------------------------------------------------------------------------------------------------------

@dataclass
class Source:
    """A resolved dataset location: which format, where, and which splits it holds."""

    kind: str  # cifar10-python | cifar10-binary | cifar100-python | image-folder | image-tar
    path: Path
    splits: tuple[str, ...]

    @property
    def name(self) -> str:
        return "cifar100" if self.kind.startswith("cifar100") else (
            "cifar10" if self.kind.startswith("cifar10") else self.path.name)

    def read(self, split: str, label_mode: str = "fine") -> ImageSet:
        if split not in self.splits:
            raise CifarlabError(f"{self.path} has no '{split}' split; it has: {', '.join(self.splits)}")
        if self.kind == "cifar10-python":
            return read_cifar10_python(self.path, split)
        if self.kind == "cifar10-binary":
            return read_cifar10_binary(self.path, split)
        if self.kind == "cifar100-python":
            return read_cifar100_python(self.path, split, label_mode)
        if self.kind == "image-folder":
            return read_image_folder(self.path, split)
        return read_image_tar(self.path, split)


def _cifar_splits(root: Path, train: str, test: str) -> tuple[str, ...]:
    return tuple(s for s, f in (("train", train), ("test", test)) if (root / f).exists())


def open_source(path: str | Path) -> Source:
    """Recognize the dataset format at `path` (a directory, its CIFAR subdirectory, or a tarball)."""
    if not str(path):
        raise CifarlabError("no data given: pass --data cifar10 (or cifar100: downloaded once into $CIFARLAB_DATA) "
                            "or --data PATH (a CIFAR directory, image folder or .tar.gz)")
    p = Path(resolve_data(path)).expanduser()
    if not p.exists():
        raise CifarlabError(f"data path not found: {p}")
    if p.is_file():
        try:
            is_tar = tarfile.is_tarfile(p)
        except (OSError, EOFError, tarfile.TarError) as exc:
            raise CifarlabError(f"{p}: not a readable tar archive ({exc})") from None
        if is_tar:
            entries = tar_entries(p)
            if not entries:
                raise CifarlabError(f"{p}: archive holds no images; extract CIFAR archives first "
                                    "(cifarlab data download ... --to DIR does)")
            return Source("image-tar", p, tuple(sorted({s for s, _, _ in entries})))
        if p.stat().st_size == 0:
            raise CifarlabError(f"{p}: the file is empty (expected a CIFAR directory, an image folder or a .tar.gz)")
        if p.name.endswith((".tar", ".tar.gz", ".tgz")):
            raise CifarlabError(f"{p}: named like a tar archive, but its bytes are not one (damaged or another "
                                "format)")
        raise CifarlabError(f"{p}: not a dataset (expected a CIFAR directory, an image folder or a .tar.gz)")
    for sub in ("cifar-10-batches-py", "cifar-10-batches-bin", "cifar-100-python"):
        if (p / sub).is_dir():
            p = p / sub
            break
    if (p / "batches.meta").is_file():
        return Source("cifar10-python", p, _cifar_splits(p, "data_batch_1", "test_batch"))
    if (p / "data_batch_1.bin").is_file() or (p / "test_batch.bin").is_file():
        return Source("cifar10-binary", p, _cifar_splits(p, "data_batch_1.bin", "test_batch.bin"))
    if (p / "meta").is_file() and ((p / "train").is_file() or (p / "test").is_file()):
        return Source("cifar100-python", p, _cifar_splits(p, "train", "test"))
    entries = _folder_entries(p)
    if entries:
        return Source("image-folder", p, tuple(sorted({s for s, _, _ in entries})))
    raise CifarlabError(f"{p}: no dataset recognized (expected cifar-10-batches-py/, cifar-10-batches-bin/, "
                        "cifar-100-python/ or <split>/<class>/*.jpg|png)")
