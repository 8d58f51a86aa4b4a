"""Weights in and out: importing state dicts trained elsewhere, exporting checkpoints to ONNX, TorchScript
or a plain state dict, and running an exported ONNX file with onnxruntime.

The models' module names are the layouts people already have (the studies' notebooks and kuangliu/pytorch-cifar
for the CIFAR ResNets and study 002's net; torchvision for the ``*_imagenet`` nets), so importing is reading the
file, dropping wrapper prefixes, and recording the normalization the weights expect; exporting to a state dict
writes that same layout back. ONNX files carry that normalization and the class names in their metadata, so
``cifarlab predict model.onnx`` needs nothing else.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._version import __version__
from .config import INTERPOLATIONS
from .data.formats import CIFAR10_CLASSES
from .errors import CifarlabError
from .files import atomic_write, make_dir
from .models import create_model
from .models.weights import load_weights, read_state_dict
from .training.checkpoint import build_checkpoint, load_checkpoint, model_from_checkpoint, save_checkpoint

FORMATS = ("onnx", "torchscript", "state_dict")


def import_state_dict(weights: str | Path, model: str, out: str | Path, *, mean: list[float] | None,
                      std: list[float] | None, classes: list[str] | None = None, resize: int = 0,
                      interpolation: str = "bilinear") -> Path:
    """Turn a plain state dict (a notebook's ``torch.save(net.state_dict())``) into a cifarlab checkpoint that
    ``eval``/``predict``/``export`` take. The number of classes comes from the classifier's shape."""
    ckpt = checkpoint_from_state_dict(weights, model, mean=mean, std=std, classes=classes, resize=resize,
                                      interpolation=interpolation)
    out = Path(out)
    make_dir(out.parent)
    save_checkpoint(ckpt, out)
    return out


def checkpoint_from_state_dict(weights: str | Path, model: str, *, mean: list[float] | None,
                               std: list[float] | None, classes: list[str] | None = None, resize: int = 0,
                               interpolation: str = "bilinear") -> dict[str, Any]:
    if mean is None or std is None:
        raise CifarlabError("give --mean and --std: the normalization these weights were trained with, in [0, 1] "
                            "units (study 000: --mean 0.5 0.5 0.5 --std 0.5 0.5 0.5)")
    if len(mean) != 3 or len(std) != 3 or any(s <= 0 for s in std):
        raise CifarlabError("--mean and --std take 3 numbers each (std > 0), in [0, 1] units")
    state = read_state_dict(weights, model)
    head = [k for k in state if k.endswith(".weight") and state[k].ndim == 2]  # the last Linear is the classifier
    num_classes = state[head[-1]].shape[0] if head else 10
    net = create_model(model, num_classes=num_classes)
    load_weights(net, state, new_head=False, where=str(weights))
    if classes is None:
        classes = CIFAR10_CLASSES if num_classes == 10 else [str(i) for i in range(num_classes)]
    if len(classes) != num_classes:
        raise CifarlabError(f"{len(classes)} class names given for a {num_classes}-class classifier")
    ckpt = build_checkpoint(model=model, model_args={}, classes=classes, mean=mean, std=std,
                            state_dict=net.state_dict(), metrics={}, epoch=0, step=0,
                            config={"model": model, "precision": "fp32", "resize": resize,
                                    "interpolation": interpolation, "val_split": 0},
                            imported_from=str(weights))
    return ckpt


def input_size(ckpt: dict[str, Any]) -> int:
    return int(ckpt.get("config", {}).get("resize") or 32)


def export(checkpoint: str | Path, fmt: str, out: str | Path, *, opset: int | None = None) -> Path:
    """Write the checkpoint's (averaged, evaluated) weights as ONNX, TorchScript or a plain state dict.
    ONNX and TorchScript take any batch size; inputs are normalized images of the training size."""
    if fmt not in FORMATS:
        raise CifarlabError(f"unknown export format '{fmt}'; use one of {', '.join(FORMATS)}")
    ckpt = load_checkpoint(checkpoint)
    out = Path(out)
    make_dir(out.parent)
    if fmt == "state_dict":  # the same key layout the studies' notebooks (or torchvision) use
        with atomic_write(out, "wb", what="export") as fh:
            torch.save(ckpt["state_dict"], fh)
        return out
    model = model_from_checkpoint(ckpt).eval()
    size = input_size(ckpt)
    example = torch.randn(2, 3, size, size)
    meta = {"cifarlab_version": __version__, "model": ckpt["model"], "classes": ckpt.get("classes") or [],
            "mean": ckpt["mean"], "std": ckpt["std"], "input_size": size,
            "interpolation": ckpt.get("config", {}).get("interpolation", "bilinear")}
    if fmt == "torchscript":
        with torch.no_grad():
            traced = torch.jit.trace(model, example)
        with atomic_write(out, "wb", what="export") as fh:
            torch.jit.save(traced, fh, _extra_files={"cifarlab.json": json.dumps(meta)})
        return out
    return _export_onnx(model, example, out, meta, opset)


def _export_onnx(model: nn.Module, example: torch.Tensor, out: Path, meta: dict[str, Any], opset: int | None) -> Path:
    try:
        import onnx  # noqa: F401 - the exporter needs it; asked for here to fail with the install line
    except ImportError:
        raise CifarlabError("ONNX export needs onnx and onnxscript: pip install 'cifarlab[onnx]'") from None
    batch = torch.export.Dim("batch", min=1, max=65536)
    try:
        program = torch.onnx.export(model, (example,), dynamo=True, input_names=["images"], output_names=["logits"],
                                    dynamic_shapes=({0: batch},), opset_version=opset, verbose=False)
    except Exception as exc:  # the exporter's own errors name the operator it could not translate
        raise CifarlabError(f"could not export {meta['model']} to ONNX: {str(exc).splitlines()[0]}") from None
    proto = program.model_proto
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = f"cifarlab.{key}", json.dumps(value)
    with atomic_write(out, "wb", what="export") as fh:  # weights inline: well under protobuf's 2 GB limit
        fh.write(proto.SerializeToString())  # onnx.save_model wants a named file; this handle is a temp file's
    return out


class OnnxClassifier(nn.Module):
    """An exported ONNX file run by onnxruntime, callable like the model it came from (tensors in, logits out)."""

    def __init__(self, path: str | Path):
        super().__init__()
        try:
            import onnxruntime as ort
        except ImportError:
            raise CifarlabError("predicting from ONNX needs onnxruntime: pip install 'cifarlab[onnx]'") from None
        try:
            self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own types for unreadable files
            raise CifarlabError(f"{path} is not a loadable ONNX model ({str(exc).splitlines()[0]})") from None
        props = self.session.get_modelmeta().custom_metadata_map
        self.meta = _check_onnx_meta(path, props)
        self.input_name = self.session.get_inputs()[0].name
        width = (self.session.get_outputs()[0].shape or [None, None])[-1]
        classes = self.meta.get("classes") or []
        if classes and isinstance(width, int) and width != len(classes):
            raise CifarlabError(f"{path}: metadata cifarlab.classes names {len(classes)} classes for a model with "
                                f"{width} outputs")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float().contiguous()
        return torch.from_numpy(self.session.run(None, {self.input_name: x.cpu().numpy()})[0])

    def as_checkpoint(self) -> dict[str, Any]:
        """The fields of a checkpoint that prediction reads."""
        classes = self.meta.get("classes") or []
        return {"mean": self.meta["mean"], "std": self.meta["std"], "classes": classes,
                "num_classes": len(classes) or None, "model": self.meta.get("model", "onnx"),
                "config": {"precision": "fp32", "resize": self.meta.get("input_size", 32)
                           if self.meta.get("input_size", 32) != 32 else 0,
                           "interpolation": self.meta.get("interpolation", "bilinear")}}


def _check_onnx_meta(path: str | Path, props: dict[str, str]) -> dict[str, Any]:
    """The cifarlab.* metadata of an ONNX file, checked like a recipe: JSON values of the right types and ranges,
    each problem one line naming the key."""
    meta: dict[str, Any] = {}
    for key, text in props.items():
        if key.startswith("cifarlab."):
            try:
                meta[key.removeprefix("cifarlab.")] = json.loads(text)
            except ValueError:
                raise CifarlabError(f"{path}: metadata {key} is not valid JSON") from None
    if "mean" not in meta:
        raise CifarlabError(f"{path} was not exported by cifarlab (no normalization in its metadata)")
    for key in ("mean", "std"):
        value = meta.get(key)
        if not (isinstance(value, list) and len(value) == 3 and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)):
            raise CifarlabError(f"{path}: metadata cifarlab.{key} must be 3 finite numbers; got {value!r}")
    if min(meta["std"]) <= 0:
        raise CifarlabError(f"{path}: metadata cifarlab.std must be positive; got {meta['std']}")
    classes = meta.get("classes", [])
    if not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
        raise CifarlabError(f"{path}: metadata cifarlab.classes must be a list of names; got {classes!r}")
    size = meta.get("input_size", 32)
    if not (isinstance(size, int) and not isinstance(size, bool) and 8 <= size <= 4096):
        raise CifarlabError(f"{path}: metadata cifarlab.input_size must be a whole number in [8, 4096]; got {size!r}")
    if meta.get("interpolation", "bilinear") not in INTERPOLATIONS:
        raise CifarlabError(f"{path}: metadata cifarlab.interpolation must be one of {', '.join(INTERPOLATIONS)}")
    return meta
