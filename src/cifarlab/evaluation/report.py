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
img{max-width:100%}.big{font-size:1.3em;font-weight:bold;margin:.3em 0}.facts{color:#555;margin:.2em 0}
.status{margin:.2em 0;font-style:italic}.note{font-size:.85em;color:#555}
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


# What each picture shows, for the caption under it.
CAPTIONS = {
    "curves.png": "Loss (left) and top-1 accuracy (right) per epoch: training solid, validation dashed.",
    "lr.png": "Learning rate at every optimizer step, as the schedule set it.",
    "lrs.png": "Learning rate at every optimizer step, one colour per run.",
    "confusion.png": "Confusion matrix of the best weights on the validation split: rows are true classes, "
                     "columns predicted.",
    "per_class.png": "Top-1 accuracy of the best weights per class on the validation split.",
    "weights.png": "The classifier's weight rows per class (how strongly each feature votes for each class).",
    "mistakes.png": "Validation images the best weights got most confidently wrong, with true and predicted labels.",
}


class Pct(float):
    """A fraction shown as a percent (the value sorts as the fraction)."""


def img_tag(path: Path, caption: str | None = None) -> str:
    """A PNG inlined as a figure, so the page is one self-contained file."""
    data = base64.b64encode(path.read_bytes()).decode()
    text = caption or CAPTIONS.get(path.name, path.stem.replace("_", " "))
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(text)}" data-file="{path.name}">'
            f"<figcaption>{html.escape(text)}</figcaption></figure>")


def html_table(header: list[str], rows: list[list[Any]], sortable: bool = False) -> str:
    """An HTML table; numbers carry their value for the column sorter (`sortable`)."""

    def cell(v: Any) -> str:
        if isinstance(v, Pct):
            return f'<td data-v="{float(v)}">{100 * v:.2f}%</td>'
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


