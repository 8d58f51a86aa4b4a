"""cifarlab: train, compare, tune and ship ResNet-family classifiers on CIFAR-10 and CIFAR-100.

Everything the command line does is a Python call first::

    import cifarlab
    result = cifarlab.train("seed001_small", data="cifar10-train-jpg.tar.gz", epochs=3)
    metrics = cifarlab.evaluate(result.run_dir / "best.pt")
    cifarlab.predict(result.run_dir / "best.pt", "cifar_test_nolabels.pkl", out="submission.csv")
    model = cifarlab.create_model("resnet9")
"""

from ._version import __version__
from .api import train  # noqa: E402
from .config import Config, list_recipes, make_config  # noqa: E402
from .errors import CifarlabError  # noqa: E402
from .evaluate import evaluate, predict, write_comparison  # noqa: E402
from .models import count_params, create_model, list_models, summarize  # noqa: E402
from .train.callbacks import Callback  # noqa: E402

__all__ = ["Callback", "CifarlabError", "Config", "count_params", "create_model", "evaluate", "list_models",
           "list_recipes", "make_config", "predict", "summarize", "train", "write_comparison", "__version__"]
