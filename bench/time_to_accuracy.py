"""Wall time to first reach a validation accuracy with a recipe, plus totals, FLOP rate and peak memory.

    python bench/time_to_accuracy.py fast94 --target 0.905 --data ../shared/data/cifar10-train-jpg.tar.gz
    python bench/time_to_accuracy.py fast94 --target 0.905 --seeds 0 1 2 -- --time-budget 15

Arguments after `--` are passed to `cifarlab train` as config overrides. Each seed is one run in this process.
"Reached" uses the per-epoch validation top-1 (no TTA); the final TTA figure is printed beside it.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, peak_rss_gib, sgemm_peak  # noqa: E402

import cifarlab  # noqa: E402
from cifarlab.cli import _parse_overrides  # noqa: E402
from cifarlab.models import create_model, summarize  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("recipe")
    p.add_argument("--target", type=float, default=0.94)
    p.add_argument("--data", default="../shared/data/cifar10-train-jpg.tar.gz")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--out", default="runs/bench")
    args, extra = p.parse_known_args()
    overrides = _parse_overrides([x for x in extra if x != "--"])
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    peak = sgemm_peak()
    print(f"machine: {machine()}")
    print(f"fp32 sgemm peak: {peak:.0f} GFLOP/s")
    rows = []
    for seed in args.seeds:
        start = time.perf_counter()
        res = cifarlab.train(args.recipe, data=args.data, seed=seed, out=f"{args.out}/{args.recipe}-s{seed}",
                             progress=False, **overrides)
        wall = time.perf_counter() - start
        cfg = cifarlab.make_config(str(res.run_dir / "config.yaml"))
        macs = summarize(create_model(cfg.model, num_classes=len(res.summary["classes"]))).macs
        reached = next((h["elapsed"] for h in res.history if h.get("val_top1", 0) >= args.target), None)
        images = sum(h["images"] for h in res.history)
        train_s = sum(h["train_time"] for h in res.history)
        gflops = 3 * 2 * macs * images / train_s / 1e9  # forward + backward ~ 3x the forward multiply-adds
        final = res.history[-1].get("val_top1")
        tta = (res.summary.get("final_tta") or {}).get("val_top1")
        rows.append({"seed": seed, "wall_s": wall, "train_s": train_s, "reached_s": reached, "final_val_top1": final,
                     "final_tta_top1": tta, "gflops": gflops, "epochs": len(res.history)})
        print(json.dumps(rows[-1]))
    print(f"\nrecipe {args.recipe}, target {args.target:.3f}, overrides {overrides or '{}'}")
    print(f"{'seed':>4} {'wall s':>8} {'train s':>8} {'reached s':>10} {'val top1':>9} {'TTA top1':>9} {'GFLOP/s':>8}")
    for r in rows:
        reached = f"{r['reached_s']:.0f}" if r["reached_s"] is not None else "never"
        tta = f"{100 * r['final_tta_top1']:.2f}" if r["final_tta_top1"] is not None else "-"
        print(f"{r['seed']:>4} {r['wall_s']:8.0f} {r['train_s']:8.0f} {reached:>10} {100 * r['final_val_top1']:9.2f} "
              f"{tta:>9} {r['gflops']:8.0f}")
    mean = sum(r["final_val_top1"] for r in rows) / len(rows)
    tta_rows = [r["final_tta_top1"] for r in rows if r["final_tta_top1"] is not None]
    print(f"mean val top1 {100 * mean:.2f}%" + (f", with TTA {100 * sum(tta_rows) / len(tta_rows):.2f}%"
                                                  if tta_rows else ""))
    print(f"achieved {sum(r['gflops'] for r in rows) / len(rows):.0f} GFLOP/s = "
          f"{100 * sum(r['gflops'] for r in rows) / len(rows) / peak:.0f}% of the sgemm peak; "
          f"peak resident memory {peak_rss_gib():.2f} GiB")


if __name__ == "__main__":
    main()
