"""The checkpoint schema: the keys a run writes are the documented ones, reading is strict, version 1 still loads
and resumes; the training/ package keeps its functions short and its checkpoint keys in one place."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest
import torch

import cifarlab
from cifarlab.errors import CifarlabError
from cifarlab.training import checkpoint as ckpt_mod
from cifarlab.training.checkpoint import (
    MODEL_KEYS,
    OPTIONAL_KEYS,
    TRAINING_KEYS,
    build_checkpoint,
    load_checkpoint,
    save_checkpoint,
)

TRAIN = Path(cifarlab.__file__).parent / "training"
assert TRAIN.is_dir(), TRAIN  # else the glob below would make no tests at all


def test_a_runs_checkpoint_holds_exactly_the_documented_keys(trained_run):
    ckpt = load_checkpoint(trained_run / "last.pt")
    assert set(ckpt) == set(MODEL_KEYS) | set(TRAINING_KEYS)
    assert ckpt["version"] == ckpt_mod.CHECKPOINT_VERSION
    assert set(ckpt["train_state"]) == {"epoch", "step", "best", "best_epoch", "bad_epochs", "elapsed", "partial",
                                        "history"}
    assert ckpt["train_state"]["epoch"] == ckpt["epoch"] == 2 and len(ckpt["train_state"]["history"]) == 2
    assert set(ckpt["rng"]) == {"torch", "python", "numpy", "cuda"}


def _tiny(**extra) -> dict:
    return build_checkpoint(model="resnet_small", model_args={}, classes=["a", "b"], mean=[0.5] * 3, std=[0.5] * 3,
                            state_dict={"w": torch.ones(2)}, config={}, metrics={}, epoch=0, step=0, **extra)


def test_an_unknown_or_missing_key_is_one_line_naming_it(tmp_path):
    path = tmp_path / "c.pt"
    torch.save({**_tiny(), "surprise": 1}, path)
    with pytest.raises(CifarlabError, match="unknown key 'surprise'"):
        load_checkpoint(path)
    broken = _tiny()
    del broken["mean"]
    torch.save(broken, path)
    with pytest.raises(CifarlabError, match="lacks the key 'mean'"):
        load_checkpoint(path)
    torch.save({**_tiny(), "optimizer": {}}, path)  # some training keys but not all: not resumable, say which
    with pytest.raises(CifarlabError, match="lacks the training key 'train_state'"):
        load_checkpoint(path)
    save_checkpoint(_tiny(imported_from="w.pth"), path)
    assert load_checkpoint(path)["imported_from"] == "w.pth" and "imported_from" in OPTIONAL_KEYS


def _as_version_1(ckpt: dict) -> dict:
    """The layout cifarlab 0.1 wrote before this schema: training state at the top level, no history or clock."""
    ts, rng = ckpt.pop("train_state"), ckpt.pop("rng")
    old = {**ckpt, "version": 1, "best": ts["best"], "best_epoch": ts["best_epoch"], "bad_epochs": ts["bad_epochs"],
           "partial": ts["partial"], "torch_rng": rng["torch"], "python_rng": rng["python"],
           "numpy_rng": rng["numpy"], "cuda_rng": rng["cuda"],
           "model_args": {"dropout": 0.0, "block_dropout": 0.0}}
    del old["cifarlab_version"]
    return old


def test_a_version_1_checkpoint_loads_and_resumes_like_the_current_one(trained_run, tmp_path):
    runs = {}
    for name in ("v2", "v1"):
        runs[name] = shutil.copytree(trained_run, tmp_path / name)
    v1 = _as_version_1(torch.load(runs["v1"] / "last.pt", weights_only=True))
    torch.save(v1, runs["v1"] / "last.pt")
    loaded = load_checkpoint(runs["v1"] / "last.pt")
    assert loaded["version"] == 2 and loaded["train_state"]["history"] is None and loaded["model_args"] == {}
    results = {name: cifarlab.train(resume=str(path), epochs=3, report=False) for name, path in runs.items()}
    a, b = (load_checkpoint(runs[n] / "last.pt")["state_dict"] for n in ("v2", "v1"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [h["epoch"] for h in results["v1"].history] == [1, 2, 3]


def _functions(path: Path):
    tree = ast.parse(path.read_text())
    return [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))], tree


@pytest.mark.parametrize("path", sorted(TRAIN.glob("*.py")), ids=lambda p: p.name)
def test_train_functions_fit_on_one_screen_without_closures_that_assign(path):
    functions, tree = _functions(path)
    for fn in functions:
        assert fn.end_lineno - fn.lineno + 1 <= 80, f"{path.name}:{fn.name} is {fn.end_lineno - fn.lineno + 1} lines"
    assert not [n for n in ast.walk(tree) if isinstance(n, (ast.Nonlocal, ast.Global))], path.name


def test_checkpoint_dicts_are_built_in_one_place():
    """No module but training/checkpoint.py writes a dict literal holding a checkpoint's weights key."""
    src = Path(cifarlab.__file__).parent
    builders = []
    for path in src.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Dict) and any(isinstance(k, ast.Constant) and k.value == "state_dict"
                                                  for k in node.keys):
                builders.append(path.relative_to(src).as_posix())
    assert set(builders) == {"training/checkpoint.py"}, builders


HUGE = {"widths": [1 << 20] * 3}  # a 2^20-channel resnet_small: terabytes if it were built
HUGE_INNER = {"inner_widths": [1 << 22] * 3}


@pytest.mark.parametrize("command, where, args", [
    ("eval", "model_args", HUGE), ("eval", "model_args", HUGE_INNER), ("export", "model_args", HUGE),
    ("prune", "model_args", HUGE), ("prune", "model_args", HUGE_INNER),
    ("resume", "config", HUGE), ("resume", "config", HUGE_INNER),  # --resume builds its net from the config
])
def test_a_checkpoint_naming_huge_widths_beside_small_weights_is_one_line_and_builds_nothing(
        trained_run, tmp_path, capsys, monkeypatch, command, where, args):
    from cifarlab.cli import main

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    for name in ("best.pt", "last.pt"):
        ckpt = torch.load(run / name, weights_only=True)
        if where == "config":
            ckpt["config"]["model_args"] = args
        else:
            ckpt["model_args"] = args
        torch.save(ckpt, run / name)
    real = torch.nn.Conv2d.__init__

    def small_only(self, cin, cout, *a, **k):  # a real (not meta) conv this wide would be the allocation
        assert cin < 1 << 16 and cout < 1 << 16 or torch.empty(0).device.type == "meta", "built a huge conv"
        real(self, cin, cout, *a, **k)
    monkeypatch.setattr(torch.nn.Conv2d, "__init__", small_only)
    argv = {"eval": ["eval", str(run / "best.pt")],
            "export": ["export", str(run / "best.pt"), "--format", "onnx", "--out", str(tmp_path / "m.onnx")],
            "prune": ["prune", str(run / "best.pt"), "--amount", "0.5", "--out", str(tmp_path / "p")],
            "resume": ["train", "--resume", str(run), "--epochs", "3"]}[command]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "do not fit model 'resnet_small' with its model_args" in err and err.count("\n") == 1
    assert not (tmp_path / "m.onnx").exists() and not (tmp_path / "p").exists()
