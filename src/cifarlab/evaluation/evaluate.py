"""``cifarlab eval``: loss, top-1/2/3, per-class accuracy and the confusion matrix of a checkpoint."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

import torch

from ..config import PRECISIONS
from ..data import BatchLoader, ImageSet, load_eval_split, open_source
from ..data.fetch import data_reference
from ..device import resolve_device
from ..errors import CifarlabError
from ..files import atomic_write, make_dir, write_text
from ..hub import is_hub
from ..metrics import per_class_accuracy
from ..training.checkpoint import load_checkpoint, model_from_checkpoint
from ..training.engine import evaluate_model
from ..training.engine import tta_margin as _margin
from ..training.engine import tta_mode as _tta
from . import plots

log = logging.getLogger("cifarlab")


def load_for_inference(checkpoint: str | Path, device: str = "auto", *, model: str | None = None,
                       mean: list[float] | None = None, std: list[float] | None = None
                       ) -> tuple[Any, dict[str, Any], torch.device]:
    """(model on its device, checkpoint dict, device) from a cifarlab checkpoint, an exported ``.onnx`` file (run
    by onnxruntime on the CPU), or, with `model` (and the `mean`/`std` it was trained with), a plain state dict
    saved by a notebook."""
    if str(checkpoint).endswith(".pt2"):
        raise CifarlabError(f"{checkpoint}: cifarlab does not load .pt2 programs (torch.export.load may unpickle with "
                            "weights_only=False, which can run code from the file); use the checkpoint, or its "
                            ".safetensors or .onnx export")
    if Path(checkpoint).suffix == ".onnx":
        from ..exporting import OnnxClassifier

        net = OnnxClassifier(checkpoint)
        return net, net.as_checkpoint(), torch.device("cpu")
    if model is not None:
        from ..exporting import checkpoint_from_state_dict

        ckpt = checkpoint_from_state_dict(checkpoint, model, mean=mean, std=std)
    else:
        ckpt = load_checkpoint(checkpoint)
    dev = resolve_device(device)
    return model_from_checkpoint(ckpt).to(dev), ckpt, dev


def check_precision(checkpoint: str | Path, precision: str | None) -> None:
    """Refuse a precision that cannot apply, before anything is loaded."""
    if precision is None:
        return
    if precision not in PRECISIONS:
        raise CifarlabError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if str(checkpoint).lower().endswith(".onnx") and precision == "bf16":
        raise CifarlabError(f"{checkpoint}: an ONNX model computes in fp32 under onnxruntime; --precision bf16 "
                            "applies to checkpoints and .safetensors files")


def inference_precision(ckpt: dict[str, Any]) -> str:
    """The precision the run evaluated in (its config's; an ONNX file's is fp32: onnxruntime runs the graph as
    exported)."""
    return ckpt.get("config", {}).get("precision", "auto")


def inference_loader(images: ImageSet, ckpt: dict[str, Any], batch_size: int, device) -> BatchLoader:
    """Batches prepared as the checkpoint's training prepared them: same normalization, same resize."""
    cfg = ckpt.get("config", {})
    return BatchLoader(images, batch_size, mean=ckpt["mean"], std=ckpt["std"], device=device,
                       resize=cfg.get("resize", 0) or 0, interpolation=cfg.get("interpolation", "bilinear"))


