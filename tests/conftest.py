"""Fixtures: an isolated decode cache, a generated CIFAR-10 directory and one short shared training run."""

from __future__ import annotations

from pathlib import Path

import pytest

from datagen import make_cifar10_python


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    # Each test session gets its own decoded-image cache; nothing is written to the user's home.
    monkeypatch.setenv("CIFARLAB_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture
def cifar10_dir(tmp_path) -> Path:
    make_cifar10_python(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """One short real training run on generated CIFAR-10 python data, shared by the tests that inspect it."""
    import cifarlab

    root = tmp_path_factory.mktemp("trainrun")
    make_cifar10_python(root, per_batch=60, test=40)
    result = cifarlab.train("seed001_small", data=str(root), epochs=2, batch_size=32, cyclic_step_size=5,
                            out=str(root / "run"), progress=False)
    return result.run_dir
