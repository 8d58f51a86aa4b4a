"""The model registry: every model is a small factory registered under a name.

``create_model(name, num_classes=10, **kwargs)`` builds one; an unknown name fails with the list of known ones.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from torch import nn

from ..errors import CifarlabError

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    _REGISTRY[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def create_model(name: str, num_classes: int = 10, **kwargs) -> nn.Module:
    """Build a registered model; keyword arguments the factory does not take are rejected by name."""
    if name not in _REGISTRY:
        raise CifarlabError(f"unknown model '{name}'; known models: {', '.join(list_models())}")
    factory = _REGISTRY[name]
    accepted = inspect.signature(factory).parameters
    for key in kwargs:
        if key not in accepted:
            valid = [k for k in accepted if k != "num_classes"]
            raise CifarlabError(f"model '{name}' takes no option '{key}'; it takes: {', '.join(valid)}")
    return factory(num_classes=num_classes, **kwargs)
