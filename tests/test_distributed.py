"""Data-parallel training: torchrun with gloo on CPU, and the loader's sharding of each global batch."""

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

import cifarlab
from cifarlab.data import BatchLoader, Pipeline
from cifarlab.data.formats import ImageSet
from datagen import assert_annealed_on_the_clock, make_cifar10_python


def _images(n: int) -> ImageSet:
    g = torch.Generator().manual_seed(0)
    return ImageSet(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g), torch.arange(n) % 10,
                    [str(i) for i in range(10)])


@pytest.mark.parametrize("world", [2, 3])
def test_rank_shards_put_together_are_the_single_process_batch(world):
    data = _images(70)
    pipeline = Pipeline([{"name": "crop", "padding": 4}, {"name": "flip"}, {"name": "cutout", "size": 8}])
    kwargs = dict(mean=[0.5] * 3, std=[0.25] * 3, shuffle=True, pipeline=pipeline, seed=3)
    whole = list(BatchLoader(data, 32, **kwargs).epoch(1))
    shards = [list(BatchLoader(data, 32, shard=(r, world), **kwargs).epoch(1)) for r in range(world)]
    assert all(len(s) == len(whole) == 3 for s in shards)  # the 6-image tail still gives every rank an image
    for b, (x, y) in enumerate(whole):
        assert torch.equal(torch.cat([s[b][0] for s in shards]), x)
        assert torch.equal(torch.cat([s[b][1] for s in shards]), y)


def test_a_tail_too_small_for_every_rank_is_dropped_on_all_ranks():
    data = _images(65)  # 2 full batches of 32 and a tail of 1
    assert len(BatchLoader(data, 32, mean=[0] * 3, std=[1] * 3)) == 3
    assert {len(BatchLoader(data, 32, mean=[0] * 3, std=[1] * 3, shard=(r, 2))) for r in range(2)} == {2}


def test_sync_bn_on_cpu_is_a_clear_error():
    from cifarlab.errors import CifarlabError
    from cifarlab.training.distributed import DistContext, wrap_model

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    with pytest.raises(CifarlabError, match="SyncBatchNorm does not run on CPU"):
        wrap_model(model, DistContext(rank=0, world=2), torch.device("cpu"), sync_bn=True)


def test_a_rank_stops_when_another_rank_diverges_before_touching_its_weights():
    from cifarlab.errors import Diverged
    from cifarlab.training.engine import EpochState, train_one_epoch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10))
    before = [p.detach().clone() for p in model.parameters()]
    loader = BatchLoader(_images(64), 16, mean=[0.5] * 3, std=[0.25] * 3)
    asked = []

    def other_rank_diverges_at_step_2(flag: bool) -> bool:  # what DistContext.any returns across ranks
        asked.append(flag)
        return flag or len(asked) == 3

    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(Diverged, match="at step 2 .*another rank's loss is not finite"):
        train_one_epoch(model, loader, opt, EpochState(0), first_step=0, lr_fn=lambda s: [0.1], progress=False,
                        any_rank=other_rank_diverges_at_step_2)
    assert asked == [False, False, False]  # this rank's own losses were finite; it asked every step
    moved = [not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True)]
    assert all(moved)  # steps 0 and 1 were taken; step 2 stopped before its backward (checked next)
    snapshot = [p.detach().clone() for p in model.parameters()]
    asked.clear()
    with pytest.raises(Diverged):
        train_one_epoch(model, loader, opt, EpochState(0), first_step=0, lr_fn=lambda s: [0.1], progress=False,
                        any_rank=lambda flag: True)
    assert all(torch.equal(a, b) for a, b in zip(snapshot, model.parameters(), strict=True))


@pytest.mark.skipif(shutil.which("torchrun") is None and not os.path.exists(
    os.path.join(os.path.dirname(sys.executable), "torchrun")), reason="torchrun is installed with torch")
