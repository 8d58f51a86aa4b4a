"""Weights trained elsewhere: torchvision's published ImageNet files, and plain state dicts saved by notebooks.

Files are read with ``weights_only=True``. Containers people save are unwrapped (``{"net": ...}`` from
kuangliu/pytorch-cifar, ``{"state_dict": ...}``, ``{"model": ...}``), and key prefixes left by
``nn.DataParallel`` / DDP (``module.``) and ``torch.compile`` (``_orig_mod.``) are dropped. torchvision's
DenseNet files still use the old ``norm.1``-style names, which are renamed to the current ones.
"""

from __future__ import annotations

import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CifarlabError, first_line

# torchvision's published ImageNet weights: the file name carries the first hex digits of its SHA-256
TORCHVISION_URLS = {
    "resnet18_imagenet": "https://download.pytorch.org/models/resnet18-f37072fd.pth",
    "densenet121_imagenet": "https://download.pytorch.org/models/densenet121-a639ec97.pth",
}
# torchvision's DenseNet files say "denselayer1.norm.1.weight" where the module is now "denselayer1.norm1"
_LEGACY_DENSENET = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$")


def read_state_dict(source: str | Path, model_name: str | None = None) -> dict[str, torch.Tensor]:
    """A plain state dict from a local file or URL. ``source="torchvision"`` means the published weights of
    `model_name`; URLs are cached under $TORCH_HOME and checked against the hash in their file name."""
    from ..hub import hub_file, is_hub, read_safetensors

    source = str(source)
    if is_hub(source):  # a cifarlab model on the Hugging Face Hub (or in its local cache)
        return clean_state_dict(read_safetensors(hub_file(source))[0], source)
    if source == "torchvision":
        if model_name not in TORCHVISION_URLS:
            raise CifarlabError(f"no torchvision weights for '{model_name}'; they exist for "
                                f"{', '.join(TORCHVISION_URLS)}")
        source = TORCHVISION_URLS[model_name]
    if "://" in source:
        try:
            raw = torch.hub.load_state_dict_from_url(source, map_location="cpu", check_hash=True, weights_only=True)
        except RuntimeError as exc:  # torch.hub's hash check
            raise CifarlabError(f"{source}: {str(exc).splitlines()[0]}") from None
        except OSError as exc:  # no network, 404, ...
            raise CifarlabError(f"cannot download {source}: {exc}; download it elsewhere and pass the file's path")\
                from None
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            raise CifarlabError(f"weights file not found: {path}")
        raw = read_safetensors(path)[0] if path.suffix == ".safetensors" else load_tensors(path, "weights file")
    return clean_state_dict(raw, str(source))


def load_tensors(path: Path, what: str) -> Any:
    """`torch.load` with ``weights_only=True`` (no code in the file runs); an unreadable or hostile file is
    one line naming `what` it should have been."""
    try:
        with warnings.catch_warnings():  # a plain pickle draws torch's advice to file an issue before it fails
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "Unsupported global" in text:  # torch's text goes on to suggest weights_only=False: never
            raise CifarlabError(f"{path} is not a loadable {what}: it holds code or objects beyond tensors, "
                                "which are refused (nothing in it was run)") from None
        if "Weights only load failed" in text:  # bytes the tensor-only reader does not know: damaged, or code
            raise CifarlabError(f"{path} is not a loadable {what}: its bytes are not a tensor file torch.save "
                                "wrote (damaged or foreign, or holding code, which is refused; nothing in it was "
                                "run)") from None
        raise CifarlabError(f"{path} is not a loadable {what} ({first_line(exc)})") from None
    except Exception as exc:  # noqa: BLE001 - any parse failure of an untrusted file (KeyError, struct.error, ...)
        detail = first_line(exc)
        if isinstance(exc, (KeyError, IndexError, ValueError)) or len(detail) < 12:  # the parser's internals
            detail = "not a file torch.save wrote"
        elif "zip archive" in detail:  # torch.save's container, cut short or damaged
            detail = "damaged or cut short: its zip archive cannot be read"
        raise CifarlabError(f"{path} is not a loadable {what} ({detail})") from None


def clean_state_dict(raw: Any, where: str = "weights") -> dict[str, torch.Tensor]:
    for key in ("state_dict", "net", "model", "model_state_dict"):
        if isinstance(raw, dict) and isinstance(raw.get(key), dict):
            raw = raw[key]
            break
    if not isinstance(raw, dict) or not raw or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise CifarlabError(f"{where} holds no state dict (a mapping of parameter names to tensors)")
    out = {}
    for key, value in raw.items():
        for prefix in ("module.", "_orig_mod."):
            while key.startswith(prefix):
                key = key[len(prefix):]
        m = _LEGACY_DENSENET.match(key)
        out[m.group(1) + m.group(2) if m else key] = value
    return out


def head_of(model: nn.Module) -> str:
    """Name of the classifier: the last Linear layer."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise CifarlabError(f"{type(model).__name__} has no Linear classifier")
    return names[-1]


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], *, new_head: bool = True,
                 where: str = "weights") -> list[str]:
    """Load `state` into `model` strictly. With `new_head`, a classifier of another size (1,000 ImageNet
    classes for 10 CIFAR ones) is left as initialized. Returns the keys not loaded; a mismatch is an error
    that names the keys."""
    own = model.state_dict()
    head = head_of(model)
    skipped = []
    if new_head:
        for key in (f"{head}.weight", f"{head}.bias"):
            if key in state and key in own and state[key].shape != own[key].shape:
                skipped.append(key)
    state = {k: v for k, v in state.items() if k not in skipped}
    # files saved before PyTorch 0.4.1 (torchvision's DenseNet ones among them) have no BN step counters
    state.update({k: own[k] for k in own if k.endswith("num_batches_tracked") and k not in state})
    missing = sorted(set(own) - set(state) - set(skipped))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(state) & set(own) if state[k].shape != own[k].shape)
    if missing or unexpected or wrong:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected)):
            if keys:
                parts.append(f"{len(keys)} {label} ({_few(keys)})")
        if wrong:
            parts.append(f"{len(wrong)} of another shape ("
                         + _few([f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in wrong]) + ")")
        raise CifarlabError(f"{where} do not fit {type(model).__name__}: keys " + "; ".join(parts))
    model.load_state_dict(state, strict=False)  # strict in effect: everything was checked above
    return skipped


def _few(keys: list[str], n: int = 4) -> str:
    return ", ".join(keys[:n]) + (f", ... {len(keys) - n} more" if len(keys) > n else "")
