"""What a sweep found: its trials ranked by the metric, the best configuration as a recipe file, Optuna's
plots (optimization history, parameter importances, parallel coordinates, intermediate values) and a page."""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path
from typing import Any

from ..config import make_config, to_yaml
from ..errors import CifarlabError
from ..files import atomic_write, make_dir, write_text
from .study import SQLITE_NAME, _optuna, open_storage, storage_url

log = logging.getLogger("cifarlab")


def load_study(target: str | Path, study_name: str | None = None):
    """The study in a sweep directory (its study.db) or at a storage URL; the only one there unless named."""
    optuna = _optuna()
    path = Path(target)
    if path.is_dir():
        if not (path / SQLITE_NAME).is_file():
            raise CifarlabError(f"{path} holds no {SQLITE_NAME}; give the sweep directory or its --storage URL")
        url = storage_url(None, path)
    elif "://" in str(target):
        url = storage_url(str(target), path)
    else:
        raise CifarlabError(f"{target} is neither a sweep directory nor a storage URL")
    store = open_storage(url)
    names = optuna.study.get_all_study_names(store)
    if study_name is None:
        if len(names) != 1:
            raise CifarlabError(f"the storage holds {len(names)} studies ({', '.join(names) or 'none'}); name one "
                                "with --study")
        study_name = names[0]
    elif study_name not in names:
        raise CifarlabError(f"no study '{study_name}' in the storage; it holds: {', '.join(names) or 'none'}")
    return optuna.load_study(study_name=study_name, storage=store)


def ranked_trials(study) -> list[dict[str, Any]]:
    """One dict per trial: finished ones by their value (best first), then the rest by number."""
    sign = -1 if study.direction.name == "MAXIMIZE" else 1
    rows = []
    for t in study.get_trials(deepcopy=False):
        value = t.value if t.value is not None and not math.isnan(t.value) else None
        if value is None and t.intermediate_values:  # a pruned trial: its last report
            value = t.intermediate_values[max(t.intermediate_values)]
        seconds = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete and \
            t.datetime_start else None
        rows.append({"number": t.number, "state": t.state.name, "value": value, "params": dict(t.params),
                     "epochs": len(t.intermediate_values), "seconds": seconds,
                     "run_dir": t.user_attrs.get("run_dir", ""), "note": t.user_attrs.get("error", "")})
    order = {"COMPLETE": 0, "PRUNED": 1}
    rows.sort(key=lambda r: (order.get(r["state"], 2), sign * r["value"] if r["value"] is not None else math.inf,
                             r["number"]))
    return rows


def format_table(rows: list[dict[str, Any]], metric: str) -> str:
    keys = sorted({k for r in rows for k in r["params"]})
    header = ["trial", "state", metric, "epochs", "seconds", *keys]
    lines = [[str(r["number"]), r["state"], "" if r["value"] is None else f"{r['value']:.4f}", str(r["epochs"]),
              "" if r["seconds"] is None else f"{r['seconds']:.0f}", *(_fmt(r["params"].get(k)) for k in keys)]
             for r in rows]
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(header)]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    out += ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in lines]
    return "\n".join(out)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)


def best_recipe(study) -> str:
    """The winning trial's full config as a recipe file (the sweep's base recipe, its overrides, the values)."""
    spec = study.user_attrs["sweep"]
    best = study.best_trial
    cfg = make_config(spec["recipe"], **best.user_attrs["config"])
    cfg.out = ""
    head = (f"# Best of sweep '{study.study_name}': trial {best.number}, {spec['metric']} {best.value:.4f}\n"
            f"# base recipe {spec['recipe']}; searched: "
            + ", ".join(f"{k}={_fmt(v)}" for k, v in best.params.items()) + "\n")
    return head + to_yaml(cfg)


def write_plots(study, out: Path) -> list[Path]:
    """Optuna's own matplotlib plots; one that needs more finished trials than there are is skipped."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as vis

    made = []
    for name, fn in (("history.png", vis.plot_optimization_history),
                     ("importances.png", vis.plot_param_importances),
                     ("parallel.png", vis.plot_parallel_coordinate),
                     ("intermediate.png", vis.plot_intermediate_values)):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # e.g. matplotlib on an axis whose trials share one value
                ax = fn(study)
            fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
            fig.set_size_inches(7.5, 4.5)
            fig.tight_layout()
            with atomic_write(out / name, "wb", what="plot") as fh:
                fig.savefig(fh, dpi=100, format="png")
            plt.close(fig)
            made.append(out / name)
        except (ValueError, RuntimeError, ZeroDivisionError) as exc:  # e.g. importances of a single trial
            log.info("sweep plot %s skipped: %s", name, exc)
            plt.close("all")
    return made


def write_page(study, rows: list[dict[str, Any]], plots: list[Path], out: Path, metric: str) -> Path:
    from ..evaluation.report import html_page, html_table, img_tag

    keys = sorted({k for r in rows for k in r["params"]})
    table = html_table(["trial", "state", metric, "epochs", "seconds", *keys, "run directory", "note"],
                   [[r["number"], r["state"], r["value"] if r["value"] is not None else "", r["epochs"],
                     round(r["seconds"]) if r["seconds"] is not None else "", *(_fmt(r["params"].get(k)) for k in keys),
                     r["run_dir"], r["note"]] for r in rows], sortable=True)
    body = (f"<h1>Sweep {study.study_name}</h1><p>{len(rows)} trials; metric {metric} "
            f"({study.direction.name.lower()}); best recipe: <code>best.yaml</code></p>"
            f"<h2>Trials</h2>{table}<h2>Plots</h2>{''.join(img_tag(p) for p in plots)}")
    path = out / "report.html"
    write_text(path, html_page(f"sweep {study.study_name}", body))
    return path


def show_sweep(target: str | Path, *, study_name: str | None = None, out: str | Path | None = None) -> dict:
    """Rank the trials, write best.yaml, the plots and report.html (into the sweep directory, or `out`)."""
    study = load_study(target, study_name)
    spec = study.user_attrs.get("sweep", {})
    metric = spec.get("metric", "value")
    rows = ranked_trials(study)
    out = Path(out) if out else (Path(target) if Path(target).is_dir() else Path("runs") / "sweeps" / study.study_name)
    make_dir(out)
    result: dict[str, Any] = {"study": study.study_name, "rows": rows, "table": format_table(rows, metric),
                              "best_recipe": None, "out": out}
    if any(r["state"] == "COMPLETE" for r in rows):
        write_text(out / "best.yaml", best_recipe(study))
        result["best_recipe"] = out / "best.yaml"
    result["plots"] = write_plots(study, out)
    result["page"] = write_page(study, rows, result["plots"], out, metric)
    return result
