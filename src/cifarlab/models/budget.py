"""Parameter budgets by rule: the widest net of a family that fits under N parameters.

``model_args: {params: 2M}`` (or ``--params 2M``) scales every width of a model that takes ``widths`` (the fast
nets and the CIFAR-layout ResNets) by one common factor, the largest whose net stays within the budget. Study
001 fitted its three sizes by hand; here each is one option. Depth and the proportions between stages are the
factory's own; only the scale changes.

Widths are multiples of 8 (oneDNN and cuDNN run such channel counts fastest) unless that leaves more than 2% of
the budget unused; then any whole number of channels is allowed, which lands within a fraction of a percent.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..errors import CifarlabError
from .summary import count_params, parse_budget

# Below this share of the budget, the multiple-of-8 widths give way to exact ones.
_MULTIPLE_OF_8_SLACK = 0.02


def _count(build: Callable[..., nn.Module], widths: tuple[int, ...], kwargs: dict[str, Any]) -> int:
    with torch.device("meta"):  # shapes only: no memory, no initialization work
        return count_params(build(widths=widths, **kwargs))


def _scaled(base: tuple[int, ...], scale: float, step: int) -> tuple[int, ...]:
    return tuple(max(step, int(round(w * scale / step)) * step) for w in base)


def _largest_under(build, base, budget, kwargs, step) -> tuple[tuple[int, ...], int] | None:
    """The largest common scale of `base` (widths rounded to multiples of `step`) whose net has <= budget
    parameters. Rounding is monotone in the scale, so the count is too and a bisection finds it."""
    lo, hi = 0.0, 1.0
    while _count(build, _scaled(base, hi, step), kwargs) <= budget:  # grow until over the budget
        lo, hi = hi, hi * 2
        if hi > 1e4:
            raise CifarlabError(f"a parameter budget of {budget:,} is beyond any width of this model")
    for _ in range(60):
        mid = (lo + hi) / 2
        if _count(build, _scaled(base, mid, step), kwargs) <= budget:
            lo = mid
        else:
            hi = mid
    widths = _scaled(base, lo, step)
    count = _count(build, widths, kwargs)
    return (widths, count) if count <= budget else None


def fit_widths(name: str, build: Callable[..., nn.Module], kwargs: dict[str, Any]) -> dict[str, Any]:
    """`kwargs` with ``params`` (a count like 2M, 800k or 4903242) replaced by the ``widths`` of the largest net
    of factory `build` within it (`name` is the model's, for the errors)."""
    kwargs = dict(kwargs)
    limit = parse_budget(kwargs.pop("params"))
    accepted = inspect.signature(build).parameters
    if "widths" not in accepted:
        raise CifarlabError(f"model '{name}' has no widths to scale, so it takes no parameter budget ('params'); "
                            "the fast and CIFAR ResNet families do")
    if "widths" in kwargs:
        raise CifarlabError(f"model '{name}': give 'params' or 'widths', not both")
    if kwargs.get("inner_widths") is not None:  # a pruned net's own counts do not scale with the widths
        raise CifarlabError(f"model '{name}': give 'params' or 'inner_widths' (a pruned net's), not both")
    base = tuple(accepted["widths"].default)
    smallest = _count(build, (1,) * len(base), kwargs)
    if limit < smallest:
        raise CifarlabError(f"a parameter budget of {limit:,} is below the smallest '{name}' ({smallest:,} "
                            "parameters at one channel a stage)")
    found = _largest_under(build, base, limit, kwargs, 8)
    if found is None or found[1] < (1 - _MULTIPLE_OF_8_SLACK) * limit:
        found = _largest_under(build, base, limit, kwargs, 1)
    assert found is not None  # one channel a stage fits (checked above)
    return {**kwargs, "widths": list(found[0])}
