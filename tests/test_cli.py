"""The command line: a thin layer whose user errors are one line and a non-zero exit."""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import tarfile
import urllib.error

import pytest

from cifarlab.cli import main
from cifarlab.data import fetch as download_mod
from cifarlab.data.fetch import Archive, safe_extract
from cifarlab.errors import CifarlabError
from datagen import make_cifar10_python, make_unlabeled_pickle


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_models_prints_exact_parameter_counts(capsys):
    code, out, _ = run(capsys, "models")
    assert code == 0
    for name, count in [("resnet9", "4,903,242"), ("resnet18", "11,173,962"), ("resnet_small", "78,042"),
                        ("resnet_medium", "1,228,970"), ("resnet_large", "4,903,242"),
                        ("seed002_net", "4,869,066"), ("seed004_resnet", "3,903,620")]:
        line = next(x for x in out.splitlines() if x.startswith(name + " "))
        assert count in line


def test_summary_budget_exit_codes(capsys):
    code, out, _ = run(capsys, "summary", "resnet9", "--budget", "5M")
    assert code == 0 and "Total params: 4,903,242" in out and "within budget" in out
    code, _, err = run(capsys, "summary", "resnet18", "--budget", "5M")
    assert code == 1 and "OVER BUDGET" in err
    code, out, err = run(capsys, "summary", "resnet9", "--budget", "abc")
    assert code == 2 and out == "" and "budget 'abc'" in err  # refused before the table is printed


@pytest.mark.parametrize("argv,match", [
    (["train", "--recipe", "nope", "--data", "."], "unknown recipe 'nope'"),
    (["train", "--recipe", "seed001_small", "--data", "/no/such/dir"], "data path not found"),
    (["train", "--recipe", "seed001_small", "--data", ".", "--bogus", "1"], "unknown config key 'bogus'"),
    (["train", "--model", "resnet7", "--data", "."], "unknown model 'resnet7'"),
    (["train", "--recipe", "seed001_small", "--data", ".", "--lr", "-1"], "'lr' must be >= 0"),
    (["eval", "/no/such.pt"], "checkpoint not found"),
    (["summary", "resnet7"], "unknown model"),
    (["data", "stats", "/no/such/dir"], "data path not found"),
])
def test_user_errors_are_one_line(capsys, argv, match):
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert err.startswith("cifarlab: error: ") and match in err and err.count("\n") == 1


def test_train_eval_predict_commands(capsys, tmp_path):
    make_cifar10_python(tmp_path, per_batch=30, test=20)
    code, _, _ = run(capsys, "train", "--recipe", "seed001_small", "--data", str(tmp_path), "--epochs", "1",
                     "--out", str(tmp_path / "run"), "--batch-size", "50", "--val-split", "0.2", "--progress", "false")
    assert code == 0 and (tmp_path / "run" / "best.pt").is_file()
    code, out, _ = run(capsys, "eval", str(tmp_path / "run" / "best.pt"))
    assert code == 0 and "top1" in out and "confusion matrix" in out
    assert (tmp_path / "run" / "eval-val" / "confusion.csv").is_file()
    make_unlabeled_pickle(tmp_path / "nl.pkl", n=5)
    code, out, _ = run(capsys, "predict", str(tmp_path / "run" / "best.pt"), "--input", str(tmp_path / "nl.pkl"),
                       "--out", str(tmp_path / "sub.csv"), "--tta")
    assert code == 0 and (tmp_path / "sub.csv").read_text().startswith("ID,Labels\n1000,")
    code, out, _ = run(capsys, "data", "stats", str(tmp_path))
    assert code == 0 and "mean (R G B)" in out and "class counts" in out


def test_console_script_runs_as_a_module():
    out = subprocess.run([sys.executable, "-m", "cifarlab", "recipes"], capture_output=True, text=True, check=True)
    assert "seed000_resnet9" in out.stdout and "seed004_cifar100" in out.stdout


# ---- download -------------------------------------------------------------------------------------------

def _tiny_archive(path, members):
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_download_offline_says_where_to_put_the_file(tmp_path, monkeypatch):
    def offline(*a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(download_mod.urllib.request, "urlopen", offline)
    with pytest.raises(CifarlabError, match=r"put cifar-10-python.tar.gz in .*then run this command again"):
        download_mod.download("cifar10", tmp_path)
    assert not list(tmp_path.iterdir())  # no partial file left


def test_download_uses_a_present_archive_after_md5_check(tmp_path, monkeypatch):
    src = make_cifar10_python(tmp_path / "src", per_batch=2, test=2)
    arc = tmp_path / "dl" / "cifar-10-python.tar.gz"
    arc.parent.mkdir()
    with tarfile.open(arc, "w:gz") as tar:
        tar.add(src, arcname="cifar-10-batches-py")
    md5 = hashlib.md5(arc.read_bytes()).hexdigest()
    monkeypatch.setitem(download_mod.ARCHIVES, "cifar10",
                        Archive("http://127.0.0.1:9/none", arc.name, md5, "cifar-10-batches-py"))
    folder = download_mod.download("cifar10", arc.parent)
    assert (folder / "data_batch_5").is_file()
    monkeypatch.setitem(download_mod.ARCHIVES, "cifar10",
                        Archive("http://127.0.0.1:9/none", arc.name, "0" * 32, "cifar-10-batches-py"))
    with pytest.raises(CifarlabError, match="does not match the published"):
        download_mod.download("cifar10", arc.parent)


@pytest.mark.parametrize("name", ["../escape.txt", "/abs/escape.txt", "a/../../escape.txt"])
def test_extraction_refuses_path_traversal(tmp_path, name):
    arc = tmp_path / "evil.tar.gz"
    _tiny_archive(arc, [("ok.txt", b"fine"), (name, b"evil")])
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(CifarlabError, match="refusing member"):
        safe_extract(arc, dest)
    assert not (tmp_path / "escape.txt").exists() and not (dest / "ok.txt").exists()


@pytest.mark.parametrize("kind", [tarfile.SYMTYPE, tarfile.LNKTYPE])
def test_extraction_refuses_links(tmp_path, kind):
    arc = tmp_path / "link.tar.gz"
    with tarfile.open(arc, "w:gz") as tar:
        tar.addfile(tarfile.TarInfo("cifar-10-batches-py/ok.txt"), io.BytesIO(b""))
        info = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
        info.type = kind
        info.linkname = "/etc/passwd" if kind == tarfile.SYMTYPE else "../../etc/passwd"
        tar.addfile(info)
    with pytest.raises(CifarlabError, match="non-regular member 'cifar-10-batches-py/data_batch_1'"):
        safe_extract(arc, tmp_path / "out")
    assert not (tmp_path / "out" / "cifar-10-batches-py").exists()  # nothing extracted, not even ok.txt
