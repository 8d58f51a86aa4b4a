"""Nothing lost, nothing let in: kills, signals, full disks, and hostile or broken input files."""

from __future__ import annotations

import errno
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cifarlab
from cifarlab.data import open_source, read_unlabeled_pickle
from cifarlab.errors import CifarlabError
from cifarlab.training import checkpoint as ckpt_mod
from cifarlab.training.checkpoint import load_checkpoint, save_checkpoint
from datagen import (
    make_cifar10_binary,
    make_cifar10_python,
    make_cifar100_python,
    make_evil_pickle,
    make_image_folder,
    make_image_tar,
    make_unlabeled_pickle,
    write_pickle,
)

TRAIN_ARGS = ["--model", "resnet_small", "--epochs", "3", "--batch-size", "20", "--lr", "0.05",
              "--deterministic", "true", "--checkpoint-every", "2", "--progress", "false", "--no-report",
              "--augment", "[{name: crop, padding: 2}, {name: flip}, {name: rotate, degrees: 5}]",
              "--block-dropout", "0.1"]


def _train_cmd(data: Path, out: Path, resume: bool = False) -> list[str]:
    if resume:
        return [sys.executable, "-m", "cifarlab", "train", "--resume", str(out)]
    return [sys.executable, "-m", "cifarlab", "train", "--data", str(data), "--out", str(out), *TRAIN_ARGS]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1"}  # the same kernels in every process


def _weights(run: Path) -> dict:
    return load_checkpoint(run / "last.pt")["state_dict"]


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    make_cifar10_python(root, per_batch=24, test=8)  # 120 images: 108 train -> 6 steps per epoch
    out = root / "ref"
    subprocess.run(_train_cmd(root, out), check=True, env=_env(), capture_output=True, timeout=300)
    return root, _weights(out)


def test_sigkill_at_random_points_then_resume_gives_identical_weights(reference_run):
    root, expected = reference_run
    out = root / "killed"
    rng = random.Random(7)
    kills, resume = 0, False
    while True:
        proc = subprocess.Popen(_train_cmd(root, out, resume), env=_env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        if kills < 4:
            # wait for a fresh checkpoint write, then kill after a random delay: between steps, inside a step,
            # or inside the next checkpoint write
            last = out / "last.pt"
            seen = last.stat().st_mtime_ns if last.exists() else None
            deadline = time.time() + 120
            while proc.poll() is None and time.time() < deadline:
                if last.exists() and last.stat().st_mtime_ns != seen:
                    break
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.15))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
        proc.wait(timeout=300)
        if (out / "last.pt").exists():
            load_checkpoint(out / "last.pt")  # always loadable, whatever moment the kill hit
            resume = True
        if (out / "summary.json").exists() and proc.returncode == 0:
            break
    assert kills >= 3
    got = _weights(out)
    assert got.keys() == expected.keys()
    for k in expected:
        assert torch.equal(got[k], expected[k]), k
    epochs = [line for line in (out / "metrics.jsonl").read_text().splitlines() if '"type": "epoch"' in line]
    assert len(epochs) == 3  # no epoch logged twice after the resumes


