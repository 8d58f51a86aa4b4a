"""How long writing a run's plots and report.html takes (issue target: under 3 s added to a run).

    python bench/report_overhead.py RUN_DIR

Times `write_run_report` with the run's own records and final validation predictions recomputed from
`last.pt` (the recomputation is not timed: a run hands over the predictions it already has).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import torch  # noqa: E402
from common import machine  # noqa: E402

from cifarlab.data import BatchLoader, load_splits  # noqa: E402
from cifarlab.evaluation.report import write_run_report  # noqa: E402
from cifarlab.models import summarize  # noqa: E402
from cifarlab.training.checkpoint import load_checkpoint, model_from_checkpoint  # noqa: E402
from cifarlab.training.engine import evaluate_model  # noqa: E402


def main() -> None:
    run_dir = Path(sys.argv[1])
    ckpt = load_checkpoint(run_dir / "last.pt")
    cfg = ckpt["config"]
    val = load_splits(cfg["data"], cfg["val_split"], cfg["split_seed"], cfg["label_mode"]).val
    model = model_from_checkpoint(ckpt)
    ev = evaluate_model(model, BatchLoader(val, 500, mean=ckpt["mean"], std=ckpt["std"]), ckpt["num_classes"],
                        return_outputs=True)
    linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    times = []
    for _ in range(3):
        start = time.perf_counter()
        write_run_report(run_dir, classes=ckpt["classes"], confusion=ev["confusion"], val_images=val.images,
                         val_labels=val.labels, val_probs=ev["probs"], classifier=linear.weight,
                         model_summary=summarize(model).table())
        times.append(time.perf_counter() - start)
    print(f"machine: {machine()}")
    print(f"run {run_dir} ({len(val)} val images): report written in "
          f"{min(times):.2f} s best / {sum(times) / len(times):.2f} s mean of {len(times)}")


if __name__ == "__main__":
    main()
