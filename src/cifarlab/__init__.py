"""cifarlab: train, compare, tune and ship ResNet-family classifiers on CIFAR-10 and CIFAR-100.

Everything the command line does is a Python call first::

    import cifarlab
    result = cifarlab.train("seed001_small", data="cifar10-train-jpg.tar.gz", epochs=3)
    metrics = cifarlab.evaluate(result.run_dir / "best.pt")
    cifarlab.predict(result.run_dir / "best.pt", "cifar_test_nolabels.pkl", out="submission.csv")
    model = cifarlab.create_model("resnet9")

The names below are imported on first use, so that ``import cifarlab`` (and ``cifarlab --help``) does not load torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__

# public name -> the module that defines it
_LAZY = {
    "train": ".api", "load_model": ".api",
    "Config": ".config", "list_recipes": ".config", "make_config": ".config",
    "CifarlabError": ".errors",
    "evaluate": ".evaluation", "predict": ".evaluation", "write_comparison": ".evaluation",
    "write_run_report": ".evaluation",
    "export": ".exporting",
    "count_params": ".models", "create_model": ".models", "list_models": ".models", "summarize": ".models",
    "Callback": ".training.callbacks",
}

__all__ = ["Callback", "CifarlabError", "Config", "count_params", "create_model", "evaluate", "export", "list_models",
           "list_recipes", "load_model", "make_config", "predict", "summarize", "train", "write_comparison",
           "write_run_report", "__version__"]
assert set(__all__) == set(_LAZY) | {"__version__"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'cifarlab' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from .api import load_model, train
    from .config import Config, list_recipes, make_config
    from .errors import CifarlabError
    from .evaluation import evaluate, predict, write_comparison, write_run_report
    from .exporting import export
    from .models import count_params, create_model, list_models, summarize
    from .training.callbacks import Callback
