"""Every input checked at the door: each bad value, file or place ends with exit 2 and one line on stderr that names
the key or file, no traceback, and nothing already finished changed (issue 15's list, case by case)."""

from __future__ import annotations

import errno
import hashlib
import importlib
import os
import pickle
import struct
import subprocess
import sys
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

import cifarlab
from cifarlab import files
from cifarlab.cli import main
from cifarlab.data.cache import load_cached
from cifarlab.data.formats import open_source
from cifarlab.training.checkpoint import load_checkpoint
from datagen import make_cifar10_python, make_image_folder, make_unlabeled_pickle, write_pickle


def fails(capsys, argv: list[str], *names: str) -> str:
    """Runs the CLI; it must end with exit 2 and exactly one line naming each of `names`."""
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for name in names:
        assert name in err, (name, err)
    return err


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def data(tmp_path) -> str:
    make_cifar10_python(tmp_path / "data", per_batch=10, test=10)
    return str(tmp_path / "data")


# ---- values: finite numbers, ranges, shapes ------------------------------------------------------------------

@pytest.mark.parametrize("args, key", [
    (["--time-budget", "nan"], "time_budget"), (["--time-budget", "inf"], "time_budget"),
    (["--time-budget", "1e308"], "time_budget"),  # finite, but its seconds would overflow to inf
    (["--lr", "nan"], "lr"), (["--weight-decay", "nan"], "weight_decay"), (["--momentum", "nan"], "momentum"),
    (["--val-split", "nan"], "val_split"), (["--momentum", "-5"], "momentum"), (["--betas", "[2, 0.9]"], "betas"),
    (["--val-split", "1.0"], "val_split"), (["--val-split", "1.5"], "val_split"),
    (["--checkpoint-every", "-1"], "checkpoint_every"), (["--lr="], "--lr"), (["--lr", "null"], "--lr"),
    (["--betas", "[0.9]"], "betas"), (["--mean", "[0.5, .nan, 0.5]"], "mean"), (["--ema-decay", "1.0"], "ema_decay"),
    (["--batch-size", "0"], "batch_size"), (["--resize-schedule", "[[0, 4]]"], "resize_schedule"),
    (["--model-args", "{bogus: 1}"], "bogus"), (["--resize", "2000"], "resize"),
    (["--resize-schedule", "[[0, 64], [1, 6496]]"], "resize_schedule"),
    (["--threads", "1000000"], "threads"),  # torch would segfault creating them
])
def test_bad_training_values_name_the_key_before_any_data_is_read(capsys, tmp_path, data, args, key):
    fails(capsys, ["train", "--model", "resnet_small", "--data", data, "--out", str(tmp_path / "r"), *args], key)
    assert not (tmp_path / "r").exists()  # refused before the run directory was made


@pytest.mark.parametrize("argv, name", [
    (["summary", "resnet9", "--num-classes", "-2"], "--num-classes"),
    (["data", "stats", ".", "--resize", "-5"], "--resize"),
    (["data", "stats", ".", "--resize", "6496"], "--resize"),  # 30 images at 6,496 px took 15 GB before it was bounded
    (["eval", "x.pt", "--batch-size", "0"], "--batch-size"),
    (["predict", "x.pt", "--input", "x.pkl", "--batch-size", "-5"], "--batch-size"),
    (["sweep", "run", "x.yaml", "--trials", "abc"], "--trials"),
    # an empty path (an unset shell variable) would mean the current folder or the default: refused, never guessed
    (["train", "--recipe", "fast94", "--out", ""], "--out"),
    (["train", "--resume", " "], "--resume"),
    (["train", "--recipe", "fast94", "--data", ""], "--data"),
    (["eval", ""], "checkpoint"),
    (["predict", "x.pt", "--input", "x.pkl", "", "--out", "p.csv"], "--input"),
    (["export", "x.pt", "--out", ""], "--out"),
    (["prune", "x.pt", "--amount", "0.5", "--out", ""], "--out"),
    (["report", ""], "RUN_DIR"),
    (["sweep", "run", "x.yaml", "--out", ""], "--out"),
    (["data", "download", "cifar10", "--to", ""], "--to"),
])
def test_bad_command_options_are_one_line(capsys, argv, name):
    err = fails(capsys, argv, name)
    if "" in argv or " " in argv:
        assert "expected a path, got" in err


