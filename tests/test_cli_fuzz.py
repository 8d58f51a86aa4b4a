"""The CLI driven with generated argument values and generated files: every example ends with exit 0 or 2 and at
most one line on stderr, within a time bound, and a run given a time budget always ends.

A fault that only the CLI's last-resort guard catches ends with exit 1 ("internal error"), so it fails here: the
guard is never what handles these inputs."""

from __future__ import annotations

import io
import itertools
import os
import pickle
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cifarlab.cli import main
from datagen import make_cifar10_python, make_unlabeled_pickle

# CI runs at least 1,000 examples in all: 350 trainings (most refused at the door, the rest a budget of about a
# second) and 650 of the other commands.
TRAIN_EXAMPLES, OTHER_EXAMPLES = 350, 650
SECONDS_PER_EXAMPLE = 60  # far above any example's time here; an example over it counts as a hang
_counter = itertools.count()

odd_numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=32), st.integers(-10**12, 10**12),
    st.sampled_from([0, -1, 1, 0.5, 1.0, 1.5, 2, 1e-3, 1e300, -0.0, float("nan"), float("inf"), float("-inf")]))
odd_text = st.one_of(st.text(max_size=12), st.sampled_from(["", "null", "none", "[]", "{}", "[1, 2]", "abc", "true",
                                                            "1e-3", ".nan", "-.inf", "~", "[[0, 4]]", "{a: 1}"]))
odd_value = st.one_of(odd_numbers.map(str), odd_text)

# config keys whose values change what a run computes, with generated values; the cost-scaling keys (threads,
# resize, epochs, model, params) are held so that every accepted run stays tiny, and time_budget is the test's own
# argument (a generated budget of 10^12 s is a valid request to train for 10^12 s)
TRAIN_KEYS = ["lr", "momentum", "weight_decay", "val_split", "label_smoothing", "dropout", "grad_clip", "betas",
              "ema_decay", "ema_every", "ema_ramp", "warmup_epochs", "min_lr", "gamma", "milestones", "schedule",
              "optimizer", "tta", "best_metric", "mean", "std", "checkpoint_every", "early_stop_patience",
              "bias_lr_scale", "lr_reference_batch", "onecycle_pct_start", "cyclic_step_size", "plateau_factor",
              "augment", "precision", "eval_batch_size", "batch_size", "seed", "label_mode", "teacher", "distill_alpha",
              "distill_temperature"]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fuzz")
    make_cifar10_python(root / "data", per_batch=6, test=6)  # 30 images
    from cifarlab import train

    run = train(data=str(root / "data"), model="resnet_small", epochs=1, batch_size=16, val_split=0.2,
                out=str(root / "run"), progress=False, report=False)
    make_unlabeled_pickle(root / "in.pkl", n=5)
    return {"root": root, "data": root / "data", "ckpt": run.run_dir / "best.pt", "run": run.run_dir,
            "pkl": root / "in.pkl"}


def run_cli(capsys, argv: list[str], codes: tuple[int, ...] = (0, 2)) -> None:
    start = time.monotonic()
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code
    elapsed = time.monotonic() - start
    out = capsys.readouterr()
    assert code in codes, (argv, code, out.err[-2000:])
    assert out.err.count("\n") <= 1 or code == 0, (argv, out.err[-2000:])
    assert "Traceback" not in out.err, (argv, out.err[-2000:])
    assert elapsed < SECONDS_PER_EXAMPLE, (argv, elapsed)


@settings(max_examples=TRAIN_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(st.lists(st.tuples(st.sampled_from(TRAIN_KEYS), odd_value), max_size=3),
       st.floats(0, 0.01) | st.sampled_from([float("nan"), float("inf"), -1.0, 0.0]))
def test_train_with_generated_values_ends_with_0_or_2(world, capsys, pairs, budget):
    out = world["root"] / "runs" / f"t{next(_counter)}"
    argv = ["train", "--model", "resnet_small", "--data", str(world["data"]), "--out", str(out), "--epochs", "1",
            "--progress", "false", "--no-report", "--threads", "1", "--time-budget", repr(budget)]
    for key, value in pairs:
        argv += [f"--{key.replace('_', '-')}", value]
    run_cli(capsys, argv)


def _bytes_like(kind: str, data: bytes, cut: float) -> bytes:
    """A generated file: random bytes, or a real file of `kind` truncated at a generated point."""
    real = {"pickle": pickle.dumps({b"data": np.zeros((3, 3072), np.uint8), b"ids": [1, 2, 3]}, protocol=2),
            "png": b"\x89PNG\r\n\x1a\n" + data, "yaml": b"recipe: seed001_small\nspace: {lr: [0.1]}\n",
            "npz": _npz()}.get(kind)
    return data if real is None else real[: int(len(real) * cut)] + data[:8]


def _npz() -> bytes:
    buf = io.BytesIO()
    np.savez(buf, images=np.zeros((2, 3, 32, 32), np.uint8), labels=np.zeros(2, np.int64))
    return buf.getvalue()


@settings(max_examples=OTHER_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(st.sampled_from(["eval", "predict", "export", "report", "stats", "sweep", "summary", "import", "config",
                        "push"]),
       st.sampled_from(["random", "pickle", "png", "yaml", "npz", "real"]), st.binary(max_size=64),
       st.floats(0, 1), odd_value, odd_value)
def test_other_commands_with_generated_files_and_values_end_with_0_or_2(world, capsys, command, kind, data, cut, v1,
                                                                         v2):
    folder = world["root"] / "gen" / f"g{next(_counter)}"
    folder.mkdir(parents=True)
    gen = folder / {"pickle": "x.pkl", "png": "x.png", "yaml": "x.yaml", "npz": "x.npz"}.get(kind, "x.pt")
    gen.write_bytes(_bytes_like(kind, data, cut))
    target = str(world["ckpt"]) if kind == "real" else str(gen)
    argv = {
        "eval": ["eval", target, "--out", str(folder / "ev"), "--batch-size", v1, "--tta", "flip"],
        "predict": ["predict", str(world["ckpt"]), "--input", str(gen if kind != "real" else world["pkl"]), "--out",
                    str(folder / v1.replace("/", "_")[:8] or "p.csv"), "--topk", v2],
        "export": ["export", target, "--format", v1 if v1 in ("onnx", "torchscript", "pt2") else
                   ("safetensors" if kind == "real" else "state_dict"), "--out", str(folder / "w.pth")],
        "config": ["config", v1],
        "push": ["push", target, "--repo", v2, "--dry-run", str(folder / "hub")],
        "report": ["report", str(world["run"]) if kind == "real" else str(folder), "--out", str(folder / "cmp")],
        "stats": ["data", "stats", str(world["data"]) if kind == "real" else str(gen), "--resize", v1],
        "sweep": ["sweep", "run", str(gen), "--out", str(folder / "sw"), "--trials", "1", "--epochs", "1",
                  "--data", str(world["data"]), "--time-budget", "0.005", "--progress", "false"],
        "summary": ["summary", v1 if v1.isidentifier() else "resnet_small", "--budget", v2],
        "import": ["import", target, "--model", "resnet_small", "--out", str(folder / "i.pt"), "--mean", v1, "0.5",
                   "0.5", "--std", "0.5", v2, "0.5"],
    }[command]
    run_cli(capsys, argv, (0, 1, 2) if command == "summary" else (0, 2))  # summary: 1 = over --budget
    assert os.path.exists(world["ckpt"])  # nothing finished was touched
