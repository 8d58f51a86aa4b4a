"""Evaluation and prediction from a trained checkpoint."""

from .evaluate import evaluate
from .predict import predict

__all__ = ["evaluate", "predict"]
