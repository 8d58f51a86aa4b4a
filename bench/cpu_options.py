"""Training-step throughput of one model under the engine's speed options, measured in one process.

    python bench/cpu_options.py fast94 --batch-sizes 256 512 1024

For each batch size: fp32 NCHW, fp32 channels_last, bf16 autocast NCHW and channels_last; images/s
of a full SGD step (forward, backward, update) on random data, after warm-up.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, sgemm_peak  # noqa: E402

from cifarlab.models import create_model, summarize  # noqa: E402


def rate(model_name: str, batch: int, channels_last: bool, bf16: bool, steps: int) -> float:
    torch.manual_seed(0)
    model = create_model(model_name)
    x = torch.randn(batch, 3, 32, 32)
    y = torch.randint(0, 10, (batch,))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(2):
        step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[256, 1024])
    p.add_argument("--images", type=int, default=4096, help="images timed per configuration")
    args = p.parse_args()
    flop = 3 * 2 * summarize(create_model(args.model)).macs
    peak = sgemm_peak()
    print(f"machine: {machine()}\nfp32 sgemm peak {peak:.0f} GFLOP/s; {args.model}: {flop / 1e9:.2f} GFLOP/image")
    print(f"{'batch':>6} {'layout':>14} {'dtype':>6} {'img/s':>8} {'GFLOP/s':>8} {'% peak':>7}")
    for b in args.batch_sizes:
        for cl in (False, True):
            for bf16 in (False, True):
                r = rate(args.model, b, cl, bf16, max(2, args.images // b))
                print(f"{b:>6} {'channels_last' if cl else 'NCHW':>14} {'bf16' if bf16 else 'fp32':>6} {r:8.0f} "
                      f"{r * flop / 1e9:8.0f} {100 * r * flop / 1e9 / peak:6.0f}%")


if __name__ == "__main__":
    main()
