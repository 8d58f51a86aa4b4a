"""Run reports: every plot of a run and one self-contained HTML page, and a page comparing several runs.

`write_run_report` draws from what the run directory already holds (config.yaml, metrics.jsonl,
summary.json) plus the final validation predictions, so it adds no training-time work.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from ..errors import CifarlabError
from ..files import make_dir, write_text
from ..metrics import per_class_accuracy
from . import plots

log = logging.getLogger("cifarlab")

RUN_PLOTS = ("curves.png", "lr.png", "confusion.png", "per_class.png", "weights.png", "mistakes.png")

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1150px;color:#222}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3;cursor:pointer}td:first-child,th:first-child{text-align:left}
pre{background:#f7f7f7;padding:8px;font-size:.8em;overflow:auto;max-height:420px}
figure{display:inline-block;margin:.5em}figcaption{font-size:.8em;color:#555}
img{max-width:100%}.big{font-size:1.3em;font-weight:bold}
"""

_SORT_JS = """
document.querySelectorAll('table.sortable th').forEach((th, col) => th.addEventListener('click', () => {
  const body = th.closest('table').tBodies[0];
  const rows = Array.from(body.rows);
  const asc = th.dataset.asc !== 'true'; th.dataset.asc = asc;
  const key = r => { const t = r.cells[col].dataset.v ?? r.cells[col].textContent; const n = parseFloat(t);
                     return isNaN(n) ? t : n; };
  rows.sort((a, b) => (key(a) > key(b) ? 1 : key(a) < key(b) ? -1 : 0) * (asc ? 1 : -1));
  rows.forEach(r => body.appendChild(r));
}));
"""


def read_run(run_dir: str | Path) -> dict[str, Any]:
    """config, summary, epoch history and step log of a run directory."""
    run_dir = Path(run_dir)
    if not (run_dir / "metrics.jsonl").is_file():
        raise CifarlabError(f"{run_dir} is not a run directory (no metrics.jsonl)")
    epochs, steps = [], []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            (epochs if row.get("type") == "epoch" else steps).append(row)
    summary_path = run_dir / "summary.json"
    config_path = run_dir / "config.yaml"
    return {"dir": run_dir, "name": run_dir.name, "epochs": epochs, "steps": steps,
            "summary": json.loads(summary_path.read_text()) if summary_path.is_file() else {},
            "config": yaml.safe_load(config_path.read_text()) if config_path.is_file() else {}}


def img_tag(path: Path) -> str:
    """A PNG inlined as a figure, so the page is one self-contained file."""
    data = base64.b64encode(path.read_bytes()).decode()
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{path.name}" data-file="{path.name}">'
            f"<figcaption>{path.name}</figcaption></figure>")


def html_table(header: list[str], rows: list[list[Any]], sortable: bool = False) -> str:
    """An HTML table; numbers carry their value for the column sorter (`sortable`)."""

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f'<td data-v="{v}">{v:.4f}</td>'
        if isinstance(v, int) and not isinstance(v, bool):
            return f'<td data-v="{v}">{v:,}</td>'
        return f"<td>{html.escape(str(v))}</td>"

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(cell(v) for v in r) + "</tr>" for r in rows)
    cls = ' class="sortable"' if sortable else ""
    return f"<table{cls}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def html_page(title: str, body: str) -> str:
    """The page around `body`: the shared style sheet and the table sorter (run, comparison and sweep pages)."""
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style></head><body>{body}<script>{_SORT_JS}</script></body></html>")


def _final_figures(run: dict[str, Any]) -> dict[str, Any]:
    s, last = run["summary"], (run["epochs"][-1] if run["epochs"] else {})
    best = s.get("best_epoch_metrics", {})
    gap = (best.get("train_top1", 0) - best["val_top1"]) if "val_top1" in best else None
    return {"run": run["name"], "recipe": s.get("recipe", ""), "model": s.get("model", ""),
            "params": s.get("params", ""), "best epoch": s.get("best_epoch", ""),
            "val top1": best.get("val_top1", ""), "val top2": best.get("val_top2", ""),
            "val top3": best.get("val_top3", ""),
            "TTA top1": (s.get("final_tta") or {}).get("val_top1", ""),
            "train-val gap": gap if gap is not None else "", "final train loss": last.get("train_loss", ""),
            "wall s": s.get("wall_seconds", ""), "epochs": s.get("epochs_run", len(run["epochs"]))}


