"""A run beside the study figure its recipe reproduces (`cifarlab compare-to-study RUN`).

The study's figure comes from the recipe's own ``study:`` block: the packaged recipe's as it stands now (a figure
corrected after the run was made applies to it; the one in the run's config.yaml is shown beside it when they
differ), or for a recipe file the block kept in the run's config.yaml. The run's figure comes from its summary.json
or, for a run that was interrupted or is still going, from its metrics.jsonl.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..config import list_recipes, load_recipe, load_yaml
from ..errors import CifarlabError
from ..files import read_jsonl

# Why a run here and a study's figure are not the same measurement (shared/data/README.md).
JPEG_NOTE = ("this run's figure is on a validation split held out of the JPEG-re-encoded training images, not the "
             "CIFAR-10 test split (study 001's three nets land 3-4 points under their test figures here)")


def compare_to_study(run_dir: str | Path) -> dict[str, Any]:
    """The study's figure and the run's: best and final val top-1 (and with TTA), epochs, wall time."""
    run = Path(run_dir)
    if not (run / "config.yaml").is_file():
        raise CifarlabError(f"{run} is not a run directory (no config.yaml)")
    cfg = load_yaml(run / "config.yaml", "run config") or {}
    saved = cfg.get("study") or {}
    current = (load_recipe(cfg["recipe"]).get("study") or {}) if cfg.get("recipe") in list_recipes() else {}
    study = current or saved  # (a run from before recipes carried their study has none saved)
    was = saved.get("figure") if isinstance(saved, dict) and current and saved.get("figure") != current.get("figure") \
        else None
    if not isinstance(study, dict) or "figure" not in study:
        raise CifarlabError(f"{run}: its recipe ({cfg.get('recipe') or cfg.get('model')}) names no study figure "
                            "(the study recipes carry one: cifarlab recipes)")
    epochs = [r for r in read_jsonl(run / "metrics.jsonl") if r.get("type") == "epoch"] \
        if (run / "metrics.jsonl").is_file() else []
    summary = {}
    if (run / "summary.json").is_file():
        try:
            summary = json.loads((run / "summary.json").read_text())
        except ValueError:
            raise CifarlabError(f"{run / 'summary.json'} is not valid JSON") from None
    vals = [r["val_top1"] for r in epochs if isinstance(r.get("val_top1"), (int, float))]
    tta = (summary.get("final_tta") or {}).get("val_top1")
    best = max(vals) if vals else None
    ours = tta if tta is not None else (vals[-1] if vals else None)
    return {
        "run": str(run), "recipe": cfg.get("recipe", ""), "study": str(study.get("id", "")),
        "study_figure": float(study["figure"]), "study_metric": study.get("metric", ""),
        "study_note": study.get("note", ""), "run_config_figure": was,
        "epochs_run": len(epochs), "epochs_planned": cfg.get("epochs"),
        "finished": bool(summary), "best_val_top1": None if best is None else 100 * best,
        "final_val_top1": None if not vals else 100 * vals[-1],
        "final_val_top1_tta": None if tta is None else 100 * tta,
        "difference": None if ours is None else 100 * ours - float(study["figure"]),
        "train_seconds": sum(r.get("train_time", 0) for r in epochs), "device": summary.get("device", ""),
        "note": JPEG_NOTE,
    }


def format_comparison(c: dict[str, Any]) -> str:
    def pct(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}%"

    state = "finished" if c["finished"] else f"stopped after epoch {c['epochs_run']} of {c['epochs_planned']}"
    ours = c["final_val_top1_tta"] if c["final_val_top1_tta"] is not None else c["final_val_top1"]
    lines = [f"{c['run']}: recipe {c['recipe']}, {state}, {c['train_seconds'] / 60:.1f} min of training"
             + (f" on {c['device']}" if c["device"] else ""),
             f"  study {c['study']}: {pct(c['study_figure'])} {c['study_metric']}".rstrip(),
             f"  this run: {pct(ours)} val top-1" + (" with TTA" if c["final_val_top1_tta"] is not None else "")
             + f" at its end (best epoch {pct(c['best_val_top1'])})",
             "  difference: " + ("-" if c["difference"] is None else f"{c['difference']:+.2f} points")]
    if c["study_note"]:
        lines.append(f"  study note: {c['study_note']}")
    if c.get("run_config_figure") is not None:
        lines.append(f"  the run's config.yaml names {c['run_config_figure']}%, the figure its recipe gave when it "
                     "ran; the recipe's figure has been corrected since")
    lines.append(f"  note: {c['note']}")
    return "\n".join(lines)
