"""Resuming with a changed command line: the keys that may change apply; any other change is refused with one line
naming it, exit 2, and the run directory left as it was."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
from pathlib import Path

import pytest
import torch

import cifarlab
from cifarlab.cli import main
from cifarlab.errors import Interrupted
from cifarlab.training.checkpoint import load_checkpoint
from datagen import make_cifar10_python


def _snapshot(run: Path) -> dict[str, tuple[str, int]]:
    return {str(p.relative_to(run)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(run.rglob("*")) if p.is_file()}


@pytest.fixture
def run_copy(trained_run, tmp_path) -> Path:
    return shutil.copytree(trained_run, tmp_path / "run")


@pytest.mark.parametrize("args, key, old, new", [
    (["--batch-size", "16"], "batch_size", "32", "16"),
    (["--optimizer", "adam"], "optimizer", "'sgd'", "'adam'"),
    (["--model", "resnet9"], "model", "'resnet_small'", "'resnet9'"),
    (["--recipe", "seed002_net"], "recipe", "'seed001_small'", "'seed002_net'"),
    (["--lr", "0.5"], "lr", "0.01", "0.5"),
    (["--augment", "[]"], "augment", "[", "[]"),
])
def test_a_change_that_is_not_resumable_is_refused_and_writes_nothing(run_copy, capsys, args, key, old, new):
    before = _snapshot(run_copy)
    code = main(["train", "--resume", str(run_copy), *args])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert f"changed {key} {old}" in err and f"-> {new}" in err and "may change only epochs" in err
    assert _snapshot(run_copy) == before


def test_other_data_is_refused(run_copy, tmp_path, capsys):
    make_cifar10_python(tmp_path / "other", per_batch=10, test=10)
    before = _snapshot(run_copy)
    assert main(["train", "--resume", str(run_copy), "--data", str(tmp_path / "other")]) == 2
    err = capsys.readouterr().err
    assert "changed data" in err and str(tmp_path / "other") in err and err.count("\n") == 1
    assert _snapshot(run_copy) == before


def test_the_same_data_given_again_and_the_resumable_keys_apply(run_copy, capsys):
    data = load_checkpoint(run_copy / "last.pt")["config"]["data"]
    code = main(["train", "--resume", str(run_copy), "--data", data, "--epochs", "3", "--threads", "1",
                 "--progress", "false", "--csv-log", "true", "--checkpoint-every", "4", "--no-report"])
    assert code == 0, capsys.readouterr().err
    rows = [json.loads(x) for x in (run_copy / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows if r["type"] == "epoch"] == [1, 2, 3]  # epochs applied
    assert (run_copy / "csv" / "version_0" / "metrics.csv").is_file()  # a logger added on resume
    ckpt = load_checkpoint(run_copy / "last.pt")
    assert ckpt["config"]["epochs"] == 3 and ckpt["config"]["checkpoint_every"] == 4
    assert ckpt["config"]["threads"] == 1 and ckpt["config"]["batch_size"] == 32


def test_a_time_budget_given_on_resume_applies(run_copy, capsys):
    code = main(["train", "--resume", str(run_copy), "--time-budget", "0.3", "--progress", "false", "--no-report"])
    assert code == 0, capsys.readouterr().err
    ckpt = load_checkpoint(run_copy / "last.pt")
    assert ckpt["config"]["time_budget"] == 0.3 and ckpt["epoch"] > 2


class SigtermAtStep(cifarlab.Callback):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, trainer, step_log):
        if step_log["step"] == self.step:
            os.kill(os.getpid(), signal.SIGTERM)  # the trainer's handler: finish this step, save, stop


class ClockAtStart(cifarlab.Callback):
    def on_fit_start(self, trainer):
        self.elapsed = trainer.clock.elapsed()


def test_a_mid_epoch_resume_under_a_time_budget_counts_the_partial_epochs_seconds(tmp_path):
    make_cifar10_python(tmp_path / "data", per_batch=20, test=10)  # 90 train images: 9 steps of 10 an epoch
    with pytest.raises(Interrupted):
        cifarlab.train(data=str(tmp_path / "data"), model="resnet_small", batch_size=10, time_budget=5,
                       out=str(tmp_path / "r"), progress=False, report=False, callbacks=[SigtermAtStep(13)])
    state = load_checkpoint(tmp_path / "r" / "last.pt")["train_state"]
    assert state["partial"]["batch"] == 5 and state["step"] == 14  # inside epoch 2, after its fifth step
    assert state["elapsed"] > state["history"][-1]["elapsed"]  # the partial epoch's seconds are in the clock
    clock = ClockAtStart()
    cifarlab.train(resume=str(tmp_path / "r"), time_budget=0.01, report=False, callbacks=[clock])
    assert clock.elapsed >= state["elapsed"]


def test_a_resumed_epoch_keeps_the_image_size_it_started_with(tmp_path, monkeypatch):
    """Under a time budget the resize schedule is read from the clock at an epoch's start; a run stopped inside
    that epoch must finish it at the same size, though the clock it resumes with is further on."""
    from cifarlab.training.trainer import Trainer

    make_cifar10_python(tmp_path / "data", per_batch=20, test=10)  # 90 train images: 9 steps of 10 an epoch
    monkeypatch.setattr(Trainer, "_size_epoch", lambda self, epoch: 0.0)  # the clock early on: 16 px
    with pytest.raises(Interrupted):
        cifarlab.train(data=str(tmp_path / "data"), model="resnet_small", batch_size=10, epochs=3, val_every=0,
                       resize_schedule=[[0, 16], [1, 32]], out=str(tmp_path / "r"), progress=False, report=False,
                       callbacks=[SigtermAtStep(13)])
    assert load_checkpoint(tmp_path / "r" / "last.pt")["train_state"]["partial"]["batch"] == 5  # inside epoch 2
    monkeypatch.setattr(Trainer, "_size_epoch", lambda self, epoch: 1.5)  # the clock has passed the switch
    cifarlab.train(resume=str(tmp_path / "r"), report=False)
    rows = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [r["image_size"] for r in rows if r["type"] == "epoch"] == [16, 16, 32]


class InterruptAtStep(cifarlab.Callback):
    """A crash inside epoch 2 that saves nothing: last.pt stays the one written at epoch 1's end."""

    def on_step_end(self, trainer, step_log):
        if step_log["step"] == 10:
            raise KeyboardInterrupt


