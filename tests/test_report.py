"""Every run draws its plots and report.html; `cifarlab report` compares runs; `eval` draws its plots."""

from __future__ import annotations

import json
import re

import pytest
import yaml
from PIL import Image

import cifarlab
from cifarlab.cli import main
from cifarlab.evaluation.report import RUN_PLOTS, write_comparison
from cifarlab.training.checkpoint import load_checkpoint
from datagen import make_cifar10_python

# figure sizes (inches) x 100 dpi, for 10 classes
EXPECTED_SIZES = {"curves.png": (1100, 400), "lr.png": (800, 320), "confusion.png": (750, 637),
                  "per_class.png": (700, 380), "weights.png": (1000, 400)}


@pytest.fixture(scope="module")
def one_epoch_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    make_cifar10_python(root, per_batch=40, test=10)
    return cifarlab.train("seed001_small", data=str(root), epochs=1, batch_size=50, out=str(root / "run"),
                          progress=False)


def test_every_plot_and_the_page_exist(one_epoch_run):
    run_dir = one_epoch_run.run_dir
    for name in RUN_PLOTS:
        path = run_dir / name
        assert path.is_file(), name
        with Image.open(path) as im:
            im.load()  # decodes the whole PNG
            if name in EXPECTED_SIZES:
                w, h = EXPECTED_SIZES[name]
                assert abs(im.size[0] - w) <= 1 and abs(im.size[1] - h) <= 1, (name, im.size)
            elif name == "mistakes.png":
                assert im.size[0] == 1200 and im.size[1] % 180 in (0, 1)
    page = (run_dir / "report.html").read_text()
    for name in RUN_PLOTS:
        assert f'data-file="{name}"' in page
        assert page.count("data:image/png;base64,") >= len(RUN_PLOTS)  # self-contained
    top1 = one_epoch_run.summary["best_epoch_metrics"]["val_top1"]
    assert f"val top-1 {100 * top1:.2f}%" in page
    assert "Total params: 78,042" in page and "seed001_small" in page
    assert re.search(r"<th>class</th><th>accuracy</th>", page)


class InterruptSecondEpoch(cifarlab.Callback):
    def on_epoch_start(self, trainer, epoch):
        if epoch == 1:
            raise KeyboardInterrupt


def test_interrupted_run_still_gets_its_report(tmp_path):
    make_cifar10_python(tmp_path, per_batch=20, test=10)
    with pytest.raises(KeyboardInterrupt):
        cifarlab.train(data=str(tmp_path), model="resnet_small", epochs=3, batch_size=50, out=str(tmp_path / "r"),
                       progress=False, callbacks=[InterruptSecondEpoch()])
    assert (tmp_path / "r" / "report.html").is_file() and (tmp_path / "r" / "curves.png").is_file()
    assert load_checkpoint(tmp_path / "r" / "last.pt")["epoch"] == 1


def test_compare_runs_page(one_epoch_run, tmp_path, capsys):
    other = cifarlab.train(str(one_epoch_run.run_dir / "config.yaml"), lr=0.05, out=str(tmp_path / "other"),
                           progress=False)
    code = main(["report", str(one_epoch_run.run_dir), str(other.run_dir), "--out", str(tmp_path / "cmp")])
    assert code == 0
    page = (tmp_path / "cmp" / "report.html").read_text()
    assert 'class="sortable"' in page and "train-val gap" in page
    assert "run" in page and "other" in page
    with Image.open(tmp_path / "cmp" / "curves.png") as im:
        assert im.size == (1100, 400)


def test_report_rejects_non_runs(tmp_path, capsys):
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "x")]) == 2
    assert "is not a run directory" in capsys.readouterr().err


def test_eval_writes_its_plots(one_epoch_run, tmp_path):
    cifarlab.evaluate(one_epoch_run.run_dir / "best.pt", out=tmp_path / "ev")
    for name in ("confusion.png", "per_class.png", "confusion.csv", "per_class.csv"):
        assert (tmp_path / "ev" / name).is_file()


def test_no_report_when_asked(tmp_path):
    make_cifar10_python(tmp_path, per_batch=20, test=10)
    res = cifarlab.train(data=str(tmp_path), model="resnet_small", epochs=1, batch_size=50, out=str(tmp_path / "r"),
                         progress=False, report=False)
    assert not (res.run_dir / "report.html").exists()


