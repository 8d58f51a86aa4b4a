"""Slow tier: real CIFAR-10 images from ../shared/data (run with `pytest -m slow`)."""

from __future__ import annotations

import csv
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REAL = Path(os.environ.get("CIFARLAB_REAL_DATA",
                           Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-train-jpg.tar.gz"))

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not REAL.is_file(), reason=f"real data not found at {REAL}")]


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "cifarlab", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=1800)


def test_data_stats_match_the_published_facts():
    out = cli("data", "stats", REAL, "--json")
    assert out.returncode == 0, out.stderr
    st = json.loads(out.stdout)
    assert st["count"] == 50_000 and st["grayscale"] == 616
    assert st["mean"] == pytest.approx([0.4913, 0.4821, 0.4465], abs=5e-5)
    assert st["std"] == pytest.approx([0.2452, 0.2428, 0.2606], abs=5e-5)
    assert set(st["class_counts"].values()) == {5000}


def test_seed001_small_three_epochs_then_eval_and_predict(tmp_path):
    run = tmp_path / "run"
    out = cli("train", "--recipe", "seed001_small", "--data", REAL, "--epochs", 3, "--out", run)
    assert out.returncode == 0, out.stderr[-2000:]
    for name in ("config.yaml", "metrics.jsonl", "last.pt", "best.pt", "summary.json"):
        assert (run / name).is_file(), name
    summary = json.loads((run / "summary.json").read_text())
    print(json.dumps(summary["final"], indent=1))
    assert summary["best"] > 0.40, summary["final"]  # chance is 0.10; measured here about 0.5
    steps = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if '"step"' in x]
    assert len(steps) == 3 * 704  # 45,000 images / batch 64

    ev = cli("eval", run / "best.pt", "--out", tmp_path / "eval")
    assert ev.returncode == 0, ev.stderr
    assert "top1" in ev.stdout and "confusion matrix" in ev.stdout
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["count"] == 5000 and metrics["top1"] == pytest.approx(summary["best"])
    assert (tmp_path / "eval" / "confusion.csv").is_file() and (tmp_path / "eval" / "per_class.csv").is_file()

    # a Kaggle-style unlabeled pickle made from real images
    from cifarlab.data import load_splits

    val = load_splits(str(REAL)).val
    data = val.images[:200].numpy().reshape(200, 3072)
    with open(tmp_path / "nolabels.pkl", "wb") as fh:
        pickle.dump({b"data": data, b"ids": np.arange(200)}, fh)
    pr = cli("predict", run / "best.pt", "--input", tmp_path / "nolabels.pkl", "--out", tmp_path / "sub.csv")
    assert pr.returncode == 0, pr.stderr
    rows = list(csv.reader(open(tmp_path / "sub.csv")))
    assert rows[0] == ["ID", "Labels"] and len(rows) == 201
    acc = np.mean([int(r[1]) == int(y) for r, y in zip(rows[1:], val.labels[:200].tolist(), strict=True)])
    assert acc > 0.35  # the same model, so about its val accuracy


def _short_real_run(tmp_path, name, **over):
    out = cli("train", "--recipe", "seed001_small", "--data", REAL, "--epochs", 1, "--out", tmp_path / name,
              *[str(x) for kv in over.items() for x in (f"--{kv[0]}", kv[1])])
    assert out.returncode == 0, out.stderr[-2000:]
    return tmp_path / name


def test_compare_two_real_runs_and_render_in_chromium(tmp_path):
    import shutil

    a = _short_real_run(tmp_path, "small-lr1e-2")
    b = _short_real_run(tmp_path, "small-lr5e-3", lr=0.005)
    for run in (a, b):
        assert (run / "report.html").is_file() and (run / "mistakes.png").is_file()
    out = cli("report", a, b, "--out", tmp_path / "cmp")
    assert out.returncode == 0, out.stderr
    page = (tmp_path / "cmp" / "report.html").read_text()
    assert "small-lr1e-2" in page and "small-lr5e-3" in page
    from PIL import Image

    with Image.open(tmp_path / "cmp" / "curves.png") as im:
        assert im.size == (1100, 400)

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    for page_path in (a / "report.html", tmp_path / "cmp" / "report.html"):
        shot = tmp_path / f"{page_path.parent.name}.png"
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path / 'chrome-profile'}"]
        done = subprocess.run([chromium, *flags, f"--screenshot={shot}", "--window-size=1200,1600",
                               page_path.as_uri()], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
        pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
        assert pixels.std() > 10 and (pixels < 128).mean() > 0.005  # text and plots, not a blank page
        dom = subprocess.run([chromium, *flags, "--dump-dom", page_path.as_uri()], capture_output=True, text=True,
                             timeout=120).stdout
        assert "<table" in dom and "val top" in dom.lower()


def test_finetune_recipe_one_epoch_at_224_px_from_random_init(tmp_path):
    """Study 002's fine-tuning path end to end on the real images: resnet18_imagenet at 224 px (bilinear), with
    random weights since torchvision's file cannot be downloaded here."""
    run = tmp_path / "ft"
    out = cli("train", "--recipe", "seed002_finetune", "--pretrained", "none", "--data", REAL, "--epochs", 1,
              "--out", run, "--progress", "false", "--no-report")
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["model"] == "resnet18_imagenet" and summary["params"] == 11_181_642
    assert summary["final"]["images"] == 45_000 and summary["final"]["val_top1"] > 0.2
    ev = cli("eval", run / "last.pt", "--out", tmp_path / "eval")  # evaluation resizes to 224 px as training did
    assert ev.returncode == 0, ev.stderr
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["top1"] == pytest.approx(
        summary["final"]["val_top1"], abs=2e-3)