def evaluate(checkpoint: str | Path, data: str | None = None, *, split: str | None = None,
             out: str | Path | None = None, batch_size: int = 500, device: str = "auto",
             tta: str | bool = "none", model: str | None = None, mean: list[float] | None = None,
             std: list[float] | None = None, tta_margin: float = 0.0, precision: str | None = None
             ) -> dict[str, Any]:
    """Evaluate `checkpoint` on `split` of `data`. Without `data`, the data it trained on and, by default, the
    validation part it held out (test when it had none); with new `data`, its test split when it has one, else
    all of it. `checkpoint` may also be a run directory, an exported ``.safetensors`` or ``.onnx`` file,
    ``hf-hub:USER/NAME``, or a plain state dict with `model`, `mean` and `std`.

    Writes ``metrics.json``, ``confusion.csv/.png`` and ``per_class.csv/.png`` into `out` (default:
    ``eval-<split>/`` in the run directory, ``eval-<split>-tta-<mode>/`` with test-time augmentation) and returns
    the metrics. `precision` (auto, fp32, bf16) overrides the one the run evaluated in, e.g. fp32 to match an
    ONNX export of a bf16 run; an evaluation in another precision gets its own ``-<precision>`` folder.
    """
    tta, tta_margin = _tta(tta), _margin(tta_margin)
    check_precision(checkpoint, precision)
    net, ckpt, dev = load_for_inference(checkpoint, device, model=model, mean=mean, std=std)
    cfg = ckpt.get("config", {})
    own_precision = inference_precision(ckpt)
    precision = precision or own_precision
    trained_on = cfg.get("data")
    if not (data or trained_on):
        raise CifarlabError("no data given and the checkpoint does not record any: pass --data")
    if split is None and data and data_reference(data) != trained_on:  # new data: evaluated as it is
        splits = open_source(data).splits
        split = "test" if "test" in splits else "train"
    data = data or trained_on
    split = split or ("val" if cfg.get("val_split", 0) else "test")
    images = load_eval_split(data, split, cfg.get("val_split", 0.1), cfg.get("split_seed", 0),
                             cfg.get("label_mode", "fine"))
    if ckpt["num_classes"] is None:
        ckpt["num_classes"] = len(images.classes)
    if images.classes and len(images.classes) != ckpt["num_classes"]:
        raise CifarlabError(f"data has {len(images.classes)} classes but the model predicts {ckpt['num_classes']}")
    res = evaluate_model(net, inference_loader(images, ckpt, batch_size, dev), ckpt["num_classes"], tta=tta,
                         progress=True, precision=precision, tta_margin=tta_margin)
    classes = ckpt.get("classes") or [str(i) for i in range(ckpt["num_classes"])]
    per_class = per_class_accuracy(res["confusion"]).tolist()

    tta_margin = tta_margin if tta != "none" else 0.0
    out_dir = Path(out) if out else _eval_dir(checkpoint, split, tta, tta_margin,
                                               precision if precision != own_precision else "")
    make_dir(out_dir)
    with atomic_write(out_dir / "confusion.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["true\\pred", *classes])
        for name, row in zip(classes, res["confusion"].tolist(), strict=True):
            w.writerow([name, *row])
    with atomic_write(out_dir / "per_class.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["class", "accuracy", "count"])
        for name, acc, cnt in zip(classes, per_class, res["confusion"].sum(1).tolist(), strict=True):
            w.writerow([name, f"{acc:.4f}", cnt])
    metrics = {"checkpoint": str(checkpoint), "data": str(data), "split": split, "count": res["count"],
               "loss": res["loss"], "top1": res["top1"], "top2": res["top2"], "top3": res["top3"],
               "per_class": dict(zip(classes, per_class, strict=True)), "tta": tta, "tta_margin": tta_margin,
               "precision": precision}
    write_text(out_dir / "metrics.json", json.dumps(metrics, indent=2))
    plots.confusion(res["confusion"], classes, out_dir / "confusion.png", title=f"confusion matrix ({split})")
    plots.per_class(per_class, classes, out_dir / "per_class.png")
    metrics["confusion"] = res["confusion"]
    metrics["classes"] = classes
    metrics["out_dir"] = str(out_dir)
    return metrics


def _eval_dir(checkpoint: str | Path, split: str, tta: str, margin: float = 0.0, precision: str = "") -> Path:
    """eval-<split>[-tta-<mode>[-margin-<m>]][-<precision>] inside the run (the checkpoint's folder), so that
    evaluations of different splits, modes or precisions never overwrite each other and nothing is written outside
    the run."""
    name = (f"eval-{split}" + (f"-tta-{tta}" if tta != "none" else "") + (f"-margin-{margin:g}" if margin else "")
            + (f"-{precision}" if precision else ""))
    if is_hub(checkpoint):
        return Path.cwd() / name
    path = Path(checkpoint).resolve()
    return (path if path.is_dir() else path.parent) / name


def format_report(m: dict[str, Any]) -> str:
    lines = [f"{m['split']} split of {m['data']}: {m['count']} images",
             f"loss {m['loss']:.4f}  top1 {100 * m['top1']:.2f}%  top2 {100 * m['top2']:.2f}%  "
             f"top3 {100 * m['top3']:.2f}%", "", "per-class accuracy:"]
    width = max(len(c) for c in m["classes"])
    lines += [f"  {c:<{width}}  {100 * a:6.2f}%" for c, a in m["per_class"].items()]
    if len(m["classes"]) <= 20:
        lines += ["", "confusion matrix (rows: true, columns: predicted):"]
        lines += ["  " + " ".join(f"{v:>5}" for v in row) + f"  {c}"
                  for c, row in zip(m["classes"], m["confusion"].tolist(), strict=True)]
    lines.append(f"\nwritten to {m['out_dir']}/ (metrics.json, confusion.csv/.png, per_class.csv/.png)")
    return "\n".join(lines)