def test_torchrun_two_processes_gloo_one_epoch(tmp_path):
    make_cifar10_python(tmp_path / "data", per_batch=40, test=20)  # 200 images: 160 train / 40 val
    runs = tmp_path / "runs"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "cifarlab",
           "train", "--recipe", "seed001_small", "--data", str(tmp_path / "data"), "--epochs", "1",
           "--batch-size", "32", "--val-split", "0.2", "--out", str(runs / "ddp"), "--progress", "false",
           "--no-report", "--device", "cpu"]  # gloo on CPU, also on a machine with a GPU
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "distributed: 2 processes (gloo backend)" in proc.stdout  # progress goes to stdout
    # one run directory, one set of checkpoints, one metrics file: only rank 0 wrote
    assert [p.name for p in runs.iterdir()] == ["ddp"]
    assert sorted(p.name for p in (runs / "ddp").glob("*.pt")) == ["best.pt", "last.pt"]
    rows = [json.loads(line) for line in (runs / "ddp" / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in rows if r["type"] == "epoch"]
    assert len(epochs) == 1
    # both ranks trained: the epoch's image count is the sum over ranks of their 80-image shards
    assert epochs[0]["images"] == 160
    assert sum(1 for r in rows if r["type"] == "step") == 5  # 5 global steps of 32 (16 per rank), not 10
    single = cifarlab.evaluate(runs / "ddp" / "best.pt", out=tmp_path / "eval", device="cpu")
    assert single["top1"] == pytest.approx(epochs[0]["val_top1"], abs=1e-9)
    assert single["loss"] == pytest.approx(epochs[0]["val_loss"], rel=1e-5)


@pytest.mark.skipif(shutil.which("torchrun") is None and not os.path.exists(
    os.path.join(os.path.dirname(sys.executable), "torchrun")), reason="torchrun is installed with torch")
def test_sigterm_stops_every_rank_at_one_step_and_resume_finishes(tmp_path):
    make_cifar10_python(tmp_path / "data", per_batch=40, test=20)
    run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    base = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "cifarlab",
            "train"]
    args = ["--data", str(tmp_path / "data"), "--epochs", "40", "--batch-size", "32", "--val-split", "0.2",
            "--progress", "false", "--no-report", "--device", "cpu"]
    proc = subprocess.Popen(base + ["--recipe", "seed001_small", "--out", str(run), *args], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    metrics = run / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.is_file() and '"type": "epoch"' in metrics.read_text()):
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGTERM)  # what a scheduler does to a job: every process gets it
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "SIGTERM" in out, out[-3000:]
    ckpt = torch.load(run / "last.pt", weights_only=True)
    assert 1 <= ckpt["epoch"] < 40
    resumed = subprocess.run(base + ["--resume", str(run), *args], env=env, cwd=tmp_path, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [r["epoch"] for r in rows if r["type"] == "epoch"] == list(range(1, 41))  # each epoch once
    steps = [r["step"] for r in rows if r["type"] == "step"]
    assert steps == list(range(len(steps))) and len(steps) == 40 * 5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="NCCL and SyncBatchNorm need a CUDA GPU")
def test_torchrun_nccl_with_sync_bn_on_one_gpu(tmp_path):
    make_cifar10_python(tmp_path / "data", per_batch=40, test=20)
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", "-m", "cifarlab",
           "train", "--recipe", "seed001_small", "--data", str(tmp_path / "data"), "--epochs", "2",
           "--batch-size", "32", "--val-split", "0.2", "--out", str(run), "--progress", "false", "--no-report",
           "--sync-bn", "true"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                          cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "distributed: 1 processes (nccl backend)" in proc.stdout
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in rows if r["type"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2]
    single = cifarlab.evaluate(run / "best.pt", out=tmp_path / "eval", device="cuda")
    assert single["top1"] == pytest.approx(max(r["val_top1"] for r in epochs), abs=1e-9)


@pytest.mark.skipif(shutil.which("torchrun") is None and not os.path.exists(
    os.path.join(os.path.dirname(sys.executable), "torchrun")), reason="torchrun is installed with torch")
def test_torchrun_divergence_ends_every_rank_with_one_line(tmp_path):
    make_cifar10_python(tmp_path / "data", per_batch=40, test=20)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "cifarlab",
           "train", "--recipe", "seed001_small", "--data", str(tmp_path / "data"), "--epochs", "2",
           "--batch-size", "32", "--val-split", "0.2", "--out", str(tmp_path / "run"), "--progress", "false",
           "--no-report", "--device", "cpu", "--lr", "1e12"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=240,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"})
    assert proc.returncode != 0
    assert "cifarlab: error: training diverged at step" in proc.stderr, proc.stderr[-3000:]
    assert "cifarlab/train" not in proc.stderr  # no traceback through the trainer (torchrun prints its own)


@pytest.mark.skipif(shutil.which("torchrun") is None and not os.path.exists(
    os.path.join(os.path.dirname(sys.executable), "torchrun")), reason="torchrun is installed with torch")
def test_torchrun_time_budget_ends_every_rank_on_time_with_one_schedule(tmp_path):
    make_cifar10_python(tmp_path / "data", per_batch=40, test=20)
    run = tmp_path / "run"
    budget_s = 6.0
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "cifarlab",
           "train", "--recipe", "seed001_small", "--data", str(tmp_path / "data"), "--epochs", "2",
           "--batch-size", "32", "--val-split", "0.2", "--out", str(run), "--progress", "false", "--no-report",
           "--device", "cpu", "--schedule", "cosine", "--lr", "0.1", "--min-lr", "0.001",
           "--time-budget", str(budget_s / 60)]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=240,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"})
    elapsed = time.perf_counter() - t
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if r["type"] == "step"]
    assert [r["step"] for r in steps] == list(range(len(steps)))
    # training runs until the agreed clock says so (the planned 2 epochs are 10 steps, far less than 6 s here);
    # ranks read the clock agreed at the previous step and stop the step after the budget is seen
    train_s = sum(r["train_time"] for r in rows if r["type"] == "epoch")
    assert_annealed_on_the_clock([r["lr"] for r in steps], train_s, budget_s, 0.1, 0.001, lag=3)
    assert elapsed < budget_s + 60  # two interpreters' start-up, the group's rendezvous and evaluation on top
    single = cifarlab.evaluate(run / "best.pt", out=tmp_path / "eval", device="cpu")
    best = max(r["val_top1"] for r in rows if r["type"] == "epoch")
    assert single["top1"] == pytest.approx(best, abs=1e-9)


