"""The pictures the studies drew by hand, drawn from a run's records with matplotlib's file-only backend.

Each function takes plain data (lists, tensors) and writes one PNG; nothing here runs during training.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display, safe in CI and on servers
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from ..files import atomic_write  # noqa: E402

DPI = 100


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    try:
        with atomic_write(path, "wb", what="plot") as fh:
            fig.savefig(fh, dpi=DPI, format="png")
    finally:
        plt.close(fig)
    return path


def curves(runs: dict[str, list[dict]], path: Path) -> Path:
    """Loss and accuracy per epoch (train solid, val dashed), one colour per run: study 001's comparison."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    for i, (name, hist) in enumerate(runs.items()):
        color = f"C{i}"
        ep = [h["epoch"] for h in hist]
        label = f"{name} " if len(runs) > 1 else ""
        mark = {"marker": "o", "ms": 3}  # a one-epoch run is a single point, invisible as a bare line
        ax_loss.plot(ep, [h["train_loss"] for h in hist], color=color, label=f"{label}train", **mark)
        ax_acc.plot(ep, [100 * h["train_top1"] for h in hist], color=color, label=f"{label}train", **mark)
        scored = [h for h in hist if "val_loss" in h]  # with val_every, only some epochs have a val pass
        if scored:
            vep = [h["epoch"] for h in scored]
            ax_loss.plot(vep, [h["val_loss"] for h in scored], color=color, ls="--", label=f"{label}val", **mark)
            ax_acc.plot(vep, [100 * h["val_top1"] for h in scored], color=color, ls="--", label=f"{label}val",
                        **mark)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="top-1 accuracy (%)", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path)


def learning_rate(steps: list[dict], path: Path) -> Path:
    """The learning rate of every optimizer step (study 001's per-batch LR plot)."""
    fig, ax = plt.subplots(figsize=(8, 3.2))
    ax.plot([s["step"] for s in steps], [s["lr"] for s in steps], lw=1)
    ax.set(xlabel="optimizer step", ylabel="learning rate", title="learning rate per step")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def learning_rates(runs: dict[str, list[dict]], path: Path) -> Path:
    """Several runs' per-step learning rates on one set of axes."""
    fig, ax = plt.subplots(figsize=(8, 3.2))
    for i, (name, steps) in enumerate(runs.items()):
        ax.plot([s["step"] for s in steps], [s["lr"] for s in steps], lw=1, color=f"C{i}", label=name)
    ax.set(xlabel="optimizer step", ylabel="learning rate", title="learning rate per step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def confusion(matrix: torch.Tensor, classes: list[str], path: Path, title: str = "confusion matrix") -> Path:
    """Row-normalized confusion matrix; each cell shows its share and its count (up to 20 classes)."""
    m = matrix.double()
    norm = (m / m.sum(1, keepdim=True).clamp_min(1)).numpy()
    n = len(classes)
    size = min(14, max(5, 0.55 * n + 2))
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, label="share of the true class")
    if n <= 20:
        ax.set_xticks(range(n), classes, rotation=45, ha="right")
        ax.set_yticks(range(n), classes)
        counts = matrix.numpy()
        for i in range(n):
            for j in range(n):
                ax.text(j, i, f"{norm[i, j]:.2f}\n{counts[i, j]}", ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
    ax.set(xlabel="predicted", ylabel="true", title=title)
    return _save(fig, path)


def per_class(accuracy: list[float], classes: list[str], path: Path) -> Path:
    """Per-class accuracy as horizontal bars, worst first."""
    order = np.argsort(accuracy)
    fig, ax = plt.subplots(figsize=(7, max(3, 0.28 * len(classes) + 1)))
    ax.barh([classes[i] for i in order], [100 * accuracy[i] for i in order], color="C0")
    ax.set(xlabel="top-1 accuracy (%)", xlim=(0, 100), title="per-class accuracy")
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def classifier_weights(weight: torch.Tensor, classes: list[str], path: Path) -> Path:
    """Heat map of the last layer's weights, one row per class (study 002's W_last figure)."""
    w = weight.detach().float().cpu().numpy()
    lim = float(np.abs(w).max()) or 1.0
    fig, ax = plt.subplots(figsize=(10, max(3, 0.3 * len(classes) + 1)))
    im = ax.imshow(w, aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
    fig.colorbar(im, ax=ax, label="weight")
    if len(classes) <= 20:
        ax.set_yticks(range(len(classes)), classes)
    ax.set(xlabel="feature", title=f"classifier weights ({w.shape[0]} x {w.shape[1]})")
    return _save(fig, path)


def mistakes(images: torch.Tensor, labels: torch.Tensor, probs: torch.Tensor, classes: list[str], path: Path,
             count: int = 24) -> Path:
    """A grid of the most confident wrong predictions: image, true label, predicted label and confidence."""
    conf, pred = probs.max(1)
    wrong = (pred != labels).nonzero().flatten()
    order = wrong[conf[wrong].argsort(descending=True)][:count]
    cols = 8
    rows = max(1, -(-len(order) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.5, rows * 1.8))
    for ax in np.atleast_1d(axes).flatten():
        ax.axis("off")
    for ax, i in zip(np.atleast_1d(axes).flatten(), order.tolist(), strict=False):
        ax.imshow(images[i].permute(1, 2, 0).numpy())
        ax.set_title(f"true {classes[labels[i]]}\npred {classes[pred[i]]} {100 * conf[i]:.0f}%", fontsize=7)
    if not len(order):
        fig.suptitle("no wrong predictions")
    else:
        fig.suptitle("most confident mistakes (validation)", fontsize=10)
    return _save(fig, path)
