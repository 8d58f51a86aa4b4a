"""Data-parallel training on torch.distributed: what a rank is, and the few collectives the trainer needs.

A run is distributed when it is started by ``torchrun`` (which sets ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``
and the rendezvous variables). Every rank builds the same global batch from the same seeded generators and
trains on its contiguous slice of it; DistributedDataParallel averages the gradients, so one step equals
one single-process step on the whole batch, up to BatchNorm seeing per-rank statistics (``sync_bn``
makes them global on GPUs). Rank 0 alone evaluates and writes files; decisions that end a loop (a signal,
the time budget, early stopping) are agreed on by all ranks, so no rank waits on a collective the others
have left.
"""

from __future__ import annotations

import gc
import logging
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from ..errors import CifarlabError

log = logging.getLogger("cifarlab")


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    initialized_here: bool = False  # this process group was created by us and is ours to destroy
    grouped: bool = False  # this process joined a process group (torchrun), even as its only rank

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """Train through DDP and agree by collectives: under torchrun, however many ranks it started."""
        return self.grouped or self.world > 1

    def _all_reduce(self, values: list, op, dtype: torch.dtype) -> list:
        t = torch.tensor(values, dtype=dtype, device=_collective_device())
        dist.all_reduce(t, op=op)
        return t.tolist()

    def any(self, flag: int) -> int:
        """The largest of every rank's `flag` (0 = carry on): a stop seen by one rank stops all of them."""
        return self._all_reduce([flag], dist.ReduceOp.MAX, torch.int64)[0] if self.enabled else flag

    def max(self, values: list[float]) -> list[float]:
        """The largest of every rank's `values`, entry by entry, in one collective (flags and clocks together)."""
        return self._all_reduce(values, dist.ReduceOp.MAX, torch.float64) if self.enabled else values

    def sum(self, values: list[float]) -> list[float]:
        return self._all_reduce(values, dist.ReduceOp.SUM, torch.float64) if self.enabled else values

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0, device=_collective_device())
        return box[0]

    def barrier(self) -> None:
        """Wait for every rank: rank 0 may still be writing files that the others must not leave before
        (a rank that exits while its peers still talk to it can be aborted by gloo's threads)."""
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        if self.initialized_here and dist.is_initialized():
            # DDP wrappers replaced mid-run (freeze/unfreeze, the stem bias) may wait in reference cycles; free
            # them while the group they use still exists, not at interpreter exit (where gloo can abort)
            gc.collect()
            dist.destroy_process_group()


def _collective_device() -> torch.device:
    # NCCL moves only CUDA tensors; gloo only CPU ones.
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def init_distributed(device: torch.device, timeout_minutes: float = 30.0) -> tuple[DistContext, torch.device]:
    """Join the process group torchrun describes (or the one already set up); one process otherwise.
    Returns the context and the device this rank trains on (cuda:LOCAL_RANK on GPUs)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 and "LOCAL_RANK" not in os.environ and not dist.is_initialized():  # not under torchrun
        return DistContext(), device
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise CifarlabError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPU(s) on this machine; "
                                "start at most one process per GPU (--nproc_per_node)")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    created = False
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        try:
            dist.init_process_group(backend, timeout=timedelta(minutes=timeout_minutes))
        except (RuntimeError, ValueError) as exc:
            raise CifarlabError(f"could not join the process group ({backend}): {exc}") from None
        created = True
    ctx = DistContext(dist.get_rank(), dist.get_world_size(), local_rank, created, grouped=True)
    if not ctx.main:
        log.setLevel(logging.WARNING)  # one rank speaks for the run
    log.info("distributed: %d processes (%s backend)", ctx.world, dist.get_backend())
    return ctx, device


def wrap_model(model: nn.Module, ctx: DistContext, device: torch.device, sync_bn: bool) -> nn.Module:
    """The module the training steps run through: DDP on several ranks, the model itself otherwise."""
    if not ctx.enabled:
        return model
    if sync_bn:
        if device.type != "cuda":
            raise CifarlabError("sync_bn needs CUDA GPUs: SyncBatchNorm does not run on CPU (gloo); "
                                "leave sync_bn off for CPU training")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return rewrap_model(model, device)


def rewrap_model(model: nn.Module, device: torch.device) -> nn.Module:
    """A new DDP around `model` (already converted for sync_bn): DDP reduces the gradients of the parameters
    that required them when it was built, so freezing or unfreezing layers mid-run needs a new one."""
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)
