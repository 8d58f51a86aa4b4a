"""Small datasets written in the exact real formats (the real files cannot be downloaded here), and one shared
check. Tests import these by name; conftest.py holds the fixtures."""

from __future__ import annotations

import io
import math
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def learnable_images(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """(N, 3, 32, 32) uint8 images a tiny net can classify: a class-specific colour and stripe plus noise."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    x = rng.integers(0, 60, (n, 3, 32, 32)).astype(np.int32)
    for i, y in enumerate(labels):
        x[i, y % 3] += 120 + 10 * (y // 3)
        x[i, :, (y * 3) % 32: (y * 3) % 32 + 3, :] += 60
    return np.clip(x, 0, 255).astype(np.uint8)


def to_records(images: np.ndarray) -> np.ndarray:
    """CIFAR's row layout: 1024 red, 1024 green, 1024 blue, each 32x32 row-major."""
    return images.reshape(len(images), 3072)


def write_pickle(path: Path, obj) -> None:
    with open(path, "wb") as fh:
        pickle.dump(obj, fh, protocol=2)


def make_cifar10_python(root: Path, per_batch: int = 20, test: int = 20, seed: int = 0) -> Path:
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    write_pickle(d / "batches.meta", {b"num_cases_per_batch": per_batch,
                                      b"label_names": [c.encode() for c in CLASSES], b"num_vis": 3072})
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        n = test if name == "test_batch" else per_batch
        labels = np.arange(n) % 10
        rng.shuffle(labels)
        write_pickle(d / name, {b"batch_label": f"batch {i}".encode(), b"labels": labels.tolist(),
                                b"data": to_records(learnable_images(labels, seed + i)),
                                b"filenames": [f"img_{i}_{j}.png".encode() for j in range(n)]})
    return d


def make_cifar10_binary(root: Path, per_batch: int = 10) -> Path:
    d = root / "cifar-10-batches-bin"
    d.mkdir(parents=True)
    (d / "batches.meta.txt").write_text("\n".join(CLASSES) + "\n\n")
    for i, name in enumerate([f"data_batch_{k}.bin" for k in range(1, 6)] + ["test_batch.bin"]):
        labels = (np.arange(per_batch) + i) % 10
        recs = np.concatenate([labels[:, None].astype(np.uint8), to_records(learnable_images(labels, i))], axis=1)
        recs.tofile(d / name)
    return d


def make_cifar100_python(root: Path, n_train: int = 40, n_test: int = 20) -> Path:
    d = root / "cifar-100-python"
    d.mkdir(parents=True)
    fine_names = [f"fine{i:02d}".encode() for i in range(100)]
    coarse_names = [f"coarse{i:02d}".encode() for i in range(20)]
    write_pickle(d / "meta", {b"fine_label_names": fine_names, b"coarse_label_names": coarse_names})
    for name, n in (("train", n_train), ("test", n_test)):
        fine = (np.arange(n) * 7) % 100
        write_pickle(d / name, {b"filenames": [b"x.png"] * n, b"batch_label": name.encode(),
                                b"fine_labels": fine.tolist(), b"coarse_labels": (fine // 5).tolist(),
                                b"data": to_records(learnable_images(fine % 10))})
    return d


def make_image_folder(root: Path, per_class: int = 3, splits=("train", "test"), suffix: str = ".png") -> Path:
    for split in splits:
        for c, name in enumerate(CLASSES[:4]):
            (root / split / name).mkdir(parents=True, exist_ok=True)
            imgs = learnable_images(np.full(per_class, c), seed=c)
            for i, img in enumerate(imgs):
                Image.fromarray(img.transpose(1, 2, 0)).save(root / split / name / f"{i:04d}{suffix}")
    return root


def make_image_tar(folder: Path, out: Path) -> Path:
    with tarfile.open(out, "w:gz") as tar:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                tar.add(p, arcname=str(p.relative_to(folder)))
    return out


def make_unlabeled_pickle(path: Path, n: int = 12, layout: str = "records") -> np.ndarray:
    images = learnable_images(np.arange(n) % 10, seed=99)
    data = to_records(images) if layout == "records" else images.transpose(0, 2, 3, 1).copy()
    write_pickle(path, {b"data": data, b"ids": np.arange(1000, 1000 + n)})
    return images


class Evil:
    """Unpickling this runs os.system: the payload a hostile CIFAR file would carry."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def make_evil_pickle(path: Path, marker: Path, key: bytes = b"data") -> None:
    with open(path, "wb") as fh:
        fh.write(pickle.dumps({key: Evil(marker), b"labels": [0], b"ids": [0]}, protocol=2))


def png_bytes(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def assert_annealed_on_the_clock(lrs: list[float], train_s: float, budget_s: float, lr_max: float, lr_min: float,
                                 lag: int) -> None:
    """A cosine schedule run on a time budget: training lasted until the clock said so (the budget, less a reserve of
    at most half of it for the final evaluation) and its last LR sits at the bottom of the cosine. Bounds are in
    steps, which are slow on a loaded machine: the last LR may come from up to ``lag`` steps before the end."""
    step_s = train_s / len(lrs)
    assert budget_s / 2 - lag * step_s <= train_s <= budget_s + (lag - 1) * step_s
    last_seen = max(0.0, 1 - lag * step_s / (budget_s / 2))  # the earliest fraction of the budget the last LR saw
    assert lrs[-1] <= lr_min + (lr_max - lr_min) * (1 + math.cos(math.pi * last_seen)) / 2 + 1e-4
    assert lrs[0] > 0.9 * lr_max
    assert all(a >= b - 1e-12 for a, b in zip(lrs, lrs[1:], strict=False))  # follows the clock monotonically


def load_bench(name: str):
    """bench/NAME.py as a module: the benches are scripts, not a package (their own `import common` finds
    bench/common.py, which each puts on sys.path)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, Path(__file__).parents[1] / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
