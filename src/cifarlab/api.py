"""The public calls that join training and reporting (training/ never imports evaluation/)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .evaluation.report import write_run_report
from .training.callbacks import Callback
from .training.trainer import RunResult
from .training.trainer import train as _train


def train(recipe: str | None = None, data: str | None = None, *, resume: str | None = None, report: bool = True,
          on_epoch: Callable[[dict], Any] | None = None, callbacks: Sequence[Callback] = (),
          **overrides: Any) -> RunResult:
    """Train a model and write its plots and report.html.

    ``recipe`` is a recipe name (``cifarlab.list_recipes()``) or a YAML path (a run's ``config.yaml`` works);
    ``data`` is any source the readers know; every other keyword overrides a config key
    (``epochs=3, lr=0.05, ...``). ``resume=RUN_DIR`` continues that run from its ``last.pt``.
    ``report=False`` skips the plots and the page. ``on_epoch(row)`` sees each epoch's metrics as they come;
    ``callbacks`` (:class:`cifarlab.Callback` objects) see every hook of the loop.

    >>> run = cifarlab.train("seed001_small", data="cifar10-train-jpg.tar.gz", epochs=3)  # doctest: +SKIP
    >>> run.summary["best"], run.run_dir / "report.html"  # doctest: +SKIP
    """
    return _train(recipe, data, resume=resume, reporter=write_run_report if report else None, on_epoch=on_epoch,
                  callbacks=callbacks, **overrides)


def load_model(checkpoint: str, *, device: str = "auto", model: str | None = None,
               mean: list[float] | None = None, std: list[float] | None = None):
    """The network in `checkpoint`, in eval mode on `device`, as ``eval`` and ``predict`` load it: a cifarlab
    checkpoint, a ``.safetensors`` file written by ``export``, an exported ``.onnx`` file (a callable run by
    onnxruntime), or a plain state dict with `model` (and the `mean`/`std` it was trained with).
    Its class names, normalization and config are on ``net.cifarlab`` (a dict).

    >>> net = cifarlab.load_model("runs/fast94/best.pt")  # doctest: +SKIP
    >>> net.cifarlab["classes"][net(x).argmax(1)[0]]  # doctest: +SKIP
    """
    from .evaluation.evaluate import load_for_inference

    net, ckpt, _ = load_for_inference(checkpoint, device, model=model, mean=mean, std=std)
    if hasattr(net, "eval"):
        net.eval()
    info = {k: ckpt.get(k) for k in ("model", "model_args", "classes", "num_classes", "mean", "std")}
    info["config"] = ckpt.get("config", {})
    try:
        net.cifarlab = info
    except AttributeError:
        pass
    return net
