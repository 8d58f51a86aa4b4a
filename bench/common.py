"""Shared helpers for the benchmark scripts: machine description and the fp32 matrix-multiply peak."""

from __future__ import annotations

import argparse
import os
import platform
import resource
import time
from datetime import date
from pathlib import Path

import torch


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return (f"{date.today()}  {cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, {gpu}, "
            f"torch {torch.__version__}")


def sgemm_peak(n: int = 2048, repeats: int = 10) -> float:
    """Best fp32 matmul rate in GFLOP/s over a few n x n products (the ceiling for conv-heavy training)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = 0.0
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, b)
        best = max(best, 2 * n**3 / (time.perf_counter() - t) / 1e9)
    return best


def peak_rss_gib() -> float:
    """Peak resident memory of this process and its finished children, in GiB (Linux reports KiB)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) / 1024**2


def parse_run_args(p: argparse.ArgumentParser, out: str) -> tuple[argparse.Namespace, list[str], Path]:
    """Add --seeds, --data and --out (as every bench that runs `cifarlab train` takes them) and parse: the args, the
    config overrides given after `--` (passed to each run), and the output folder, made. Prints the machine."""
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--data", default="../shared/data/cifar10-train-jpg.tar.gz")
    p.add_argument("--out", default=out)
    args, extra = p.parse_known_args()
    folder = Path(args.out)
    folder.mkdir(parents=True, exist_ok=True)
    print(f"machine: {machine()}", flush=True)
    return args, [x for x in extra if x != "--"], folder