# ---- recipe and sweep files ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("content, words", [
    (b"model: resnet_small\nlr: \xff\xfe\n", "not UTF-8"),
    (b"a: &x [*x]\n", "aliases"),
    (b"model: resnet_small\nlr: 0.1\nlr: 0.2\n", "given twice"),
    (b"", "is empty"),
    (b"- just\n- a list\n", "mapping"),
])
def test_bad_recipe_files_are_one_line(capsys, tmp_path, data, content, words):
    recipe = tmp_path / "bad.yaml"
    recipe.write_bytes(content)
    fails(capsys, ["train", "--recipe", str(recipe), "--data", data, "--out", str(tmp_path / "r")], str(recipe), words)


@pytest.mark.parametrize("extra, words", [
    ("trials: abc\n", "trials"), ("pruner: 5\n", "pruner"), ("heartbeat_seconds: abc\n", "heartbeat_seconds"),
    ("max_retry: -1\n", "max_retry"), ("timeout_minutes: .nan\n", "timeout_minutes"),
    ("enqueue: [{optimizer: lbfgs}]\nsampler: tpe\n", "outside its space"),
])
def test_bad_sweep_files_are_one_line(capsys, tmp_path, extra, words):
    sweep = tmp_path / "s.yaml"
    sweep.write_text("recipe: seed001_small\nspace:\n  optimizer: [sgd, adam]\n" + extra)
    fails(capsys, ["sweep", "run", str(sweep), "--out", str(tmp_path / "sw")], words)


# ---- data files ---------------------------------------------------------------------------------------------------

def _deep_pickle(depth: int) -> bytes:
    """`depth` lists nested inside each other, built without recursion (protocol 2 opcodes)."""
    return b"\x80\x02" + b"]" * depth + b"a" * (depth - 1) + b"."


@pytest.mark.parametrize("payload, words", [
    (_deep_pickle(200_000), "nests too deeply"),
    (b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00aX\x08\x00\x00\x00no-codec\x86R.", "not a readable pickle"),
    (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"ids": [b"\xff\xfe", b"ok"]}, protocol=2), "UTF-8"),
])
def test_hostile_or_odd_pickles_to_predict_are_one_line(capsys, trained_run, tmp_path, payload, words):
    bad = tmp_path / "in.pkl"
    bad.write_bytes(payload)
    fails(capsys, ["predict", str(trained_run / "best.pt"), "--input", str(bad), "--out", str(tmp_path / "p.csv")],
          str(bad), words)
    assert not (tmp_path / "p.csv").exists()


@pytest.mark.parametrize("label_names, words", [(5, "label_names"), ([b"\xff" * 3] * 10, "UTF-8")])
def test_a_bad_batches_meta_is_one_line(capsys, tmp_path, label_names, words):
    root = make_cifar10_python(tmp_path, per_batch=10, test=10)
    write_pickle(root / "batches.meta", {b"label_names": label_names})
    fails(capsys, ["train", "--model", "resnet_small", "--data", str(tmp_path), "--out", str(tmp_path / "r")],
          "batches.meta", words)


def _png_header_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims `width` x `height` pixels (PIL checks the size before decoding anything)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


def test_a_decompression_bomb_is_refused_with_the_limit(capsys, trained_run, tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header_claiming(20_000, 20_000))
    err = fails(capsys, ["predict", str(trained_run / "best.pt"), "--input", str(bomb), "--out",
                         str(tmp_path / "p.csv")], str(bomb), "too large")
    assert "pixels" in err and any(ch.isdigit() for ch in err)


