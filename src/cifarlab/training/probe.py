"""How fast this machine trains: the unit `--time-budget` alone chooses its recipe in.

A budget in minutes means a different model on a laptop than on a GPU, so the crossovers of the budget curve
(`config.BUDGET_RECIPES`) are stated in epochs of fast94 at 32 px, and a few timed training steps of fast94 say
how long such an epoch takes here. The steps run on random images, leave the global random state, the thread
count and the autograd mode as they were, and cost a few seconds on a 2-core CPU (well under a second on a GPU).
"""

from __future__ import annotations

import functools
import os
import time

import torch
import torch.nn.functional as F

from ..device import autocast, resolve_device
from ..errors import CifarlabError

EPOCH_IMAGES = 45_000  # an epoch of the default 45,000 / 5,000 split
BATCH = 256  # fast94's batch size
WARMUP, TIMED = 1, 3  # the first step builds the kernels (oneDNN primitives, cuDNN plans); it is not timed


class _Ledger:
    unbilled = 0.0  # seconds probed that no run's budget has been charged for yet


def take_unbilled() -> float:
    """Seconds spent probing since the last call: the run the probe chose a recipe for takes them off its budget."""
    spent, _Ledger.unbilled = _Ledger.unbilled, 0.0
    return spent


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


@functools.cache
def fast94_epoch_seconds(device: str = "auto", threads: int = 0) -> float:
    """Seconds one 45,000-image epoch of fast94 at 32 px (batch 256, bf16 autocast, channels_last, SGD) takes on
    `device` with `threads` CPU threads (0: torch's default), from the fastest of `TIMED` steps after `WARMUP` (a
    step that shared the cores with another process, such as one still ending, reads slow; the fastest does not).
    Measured once per process, device and thread count."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # ranks timing themselves could choose different recipes
        raise CifarlabError("--time-budget without a recipe chooses one by timing this machine, which the ranks of a "
                            "distributed run could disagree on: name the recipe (--recipe fast94, fast95, ...)")
    started = time.perf_counter()
    dev = resolve_device(device)
    before = torch.get_num_threads()
    if threads > 0:
        torch.set_num_threads(threads)
    try:
        return _time_steps(dev)
    except RuntimeError as e:  # out of memory on a shared GPU, a broken driver: one line, and what avoids it
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CifarlabError(f"could not time this machine to choose a recipe for --time-budget ({first}); name the "
                            "recipe (--recipe fast94, fast95, ...)") from None
    finally:
        torch.set_num_threads(before)
        _Ledger.unbilled += time.perf_counter() - started


def _time_steps(dev: torch.device) -> float:
    from ..models.registry import create_model

    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []), torch.enable_grad():
        torch.manual_seed(0)
        model = create_model("fast94").to(dev, memory_format=torch.channels_last)
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.85, nesterov=True)
        x = torch.randn(BATCH, 3, 32, 32, device=dev).contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 10, (BATCH,), device=dev)
        steps = []
        for _ in range(WARMUP + TIMED):
            _sync(dev)
            start = time.perf_counter()
            with autocast(dev, "bf16"):
                loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            _sync(dev)
            steps.append(time.perf_counter() - start)
    return min(steps[WARMUP:]) * EPOCH_IMAGES / BATCH
