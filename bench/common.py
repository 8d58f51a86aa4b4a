"""Shared helpers for the benchmark scripts: machine description and the fp32 matrix-multiply peak."""

from __future__ import annotations

import argparse
import ctypes
import os
import platform
import resource
import signal
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import torch

from cifarlab.errors import CifarlabError
from cifarlab.files import RunLock


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


def stop_with_parent(prctl, parent: int) -> None:
    """In a bench's child between fork and exec (Linux): SIGTERM when the bench dies, however it dies (SIGKILL too),
    so a training run saves last.pt and stops instead of training on alone beside the next bench, holding its run's
    lock (the next bench call resumes it). Only a system call here: `prctl` was looked up in the parent."""
    prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the bench died before the call: its signal will not come
        os.kill(os.getpid(), signal.SIGTERM)


def child_options() -> dict:
    """subprocess options for a bench's `cifarlab train` (see `stop_with_parent`); none off Linux."""
    if not sys.platform.startswith("linux"):
        return {}
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return {}
    parent = os.getpid()
    return {"preexec_fn": lambda: stop_with_parent(prctl, parent)}


SECONDS_FILE = "command_seconds.txt"  # in a run's folder: the seconds of every bench command that trained it, summed


def train_point(run_dir: Path, new: list[str], data: str) -> None:
    """Bring the training run in `run_dir` to its end: `new` (a `cifarlab train` command writing there) if it never
    started, `--resume` if a command before was cut off (Ctrl-C, a failure), nothing if it has its summary. The
    output is appended to RUN.log beside it and each command's seconds are added up in RUN/command_seconds.txt (a
    command cut off still spent them). A second bench on the same run at once is refused before it runs anything,
    in one line: it would resume the same checkpoint and count its seconds into the first's."""
    try:
        lock = RunLock(run_dir.parent, f".{run_dir.name}.lock", f"a bench training {run_dir.name} there").acquire()
    except CifarlabError as exc:  # one line and exit 2, as cifarlab's own refusals
        print(exc, file=sys.stderr)
        raise SystemExit(2) from None
    try:
        if (run_dir / "summary.json").is_file():
            return
        cmd = ([sys.executable, "-m", "cifarlab", "train", "--resume", str(run_dir), "--data", data]
               if (run_dir / "last.pt").is_file() else new)
        log_path = run_dir.parent / f"{run_dir.name}.log"  # (with_suffix would cut at a budget's decimal point)
        print(f"{' '.join(cmd)}  (log: {log_path})", flush=True)
        start = time.perf_counter()
        try:
            with open(log_path, "a") as log:
                rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, **child_options()).returncode
        finally:  # a command cut off still spent its seconds: the resume adds its own to them
            if run_dir.is_dir():  # (a run refused before it made its folder has nothing to resume)
                before = command_seconds(run_dir) or 0.0
                (run_dir / SECONDS_FILE).write_text(f"{before + time.perf_counter() - start:.1f}\n")
        if rc != 0:
            raise SystemExit(f"{' '.join(cmd)} failed with exit {rc}; see {log_path}")
    finally:
        lock.release()


def command_seconds(run_dir: Path) -> float | None:
    """The seconds every command of the run in `run_dir` took together (`train_point`), if it counted them."""
    seconds = run_dir / SECONDS_FILE
    return float(seconds.read_text()) if seconds.is_file() else None
