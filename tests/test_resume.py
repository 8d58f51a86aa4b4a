"""Resuming with a changed command line: the keys that may change apply; any other change is refused with one line
naming it, exit 2, and the run directory left as it was."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from cifarlab.cli import main
from cifarlab.train.checkpoint import load_checkpoint
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