def test_a_non_checkpoint_file_is_one_line(capsys, tmp_path):
    for junk in (Path("/etc/passwd"), tmp_path / "empty.pt"):
        if not junk.exists():
            junk.write_bytes(b"")
        fails(capsys, ["eval", str(junk)], str(junk), "not a loadable cifarlab checkpoint")


def test_code_in_a_checkpoint_is_refused_without_torchs_advice(capsys, tmp_path):
    marker = tmp_path / "ran"

    class Code:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"model": "resnet_small", "state_dict": Code()}, tmp_path / "evil.pt")
    err = fails(capsys, ["eval", str(tmp_path / "evil.pt")], "evil.pt", "nothing in it was run")
    assert "weights_only=False" not in err and not marker.exists()


@pytest.mark.parametrize("kind, says", [("pickle", "nothing in it was run"), ("cut", "cut short"),
                                         ("text", "not a file torch.save wrote")])
def test_a_foreign_or_damaged_checkpoint_is_one_line_saying_what_it_is(capsys, tmp_path, kind, says):
    marker, path = tmp_path / "ran", tmp_path / "x.pt"

    class Code:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    if kind == "pickle":  # a plain pickle (protocol 4), not torch.save's zip: torch warns before it refuses
        path.write_bytes(pickle.dumps({"state_dict": Code()}, protocol=4))
    elif kind == "cut":
        torch.save({"model": "resnet_small", "state_dict": {"w": torch.zeros(64)}}, path)
        path.write_bytes(path.read_bytes()[:300])
    else:
        path.write_text("hello\n")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        err = fails(capsys, ["eval", str(path)], "x.pt", says)
    assert not [w for w in seen if "pickle" in str(w.message)]  # torch's advice to file an issue is not shown
    assert "(101)" not in err and not marker.exists()


def test_a_truncated_cache_entry_is_decoded_again(tmp_path, caplog, monkeypatch):
    monkeypatch.setenv("CIFARLAB_CACHE", str(tmp_path / "cache"))  # this test's entry alone
    folder = make_image_folder(tmp_path / "imgs", per_class=2, splits=("train",))
    source = open_source(str(folder))
    first = load_cached(source, "train")
    [entry] = list(files_in_cache())
    entry.write_bytes(entry.read_bytes()[: entry.stat().st_size // 2])
    again = load_cached(source, "train")
    assert torch.equal(first.images, again.images) and "decoding again" in caplog.text


def files_in_cache() -> list[Path]:
    from cifarlab.data.cache import cache_dir

    return sorted(cache_dir().glob("*.npz"))


def test_a_file_name_that_is_not_utf8_is_read(tmp_path):
    folder = make_image_folder(tmp_path / "imgs", per_class=2, splits=("train",))
    victim = next((folder / "train" / "cat").iterdir())
    victim.rename(Path(bytes(folder / "train" / "cat").decode() + "/" + b"\xff\xfe.png".decode("utf-8",
                                                                                                  "surrogateescape")))
    data = load_cached(open_source(str(folder)), "train")
    assert len(data) == 8


# ---- places to write ----------------------------------------------------------------------------------------------

def test_predict_out_naming_a_folder_and_eval_out_naming_a_file(capsys, trained_run, tmp_path):
    make_unlabeled_pickle(tmp_path / "in.pkl", n=4)
    (tmp_path / "adir").mkdir()
    fails(capsys, ["predict", str(trained_run / "best.pt"), "--input", str(tmp_path / "in.pkl"), "--out",
                   str(tmp_path / "adir")], str(tmp_path / "adir"), "directory")
    (tmp_path / "afile").write_text("keep me")
    fails(capsys, ["eval", str(trained_run / "best.pt"), "--out", str(tmp_path / "afile")], str(tmp_path / "afile"))
    assert (tmp_path / "afile").read_text() == "keep me"


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES, errno.EROFS])
def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch, code):
    target = tmp_path / "summary.json"
    files.write_text(target, "old")

    def refuse(*a, **k):
        raise OSError(code, "refused")

    monkeypatch.setattr(files.os, "fsync", refuse)
    with pytest.raises(cifarlab.CifarlabError, match=f"could not write {target}: refused"):
        files.write_text(target, "new")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]