def test_sigterm_finishes_the_step_saves_and_says_how_to_resume(reference_run):
    root, expected = reference_run
    out = root / "term"
    proc = subprocess.Popen(_train_cmd(root, out), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 120
    while not (out / "last.pt").exists() and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the run finished before the signal arrived")
    assert proc.returncode == 143, err
    assert "SIGTERM" in err and f"cifarlab train --resume {out}" in err and "Traceback" not in err
    assert load_checkpoint(out / "last.pt")["train_state"]["partial"] is not None
    done = subprocess.run(_train_cmd(root, out, resume=True), env=_env(), capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    got = _weights(out)
    assert all(torch.equal(got[k], expected[k]) for k in expected)


class PoisonWeights(cifarlab.Callback):
    """A weight becomes NaN as the epoch starts, so its first loss is not finite."""

    def on_epoch_start(self, trainer, epoch):
        with torch.no_grad():
            next(trainer.parts.model.parameters()).fill_(float("nan"))


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    make_cifar10_python(tmp_path, per_batch=20, test=10)
    cifarlab.train(data=str(tmp_path), model="resnet_small", epochs=1, batch_size=50, out=str(tmp_path / "r"),
                   progress=False, report=False)
    good = _weights(tmp_path / "r")
    with pytest.raises(CifarlabError, match="training diverged at step .* loss is nan"):
        cifarlab.train(resume=str(tmp_path / "r"), epochs=2, report=False, callbacks=[PoisonWeights()])
    after = _weights(tmp_path / "r")
    assert all(torch.equal(good[k], after[k]) for k in good)


# ---- full disks and unwritable places ----------------------------------------------------------------------

def _tiny_checkpoint(w: torch.Tensor, epoch: int = 0) -> dict:
    return ckpt_mod.build_checkpoint(model="resnet_small", model_args={}, classes=["a", "b"], mean=[0.5] * 3,
                                     std=[0.25] * 3, state_dict={"w": w}, config={}, metrics={}, epoch=epoch, step=0)


def test_enospc_during_a_checkpoint_write_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(_tiny_checkpoint(torch.ones(3)), path)
    real_save = torch.save

    def full_disk(obj, fh, *a, **k):
        real_save(obj, fh, *a, **k)  # some bytes reach the temp file, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt_mod.torch, "save", full_disk)
    with pytest.raises(CifarlabError, match="could not write checkpoint .*No space left on device"):
        save_checkpoint(_tiny_checkpoint(torch.zeros(3)), path)
    assert torch.equal(load_checkpoint(path)["state_dict"]["w"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no half-written temp file left


def test_full_disk_mid_run_ends_with_one_line_and_keeps_last_pt(tmp_path, monkeypatch, capsys):
    from cifarlab.cli import main

    make_cifar10_python(tmp_path, per_batch=20, test=10)
    real = ckpt_mod.torch.save
    calls = {"n": 0}

    def fail_third(obj, fh, *a, **k):
        calls["n"] += 1
        if calls["n"] >= 3:  # epoch 1 wrote last.pt and best.pt; epoch 2's write hits a full disk
            raise OSError(errno.ENOSPC, "No space left on device")
        real(obj, fh, *a, **k)

    monkeypatch.setattr(ckpt_mod.torch, "save", fail_third)
    code = main(["train", "--data", str(tmp_path), "--model", "resnet_small", "--epochs", "3", "--out",
                 str(tmp_path / "r"), "--batch-size", "50", "--progress", "false", "--no-report"])
    err = capsys.readouterr().err
    assert code == 2 and "No space left on device" in err and err.count("\n") == 1
    assert load_checkpoint(tmp_path / "r" / "last.pt")["epoch"] == 1


def test_unwritable_run_directory(tmp_path):
    make_cifar10_python(tmp_path, per_batch=20, test=10)
    blocker = tmp_path / "afile"
    blocker.write_text("")
    in_the_way = f"could not create run directory .*: the file {re.escape(str(blocker))} is in the way"
    with pytest.raises(CifarlabError, match=in_the_way):
        cifarlab.train(data=str(tmp_path), model="resnet_small", epochs=1, out=str(blocker / "run"), progress=False)
    blocker.write_text("keep me")
    with pytest.raises(CifarlabError, match="a file of that name is in the way"):
        cifarlab.train(data=str(tmp_path), model="resnet_small", epochs=1, out=str(blocker), progress=False)
    assert blocker.read_text() == "keep me"


# ---- hostile and broken files ------------------------------------------------------------------------------

def test_hostile_pickle_to_predict_is_refused(tmp_path):
    make_cifar10_python(tmp_path, per_batch=20, test=10)
    run = cifarlab.train(data=str(tmp_path), model="resnet_small", epochs=1, batch_size=50, out=str(tmp_path / "r"),
                         progress=False, report=False)
    marker = tmp_path / "pwned"
    make_evil_pickle(tmp_path / "evil.pkl", marker)
    with pytest.raises(CifarlabError, match="refused global"):
        cifarlab.predict(run.run_dir / "best.pt", tmp_path / "evil.pkl", out=tmp_path / "s.csv")
    assert not marker.exists() and not (tmp_path / "s.csv").exists()


def test_hostile_checkpoint_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    from datagen import Evil

    torch.save({"model": "resnet_small", "state_dict": Evil(marker)}, tmp_path / "evil.pt")
    with pytest.raises(CifarlabError, match="not a loadable cifarlab checkpoint"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not marker.exists()


def _valid_files(root: Path) -> dict[str, tuple[Path, callable]]:
    """One real-format file per reader, with the call that reads it."""
    c10 = make_cifar10_python(root / "c10", per_batch=4, test=4)
    c10b = make_cifar10_binary(root / "c10b", per_batch=4)
    c100 = make_cifar100_python(root / "c100", n_train=4, n_test=4)
    folder = make_image_folder(root / "img", per_class=1, splits=("train",))
    tar = make_image_tar(folder, root / "img.tar.gz")
    make_unlabeled_pickle(root / "nl.pkl", n=4)
    image = next((folder / "train" / "cat").iterdir())
    return {
        "cifar10-python": (c10 / "data_batch_3", lambda: open_source(c10).read("train")),
        "cifar10-meta": (c10 / "batches.meta", lambda: open_source(c10).read("test")),
        "cifar10-binary": (c10b / "data_batch_2.bin", lambda: open_source(c10b).read("train")),
        "cifar100": (c100 / "train", lambda: open_source(c100).read("train", "coarse")),
        "image": (image, lambda: open_source(folder).read("train")),
        "tarball": (tar, lambda: open_source(tar).read("train")),
        "unlabeled": (root / "nl.pkl", lambda: read_unlabeled_pickle(root / "nl.pkl")),
    }


@pytest.fixture(scope="module")
def reader_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    files = _valid_files(root)
    return {k: (p, p.read_bytes(), f) for k, (p, f) in files.items()}


def _check(reader_files, name: str, payload: bytes) -> None:
    path, original, read = reader_files[name]
    path.write_bytes(payload)
    try:
        result = read()
        assert result.images.dtype == torch.uint8 and result.images.ndim == 4
    except CifarlabError as exc:
        assert str(exc) and "\n" not in str(exc)
    finally:
        path.write_bytes(original)


READERS = ["cifar10-python", "cifar10-meta", "cifar10-binary", "cifar100", "image", "tarball", "unlabeled"]


@settings(max_examples=25, deadline=5000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(READERS), data=st.data())
def test_truncated_files_fail_with_the_projects_error(reader_files, name, data):
    original = reader_files[name][1]
    cut = data.draw(st.integers(0, len(original) - 1))
    _check(reader_files, name, original[:cut])


@settings(max_examples=25, deadline=5000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(READERS), payload=st.binary(max_size=4096))
def test_random_bytes_fail_with_the_projects_error(reader_files, name, payload):
    _check(reader_files, name, payload)


@settings(max_examples=25, deadline=5000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(["cifar10-python", "cifar100", "unlabeled"]),
       rows=st.integers(0, 5), cols=st.sampled_from([0, 1, 3071, 3072, 3073, 32 * 32]),
       dtype=st.sampled_from([np.uint8, np.int64, np.float32]),
       labels=st.lists(st.integers(-3, 300), max_size=6))
def test_misshaped_arrays_fail_with_the_projects_error(reader_files, name, rows, cols, dtype, labels):
    path, original, _ = reader_files[name]
    obj = {b"data": np.zeros((rows, cols), dtype=dtype), b"labels": labels, b"fine_labels": labels,
           b"coarse_labels": labels, b"ids": list(range(rows))}
    try:
        write_pickle(path, obj)
        _check(reader_files, name, path.read_bytes())
    finally:
        path.write_bytes(original)


def test_sigkill_inside_a_checkpoint_write_leaves_a_loadable_file(tmp_path):
    """A child process rewrites a large checkpoint in a loop; kill it at random moments of the write."""
    path = tmp_path / "last.pt"
    script = (
        "import sys, torch\n"
        "from cifarlab.training.checkpoint import build_checkpoint, save_checkpoint\n"
        "i = 0\n"
        "while True:\n"
        "    save_checkpoint(build_checkpoint(model='resnet_small', model_args={}, classes=['a'], mean=[0.5] * 3,"
        " std=[0.5] * 3, state_dict={'w': torch.full((40_000_000,), float(i))}, config={}, metrics={}, epoch=i,"
        " step=0), sys.argv[1])\n"
        "    i += 1\n"
    )
    rng = random.Random(3)
    for _ in range(4):
        proc = subprocess.Popen([sys.executable, "-c", script, str(path)])
        while not path.exists():
            time.sleep(0.01)
        time.sleep(rng.uniform(0.05, 0.6))  # one write of 160 MB takes a few tenths of a second
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        ckpt = load_checkpoint(path)
        assert ckpt["state_dict"]["w"][0] == ckpt["epoch"]  # whole: its values belong together
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "last.pt"]
    from cifarlab.config import make_config
    from cifarlab.training.trainer import _make_run_dir

    _, lock = _make_run_dir(make_config(out=str(tmp_path)))  # a resumed run sweeps the killed writes' temp files
    lock.release()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "last.pt"], leftovers
