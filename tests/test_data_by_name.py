"""--data cifar10 / cifar100: resolved under $CIFARLAB_DATA in torchvision's layout, downloaded once with the
published MD5 checked (tested against a file:// mirror of the official archive layout), and a fast, one-line failure
when the machine is offline."""

from __future__ import annotations

import hashlib
import tarfile
import time
import urllib.request

import pytest

from cifarlab.cli import main
from cifarlab.data import fetch
from cifarlab.data.formats import open_source
from cifarlab.errors import CifarlabError
from datagen import make_cifar10_python, make_cifar100_python


def _mirror(tmp_path, monkeypatch, name: str):
    """The official archive of `name` (same file name, same top folder) built from generated batches, served from a
    file:// mirror, its MD5 registered as the published one."""
    arc = fetch.ARCHIVES[name]
    src = tmp_path / "build"
    (make_cifar10_python if name == "cifar10" else make_cifar100_python)(src)
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    with tarfile.open(mirror / arc.filename, "w:gz") as tar:
        tar.add(src / arc.folder, arcname=arc.folder)
    md5 = hashlib.md5((mirror / arc.filename).read_bytes()).hexdigest()
    monkeypatch.setitem(fetch.ARCHIVES, name, fetch.Archive(arc.url, arc.filename, md5, arc.folder))
    monkeypatch.setenv("CIFARLAB_DATA_MIRROR", mirror.as_uri())
    monkeypatch.setenv("CIFARLAB_DATA", str(tmp_path / "root"))
    return mirror / arc.filename


@pytest.mark.parametrize("name,kind", [("cifar10", "cifar10-python"), ("cifar100", "cifar100-python")])
def test_a_name_downloads_once_checks_md5_and_uses_torchvisions_layout(tmp_path, monkeypatch, name, kind):
    archive = _mirror(tmp_path, monkeypatch, name)
    source = open_source(name)
    assert source.kind == kind and source.path == tmp_path / "root" / fetch.ARCHIVES[name].folder
    assert (tmp_path / "root" / archive.name).read_bytes() == archive.read_bytes()
    archive.unlink()  # the mirror is gone: the second use reads the cached folder, no download
    assert open_source(name).path == source.path


def test_train_and_eval_by_name(tmp_path, monkeypatch, capsys):
    _mirror(tmp_path, monkeypatch, "cifar10")
    run = tmp_path / "run"
    assert main(["train", "--recipe", "seed001_small", "--data", "cifar10", "--epochs", "1", "--batch-size", "20",
                 "--out", str(run), "--no-report", "--progress", "false"]) == 0
    assert (run / "best.pt").is_file()
    assert main(["eval", str(run / "best.pt"), "--split", "test"]) == 0
    assert "test split of cifar10: 20 images" in capsys.readouterr().out


def test_a_wrong_md5_is_refused_and_nothing_is_extracted(tmp_path, monkeypatch):
    _mirror(tmp_path, monkeypatch, "cifar10")
    arc = fetch.ARCHIVES["cifar10"]
    monkeypatch.setitem(fetch.ARCHIVES, "cifar10", fetch.Archive(arc.url, arc.filename, "0" * 32, arc.folder))
    with pytest.raises(CifarlabError, match="does not match the published 0000"):
        open_source("cifar10")
    assert not (tmp_path / "root" / arc.folder).exists()


def test_a_path_that_exists_wins_over_a_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_cifar10_python(tmp_path / "cifar10")  # a local folder called cifar10
    monkeypatch.setenv("CIFARLAB_DATA", str(tmp_path / "root"))
    assert open_source("cifar10").path.resolve() == tmp_path / "cifar10" / "cifar-10-batches-py"
    assert not (tmp_path / "root").exists()


def test_offline_fails_fast_in_one_line_with_the_hint(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CIFARLAB_DATA", str(tmp_path / "root"))
    monkeypatch.setattr(fetch, "CONNECT_TIMEOUT", 1.0)

    def resolver_that_hangs(*args, **kwargs):  # an offline resolver that takes minutes to give up
        time.sleep(30)

    monkeypatch.setattr(urllib.request, "urlopen", resolver_that_hangs)
    start = time.monotonic()
    code = main(["train", "--recipe", "fast94", "--data", "cifar10", "--out", str(tmp_path / "run")])
    took = time.monotonic() - start
    err = capsys.readouterr().err
    assert code == 2 and took < 5, (code, took)
    assert err.count("\n") == 1 and "no answer in 1 s" in err
    assert f"put cifar-10-python.tar.gz in {tmp_path / 'root'}, then run this command again" in err
    assert not (tmp_path / "run").exists()  # the run folder it made is removed
    assert [p.name for p in (tmp_path / "root").iterdir()] == []  # no partial download left


def test_data_download_defaults_to_the_data_root(tmp_path, monkeypatch, capsys):
    _mirror(tmp_path, monkeypatch, "cifar100")
    assert main(["data", "download", "cifar100"]) == 0
    assert f"ready: {tmp_path / 'root' / 'cifar-100-python'}" in capsys.readouterr().out


def test_a_data_root_that_is_a_file_is_one_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "afile").write_text("not a folder")
    monkeypatch.setenv("CIFARLAB_DATA", str(tmp_path / "afile"))
    assert main(["data", "stats", "cifar10"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "a file of that name is in the way" in err
    assert (tmp_path / "afile").read_text() == "not a folder"
