"""Where a run computes and in what precision: small enough for evaluation/ to import without the trainer."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from .errors import CifarlabError


def resolve_device(name: str) -> torch.device:
    """"auto" is the first CUDA GPU when there is one, else the CPU; a CUDA device without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise CifarlabError(f"device '{name}' requested but no CUDA GPU is available")
    try:
        return torch.device(name)
    except RuntimeError:
        raise CifarlabError(f"unknown device '{name}'; use auto, cpu, cuda or cuda:N") from None


def resolve_precision(precision: str, device: torch.device) -> str:
    """"auto" means bf16 on GPUs (no loss scaling needed) and fp32 on CPUs, where bf16 is only fast with
    native bf16 instructions (avx512_bf16, AMX): recipes that want it there say `precision: bf16`."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


def native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (avx512_bf16 or AMX); without it, bf16 autocast is emulated
    and slower than fp32. An unknown answer (another torch) counts as yes: no false alarm."""
    probes = [getattr(torch.cpu, n, None) for n in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    try:
        return any(p() for p in probes if p is not None) or all(p is None for p in probes)
    except Exception:  # noqa: BLE001 - a probe that fails says nothing either way
        return True


def autocast(device: torch.device, precision: str = "auto"):
    enabled = resolve_precision(precision, device) == "bf16"
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True
