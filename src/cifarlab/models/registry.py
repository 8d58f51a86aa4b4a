"""The model registry: every model is a small factory registered under a name.

``create_model(name, num_classes=None, **kwargs)`` builds one; an unknown name fails with the list of known ones.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from torch import nn

from ..errors import CifarlabError, did_you_mean

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    _REGISTRY[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def check_model(name: str, **kwargs) -> None:
    """An unknown name lists the known ones; an option the factory does not take lists the ones it does."""
    if name not in _REGISTRY:
        raise CifarlabError(f"unknown model '{name}'{did_you_mean(name, _REGISTRY)}; known models: "
                            f"{', '.join(list_models())}")
    accepted = inspect.signature(_REGISTRY[name]).parameters
    for key in kwargs:
        if key == "params" and "widths" in accepted:  # a parameter budget, resolved to widths (models/budget.py)
            continue
        if key not in accepted:
            valid = [k for k in accepted if k != "num_classes"]
            raise CifarlabError(f"model '{name}' takes no option '{key}'; it takes: {', '.join(valid)}")


def create_model(name: str, num_classes: int | None = None, **kwargs) -> nn.Module:
    """Build a registered model. `num_classes` None keeps the factory's own default (10 for CIFAR-10 nets,
    100 for the CIFAR-100 study's)."""
    kwargs = resolve_model_args(name, num_classes, **kwargs)  # first: an unknown name is checked there
    return _REGISTRY[name](**kwargs)


def resolve_model_args(name: str, num_classes: int | None = None, **kwargs) -> dict:
    """The factory's keyword arguments, checked, with a parameter budget (``params``) turned into the widths it
    buys; a checkpoint keeps these, so loading it never searches again."""
    check_model(name, **kwargs)
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if "params" in kwargs:
        from .budget import fit_widths

        kwargs = fit_widths(name, _REGISTRY[name], kwargs)
    return kwargs
