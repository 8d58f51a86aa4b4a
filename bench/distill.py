"""Knowledge distillation on real data: a student recipe taught by a teacher against the same recipe alone.

    python bench/distill.py --teacher-recipe fast95 --student-recipe fast94 --seeds 0 --out runs/distill
    python bench/distill.py --teacher runs/fast95/best.pt --student-recipe fast94 --seeds 0 1 2 -- --distill-alpha 0.7

Trains the teacher (unless `--teacher CKPT` names one), then for each seed the student twice, with `--teacher` and
alone, same seed, split and epochs. Arguments after `--` are passed to both student runs as config overrides.
Each run is its own `cifarlab train` process; a run whose folder holds summary.json is read, not run again, and one
left with only last.pt (a session cut off) is continued with `--resume`, so the whole comparison can be spread over
sessions. Writes OUT/distill.json and OUT/distill.md (the table for BENCHMARKS.md). Time nothing else meanwhile.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import command_seconds, parse_run_args, train_point  # noqa: E402


def run_one(role: str, recipe: str, seed: int, data: str, run_dir: Path, extra: list[str]) -> dict:
    """Train (or continue, or read) one run; its figures as a row."""
    print(f"{role}: {run_dir}", flush=True)
    train_point(run_dir, [sys.executable, "-m", "cifarlab", "train", "--recipe", recipe, "--data", data, "--seed",
                          str(seed), "--out", str(run_dir), "--progress", "false", *extra], data)
    s = json.loads((run_dir / "summary.json").read_text())
    return {"role": role, "recipe": s.get("recipe") or recipe, "seed": seed, "params": s["params"],
            "epochs": s["epochs_run"], "val_top1": s["final"].get("val_top1"),
            "val_top1_tta": (s.get("final_tta") or {}).get("val_top1"), "train_seconds": s["train_seconds"],
            "command_seconds": command_seconds(run_dir), "run_dir": str(run_dir)}


def table(rows: list[dict]) -> str:
    lines = ["| run | recipe | seed | params | epochs | val top-1 | with TTA | train (s) | commands (s) |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        tta = f"{100 * r['val_top1_tta']:.2f}%" if r["val_top1_tta"] is not None else "n/a"
        top1 = f"{100 * r['val_top1']:.2f}%" if r["val_top1"] is not None else "n/a"
        command = f"{r['command_seconds']:.0f}" if r["command_seconds"] is not None else "n/a"
        lines.append(f"| {r['role']} | {r['recipe']} | {r['seed']} | {r['params']:,} | {r['epochs']} | {top1} | {tta} "
                     f"| {r['train_seconds']:.0f} | {command} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", help="a trained teacher (checkpoint or .onnx); else --teacher-recipe trains one")
    p.add_argument("--teacher-recipe", default="fast95")
    p.add_argument("--teacher-seed", type=int, default=0)
    p.add_argument("--student-recipe", default="fast94")
    args, extra, out = parse_run_args(p, "runs/distill")

    rows = []
    teacher = args.teacher
    if not teacher:
        t_dir = out / f"teacher-{Path(args.teacher_recipe).stem}-s{args.teacher_seed}"
        rows.append(run_one("teacher", args.teacher_recipe, args.teacher_seed, args.data, t_dir, []))
        teacher = str(t_dir / "best.pt")
    for seed in args.seeds:
        name = Path(args.student_recipe).stem
        rows.append(run_one("student + teacher", args.student_recipe, seed, args.data, out / f"{name}-taught-s{seed}",
                            ["--teacher", teacher, *extra]))
        rows.append(run_one("student alone", args.student_recipe, seed, args.data, out / f"{name}-s{seed}", extra))
        (out / "distill.json").write_text(json.dumps(rows, indent=1) + "\n")  # after each seed: nothing lost
    md = table(rows)
    (out / "distill.md").write_text(md + "\n")
    print(f"\nteacher {teacher}, student overrides {extra or 'none'}\n{md}")


if __name__ == "__main__":
    main()