def test_a_device_or_pipe_is_never_replaced_by_a_file(capsys, tmp_path, trained_run):
    # the rename that makes a write whole once put an ONNX file where /dev/full was (as root); a fifo stands in
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    with pytest.raises(cifarlab.CifarlabError, match="device or pipe"):
        files.write_text(pipe, "x")
    fails(capsys, ["export", str(trained_run / "best.pt"), "--format", "state_dict", "--out", str(pipe)],
          str(pipe), "not a file")
    assert pipe.is_fifo() and sorted(p.name for p in tmp_path.iterdir()) == ["pipe"]


def test_a_failed_append_is_cut_back_to_whole_lines_and_a_torn_line_is_dropped(tmp_path, monkeypatch, caplog):
    log = tmp_path / "metrics.jsonl"
    files.append_lines(log, ['{"a": 1}'])
    real_write = files.os.write

    def half_then_full(fd, data):
        real_write(fd, bytes(data[:5]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "write", half_then_full)
    with pytest.raises(cifarlab.CifarlabError, match="No space left"):
        files.append_lines(log, ['{"b": 2}', '{"c": 3}'])
    monkeypatch.undo()
    assert log.read_text() == '{"a": 1}\n'
    with open(log, "a") as fh:
        fh.write('{"torn": ')  # a kill mid-line, from another writer
    assert files.read_jsonl(log) == [{"a": 1}] and "torn last line" in caplog.text


def test_enospc_on_the_metrics_log_then_resume_gives_the_uninterrupted_weights(capsys, tmp_path, monkeypatch, data):
    common = ["--model", "resnet_small", "--data", data, "--epochs", "3", "--batch-size", "25", "--deterministic",
              "true", "--progress", "false", "--no-report"]
    assert main(["train", *common, "--out", str(tmp_path / "full")]) == 0
    calls = {"n": 0}
    real = files.append_lines

    def full_at_epoch_2(path, lines):
        calls["n"] += 1
        if calls["n"] == 2:
            raise files.write_error(path, OSError(errno.ENOSPC, "No space left on device"))
        real(path, lines)

    # the module by import: `cifarlab.train` as an attribute is the train() function, not the package
    monkeypatch.setattr(importlib.import_module("cifarlab.training.callbacks"), "append_lines", full_at_epoch_2)
    fails(capsys, ["train", *common, "--out", str(tmp_path / "cut")], "metrics.jsonl", "No space left")
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "cut" / "last.pt")["epoch"] == 1
    assert main(["train", "--resume", str(tmp_path / "cut"), "--no-report"]) == 0
    a = load_checkpoint(tmp_path / "full" / "last.pt")["state_dict"]
    b = load_checkpoint(tmp_path / "cut" / "last.pt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


# ---- one process per run directory -------------------------------------------------------------------------------

def test_two_trainings_on_one_out_one_trains_and_the_other_names_it(tmp_path, data):
    out = tmp_path / "r"
    cmd = [sys.executable, "-m", "cifarlab", "train", "--model", "resnet_small", "--data", data, "--epochs", "3",
           "--batch-size", "10", "--out", str(out), "--progress", "false", "--no-report"]
    first = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    time.sleep(0.3)
    second = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    errs = {p.pid: p.communicate(timeout=300)[1] for p in (first, second)}
    codes = sorted([first.returncode, second.returncode])
    assert codes == [0, 2], errs
    loser = first if first.returncode == 2 else second
    winner = second if loser is first else first
    assert f"in use by process {winner.pid}" in errs[loser.pid] and errs[loser.pid].count("\n") == 1
    epochs = [line for line in (out / "metrics.jsonl").read_text().splitlines() if '"type": "epoch"' in line]
    assert len(epochs) == 3  # one writer: no interleaved rows


def test_a_lock_left_by_a_dead_process_is_taken_over(tmp_path, data):
    out = tmp_path / "r"
    out.mkdir()
    (out / ".lock").write_text("999999\n")  # a killed run's file; the kernel dropped its lock with it
    run = cifarlab.train(data=data, model="resnet_small", epochs=1, batch_size=25, out=str(out), progress=False,
                         report=False)
    assert run.summary["epochs_run"] == 1


# ---- sweeps ---------------------------------------------------------------------------------------------------------

def test_a_seeded_sweep_restarted_does_not_draw_trial_0_again(capsys, tmp_path, data):
    import optuna

    sweep = tmp_path / "s.yaml"
    sweep.write_text("recipe: seed001_small\nsampler: {name: random, seed: 0}\ntrial_reports: false\n"
                     "space:\n  lr: {type: float, low: 0.001, high: 0.1, log: true}\n")
    for trials in (1, 2):  # the second command is a restart: the study already holds trial 0
        code = main(["sweep", "run", str(sweep), "--out", str(tmp_path / "sw"), "--trials", str(trials), "--data",
                     data, "--epochs", "1", "--progress", "false"])
        assert code == 0, capsys.readouterr().err
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'sw' / 'study.db'}")
    lrs = [t.params["lr"] for t in study.trials]
    assert len(lrs) == 2 and lrs[0] != lrs[1]


