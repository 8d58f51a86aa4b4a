"""Every reader on small files written in the exact real format; malformed files give clear errors."""

from __future__ import annotations

import pickle
import tarfile

import numpy as np
import pytest
import torch

from cifarlab.data import load_cached, load_splits, open_source, read_unlabeled_pickle
from cifarlab.data.safe_pickle import safe_load
from cifarlab.errors import CifarlabError
from datagen import (
    CLASSES,
    learnable_images,
    make_cifar10_binary,
    make_cifar10_python,
    make_cifar100_python,
    make_evil_pickle,
    make_image_folder,
    make_image_tar,
    make_unlabeled_pickle,
    write_pickle,
)


def test_cifar10_python_layout_is_channel_major(tmp_path):
    d = make_cifar10_python(tmp_path, per_batch=10, test=10)
    src = open_source(tmp_path)  # the parent directory is recognized too
    assert src.kind == "cifar10-python" and src.splits == ("train", "test")
    train = src.read("train")
    assert train.images.shape == (50, 3, 32, 32) and train.images.dtype == torch.uint8
    assert train.classes == CLASSES
    batch = pickle.load(open(d / "data_batch_1", "rb"), encoding="bytes")
    rec = batch[b"data"][3]
    # pixel (c, y, x) is record[c*1024 + y*32 + x]
    assert train.images[3, 1, 5, 7] == rec[1 * 1024 + 5 * 32 + 7]
    assert train.labels[:10].tolist() == batch[b"labels"]
    assert len(src.read("test")) == 10


def test_cifar10_binary(tmp_path):
    d = make_cifar10_binary(tmp_path, per_batch=10)
    src = open_source(d)
    assert src.kind == "cifar10-binary"
    train = src.read("train")
    assert train.images.shape == (50, 3, 32, 32)
    raw = np.fromfile(d / "data_batch_2.bin", dtype=np.uint8).reshape(-1, 3073)
    assert train.labels[10:20].tolist() == raw[:, 0].tolist()
    assert torch.equal(train.images[10].flatten(), torch.from_numpy(raw[0, 1:]))
    assert train.classes == CLASSES


@pytest.mark.parametrize("mode,n_classes", [("fine", 100), ("coarse", 20)])
def test_cifar100_fine_and_coarse(tmp_path, mode, n_classes):
    make_cifar100_python(tmp_path)
    src = open_source(tmp_path)
    assert src.kind == "cifar100-python" and src.name == "cifar100"
    train = src.read("train", label_mode=mode)
    assert len(train.classes) == n_classes and train.classes[0] == f"{mode}00"
    fine = (np.arange(40) * 7) % 100
    expected = fine if mode == "fine" else fine // 5
    assert train.labels.tolist() == expected.tolist()


def test_image_folder_and_tarball_agree(tmp_path):
    folder = make_image_folder(tmp_path / "imgs", per_class=3)
    tar = make_image_tar(folder, tmp_path / "imgs.tar.gz")
    a = open_source(folder)
    b = open_source(tar)
    assert a.kind == "image-folder" and b.kind == "image-tar"
    assert a.splits == b.splits == ("test", "train")
    fa, fb = a.read("train"), b.read("train")
    assert fa.classes == fb.classes == sorted(CLASSES[:4])
    assert fa.images.shape == (12, 3, 32, 32)
    assert torch.equal(fa.images, fb.images) and torch.equal(fa.labels, fb.labels)
    # PNG is lossless: the decoded pixels are the ones written
    expected = learnable_images(np.full(3, CLASSES.index(fa.classes[0])), seed=CLASSES.index(fa.classes[0]))
    assert torch.equal(fa.images[:3], torch.from_numpy(expected))


def test_image_folder_without_split_level(tmp_path):
    make_image_folder(tmp_path / "x", per_class=2, splits=("train",))
    flat = tmp_path / "x" / "train"
    src = open_source(flat)
    assert src.splits == ("train",)
    assert len(src.read("train")) == 8


@pytest.mark.parametrize("layout", ["records", "hwc"])
def test_unlabeled_pickle(tmp_path, layout):
    images = make_unlabeled_pickle(tmp_path / "nolabels.pkl", n=12, layout=layout)
    s = read_unlabeled_pickle(tmp_path / "nolabels.pkl")
    assert s.ids == list(range(1000, 1012))
    assert torch.equal(s.images, torch.from_numpy(images))
    assert (s.labels == -1).all()


def test_cache_serves_second_read_without_decoding(tmp_path, monkeypatch):
    tar = make_image_tar(make_image_folder(tmp_path / "imgs", per_class=2), tmp_path / "d.tar.gz")
    src = open_source(tar)
    first = load_cached(src, "train")

    def boom(*a, **k):
        raise AssertionError("decoded again")

    monkeypatch.setattr(type(src), "read", boom)
    second = load_cached(open_source(tar), "train")
    assert torch.equal(first.images, second.images) and first.classes == second.classes
    assert first.ids == second.ids


def test_cache_key_changes_with_source(tmp_path):
    from cifarlab.data.cache import source_fingerprint

    folder = make_image_folder(tmp_path / "imgs", per_class=2)
    before = source_fingerprint(open_source(folder))
    (folder / "train" / "bird" / "0000.png").write_bytes((folder / "train" / "cat" / "0000.png").read_bytes() + b"\0")
    assert source_fingerprint(open_source(folder)) != before


def test_load_splits_is_stratified(tmp_path):
    make_cifar10_python(tmp_path, per_batch=20)
    s = load_splits(str(tmp_path), val_split=0.2, split_seed=1)
    assert len(s.train) == 80 and len(s.val) == 20
    assert torch.bincount(s.val.labels, minlength=10).tolist() == [2] * 10


