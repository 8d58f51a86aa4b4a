"""Hyper-parameter sweeps on Optuna: sweep files, studies in SQLite or PostgreSQL, workers, and their reports."""

from .show import show_sweep
from .spec import SweepSpec, load_sweep, parse_sweep
from .study import run_sweep

__all__ = ["SweepSpec", "load_sweep", "parse_sweep", "run_sweep", "show_sweep"]