def _torchrun(tmp_path, *args, epochs=2, nproc=2, ok=True):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m",
           "cifarlab", "train", "--data", str(tmp_path / "data"), "--epochs", str(epochs), "--batch-size", "32",
           "--val-split", "0.2", "--progress", "false", "--no-report", "--device", "cpu", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=240,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"})
    if ok:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.skipif(shutil.which("torchrun") is None and not os.path.exists(
    os.path.join(os.path.dirname(sys.executable), "torchrun")), reason="torchrun is installed with torch")
def test_torchrun_fast_recipe_runs_past_the_epoch_its_stem_bias_freezes(tmp_path):
    # fast94 stops training the whitening stem's bias after 3 epochs; DDP, built for the old set of trained
    # parameters, then waited for a gradient that never came ("Expected to have finished reduction...")
    make_cifar10_python(tmp_path / "data", per_batch=40, test=20)
    _torchrun(tmp_path, "--recipe", "fast94", "--out", str(tmp_path / "run"), epochs=5)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows if r["type"] == "epoch"] == [1, 2, 3, 4, 5]


@pytest.mark.skipif(shutil.which("torchrun") is None and not os.path.exists(
    os.path.join(os.path.dirname(sys.executable), "torchrun")), reason="torchrun is installed with torch")
def test_torchrun_freeze_backbone_then_unfreeze(tmp_path):
    from cifarlab.models import create_model

    make_cifar10_python(tmp_path / "data", per_batch=40, test=20)
    torch.manual_seed(1)
    start = create_model("resnet_small").state_dict()
    torch.save(start, tmp_path / "w.pth")
    common = ["--model", "resnet_small", "--pretrained", str(tmp_path / "w.pth"), "--freeze", "backbone"]
    _torchrun(tmp_path, *common, "--out", str(tmp_path / "frozen"), epochs=2)
    _torchrun(tmp_path, *common, "--unfreeze-epoch", "1", "--out", str(tmp_path / "thawed"), epochs=2)
    frozen = torch.load(tmp_path / "frozen" / "last.pt", weights_only=True, map_location="cpu")["state_dict"]
    thawed = torch.load(tmp_path / "thawed" / "last.pt", weights_only=True, map_location="cpu")["state_dict"]
    assert torch.equal(frozen["conv1.weight"], start["conv1.weight"])  # the backbone stayed as loaded
    assert not torch.equal(frozen["linear.weight"], start["linear.weight"])  # the classifier learned
    assert not torch.equal(thawed["conv1.weight"], start["conv1.weight"])  # epoch 2 trained everything


@pytest.mark.skipif(shutil.which("torchrun") is None and not os.path.exists(
    os.path.join(os.path.dirname(sys.executable), "torchrun")), reason="torchrun is installed with torch")
def test_torchrun_with_one_process_still_trains_through_ddp(tmp_path):
    make_cifar10_python(tmp_path / "data", per_batch=40, test=20)
    proc = _torchrun(tmp_path, "--recipe", "seed001_small", "--out", str(tmp_path / "one"), nproc=1, epochs=1)
    assert "distributed: 1 processes (gloo backend)" in proc.stdout
    # the model is wrapped (and converted for sync_bn) as with more ranks: on CPU that conversion is refused
    refused = _torchrun(tmp_path, "--recipe", "seed001_small", "--out", str(tmp_path / "bn"), "--sync-bn", "true",
                        nproc=1, epochs=1, ok=False)
    assert refused.returncode != 0 and "SyncBatchNorm does not run on CPU" in refused.stderr


@pytest.mark.skipif(shutil.which("torchrun") is None and not os.path.exists(
    os.path.join(os.path.dirname(sys.executable), "torchrun")), reason="torchrun is installed with torch")
def test_torchrun_distills_from_a_teacher_on_every_rank(tmp_path):
    """Each rank runs its own copy of the teacher on its shard; the student's gradients are all-reduced as usual."""
    make_cifar10_python(tmp_path / "data", per_batch=40, test=20)
    teacher = cifarlab.train(data=str(tmp_path / "data"), model="resnet_small", epochs=1, batch_size=32,
                             out=str(tmp_path / "teacher"), progress=False, report=False, device="cpu")
    _torchrun(tmp_path, "--model", "resnet_small", "--teacher", str(teacher.run_dir / "best.pt"), "--distill-alpha",
              "0.8", "--out", str(tmp_path / "run"))
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows if r["type"] == "epoch"] == [1, 2]
    assert all(math.isfinite(r["loss"]) for r in rows if r["type"] == "step")