# ---- malformed inputs -----------------------------------------------------------------------------------

def _bad(fn, match):
    with pytest.raises(CifarlabError, match=match):
        fn()


def test_malformed_cifar_files(tmp_path):
    d = make_cifar10_python(tmp_path / "a", per_batch=10)
    raw = (d / "data_batch_2").read_bytes()
    (d / "data_batch_2").write_bytes(raw[: len(raw) // 2])
    _bad(lambda: open_source(d).read("train"), "data_batch_2.*not a readable pickle")

    d = make_cifar10_python(tmp_path / "b", per_batch=10)
    write_pickle(d / "data_batch_3", {b"data": np.zeros((10, 100), np.uint8), b"labels": [0] * 10})
    _bad(lambda: open_source(d).read("train"), r"shape \(10, 100\)")

    d = make_cifar10_python(tmp_path / "c", per_batch=10)
    write_pickle(d / "data_batch_4", {b"data": np.zeros((10, 3072), np.uint8), b"labels": [12] * 10})
    _bad(lambda: open_source(d).read("train"), r"labels must lie in \[0, 10\)")

    d = make_cifar10_python(tmp_path / "d", per_batch=10)
    (d / "data_batch_5").unlink()
    _bad(lambda: open_source(d).read("train"), "batch missing")

    d = make_cifar10_binary(tmp_path / "e", per_batch=4)
    with open(d / "data_batch_1.bin", "ab") as fh:
        fh.write(b"\1\2\3")
    _bad(lambda: open_source(d).read("train"), "3073-byte records")

    d = make_cifar100_python(tmp_path / "f")
    write_pickle(d / "train", {b"data": np.zeros((2, 3072), np.uint8), b"fine_labels": [0, 1]})
    _bad(lambda: open_source(d).read("train", "coarse"), "missing key 'coarse_labels'")


def test_malformed_images_and_archives(tmp_path):
    folder = make_image_folder(tmp_path / "imgs", per_class=1)
    (folder / "train" / "cat" / "broken.png").write_bytes(b"not a png")
    _bad(lambda: open_source(folder).read("train"), "cannot decode image .*broken.png")

    tar = tmp_path / "broken.tar.gz"
    good = make_image_tar(make_image_folder(tmp_path / "g", per_class=1), tmp_path / "g.tar.gz").read_bytes()
    tar.write_bytes(good[:200])
    _bad(lambda: open_source(tar).read("train"), "tar archive|not a dataset")
    (tmp_path / "zero.tar.gz").write_bytes(b"")
    _bad(lambda: open_source(tmp_path / "zero.tar.gz"), "the file is empty")
    (tmp_path / "noise.tgz").write_bytes(bytes(range(256)) * 20)
    _bad(lambda: open_source(tmp_path / "noise.tgz"), "named like a tar archive, but its bytes are not one")
    (tmp_path / "notes.txt").write_text("hello")
    _bad(lambda: open_source(tmp_path / "notes.txt"), "not a dataset")

    empty = tmp_path / "empty"
    empty.mkdir()
    _bad(lambda: open_source(empty), "no dataset recognized")
    _bad(lambda: open_source(tmp_path / "missing"), "data path not found")

    with tarfile.open(tmp_path / "noimg.tar.gz", "w:gz") as t:
        t.add(__file__, arcname="readme.txt")
    _bad(lambda: open_source(tmp_path / "noimg.tar.gz"), "holds no images")


def test_malformed_unlabeled_pickles(tmp_path):
    p = tmp_path / "x.pkl"
    write_pickle(p, [1, 2, 3])
    _bad(lambda: read_unlabeled_pickle(p), "expected a dict")
    write_pickle(p, {b"data": np.zeros((3, 3072), np.float32), b"ids": [1, 2, 3]})
    _bad(lambda: read_unlabeled_pickle(p), "uint8")
    write_pickle(p, {b"data": np.zeros((3, 3072), np.uint8), b"ids": [1, 2]})
    _bad(lambda: read_unlabeled_pickle(p), "2 ids for 3 images")
    p.write_bytes(b"\x80\x02random junk")
    _bad(lambda: read_unlabeled_pickle(p), "not a readable pickle|not a safe")


@pytest.mark.parametrize("target", ["cifar10", "cifar10-meta", "cifar100", "cifar100-meta", "unlabeled"])
def test_hostile_pickle_is_refused_and_never_executed(tmp_path, target):
    marker = tmp_path / "pwned"
    if target.startswith("cifar10-") or target == "cifar10":
        d = make_cifar10_python(tmp_path / "ds", per_batch=10)
        make_evil_pickle(d / ("batches.meta" if target.endswith("meta") else "data_batch_1"), marker)
        _bad(lambda: open_source(d).read("train"), "refused global (posix|os).system")
    elif target.startswith("cifar100"):
        d = make_cifar100_python(tmp_path / "ds")
        make_evil_pickle(d / ("meta" if target.endswith("meta") else "train"), marker)
        _bad(lambda: open_source(d).read("train"), "refused global (posix|os).system")
    else:
        make_evil_pickle(tmp_path / "evil.pkl", marker)
        _bad(lambda: read_unlabeled_pickle(tmp_path / "evil.pkl"), "refused")
    assert not marker.exists()


def test_safe_load_still_reads_numpy_arrays():
    arr = np.arange(12, dtype=np.uint8).reshape(3, 4)
    out = safe_load(pickle.dumps({b"a": arr, "b": [1, 2.5, "x", b"y"]}, protocol=2))
    assert np.array_equal(out[b"a"], arr) and out["b"] == [1, 2.5, "x", b"y"]
    out = safe_load(pickle.dumps({"a": arr}, protocol=pickle.HIGHEST_PROTOCOL))
    assert np.array_equal(out["a"], arr)