def test_a_password_in_a_storage_url_is_never_printed(capsys, tmp_path):
    sweep = tmp_path / "s.yaml"
    sweep.write_text("recipe: seed001_small\nspace:\n  lr: [0.1]\n")
    err = fails(capsys, ["sweep", "run", str(sweep), "--out", str(tmp_path / "sw"), "--storage",
                         "postgresql://127.0.0.1:1/db?user=u&password=hunter2"], "cannot open sweep storage")
    assert "hunter2" not in err


# ---- image folders and archives -----------------------------------------------------------------------------------

def _train_on(capsys, tmp_path, source: Path, *names: str) -> None:
    fails(capsys, ["train", "--model", "resnet_small", "--data", str(source), "--out", str(tmp_path / "r")], *names)


def test_nested_class_folders_are_ambiguous(capsys, tmp_path):
    folder = make_image_folder(tmp_path / "imgs", per_class=2, splits=("train",))
    for name in ("cat", "bird"):
        (folder / "train" / name / "a").mkdir(exist_ok=True)
        next((folder / "train" / name).glob("*.png")).rename(folder / "train" / name / "a" / "x.png")
    _train_on(capsys, tmp_path, folder, "nested deeper", "ambiguous")


def test_a_one_class_folder_cannot_train(capsys, tmp_path):
    folder = make_image_folder(tmp_path / "imgs", per_class=3, splits=("train",))
    for extra in ("automobile", "bird", "cat"):
        for p in (folder / "train" / extra).iterdir():
            p.unlink()
        (folder / "train" / extra).rmdir()
    _train_on(capsys, tmp_path, folder, "only one class (airplane)")


def test_an_archive_member_with_dotdot_is_refused(capsys, tmp_path):
    import io
    import tarfile

    from datagen import learnable_images, png_bytes

    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name in ("train/cat/1.png", "train/../dog/2.png"):
            blob = png_bytes(learnable_images(np.array([0]))[0].transpose(1, 2, 0))
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    _train_on(capsys, tmp_path, archive, "leaves its folder")


def test_archive_limits_are_stated_and_configurable(capsys, tmp_path, monkeypatch):
    from datagen import make_image_tar

    folder = make_image_folder(tmp_path / "imgs", per_class=2, splits=("train",))
    archive = make_image_tar(folder, tmp_path / "a.tar.gz")
    monkeypatch.setenv("CIFARLAB_MAX_ARCHIVE_MEMBERS", "5")
    _train_on(capsys, tmp_path, archive, "over the limit of 5", "CIFARLAB_MAX_ARCHIVE_MEMBERS")
    monkeypatch.setenv("CIFARLAB_MAX_ARCHIVE_MEMBERS", "100")
    monkeypatch.setenv("CIFARLAB_MAX_ARCHIVE_BYTES", "1000")
    _train_on(capsys, tmp_path, archive, "over the limit of 1,000", "CIFARLAB_MAX_ARCHIVE_BYTES")


