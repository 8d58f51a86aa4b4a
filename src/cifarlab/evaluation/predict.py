"""``cifarlab predict``: label unlabeled images and write a Kaggle submission (``ID,Labels``).

Inputs: the unlabeled CIFAR pickle of study 000, an image folder (searched recursively), or image files.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..data import ImageSet, read_unlabeled_pickle
from ..data.formats import IMAGE_SUFFIXES
from ..errors import CifarlabError
from ..files import atomic_write, make_dir
from ..training.engine import evaluate_model
from ..training.engine import tta_margin as _margin
from ..training.engine import tta_mode as _tta
from .evaluate import check_precision, inference_loader, inference_precision, load_for_inference


def _read_image(path: Path, size: int = 32) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(path.read_bytes())) as img:
            img = img.convert("RGB")
            if img.size != (size, size):
                img = img.resize((size, size), Image.BILINEAR)
            return np.asarray(img).transpose(2, 0, 1)
    except Image.DecompressionBombError:
        raise CifarlabError(f"image {path} is too large to decode: over {2 * Image.MAX_IMAGE_PIXELS:,} pixels "
                            "(PIL's decompression-bomb limit)") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise CifarlabError(f"cannot read image {path}: {exc}") from None


def load_inputs(paths: list[str | Path]) -> ImageSet:
    """Read every input into one unlabeled ImageSet; ids are Kaggle ids or image paths."""
    sets: list[ImageSet] = []
    files: list[Path] = []
    for raw in paths:
        p = Path(raw).expanduser()
        if not p.exists():
            raise CifarlabError(f"input not found: {p}")
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
            if not found:
                raise CifarlabError(f"{p}: no images found")
            files += found
        elif p.suffix.lower() in IMAGE_SUFFIXES:
            files.append(p)
        else:
            sets.append(read_unlabeled_pickle(p))
    if files:
        images = torch.from_numpy(np.stack([_read_image(f) for f in files]))
        sets.append(ImageSet(images, torch.full((len(files),), -1), [], ids=[str(f) for f in files]))
    return ImageSet(torch.cat([s.images for s in sets]), torch.cat([s.labels for s in sets]), [],
                    ids=[i for s in sets for i in s.ids])


def predict(checkpoint: str | Path, inputs: str | Path | list, out: str | Path | None = "submission.csv", *,
            tta: str | bool = "none", label_names: bool = False, topk: int = 1, force: bool = False,
            batch_size: int = 500, device: str = "auto", model: str | None = None, mean: list[float] | None = None,
            std: list[float] | None = None, tta_margin: float = 0.0, precision: str | None = None
            ) -> dict[str, Any]:
    """Predict a class for every input image; with `out`, write ``ID,Labels`` rows there (a Kaggle submission).

    `checkpoint` is a cifarlab checkpoint or run directory, an exported ``.safetensors`` or ``.onnx`` file,
    ``hf-hub:USER/NAME``, or a plain state dict with `model`, `mean` and `std`. Labels are class indices (the
    Kaggle convention), or class names with ``label_names=True``. An existing `out` is refused unless `force`
    (``out=None`` writes nothing). Returns ids, predicted indices, softmax probabilities and, per input, the
    `topk` (class name, probability) pairs. `precision` (auto, fp32, bf16) overrides the one the run evaluated in:
    fp32 gives a bf16 run the labels its ONNX export gives.
    """
    if not isinstance(topk, int) or isinstance(topk, bool) or topk < 1:
        raise CifarlabError(f"topk must be a whole number >= 1, got {topk!r}")
    tta, tta_margin = _tta(tta), _margin(tta_margin)
    if out is not None and Path(out).is_dir():
        raise CifarlabError(f"{out} is a directory; --out names the CSV file to write")
    if out is not None and Path(out).exists() and not force:
        raise CifarlabError(f"{out} exists; pass --force (force=True) to replace it, or another --out")
    check_precision(checkpoint, precision)
    net, ckpt, dev = load_for_inference(checkpoint, device, model=model, mean=mean, std=std)
    precision = precision or inference_precision(ckpt)
    data = load_inputs(inputs if isinstance(inputs, list) else [inputs])
    loader = inference_loader(data, ckpt, batch_size, dev)
    if ckpt["num_classes"] is None:  # an ONNX file without class names: its output width
        ckpt["num_classes"] = int(net(next(iter(loader))[0][:1]).shape[1])
    probs = evaluate_model(net, loader, ckpt["num_classes"], tta=tta, tta_margin=tta_margin,
                           return_outputs=True,
                           precision=precision, progress=True)["probs"]
    pred = probs.argmax(1).tolist()
    classes = ckpt.get("classes") or [str(i) for i in range(ckpt["num_classes"])]
    top_p, top_i = probs.topk(min(topk, probs.shape[1]), dim=1)
    top = [[(classes[i], float(p)) for p, i in zip(ps, idx, strict=True)]
           for ps, idx in zip(top_p.tolist(), top_i.tolist(), strict=True)]
    if out is not None:
        out = Path(out)
        make_dir(out.parent)
        # surrogateescape: an id from a file name that is not UTF-8 is written as the name's own bytes
        with atomic_write(out, "w", newline="", encoding="utf-8", errors="surrogateescape",
                          what="predictions") as fh:
            w = csv.writer(fh)
            w.writerow(["ID", "Labels"])
            for i, p in zip(data.ids, pred, strict=True):
                w.writerow([i, classes[p] if label_names else p])
    return {"ids": data.ids, "pred": pred, "probs": probs, "out": str(out) if out is not None else None,
            "classes": classes, "topk": top}
