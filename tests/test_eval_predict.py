"""eval and predict as a user meets them: results stay inside the run, one folder per split and mode; new data is
evaluated as it is; predict prints labels and top-k for image files and never replaces a CSV unasked."""

from __future__ import annotations

import json
import shutil

import numpy as np
from PIL import Image

import cifarlab
from cifarlab.cli import main
from datagen import make_cifar10_python, make_unlabeled_pickle


def test_eval_writes_inside_the_run_one_folder_per_split_and_mode(trained_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["eval", str(run)]) == 0  # the run directory itself
    assert main(["eval", str(run / "best.pt"), "--split", "test"]) == 0
    assert main(["eval", str(run / "best.pt"), "--split", "test", "--tta"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing outside the run
    val = json.loads((run / "eval-val" / "metrics.json").read_text())
    test = json.loads((run / "eval-test" / "metrics.json").read_text())
    tta = json.loads((run / "eval-test-tta-flip" / "metrics.json").read_text())
    assert (val["split"], test["split"], tta["split"], tta["tta"]) == ("val", "test", "test", "flip")


def test_new_data_is_evaluated_as_it_is(trained_run, tmp_path, capsys):
    fresh = make_cifar10_python(tmp_path / "new", per_batch=5, test=30, seed=7)
    for name in [f"data_batch_{k}" for k in range(1, 6)]:
        (fresh / name).unlink()  # a folder holding only test_batch (and batches.meta)
    assert main(["eval", str(trained_run / "best.pt"), "--data", str(tmp_path / "new"), "--out",
                 str(tmp_path / "ev")]) == 0
    assert "test split of" in capsys.readouterr().out
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["count"] == 30


def _pngs(folder, n=3):
    folder.mkdir()
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        paths.append(folder / f"img{i}.png")
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(paths[-1])
    return paths


def test_predict_prints_label_and_topk_for_image_files_without_writing(trained_run, tmp_path, capsys,
                                                                       monkeypatch):
    monkeypatch.chdir(tmp_path)
    paths = _pngs(tmp_path / "imgs")
    assert main(["predict", str(trained_run), "--input", str(paths[0]), "--topk", "3"]) == 0
    out = capsys.readouterr().out
    line = out.strip().splitlines()[-1]
    res = cifarlab.predict(trained_run, [paths[0]], out=None, topk=3)
    expected = ", ".join(f"{name} {100 * p:.1f}%" for name, p in res["topk"][0])
    assert line == f"{paths[0]}: {expected}" and len(res["topk"][0]) == 3
    assert res["topk"][0][0][0] == res["classes"][res["pred"][0]]  # the label is the first of the top-k
    assert not (tmp_path / "submission.csv").exists() and res["out"] is None


def test_predict_never_replaces_a_csv_unasked(trained_run, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_unlabeled_pickle(tmp_path / "nl.pkl", n=12)
    (tmp_path / "submission.csv").write_text("ID,Labels\n1,cat\n")
    assert main(["predict", str(trained_run / "best.pt"), "--input", str(tmp_path / "nl.pkl")]) == 2
    err = capsys.readouterr().err
    assert "submission.csv exists; pass --force" in err and err.count("\n") == 1
    assert (tmp_path / "submission.csv").read_text() == "ID,Labels\n1,cat\n"
    assert main(["predict", str(trained_run / "best.pt"), "--input", str(tmp_path / "nl.pkl"), "--force"]) == 0
    assert len((tmp_path / "submission.csv").read_text().splitlines()) == 13


def test_python_api_takes_the_clis_names(trained_run, tmp_path):
    make_unlabeled_pickle(tmp_path / "nl.pkl", n=6)
    res = cifarlab.predict(trained_run / "best.pt", tmp_path / "nl.pkl", out=tmp_path / "s.csv", tta="flip",
                           label_names=True, topk=2, force=False, batch_size=4, device="cpu")
    assert len(res["topk"]) == 6 and all(len(t) == 2 for t in res["topk"])
    m = cifarlab.evaluate(trained_run / "best.pt", split="test", tta="flip", out=tmp_path / "ev", batch_size=8,
                          device="cpu")
    assert m["split"] == "test" and m["tta"] == "flip"
    net = cifarlab.load_model(trained_run, device="cpu")
    assert net.cifarlab["model"] == "resnet_small"
    path = cifarlab.export(trained_run / "best.pt", "safetensors", tmp_path / "m.safetensors")
    assert cifarlab.load_model(path).cifarlab["classes"] == net.cifarlab["classes"]


def test_the_readmes_python_examples_run(tmp_path, monkeypatch, capsys):
    """Every ```python block of the README, in order, in one namespace, on small files named as the README names
    them (the CIFAR-10 tarball's layout, an unlabeled pickle)."""
    import re
    from pathlib import Path

    from datagen import make_image_folder, make_image_tar

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    assert len(blocks) >= 2
    (tmp_path / "shared" / "data").mkdir(parents=True)
    work = tmp_path / "work"
    work.mkdir()
    folder = make_image_folder(tmp_path / "imgs", per_class=12, splits=("train",))
    make_image_tar(folder, tmp_path / "shared" / "data" / "cifar10-train-jpg.tar.gz")
    shutil.copy(tmp_path / "shared" / "data" / "cifar10-train-jpg.tar.gz", work / "cifar10-train-jpg.tar.gz")
    make_unlabeled_pickle(work / "nolabels.pkl", n=8)
    monkeypatch.chdir(work)
    namespace = {"cifarlab": cifarlab}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 - the project's own README
    assert (work / "submission.csv").is_file() and "val top-1" in capsys.readouterr().out


def test_a_run_without_validation_names_the_metric_that_chose_best_pt(tmp_path, capsys):
    make_cifar10_python(tmp_path, per_batch=20, test=10)
    assert main(["train", "--data", str(tmp_path), "--model", "resnet_small", "--epochs", "2", "--batch-size", "25",
                 "--val-split", "0", "--out", str(tmp_path / "run"), "--no-report", "--progress", "false"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["best_metric"] == "train_loss" and summary["best"] > 0
    assert last.startswith(f"done: best train_loss {summary['best']:.4f} at epoch {summary['best_epoch']} "
                           "(no validation split: the lowest training loss)")
    assert "val_top1" not in last


def test_precision_overrides_the_runs_own_for_eval_and_predict(trained_run, tmp_path, capsys, monkeypatch):
    import torch

    from cifarlab.evaluation.evaluate import inference_loader
    from cifarlab.evaluation.predict import load_inputs
    from cifarlab.training.checkpoint import load_checkpoint, model_from_checkpoint

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    assert load_checkpoint(run / "best.pt")["config"]["precision"] == "bf16"  # the study recipe's
    assert main(["eval", str(run)]) == 0
    assert main(["eval", str(run), "--precision", "fp32"]) == 0
    own = json.loads((run / "eval-val" / "metrics.json").read_text())
    fp32 = json.loads((run / "eval-val-fp32" / "metrics.json").read_text())  # its own folder: nothing overwritten
    assert (own["precision"], fp32["precision"]) == ("bf16", "fp32")
    assert main(["eval", str(run), "--precision", "bf16", "--out", str(tmp_path / "same")]) == 0
    assert json.loads((tmp_path / "same" / "metrics.json").read_text())["loss"] == own["loss"]

    make_unlabeled_pickle(tmp_path / "nl.pkl", n=12)
    ckpt = load_checkpoint(run / "best.pt")
    net = model_from_checkpoint(ckpt).eval()
    x = torch.cat([b[0] for b in inference_loader(load_inputs([tmp_path / "nl.pkl"]), ckpt, 500, "cpu")])
    with torch.no_grad():
        expected = net(x.float()).float().softmax(1)
    res32 = cifarlab.predict(run / "best.pt", tmp_path / "nl.pkl", out=None, precision="fp32")
    res16 = cifarlab.predict(run / "best.pt", tmp_path / "nl.pkl", out=None)
    assert torch.allclose(res32["probs"], expected, atol=1e-5)  # plain fp32 arithmetic
    assert not torch.allclose(res16["probs"], expected, atol=1e-5)  # the run's own bf16 autocast by default
    assert main(["predict", str(run / "best.pt"), "--input", str(tmp_path / "nl.pkl"), "--out",
                 str(tmp_path / "p.csv"), "--precision", "fp32"]) == 0
    rows = (tmp_path / "p.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[1]) for r in rows] == res32["pred"]


def test_precision_that_cannot_apply_is_one_line(trained_run, tmp_path, capsys):
    fake = tmp_path / "model.onnx"
    fake.write_bytes(b"not read: refused before loading")
    for cmd in (["eval", str(fake), "--data", str(trained_run)], ["predict", str(fake), "--input", str(fake)]):
        assert main([*cmd, "--precision", "bf16"]) == 2
        err = capsys.readouterr().err.strip()
        assert "ONNX" in err and "fp32" in err and len(err.splitlines()) == 1
    try:
        cifarlab.predict(trained_run, [tmp_path], out=None, precision="fp16")
    except cifarlab.CifarlabError as exc:
        assert "precision must be one of auto, fp32, bf16" in str(exc)
    else:
        raise AssertionError("fp16 was accepted")