def fail_the_kth_sync(monkeypatch, code: int) -> dict[str, int]:
    """Every write syncs its file once (cifarlab.files): counts the syncs in calls["n"] and fails the one numbered
    calls["fail_at"] with OSError(code), so failing the k-th sync fails the k-th write."""
    real_fsync = files.os.fsync
    calls = {"n": 0, "fail_at": 0}

    def fsync(fd):
        calls["n"] += 1
        if calls["n"] == calls["fail_at"]:
            raise OSError(code, os.strerror(code))
        real_fsync(fd)

    monkeypatch.setattr(files.os, "fsync", fsync)
    return calls


# ---- a failed write anywhere in a run ------------------------------------------------------------------------------

@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES])
def test_a_failed_write_at_each_point_of_a_run_is_one_line_and_resume_finishes_it(capsys, tmp_path, monkeypatch,
                                                                                  data, code):
    """Every file a run writes (config, metrics lines, checkpoints, summary, plots, report) goes through one writer
    that syncs it to disk once: failing the k-th sync fails the k-th write. For each k the run ends with one line
    naming the file, and `--resume` (or the same command again, when no checkpoint was written yet) ends with the
    weights of an uninterrupted run."""
    common = ["--model", "resnet_small", "--data", data, "--epochs", "2", "--batch-size", "25", "--deterministic",
              "true", "--progress", "false"]
    calls = fail_the_kth_sync(monkeypatch, code)
    assert main(["train", *common, "--out", str(tmp_path / "full")]) == 0
    writes = calls["n"]
    expected = load_checkpoint(tmp_path / "full" / "last.pt")["state_dict"]
    assert writes >= 12  # config, metrics, 2 x (metrics line, best, last), summary, plots, report
    for k in range(1, writes + 1):
        out = tmp_path / f"cut{k}"
        calls.update(n=0, fail_at=k)
        fails(capsys, ["train", *common, "--out", str(out)], os.strerror(code), "could not")
        calls["fail_at"] = 0
        again = ["train", "--resume", str(out)] if (out / "last.pt").exists() else ["train", *common, "--out", str(out)]
        assert main(again) == 0, (k, capsys.readouterr().err)
        got = load_checkpoint(out / "last.pt")["state_dict"]
        assert all(torch.equal(expected[key], got[key]) for key in expected), k
        assert (out / "report.html").is_file() and (out / "summary.json").is_file()


# ---- ONNX metadata --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory, trained_run) -> Path:
    from cifarlab.exporting import export

    return export(trained_run / "best.pt", "onnx", tmp_path_factory.mktemp("onnx") / "m.onnx")


@pytest.mark.parametrize("key, value, words", [
    ("mean", "[0.5, 0.5", "not valid JSON"), ("mean", '"abc"', "cifarlab.mean"),
    ("classes", '["a", "b"]', "2 classes for a model with 10 outputs"), ("input_size", "-3", "cifarlab.input_size"),
    ("std", "[0.5, 0, 0.5]", "cifarlab.std must be positive"), ("classes", "5", "cifarlab.classes"),
])
def test_bad_onnx_metadata_is_one_line_naming_the_key(capsys, tmp_path, onnx_file, key, value, words):
    import onnx

    proto = onnx.load(str(onnx_file))
    for entry in proto.metadata_props:
        if entry.key == f"cifarlab.{key}":
            entry.value = value
    bad = tmp_path / "bad.onnx"
    onnx.save(proto, str(bad))
    make_unlabeled_pickle(tmp_path / "in.pkl", n=3)
    fails(capsys, ["predict", str(bad), "--input", str(tmp_path / "in.pkl"), "--out", str(tmp_path / "p.csv")],
          str(bad), words)
    assert not (tmp_path / "p.csv").exists()


