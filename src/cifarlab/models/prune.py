"""Structured pruning: whole filters taken out of residual blocks, so the pruned net is really smaller.

Study 000 tried pruning its ResNet9 under the 5M budget and gave up. This is the filter-pruning recipe of Li et
al. (2017, "Pruning Filters for Efficient ConvNets"): in each residual block, rank the first convolution's
filters by their L1 norm (the magnitude criterion), drop the smallest share, and drop the matching batch-norm
channels and input channels of the block's second convolution. Only the channels inside a block go: the ones a
block adds to its shortcut must match across the residual sum and the next block's input, so they stay.

The pruned net is the same factory with ``inner_widths`` (one count a block), so its checkpoint loads, trains,
evaluates and exports like any other, at its real smaller size. Fine-tuning afterwards (``cifarlab prune
--epochs N``) wins back most of what the cut loses.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import CifarlabError
from .registry import _REGISTRY, create_model
from .resnet import BasicBlock
from .summary import count_params, parse_budget

_BN_TENSORS = ("weight", "bias", "running_mean", "running_var")


@dataclass(frozen=True)
class Pruned:
    model_args: dict[str, Any]  # the factory's arguments with the kept ``inner_widths``
    state_dict: dict[str, torch.Tensor]
    before: int  # parameters
    after: int


def _blocks(name: str, num_classes: int, model_args: dict[str, Any]) -> list[tuple[str, int]]:
    """(module prefix, filters inside) of each residual block, in the order ``inner_widths`` lists them."""
    if name not in _REGISTRY:
        create_model(name)  # the unknown-model error, with the known ones
    if "inner_widths" not in inspect.signature(_REGISTRY[name]).parameters:
        prunable = sorted(n for n, f in _REGISTRY.items() if "inner_widths" in inspect.signature(f).parameters)
        raise CifarlabError(f"model '{name}' cannot be pruned: pruning takes filters out of BasicBlock residual "
                            f"blocks, which these models have: {', '.join(prunable)}")
    with torch.device("meta"):  # shapes only
        net = create_model(name, num_classes=num_classes, **model_args)
    return [(f"{prefix}.", block.conv1.out_channels) for prefix, block in net.named_modules()
            if isinstance(block, BasicBlock)]


def _kept(filters: int, amount: float) -> int:
    return max(1, filters - int(round(amount * filters)))


def _count(name: str, num_classes: int, model_args: dict[str, Any], inner: list[int]) -> int:
    with torch.device("meta"):
        return count_params(create_model(name, num_classes=num_classes, **{**model_args, "inner_widths": inner}))


def amount_for_budget(name: str, num_classes: int, model_args: dict[str, Any], params: str | int) -> float:
    """The smallest share of each block's filters to drop for the pruned net to fit in `params` parameters."""
    limit = parse_budget(params)
    blocks = _blocks(name, num_classes, model_args)
    counts = [n for _, n in blocks]
    if _count(name, num_classes, model_args, counts) <= limit:
        return 0.0
    smallest = _count(name, num_classes, model_args, [1] * len(counts))
    if smallest > limit:
        raise CifarlabError(f"a budget of {limit:,} parameters is below '{name}' pruned to one filter a block "
                            f"({smallest:,}): only the filters inside residual blocks are pruned")
    lo, hi = 0.0, 1.0  # the count falls as the amount grows (each block keeps fewer or as many filters)
    for _ in range(40):
        mid = (lo + hi) / 2
        if _count(name, num_classes, model_args, [_kept(n, mid) for n in counts]) <= limit:
            hi = mid
        else:
            lo = mid
    return hi


def prune_filters(name: str, num_classes: int, model_args: dict[str, Any], state: dict[str, torch.Tensor],
                  amount: float) -> Pruned:
    """Drop the `amount` share (0 <= amount < 1) of each residual block's filters with the smallest L1 norm.
    Every block keeps at least one filter; kept filters keep their order."""
    if not isinstance(amount, (int, float)) or isinstance(amount, bool) or not 0 <= amount < 1:
        raise CifarlabError(f"the share of filters to prune must be in [0, 1), not {amount!r}")
    blocks = _blocks(name, num_classes, model_args)
    state = dict(state)
    before = sum(t.numel() for k, t in state.items() if not _is_buffer(k))
    inner = []
    for prefix, _ in blocks:
        w = state.get(f"{prefix}conv1.weight")
        if w is None:
            raise CifarlabError(f"the weights hold no {prefix}conv1.weight: they are not a '{name}'")
        keep = torch.topk(w.abs().sum(dim=(1, 2, 3)), _kept(w.shape[0], amount)).indices.sort().values
        state[f"{prefix}conv1.weight"] = w[keep].clone()
        for t in _BN_TENSORS:
            state[f"{prefix}bn1.{t}"] = state[f"{prefix}bn1.{t}"][keep].clone()
        state[f"{prefix}conv2.weight"] = state[f"{prefix}conv2.weight"][:, keep].clone()
        inner.append(len(keep))
    new_args = {**model_args, "inner_widths": inner}
    net = create_model(name, num_classes=num_classes, **new_args)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CifarlabError(f"the pruned weights do not fit '{name}': {str(exc).splitlines()[0]}") from None
    return Pruned(new_args, net.state_dict(), before, count_params(net))


def _is_buffer(key: str) -> bool:
    return key.endswith(("running_mean", "running_var", "num_batches_tracked"))
