"""Weights in and out: importing state dicts trained elsewhere, exporting checkpoints to ONNX, a torch.export
program (.pt2), safetensors or a plain state dict, and running an exported ONNX or .pt2 file.

The models' module names are the layouts people already have (the studies' notebooks and kuangliu/pytorch-cifar
for the CIFAR ResNets and study 002's net; torchvision for the ``*_imagenet`` nets), so importing is reading the
file, dropping wrapper prefixes, and recording the normalization the weights expect; exporting to a state dict
writes that same layout back. ONNX files carry that normalization and the class names in their metadata, so
``cifarlab predict model.onnx`` needs nothing else.
"""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._version import __version__
from .data.formats import CIFAR10_CLASSES
from .errors import CifarlabError
from .files import atomic_write, make_dir
from .hub import check_meta, model_meta, safetensors_bytes
from .models import create_model
from .models.weights import load_weights, read_state_dict
from .training.checkpoint import build_checkpoint, load_checkpoint, model_from_checkpoint, save_checkpoint

FORMATS = ("onnx", "pt2", "safetensors", "state_dict")


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
    """Write the checkpoint's (averaged, evaluated) weights as ONNX, a torch.export program (.pt2), safetensors
    (with cifarlab's metadata: eval, predict and load_model take it) or a plain state dict. ONNX and .pt2 take any
    batch size; their inputs are normalized images of the training size; a .pt2 file carries cifarlab's metadata in
    its extra file ``cifarlab.json``.

    cifarlab itself never loads a .pt2 file: ``torch.export.load`` falls back to unpickling with
    ``weights_only=False``, so a hostile file could run code. Deploy it with torch.export/AOTInductor tools you trust
    it to; predict from the safetensors or ONNX export."""
    if fmt == "torchscript":
        raise CifarlabError("TorchScript export was removed: torch 2.13 deprecates torch.jit.trace and torch.jit.save; "
                            "use --format pt2 (torch.export.load reads it) or --format onnx")
    if fmt not in FORMATS:
        raise CifarlabError(f"unknown export format '{fmt}'; use one of {', '.join(FORMATS)}")
    ckpt = load_checkpoint(checkpoint)
    out = Path(out)
    make_dir(out.parent)
    if fmt in ("state_dict", "safetensors"):  # the same key layout the studies' notebooks (or torchvision) use
        with atomic_write(out, "wb", what="export") as fh:
            if fmt == "safetensors":
                fh.write(safetensors_bytes(ckpt))
            else:
                torch.save(ckpt["state_dict"], fh)
        return out
    model = model_from_checkpoint(ckpt).eval()
    size = input_size(ckpt)
    example = torch.randn(2, 3, size, size)
    meta = {"cifarlab_version": __version__, **model_meta(ckpt)}
    if fmt == "pt2":
        return _export_pt2(model, example, out, meta)
    return _export_onnx(model, example, out, meta, opset)


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """torch's exporters log what they skip (torchvision's operators, absent here) and warn about their own
    deprecations: noise to a user, whose one line is cifarlab's "wrote ..." or its error."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            yield
    finally:
        logger.setLevel(level)


def _export_pt2(model: nn.Module, example: torch.Tensor, out: Path, meta: dict[str, Any]) -> Path:
    batch = torch.export.Dim("batch", min=1, max=65536)
    try:
        with torch.no_grad(), _quiet_exporter():
            program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
    except Exception as exc:  # noqa: BLE001 - the exporter names the construct it could not trace
        raise CifarlabError(f"could not export {meta['model']} with torch.export: {str(exc).splitlines()[0]}") \
            from None
    with atomic_write(out, "wb", what="export") as fh:
        torch.export.save(program, fh, extra_files={"cifarlab.json": json.dumps(meta)})
    return out


def _inference_fields(meta: dict[str, Any]) -> dict[str, Any]:
    """The fields of a checkpoint that prediction reads, from an exported file's metadata."""
    classes = meta.get("classes") or []
    size = meta.get("input_size", 32)
    return {"mean": meta["mean"], "std": meta["std"], "classes": classes, "num_classes": len(classes) or None,
            "model": meta.get("model", "exported"), "model_args": meta.get("model_args", {}),
            "config": {"precision": "fp32", "resize": size if size != 32 else 0,
                       "interpolation": meta.get("interpolation", "bilinear")}}


def _export_onnx(model: nn.Module, example: torch.Tensor, out: Path, meta: dict[str, Any], opset: int | None) -> Path:
    try:
        import onnx  # noqa: F401 - the exporter needs it; asked for here to fail with the install line
    except ImportError:
        raise CifarlabError("ONNX export needs onnx and onnxscript: pip install 'cifarlab[onnx]'") from None
    batch = torch.export.Dim("batch", min=1, max=65536)
    try:
        with _quiet_exporter():
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
        return _inference_fields(self.meta)


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
    return check_meta(path, meta)