def _weights(path: Path) -> dict:
    return load_checkpoint(path)["state_dict"]


@pytest.mark.parametrize("change", [{"time_budget": 0.001}, {"epochs": 1}])
def test_a_resume_with_nothing_left_to_train_ends_the_epoch_it_stopped_inside(tmp_path, caplog, change):
    """Resumed with its budget already spent (or its epochs already done), a run stopped inside epoch 2 trains no
    step and ends that epoch where it stopped, as the budget running out there would have: ranked, best.pt."""
    make_cifar10_python(tmp_path / "data", per_batch=20, test=10)  # 90 train images: 9 steps of 10 an epoch
    with pytest.raises(Interrupted):
        cifarlab.train(data=str(tmp_path / "data"), model="resnet_small", batch_size=10, epochs=3, val_every=0,
                       out=str(tmp_path / "r"), progress=False, report=False, callbacks=[SigtermAtStep(13)])
    stopped = _weights(tmp_path / "r" / "last.pt")
    caplog.set_level("INFO", logger="cifarlab")
    res = cifarlab.train(resume=str(tmp_path / "r"), report=False, **change)
    rows = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in rows if r["type"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2] and epochs[1]["images"] == 50  # 5 of epoch 2's 9 batches
    assert "val_top1" in epochs[1] and [r["step"] for r in rows if r["type"] == "step"] == list(range(14))
    assert res.summary["best_epoch"] == 2 and res.summary["best"] == epochs[1]["val_top1"]
    best = load_checkpoint(tmp_path / "r" / "best.pt")
    assert best["epoch"] == 2 and best["step"] == 14 and best["train_state"]["partial"] is None
    assert all(torch.equal(best["state_dict"][k], v) for k, v in stopped.items())  # no step trained
    assert ("was spent before this resume" in caplog.text) == ("time_budget" in change)
    assert "done: best val_top1" in caplog.text and "at epoch 2" in caplog.text


def test_a_resume_at_an_epochs_end_with_nothing_left_to_train_scores_and_ranks_that_epoch(tmp_path, caplog):
    make_cifar10_python(tmp_path / "data", per_batch=20, test=10)
    with pytest.raises(KeyboardInterrupt):
        cifarlab.train(data=str(tmp_path / "data"), model="resnet_small", batch_size=10, epochs=3, val_every=0,
                       out=str(tmp_path / "r"), progress=False, report=False, callbacks=[InterruptAtStep()])
    assert not (tmp_path / "r" / "best.pt").exists()  # epoch 1 had no val pass: nothing ranked yet
    stopped = _weights(tmp_path / "r" / "last.pt")
    caplog.set_level("INFO", logger="cifarlab")
    res = cifarlab.train(resume=str(tmp_path / "r"), time_budget=0.001, report=False)
    assert res.summary["best_epoch"] == 1 and res.summary["final"]["epoch"] == 1
    best = load_checkpoint(tmp_path / "r" / "best.pt")
    assert best["epoch"] == 1 and best["metrics"]["val_top1"] == res.summary["best"]
    assert all(torch.equal(best["state_dict"][k], v) for k, v in stopped.items())
    assert "at epoch -1" not in caplog.text and "done: best val_top1" in caplog.text
    rows = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in rows if r["type"] == "epoch"]
    assert len(epochs) == 1 and epochs[0]["val_top1"] == res.summary["best"]  # the late val pass is in its line
    assert len(rows) > 1 and all(r["type"] == "step" for r in rows[:-1])  # the step lines are kept


def test_a_new_run_whose_budget_is_spent_before_its_first_step_says_so_in_one_line(tmp_path, capsys):
    make_cifar10_python(tmp_path / "data", per_batch=20, test=10)
    code = main(["train", "--model", "resnet_small", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "r"),
                 "--time-budget", "1e-300", "--progress", "false", "--no-report"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "before this resume" not in err
    assert "no epochs were run: its --time-budget of 1e-300 minutes was spent before the first step" in err