def test_images_too_small_for_any_net_are_one_line(capsys, tmp_path):
    from PIL import Image

    for c in ("cat", "dog"):
        (tmp_path / "tiny" / "train" / c).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (1, 1), (i * 40, 0, 0)).save(tmp_path / "tiny" / "train" / c / f"{i}.png")
    fails(capsys, ["train", "--recipe", "fast94", "--data", str(tmp_path / "tiny"), "--val-split", "0", "--out",
                   str(tmp_path / "r")], "1x1 pixels", "at least 8x8")


# ---- a failed write in the commands that write outside a run -------------------------------------------------------

def _commands_writing(trained_run: Path, tmp_path: Path) -> dict[str, tuple[list[str], Path]]:
    """Each command with the folder it writes into."""
    make_unlabeled_pickle(tmp_path / "in.pkl", n=4)
    ckpt = str(trained_run / "best.pt")
    return {
        "eval": (["eval", ckpt, "--out", str(tmp_path / "ev")], tmp_path / "ev"),
        "predict": (["predict", ckpt, "--input", str(tmp_path / "in.pkl"), "--out", str(tmp_path / "pr" / "p.csv"),
                     "--force"], tmp_path / "pr"),  # --force: the reruns below replace the first run's CSV
        "export": (["export", ckpt, "--format", "onnx", "--out", str(tmp_path / "ex" / "m.onnx")], tmp_path / "ex"),
        "report": (["report", str(trained_run), str(trained_run), "--out", str(tmp_path / "cmp")], tmp_path / "cmp"),
    }


@pytest.mark.parametrize("command", ["eval", "predict", "export", "report"])
@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES])
def test_a_failed_write_in_eval_predict_export_or_report_keeps_what_was_there(capsys, tmp_path, monkeypatch,
                                                                              trained_run, command, code):
    """The command runs once whole; then, for each of its k writes, again with the k-th failing: one line naming
    the file, exit 2, and every file of the first run still holds what it held (no empty or half file)."""
    argv, folder = _commands_writing(trained_run, tmp_path)[command]
    calls = fail_the_kth_sync(monkeypatch, code)
    assert main(argv) == 0, capsys.readouterr().err
    capsys.readouterr()
    before, writes = snapshot(folder), calls["n"]
    assert writes >= 1 and before
    for k in range(1, writes + 1):
        calls.update(n=0, fail_at=k)
        fails(capsys, argv, os.strerror(code), "could not write")
        assert snapshot(folder) == before, k


@pytest.mark.parametrize("command", ["eval", "predict", "export", "report"])
def test_an_output_folder_that_cannot_be_made_is_one_line(capsys, tmp_path, trained_run, command):
    argv, folder = _commands_writing(trained_run, tmp_path)[command]
    folder.parent.mkdir(parents=True, exist_ok=True)
    folder.write_text("a file where the folder should be")
    fails(capsys, argv, str(folder))
    assert folder.read_text() == "a file where the folder should be"


def test_predict_over_a_folder_with_a_file_name_that_is_not_utf8_writes_every_row(capsys, tmp_path, trained_run):
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    names = [f"{i}.png" for i in range(11)] + [b"\xff\xfe.png".decode("utf-8", "surrogateescape")]
    for i, name in enumerate(names):
        Image.new("RGB", (32, 32), (i * 20, 0, 0)).save(str(folder) + "/" + name, format="PNG")
    out = tmp_path / "p.csv"
    assert main(["predict", str(trained_run / "best.pt"), "--input", str(folder), "--out", str(out)]) == 0
    rows = out.read_bytes().splitlines()
    assert len(rows) == 1 + len(names) and any(b"/\xff\xfe.png," in row for row in rows)
