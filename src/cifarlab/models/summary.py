"""Layer tables in the torchsummary format, parameter counts, multiply-accumulates, and budgets."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import CifarlabError


@dataclass
class Summary:
    rows: list[tuple[str, list[int], int]] = field(default_factory=list)  # (layer, output shape, params)
    total_params: int = 0
    trainable_params: int = 0
    macs: int = 0  # multiply-accumulates per image (convolutions and linear layers)
    input_mb: float = 0.0
    forward_backward_mb: float = 0.0
    params_mb: float = 0.0

    @property
    def total_mb(self) -> float:
        return self.input_mb + self.forward_backward_mb + self.params_mb

    def table(self) -> str:
        line = "-" * 64
        out = [line, f"{'Layer (type)':>25}  {'Output Shape':>25} {'Param #':>15}", "=" * 64]
        for name, shape, params in self.rows:
            out.append(f"{name:>25}  {str(shape):>25} {params:>15,}")
        out += ["=" * 64,
                f"Total params: {self.total_params:,}",
                f"Trainable params: {self.trainable_params:,}",
                f"Non-trainable params: {self.total_params - self.trainable_params:,}",
                line,
                f"Input size (MB): {self.input_mb:.2f}",
                f"Forward/backward pass size (MB): {self.forward_backward_mb:.2f}",
                f"Params size (MB): {self.params_mb:.2f}",
                f"Estimated Total Size (MB): {self.total_mb:.2f}",
                line,
                f"Multiply-accumulates per image: {self.macs:,}"]
        return "\n".join(out)


@contextlib.contextmanager
def uninitialized() -> Iterator[None]:
    """Build models inside this block without running torch.nn.init (their weights are whatever memory held):
    for counting parameters and MACs only. Twice as fast as initializing, and the meta device is slower still
    on the CPU (its first use imports torch's decomposition machinery). Not thread-safe."""
    names = [n for n in dir(nn.init) if n.endswith("_") and not n.startswith("_")]
    saved = {n: getattr(nn.init, n) for n in names}
    try:
        for n in names:
            setattr(nn.init, n, _keep)
        yield
    finally:
        for n, fn in saved.items():
            setattr(nn.init, n, fn)


def _keep(tensor, *args, **kwargs):
    return tensor


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def summarize(model: nn.Module, input_size: tuple[int, int, int] = (3, 32, 32)) -> Summary:
    """Run one image through `model` with hooks, as torchsummary does (containers and identities skipped)."""
    s = Summary()
    hooks = []

    def hook(module: nn.Module, inputs, output) -> None:
        params = sum(p.numel() for p in module.parameters(recurse=False))
        shape = [-1, *output.shape[1:]] if isinstance(output, torch.Tensor) else [-1]
        s.rows.append((f"{type(module).__name__}-{len(s.rows) + 1}", shape, params))
        if isinstance(module, nn.Conv2d):
            s.macs += output[0].numel() * module.in_channels // module.groups * module.kernel_size[0] \
                * module.kernel_size[1]
        elif isinstance(module, nn.Linear):
            s.macs += module.in_features * module.out_features

    for m in model.modules():
        if m is model or isinstance(m, (nn.Sequential, nn.ModuleList, nn.Identity)):
            continue
        hooks.append(m.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_size, device=next(model.parameters()).device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    s.total_params = count_params(model)
    s.trainable_params = count_params(model, trainable_only=True)
    mb = 4.0 / 1024**2  # float32 bytes, in MiB as torchsummary reports them
    s.input_mb = torch.tensor(input_size).prod().item() * mb
    s.forward_backward_mb = 2.0 * sum(torch.tensor(shape[1:]).prod().item() for _, shape, _ in s.rows) * mb
    s.params_mb = s.total_params * mb
    return s


def parse_budget(text: str) -> int:
    """'5M' -> 5_000_000, '78k' -> 78_000, '4903242' -> 4903242."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kKmMgG]?)\s*", str(text))
    if not m:
        raise CifarlabError(f"budget '{text}' is not a number like 5M, 800k or 4903242")
    scale = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9}[m.group(2).lower()]
    return int(round(float(m.group(1)) * scale))