def _pct(v: Any) -> Any:
    return Pct(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else ""


def _best_row(run: dict[str, Any]) -> dict[str, Any]:
    """The epoch the run's best.pt holds: from summary.json, else (interrupted or running) from metrics.jsonl."""
    s, epochs = run["summary"], run["epochs"]
    if s.get("best_epoch_metrics"):
        return s["best_epoch_metrics"]
    if not epochs:
        return {}
    metric = run["config"].get("best_metric", "val_top1")
    if metric not in epochs[0]:
        return min(epochs, key=lambda r: r["train_loss"])
    return (min if metric.endswith("loss") else max)(epochs, key=lambda r: r[metric])


def run_status(run: dict[str, Any]) -> str:
    """'finished: 30 of 30 epochs', 'stopped early after epoch 12 of 30', or 'stopped after epoch 1 of 12' for a run
    without summary.json (interrupted, or still running)."""
    done = run["epochs"][-1]["epoch"] if run["epochs"] else 0
    planned = run["config"].get("epochs", "?")
    if not run["summary"]:
        return (f"stopped after epoch {done} of {planned} (interrupted or still running; continue with "
                f"cifarlab train --resume {run['dir']})")
    if isinstance(planned, int) and done < planned:
        why = "its time budget ran out" if run["config"].get("time_budget") else "early stopping"
        return f"stopped early after epoch {done} of {planned} ({why})"
    return f"finished: {done} of {planned} epochs"


def _params(run: dict[str, Any]) -> Any:
    if run["summary"].get("params"):
        return run["summary"]["params"]
    last = run["dir"] / "last.pt"
    if not last.is_file():
        return ""
    from ..models import count_params, create_model
    from ..training.checkpoint import load_checkpoint

    try:
        ckpt = load_checkpoint(last)
        with torch.device("meta"):
            return count_params(create_model(ckpt["model"], num_classes=ckpt["num_classes"], **ckpt["model_args"]))
    except CifarlabError:
        return ""


def run_facts(run: dict[str, Any]) -> dict[str, Any]:
    """When, on what, where, how big and how long: the header of a run's page and a comparison's columns."""
    cfg, s, epochs = run["config"], run["summary"], run["epochs"]
    started = run["dir"] / "config.yaml"
    wall = s.get("wall_seconds") or (epochs[-1].get("elapsed") if epochs else None)
    return {"date": time.strftime("%Y-%m-%d %H:%M", time.localtime(started.stat().st_mtime))
            if started.is_file() else "", "data": Path(str(cfg.get("data", ""))).name or "",
            "device": s.get("device") or f"{cfg.get('device', '?')} (not recorded until the run ends)",
            "params": _params(run), "wall": f"{wall / 60:.1f} min" if isinstance(wall, (int, float)) else ""}


def _final_figures(run: dict[str, Any], facts: dict[str, Any]) -> dict[str, Any]:
    s, epochs = run["summary"], run["epochs"]
    last = epochs[-1] if epochs else {}
    best = _best_row(run)
    gap = (best.get("train_top1", 0) - best["val_top1"]) if "val_top1" in best else None
    return {"run": run["name"], "recipe": run["config"].get("recipe") or s.get("recipe", ""),
            "model": run["config"].get("model") or s.get("model", ""), "params": facts["params"],
            "status": run_status(run).split(" (")[0], "best epoch": best.get("epoch", ""),
            "val top-1": _pct(best.get("val_top1")), "val top-2": _pct(best.get("val_top2")),
            "val top-3": _pct(best.get("val_top3")), "TTA top-1": _pct((s.get("final_tta") or {}).get("val_top1")),
            "train-val gap": _pct(gap), "final train loss": last.get("train_loss", ""), "wall": facts["wall"],
            "date": facts["date"], "data": facts["data"], "device": facts["device"].split(" (")[0]}


def _header(run: dict[str, Any], f: dict[str, Any]) -> str:
    params = f"{f['params']:,} parameters" if isinstance(f["params"], int) else "parameters n/a"
    data = str(run["config"].get("data", ""))
    parts = [f"started {f['date']}" if f["date"] else "", f"data {data}" if data else "",
             f"device {f['device']}", params, f"wall time {f['wall']}" if f["wall"] else ""]
    return f"<p class='facts'>{html.escape(' · '.join(p for p in parts if p))}</p>"


def write_run_report(run_dir: str | Path, *, classes: list[str] | None = None, confusion: torch.Tensor | None = None,
                     val_images: torch.Tensor | None = None, val_labels: torch.Tensor | None = None,
                     val_probs: torch.Tensor | None = None, classifier: torch.Tensor | None = None,
                     model_summary: str = "") -> Path:
    """Write the run's PNGs and report.html into `run_dir`; returns the page's path. The page is built from what
    the directory holds (config.yaml, metrics.jsonl, summary.json), so an interrupted or running run shows its
    real figures; called without the final predictions (``cifarlab report RUN``) it redraws the curves and keeps
    the pictures the run drew when it ended."""
    start = time.perf_counter()
    run_dir = Path(run_dir)
    run = read_run(run_dir)
    classes = classes or run["summary"].get("classes") or []
    made = [plots.curves({run["name"]: run["epochs"]}, run_dir / "curves.png")]
    if run["steps"]:
        made.append(plots.learning_rate(run["steps"], run_dir / "lr.png"))
    per_class_rows = []
    if confusion is not None:
        made.append(plots.confusion(confusion, classes, run_dir / "confusion.png"))
        acc = per_class_accuracy(confusion).tolist()
        made.append(plots.per_class(acc, classes, run_dir / "per_class.png"))
        per_class_rows = [[c, Pct(a), n] for c, a, n in zip(classes, acc, confusion.sum(1).tolist(), strict=True)]
    if classifier is not None:
        made.append(plots.classifier_weights(classifier, classes, run_dir / "weights.png"))
    if val_images is not None and val_probs is not None and val_labels is not None:
        made.append(plots.mistakes(val_images, val_labels, val_probs, classes, run_dir / "mistakes.png"))
    shown = made + [run_dir / n for n in RUN_PLOTS if (run_dir / n).is_file() and run_dir / n not in made]

    facts = run_facts(run)
    fig = _final_figures(run, facts)
    top1, status = fig["val top-1"], run_status(run)
    if isinstance(top1, Pct):
        headline = f"val top-1 {100 * top1:.2f}% at epoch {fig['best epoch']}"
    elif run["epochs"]:
        headline = (f"no validation split: best.pt has the lowest training loss "
                    f"({fig['final train loss']:.4f} at the last epoch)")
    else:
        headline = "no epoch finished yet"
    body = [f"<h1>cifarlab run {html.escape(run['name'])}</h1>", _header(run, facts),
            f"<p class='big'>{html.escape(headline)}</p>", f"<p class='status'>{html.escape(status)}</p>",
            "<h2>Figures</h2>", html_table(list(fig), [list(fig.values())]),
            "<p class='note'>Validation figures are on the part of the training split the run held out "
            f"(val_split {html.escape(str(run['config'].get('val_split', '')))}), not on the test set.</p>",
            "<h2>Plots</h2>", "".join(img_tag(p) for p in shown)]
    if per_class_rows:
        body += ["<h2>Per-class accuracy</h2>", html_table(["class", "accuracy", "images"], per_class_rows, True)]
    if model_summary:
        body += ["<h2>Model</h2>", f"<pre>{html.escape(model_summary)}</pre>"]
    body += ["<h2>Config</h2>", f"<pre>{html.escape(yaml.safe_dump(run['config'], sort_keys=False))}</pre>"]
    page = run_dir / "report.html"
    write_text(page, html_page(f"cifarlab {run['name']}", "".join(body)))
    log.info("report: %s (%d plots, %.1fs)", page, len(shown), time.perf_counter() - start)
    return page


# config keys that differ between any two runs but say nothing about how they trained
_NOT_SETTINGS = {"out", "progress", "study"}


def settings_diff(runs: list[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """The config keys whose values differ between the runs, one row each: (header, rows)."""
    keys = sorted({k for r in runs for k in r["config"]} - _NOT_SETTINGS)
    rows = []
    for key in keys:
        values = [r["config"].get(key, "(absent)") for r in runs]
        if any(v != values[0] for v in values[1:]):
            rows.append([key, *[v if isinstance(v, str) else json.dumps(v) for v in values]])  # exactly as set
    return ["setting", *[r["name"] for r in runs]], rows


def write_comparison(run_dirs: list[str | Path], out: str | Path) -> Path:
    """One page for several runs: the settings that differ, a sortable table of their figures, overlaid curves."""
    if not run_dirs:
        raise CifarlabError("give at least one run directory")
    runs = [read_run(d) for d in run_dirs]
    names = [r["name"] for r in runs]
    if len(set(names)) < len(names):  # same leaf names: qualify them by their parents
        for r in runs:
            r["name"] = f"{r['dir'].parent.name}/{r['name']}"
    out = Path(out)
    make_dir(out)
    pictures = [plots.curves({r["name"]: r["epochs"] for r in runs}, out / "curves.png")]
    if any(r["steps"] for r in runs):
        pictures.append(plots.learning_rates({r["name"]: r["steps"] for r in runs if r["steps"]}, out / "lrs.png"))
    figs = [_final_figures(r, run_facts(r)) for r in runs]
    header, diff = settings_diff(runs)
    differ = (html_table(header, diff) if diff else "<p>The runs' configs are identical (seeds included).</p>")
    body = [f"<h1>cifarlab: {len(runs)} runs compared</h1>",
            f"<p class='facts'>written {time.strftime('%Y-%m-%d %H:%M')} · "
            f"{html.escape(', '.join(sorted({f['data'] for f in figs if f['data']})) or 'data n/a')}</p>",
            "<h2>Settings that differ</h2>", differ,
            "<h2>Figures</h2><p>Click a column to sort. The train-val gap is train minus validation "
            "top-1 at the best epoch (study 002's overfitting measure).</p>",
            html_table(list(figs[0]), [list(f.values()) for f in figs], sortable=True),
            "<h2>Curves</h2>", "".join(img_tag(p) for p in pictures)]
    page = out / "report.html"
    write_text(page, html_page("cifarlab comparison", "".join(body)))
    return page