def test_tensorboard_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    make_cifar10_python(tmp_path, per_batch=20, test=10)
    res = cifarlab.train(data=str(tmp_path), model="resnet_small", epochs=2, batch_size=50, out=str(tmp_path / "r"),
                         progress=False, tensorboard=True, report=False)
    acc = EventAccumulator(str(res.run_dir / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"Loss/train", "Loss/val", "Accuracy/train", "Accuracy/val_top1", "LR"} <= tags
    assert [e.step for e in acc.Scalars("Loss/val")] == [1, 2]
    assert len(acc.Scalars("LR")) == 2 * 2  # 2 steps per epoch (80 images / batch 50)


# ---- the pages a person opens: header, status, percents, captions, what differs ------------------------------------

def _text(page: str) -> str:
    """The page's visible text (tags dropped, whitespace folded)."""
    return " ".join(re.sub(r"<script>.*?</script>|<[^>]+>", " ", page, flags=re.S).split())


def test_a_finished_runs_page_has_its_header_and_figures_in_percent(one_epoch_run):
    page = (one_epoch_run.run_dir / "report.html").read_text()
    text = _text(page)
    summary = one_epoch_run.summary
    assert f"{summary['params']:,} parameters" in text and "device cpu" in text and "started 20" in text
    data = yaml.safe_load((one_epoch_run.run_dir / "config.yaml").read_text())["data"]
    assert f"data {data} ·" in text
    assert "finished: 1 of 1 epochs" in text
    assert f"val top-1 {100 * summary['best_epoch_metrics']['val_top1']:.2f}% at epoch 1" in text
    assert f"{100 * summary['best_epoch_metrics']['val_top2']:.2f}%" in text  # percents, not fractions
    assert "Loss (left) and top-1 accuracy (right) per epoch" in text  # a caption that says what the plot shows
    assert "curves.png</figcaption>" not in page


def test_an_interrupted_runs_page_shows_its_real_figures_and_where_it_stopped(tmp_path):
    make_cifar10_python(tmp_path, per_batch=20, test=10)
    with pytest.raises(KeyboardInterrupt):
        cifarlab.train(data=str(tmp_path), model="resnet_small", epochs=12, batch_size=50, out=str(tmp_path / "r"),
                       progress=False, callbacks=[InterruptSecondEpoch()])
    text = _text((tmp_path / "r" / "report.html").read_text())
    row = json.loads(next(line for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()
                          if '"epoch"' in line and '"type": "epoch"' in line))
    assert "stopped after epoch 1 of 12" in text and f"cifarlab train --resume {tmp_path / 'r'}" in text
    assert f"val top-1 {100 * row['val_top1']:.2f}% at epoch 1" in text
    assert "no validation split" not in text
    assert "parameters n/a" not in text  # counted from last.pt


def test_report_run_alone_rebuilds_its_page(one_epoch_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(one_epoch_run.run_dir, run)
    (run / "report.html").unlink()
    assert main(["report", str(run)]) == 0
    assert f"wrote {run / 'report.html'}" in capsys.readouterr().out
    page = (run / "report.html").read_text()
    assert "Confusion matrix of the best weights" in page  # the pictures the run drew are kept
    assert list(tmp_path.iterdir()) == [run]


def test_the_comparison_opens_with_the_settings_that_differ(one_epoch_run, tmp_path):
    other = cifarlab.train(str(one_epoch_run.run_dir / "config.yaml"), lr=0.05, seed=3, out=str(tmp_path / "other"),
                           progress=False)
    page = write_comparison([one_epoch_run.run_dir, other.run_dir], tmp_path / "cmp").read_text()
    text = _text(page)
    first = page.index("Settings that differ")
    assert first < page.index("<h2>Figures")
    table = _text(page[first:page.index("<h2>Figures")])
    assert table.split()[:5] == ["Settings", "that", "differ", "setting", one_epoch_run.run_dir.name]
    assert table.endswith("setting run other lr 0.01 0.05 seed 0 3")
    assert "epochs" not in table and "model" not in table  # only what differs (the recipe says lr 0.01)
    assert "learning rate at every optimizer step, one colour per run" in text.lower()
    assert page.count("<img") == 2  # overlaid curves and learning rates, not per-run copies
    assert "written 20" in text
