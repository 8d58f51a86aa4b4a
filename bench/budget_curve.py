"""Val top-1 (with TTA) against wall-clock budget: one `cifarlab train --time-budget M` run per recipe and budget.

    python bench/budget_curve.py fast94 fast95 --minutes 2 5 10 20 40 --out runs/budget
    python bench/budget_curve.py fast94 --minutes 5 --seeds 0 1 2 -- --val-every 0 --tta-margin 0.3
    python bench/budget_curve.py auto --minutes 5 10 30

The recipe `auto` names none, as a user who gives only `--time-budget` does: the run times this machine and
chooses (config.BUDGET_RECIPES), and its rows say which recipe it chose ("auto (fast95)"). Arguments after `--` are
passed to every run as config overrides. Each run is its own `cifarlab train` process, so the wall time printed is
the whole command's (start-up, reading the data, training, final evaluation), set beside the budget it was given.
Writes OUT/budget_curve.json, OUT/budget_curve.md (the table, for BENCHMARKS.md and the README) and
OUT/budget_curve.png (one line per recipe); runs already in OUT are read, not run again, and a run cut off (Ctrl-C,
a failure) is resumed by the next call, its command seconds summed over both. Time nothing else meanwhile.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import command_seconds, parse_run_args, train_point  # noqa: E402

AUTO = "auto"  # no recipe: the run chooses one for its budget, as `cifarlab train --time-budget N` alone does


def train_command(recipe: str, minutes: float, seed: int, data: str, run_dir: Path, extra: list[str]) -> list[str]:
    """The command that trains this point (a point cut off is resumed instead: `common.train_point`; the budget's
    clock is saved in its checkpoint, so the resumed run ends where the first would have)."""
    chosen = [] if recipe == AUTO else ["--recipe", recipe]
    return [sys.executable, "-m", "cifarlab", "train", *chosen, "--data", data, "--seed", str(seed),
            "--time-budget", str(minutes), "--out", str(run_dir), "--progress", "false", "--no-report", *extra]


def run_one(recipe: str, minutes: float, seed: int, data: str, run_dir: Path, extra: list[str]) -> dict:
    train_point(run_dir, train_command(recipe, minutes, seed, data, run_dir, extra), data)
    s = json.loads((run_dir / "summary.json").read_text())
    return {"recipe": recipe, "chosen": s.get("recipe") or s["model"], "minutes": minutes, "seed": seed,
            "epochs": s["epochs_run"],
            "val_top1": s["final"].get("val_top1"), "val_top1_tta": (s.get("final_tta") or {}).get("val_top1"),
            "run_seconds": s["wall_seconds"], "command_seconds": command_seconds(run_dir)}


def table(rows: list[dict]) -> str:
    """One line per recipe and budget: means over the seeds, the longest run and command (the budget's worst)."""
    lines = ["| recipe | budget (min) | seeds | epochs | val top-1 | with TTA | run wall (s) | command (s) "
             "| vs budget (run / command) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for (recipe, minutes), group in _groups(rows).items():
        if recipe == AUTO:  # which recipe the runs chose (each seed's run times the machine for itself)
            recipe = f"{AUTO} ({'/'.join(dict.fromkeys(r['chosen'] for r in group))})"
        tta = [r["val_top1_tta"] for r in group if r["val_top1_tta"] is not None]
        wall = max(r["run_seconds"] for r in group)
        commands = [r["command_seconds"] for r in group if r["command_seconds"] is not None]
        command = max(commands) if len(commands) == len(group) else None
        lines.append(f"| {recipe} | {minutes:g} | {len(group)} | {statistics.mean(r['epochs'] for r in group):.1f} | "
                     f"{100 * statistics.mean(r['val_top1'] for r in group):.2f}% | "
                     + (f"{100 * statistics.mean(tta):.2f}%" if tta else "n/a")
                     + f" | {wall:.0f} | " + ("n/a" if command is None else f"{command:.0f}")
                     + f" | {_vs(wall, minutes)} / " + ("n/a" if command is None else _vs(command, minutes)) + " |")
    return "\n".join(lines)


def _vs(seconds: float, minutes: float) -> str:
    return f"{100 * (seconds / (60 * minutes) - 1):+.1f}%"


def _groups(rows: list[dict]) -> dict[tuple[str, float], list[dict]]:
    out: dict[tuple[str, float], list[dict]] = {}
    for r in rows:
        out.setdefault((r["recipe"], r["minutes"]), []).append(r)
    return out


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for recipe in dict.fromkeys(r["recipe"] for r in rows):
        points = sorted((m, statistics.mean(100 * (r["val_top1_tta"] or r["val_top1"]) for r in g))
                        for (name, m), g in _groups(rows).items() if name == recipe)
        ax.plot([m for m, _ in points], [a for _, a in points], marker="o", label=recipe)
    ax.set(xscale="log", xlabel="wall-clock budget (minutes)", ylabel="val top-1 with TTA (%)",
           title="best model per budget")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("recipes", nargs="+")
    p.add_argument("--minutes", type=float, nargs="+", default=[2, 5, 10, 20, 40])
    args, extra, out = parse_run_args(p, "runs/budget")
    rows = []
    for recipe in args.recipes:
        for minutes in args.minutes:
            for seed in args.seeds:
                run_dir = out / f"{Path(recipe).stem}-{minutes:g}min-s{seed}"
                row = run_one(recipe, minutes, seed, args.data, run_dir, extra)
                rows.append(row)
                print(json.dumps(row), flush=True)
    (out / "budget_curve.json").write_text(json.dumps(rows, indent=2))
    md = table(rows)
    (out / "budget_curve.md").write_text(md + "\n")
    plot(rows, out / "budget_curve.png")
    print(md)


if __name__ == "__main__":
    main()
