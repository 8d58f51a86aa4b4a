"""Knowledge distillation (Hinton, Vinyals and Dean, 2015): a student learns from a trained teacher's softened
outputs as well as from the labels.

``teacher: CKPT`` (a cifarlab checkpoint or an exported ONNX file) with ``distill_alpha`` and
``distill_temperature``. The teacher sees each training batch exactly as the student does (same augmentation),
re-normalized with its own mean and std, in inference mode and without gradients; its weights never change and
it draws no random numbers, so a resumed run is still bit-exact.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CifarlabError

log = logging.getLogger("cifarlab")


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, targets: torch.Tensor, *, alpha: float,
                      temperature: float, label_smoothing: float = 0.0) -> torch.Tensor:
    """(1 - alpha) * CE(student, labels) + alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)).
    The T^2 keeps the soft term's gradients on the scale of the hard term's as T changes (Hinton et al., sec. 2);
    the KL is averaged over the batch, as the cross-entropy is."""
    hard = F.cross_entropy(student, targets, label_smoothing=label_smoothing)
    t = temperature
    soft = F.kl_div(F.log_softmax(student / t, dim=1), F.log_softmax(teacher / t, dim=1), reduction="batchmean",
                    log_target=True)
    return (1 - alpha) * hard + alpha * (t * t) * soft


class Teacher:
    """A trained model that gives logits for the student's normalized batches."""

    def __init__(self, path: str | Path, *, num_classes: int, mean: list[float], std: list[float], resize: int,
                 device: torch.device):
        from ..evaluation.evaluate import load_for_inference  # evaluate/ reads checkpoints through train/

        model, ckpt, self.device = load_for_inference(path, str(device) if Path(path).suffix != ".onnx" else "cpu")
        self.model = model.eval()  # a checkpoint's net or an OnnxClassifier: both nn.Modules
        self.model.requires_grad_(False)
        if ckpt["num_classes"] != num_classes:
            raise CifarlabError(f"teacher {path} has {ckpt['num_classes']} classes; the student's data has "
                                f"{num_classes}")
        size = (ckpt.get("config", {}).get("resize") or 0) or 32
        if size != (resize or 32):
            raise CifarlabError(f"teacher {path} takes {size}-px images; the student trains on {resize or 32} px "
                                "(give the student the teacher's resize)")
        # student-normalized x -> teacher-normalized: x * scale + shift, per channel
        s_mean, s_std = torch.tensor(mean), torch.tensor(std)
        t_mean, t_std = torch.tensor(ckpt["mean"]), torch.tensor(ckpt["std"])
        self.scale = (s_std / t_std).view(1, -1, 1, 1).to(device)
        self.shift = ((s_mean - t_mean) / t_std).view(1, -1, 1, 1).to(device)
        log.info("teacher %s (%s, %d classes)", path, ckpt.get("model", "?"), num_classes)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        y = x.float() * self.scale + self.shift
        return self.model(y.to(self.device)).float().to(x.device)

    def parameters(self) -> Iterator[nn.Parameter]:
        return self.model.parameters()
