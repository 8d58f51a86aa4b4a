"""Weights in the formats people share: safetensors (export and load everywhere a checkpoint or state dict is taken),
torch.export programs (.pt2), and the Hugging Face Hub (push's files, and hf-hub:USER/NAME from a local cache laid
out as the Hub's)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import cifarlab
from cifarlab.cli import main
from cifarlab.hub import read_safetensors
from cifarlab.training.checkpoint import load_checkpoint, model_from_checkpoint

safetensors = pytest.importorskip("safetensors")


def _one_error_line(capsys, argv, *needles):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


def _predictions(checkpoint, images, tmp_path, name):
    res = cifarlab.predict(checkpoint, images, out=tmp_path / f"{name}.csv")
    return (tmp_path / f"{name}.csv").read_text(), res["probs"]


@pytest.fixture(scope="module")
def images(tmp_path_factory, trained_run):
    """Unlabeled inputs: the generated test batch as a Kaggle-style pickle."""
    import pickle

    import numpy as np

    batch = pickle.loads((trained_run.parent / "cifar-10-batches-py" / "test_batch").read_bytes(), encoding="bytes")
    path = tmp_path_factory.mktemp("inputs") / "unlabeled.pkl"
    path.write_bytes(pickle.dumps({b"data": np.asarray(batch[b"data"]), b"ids": list(range(len(batch[b"labels"])))}))
    return path


def test_safetensors_round_trip_gives_identical_predictions(trained_run, images, tmp_path, capsys):
    out = tmp_path / "m.safetensors"
    assert main(["export", str(trained_run / "best.pt"), "--format", "safetensors", "--out", str(out)]) == 0
    state, meta = read_safetensors(out)
    ckpt = load_checkpoint(trained_run / "best.pt")
    assert meta["model"] == "resnet_small" and meta["classes"] == ckpt["classes"] and meta["mean"] == ckpt["mean"]
    assert all(torch.equal(state[k], ckpt["state_dict"][k]) for k in ckpt["state_dict"])
    csv_a, probs_a = _predictions(trained_run / "best.pt", images, tmp_path, "a")
    csv_b, probs_b = _predictions(out, images, tmp_path, "b")
    assert csv_a == csv_b and torch.equal(torch.as_tensor(probs_a), torch.as_tensor(probs_b))
    a = cifarlab.evaluate(trained_run / "best.pt", split="test", out=tmp_path / "ea")
    b = cifarlab.evaluate(out, data=str(trained_run.parent), split="test", out=tmp_path / "eb")
    assert a["top1"] == b["top1"] and a["loss"] == b["loss"]
    net = cifarlab.load_model(out)
    assert net.cifarlab["classes"] == ckpt["classes"] and not net.training


def test_a_plain_safetensors_state_dict_loads_where_a_state_dict_is_taken(trained_run, images, tmp_path, capsys):
    from safetensors.torch import save_file

    ckpt = load_checkpoint(trained_run / "best.pt")
    plain = tmp_path / "notebook.safetensors"
    save_file({k: v.contiguous() for k, v in ckpt["state_dict"].items()}, str(plain))
    norm = ["--mean", *map(str, ckpt["mean"]), "--std", *map(str, ckpt["std"])]
    _one_error_line(capsys, ["predict", str(plain), "--input", str(images), "--out", str(tmp_path / "x.csv")],
                    "plain safetensors state dict", "--model")
    assert main(["predict", str(plain), "--model", "resnet_small", *norm, "--input", str(images),
                 "--out", str(tmp_path / "p.csv")]) == 0
    # a plain state dict carries no precision and predicts in fp32: the run's checkpoint, read in fp32, agrees
    ckpt["config"]["precision"] = "fp32"
    torch.save(ckpt, tmp_path / "fp32.pt")
    assert (tmp_path / "p.csv").read_text() == _predictions(tmp_path / "fp32.pt", images, tmp_path, "ref")[0]
    assert main(["import", str(plain), "--model", "resnet_small", *norm, "--out", str(tmp_path / "imp.pt")]) == 0
    # as the weights a run starts from
    assert main(["train", "--recipe", "seed001_small", "--data", str(trained_run.parent), "--epochs", "1",
                 "--batch-size", "32", "--pretrained", str(plain), "--out", str(tmp_path / "ft"), "--no-report",
                 "--progress", "false"]) == 0
    assert f"weights from {plain}" in capsys.readouterr().out


def test_a_broken_safetensors_file_is_one_line(trained_run, tmp_path, capsys):
    good = tmp_path / "m.safetensors"
    assert main(["export", str(trained_run / "best.pt"), "--format", "safetensors", "--out", str(good)]) == 0
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    _one_error_line(capsys, ["eval", str(cut), "--data", str(trained_run.parent), "--split", "test"],
                    "not a loadable safetensors file")
    from safetensors.torch import save_file

    bad = tmp_path / "bad.safetensors"
    state, meta = read_safetensors(good)
    save_file(state, str(bad), metadata={"cifarlab": json.dumps({**meta, "std": [0.2, -1, 0.2]})})
    _one_error_line(capsys, ["eval", str(bad), "--data", str(trained_run.parent), "--split", "test"],
                    "cifarlab.std must be positive")
    assert meta["precision"] == load_checkpoint(trained_run / "best.pt")["config"]["precision"]  # carried over
    save_file(state, str(bad), metadata={"cifarlab": json.dumps({**meta, "precision": "fp8"})})
    _one_error_line(capsys, ["eval", str(bad), "--data", str(trained_run.parent), "--split", "test"],
                    "cifarlab.precision must be auto, fp32 or bf16")


def test_pt2_round_trip_gives_identical_predictions(trained_run, tmp_path, capsys):
    out = tmp_path / "m.pt2"
    assert main(["export", str(trained_run / "best.pt"), "--format", "pt2", "--out", str(out)]) == 0
    extra = {"cifarlab.json": ""}
    program = torch.export.load(str(out), extra_files=extra)  # our own file, just written: trusted
    meta = json.loads(extra["cifarlab.json"])
    ckpt = load_checkpoint(trained_run / "best.pt")
    assert meta["classes"] == ckpt["classes"] and meta["mean"] == ckpt["mean"] and meta["input_size"] == 32
    net = model_from_checkpoint(ckpt).eval()
    torch.manual_seed(0)
    for batch in (1, 7, 64):  # any batch size
        x = torch.randn(batch, 3, 32, 32)
        with torch.no_grad():
            ref, got = net(x), program.module()(x)
        assert torch.equal(ref.argmax(1), got.argmax(1)) and torch.allclose(ref, got, atol=1e-5)
    # cifarlab itself never unpickles a .pt2 (torch.export.load may use weights_only=False)
    _one_error_line(capsys, ["predict", str(out), "--input", str(tmp_path), "--out", str(tmp_path / "p.csv")],
                    "does not load .pt2")


def test_torchscript_is_gone_with_a_pointer(trained_run, tmp_path, capsys):
    _one_error_line(capsys, ["export", str(trained_run / "best.pt"), "--format", "torchscript", "--out",
                             str(tmp_path / "m.ts")], "--format pt2")
    assert not (tmp_path / "m.ts").exists()


# ---- the Hub ----------------------------------------------------------------------------------------------------

def test_push_dry_run_writes_the_files_with_a_model_card(trained_run, tmp_path, capsys):
    assert main(["push", str(trained_run), "--repo", "alice/tiny", "--dry-run", str(tmp_path / "hub")]) == 0
    assert sorted(p.name for p in (tmp_path / "hub").iterdir()) == ["README.md", "config.json", "model.safetensors"]
    summary = json.loads((trained_run / "summary.json").read_text())
    card = (tmp_path / "hub" / "README.md").read_text()
    top1 = summary["best_epoch_metrics"]["val_top1"]
    assert f"| validation top-1 | {100 * top1:.2f}% |" in card
    assert f"value: {top1}" in card  # model-index for the Hub's leaderboard
    assert "library_name: cifarlab" in card and "recipe `seed001_small`" in card
    assert "mean [0.4914, 0.4822, 0.4465]" in card and "airplane, automobile" in card
    assert f"{summary['params']:,} parameters" in card
    config = json.loads((tmp_path / "hub" / "config.json").read_text())
    assert config["model"] == "resnet_small" and config["run_config"]["epochs"] == 2
    _one_error_line(capsys, ["push", str(trained_run), "--repo", "alice/tiny", "--dry-run", str(tmp_path / "hub")],
                    "already holds model.safetensors, config.json, README.md")
    assert (tmp_path / "hub" / "README.md").read_text() == card


def test_push_uploads_that_folder(trained_run, tmp_path, monkeypatch):
    hf = pytest.importorskip("huggingface_hub")
    calls = []

    class FakeApi:
        def __init__(self, token=None):
            pass

        def create_repo(self, repo, private=False, exist_ok=False):
            calls.append(("create", repo, private, exist_ok))
            return f"https://huggingface.co/{repo}"

        def upload_folder(self, repo_id, folder_path, commit_message):
            files = sorted(p.name for p in Path(folder_path).iterdir())
            card = (Path(folder_path) / "README.md").read_text()
            calls.append(("upload", repo_id, files, "hf-hub:alice/tiny" in card))

    monkeypatch.setattr(hf, "HfApi", FakeApi)
    assert main(["push", str(trained_run), "--repo", "alice/tiny", "--private"]) == 0
    assert calls == [("create", "alice/tiny", True, True),
                     ("upload", "alice/tiny", ["README.md", "config.json", "model.safetensors"], True)]


def _hub_cache(trained_run, root: Path, repo: str = "alice/tiny") -> Path:
    """A Hub cache holding `repo` as huggingface_hub lays it out: models--USER--NAME/{refs/main, snapshots/SHA/}."""
    assert main(["push", str(trained_run), "--repo", repo, "--dry-run", str(root / "staging")]) == 0
    sha = "0123456789abcdef0123456789abcdef01234567"
    repo_dir = root / "hub" / ("models--" + repo.replace("/", "--"))
    snap = repo_dir / "snapshots" / sha
    snap.mkdir(parents=True)
    for f in (root / "staging").iterdir():
        (snap / f.name).write_bytes(f.read_bytes())
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(sha)
    return root / "hub"


def test_hf_hub_models_load_from_a_local_hub_cache(trained_run, images, tmp_path):
    pytest.importorskip("huggingface_hub")
    cache = _hub_cache(trained_run, tmp_path)
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    ref = _predictions(trained_run / "best.pt", images, tmp_path, "ref")[0]

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "cifarlab", *args], capture_output=True, text=True, env=env,
                              timeout=300)

    res = cli("predict", "hf-hub:alice/tiny", "--input", str(images), "--out", str(tmp_path / "hub.csv"))
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "hub.csv").read_text() == ref
    # as the weights a run starts from
    res = cli("train", "--recipe", "seed001_small", "--data", str(trained_run.parent), "--epochs", "1",
              "--batch-size", "32", "--pretrained", "hf-hub:alice/tiny", "--out", str(tmp_path / "ft"), "--no-report",
              "--progress", "false")
    assert res.returncode == 0 and "weights from hf-hub:alice/tiny" in res.stdout, res.stderr
    # a model the cache does not hold, offline: one line
    res = cli("predict", "hf-hub:alice/missing", "--input", str(images), "--out", str(tmp_path / "m.csv"))
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "cannot get hf-hub:alice/missing" in res.stderr
    assert not (tmp_path / "m.csv").exists()


def test_a_malformed_hub_name_is_one_line(capsys, tmp_path):
    _one_error_line(capsys, ["predict", "hf-hub:not a repo", "--input", str(tmp_path), "--out",
                             str(tmp_path / "p.csv")], "not a Hub model")
