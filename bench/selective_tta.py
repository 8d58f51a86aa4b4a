"""Selective test-time augmentation: accuracy and time at each margin, on a finished run's validation split.

    python bench/selective_tta.py runs/fast94 --margins 0.05 0.1 0.2 0.3 0.5 --tta flip_translate

For the run's saved weights (last.pt: the final weights the run's TTA figure is for): the plain pass, full TTA,
and TTA only for the images whose top-1 softmax probability beats the runner-up's by less than each margin, with
the share of images that got the views and the seconds each evaluation took (best of --repeat).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import machine  # noqa: E402

from cifarlab.data import load_eval_split  # noqa: E402
from cifarlab.data.loader import BatchLoader  # noqa: E402
from cifarlab.evaluation.evaluate import load_for_inference  # noqa: E402
from cifarlab.training.engine import evaluate_model  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path)
    p.add_argument("--margins", type=float, nargs="+", default=[0.05, 0.1, 0.2, 0.3, 0.5])
    p.add_argument("--tta", default="flip_translate")
    p.add_argument("--repeat", type=int, default=2)
    args = p.parse_args()
    net, ckpt, dev = load_for_inference(args.run / "last.pt", "auto")
    cfg = ckpt["config"]
    images = load_eval_split(cfg["data"], "val", cfg["val_split"], cfg["split_seed"], cfg["label_mode"])
    loader = BatchLoader(images, cfg["eval_batch_size"], mean=ckpt["mean"], std=ckpt["std"], device=dev,
                         channels_last=cfg["channels_last"])
    print(f"machine: {machine()}\nrun: {args.run} ({len(images)} val images, {cfg['precision']})")

    def timed(tta: str, margin: float) -> tuple[dict, float]:
        best = float("inf")
        for _ in range(args.repeat):
            t = time.perf_counter()
            ev = evaluate_model(net, loader, ckpt["num_classes"], tta=tta, tta_margin=margin,
                                precision=cfg["precision"])
            best = min(best, time.perf_counter() - t)
        return ev, best

    plain, t_plain = timed("none", 0.0)
    full, t_full = timed(args.tta, 0.0)
    print(f"{'evaluation':>22} {'top-1':>7} {'views on':>9} {'seconds':>8}")
    print(f"{'plain':>22} {100 * plain['top1']:6.2f}% {'0%':>9} {t_plain:8.1f}")
    print(f"{args.tta + ', all':>22} {100 * full['top1']:6.2f}% {'100%':>9} {t_full:8.1f}")
    for m in args.margins:
        share = evaluate_model(net, loader, ckpt["num_classes"], tta_margin=m, precision=cfg["precision"])["unsure"]
        ev, t = timed(args.tta, m)
        print(f"{f'margin < {m:g}':>22} {100 * ev['top1']:6.2f}% {100 * share:8.1f}% {t:8.1f}")


if __name__ == "__main__":
    main()
