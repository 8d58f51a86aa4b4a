"""Evaluation and prediction from a trained checkpoint."""

from .evaluate import evaluate
from .predict import predict
from .report import write_comparison, write_run_report

__all__ = ["evaluate", "predict", "write_comparison", "write_run_report"]