def write_run_report(run_dir: str | Path, *, classes: list[str], confusion: torch.Tensor | None = None,
                     val_images: torch.Tensor | None = None, val_labels: torch.Tensor | None = None,
                     val_probs: torch.Tensor | None = None, classifier: torch.Tensor | None = None,
                     model_summary: str = "") -> Path:
    """Write the run's PNGs and report.html into `run_dir`; returns the page's path."""
    start = time.perf_counter()
    run_dir = Path(run_dir)
    run = read_run(run_dir)
    made = [plots.curves({run["name"]: run["epochs"]}, run_dir / "curves.png")]
    if run["steps"]:
        made.append(plots.learning_rate(run["steps"], run_dir / "lr.png"))
    per_class_rows = []
    if confusion is not None:
        made.append(plots.confusion(confusion, classes, run_dir / "confusion.png"))
        acc = per_class_accuracy(confusion).tolist()
        made.append(plots.per_class(acc, classes, run_dir / "per_class.png"))
        per_class_rows = [[c, a, n] for c, a, n in zip(classes, acc, confusion.sum(1).tolist(), strict=True)]
    if classifier is not None:
        made.append(plots.classifier_weights(classifier, classes, run_dir / "weights.png"))
    if val_images is not None and val_probs is not None and val_labels is not None:
        made.append(plots.mistakes(val_images, val_labels, val_probs, classes, run_dir / "mistakes.png"))

    fig = _final_figures(run)
    top1 = fig["val top1"]
    headline = (f"<p class='big'>val top-1 {100 * top1:.2f}%</p>" if isinstance(top1, float)
                else "<p class='big'>no validation split</p>")
    body = [f"<h1>cifarlab run {html.escape(run['name'])}</h1>", headline,
            "<h2>Final figures</h2>", html_table(list(fig), [list(fig.values())]),
            "<h2>Plots</h2>", "".join(img_tag(p) for p in made)]
    if per_class_rows:
        body += ["<h2>Per-class accuracy</h2>", html_table(["class", "accuracy", "images"], per_class_rows, True)]
    if model_summary:
        body += ["<h2>Model</h2>", f"<pre>{html.escape(model_summary)}</pre>"]
    body += ["<h2>Config</h2>", f"<pre>{html.escape(yaml.safe_dump(run['config'], sort_keys=False))}</pre>"]
    page = run_dir / "report.html"
    write_text(page, html_page(f"cifarlab {run['name']}", "".join(body)))
    log.info("report: %s (%d plots, %.1fs)", page, len(made), time.perf_counter() - start)
    return page


def write_comparison(run_dirs: list[str | Path], out: str | Path) -> Path:
    """One page for several runs: overlaid curves and a sortable table of their final figures."""
    if not run_dirs:
        raise CifarlabError("give at least one run directory")
    runs = [read_run(d) for d in run_dirs]
    names = [r["name"] for r in runs]
    if len(set(names)) < len(names):  # same leaf names: qualify them by their parents
        for r in runs:
            r["name"] = f"{r['dir'].parent.name}/{r['name']}"
    out = Path(out)
    make_dir(out)
    curves = plots.curves({r["name"]: r["epochs"] for r in runs}, out / "curves.png")
    figs = [_final_figures(r) for r in runs]
    body = [f"<h1>cifarlab: {len(runs)} runs compared</h1>",
            "<h2>Final figures</h2><p>Click a column to sort. The train-val gap is train minus validation "
            "top-1 at the best epoch (study 002's overfitting measure).</p>",
            html_table(list(figs[0]), [list(f.values()) for f in figs], sortable=True),
            "<h2>Curves</h2>", img_tag(curves)]
    for r in runs:
        if (r["dir"] / "lr.png").is_file():
            body += [f"<h2>{html.escape(r['name'])}</h2>",
                     "".join(img_tag(r["dir"] / p) for p in ("lr.png", "confusion.png") if (r["dir"] / p).is_file())]
    page = out / "report.html"
    write_text(page, html_page("cifarlab comparison", "".join(body)))
    return page
