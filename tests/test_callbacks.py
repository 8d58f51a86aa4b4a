"""Callbacks: the hooks a user callback sees and their order, interrupts, and rank 0 only where documented."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import cifarlab
from cifarlab.training.callbacks import HOOKS, Callback, CallbackList
from datagen import make_cifar10_python


class Recorder(Callback):
    """Writes down each hook with what identifies its moment."""

    def __init__(self, stop_at_step: int | None = None):
        self.calls: list[tuple] = []
        self.stop_at_step = stop_at_step

    def on_fit_start(self, trainer):
        self.calls.append(("fit_start", trainer.state.epoch, trainer.state.step))

    def on_epoch_start(self, trainer, epoch):
        self.calls.append(("epoch_start", epoch))

    def on_step_end(self, trainer, step_log):
        self.calls.append(("step", step_log["step"], trainer.state.step))
        if step_log["step"] == self.stop_at_step:
            raise KeyboardInterrupt

    def on_epoch_end(self, trainer, row):
        self.calls.append(("epoch_end", row["epoch"], trainer.state.step, row["val_top1"]))

    def on_interrupt(self, trainer):
        self.calls.append(("interrupt",))

    def on_fit_end(self, trainer, summary):
        self.calls.append(("fit_end", summary["epochs_run"]))


@pytest.fixture
def small_data(tmp_path):
    make_cifar10_python(tmp_path / "data", per_batch=20, test=10)  # 100 images: 90 train / 10 val
    return str(tmp_path / "data")


def _train(data, out, callbacks, **kw):
    return cifarlab.train(data=data, model="resnet_small", epochs=2, batch_size=30, out=str(out), progress=False,
                          report=False, callbacks=callbacks, **kw)


def test_a_user_callback_sees_every_hook_in_order(small_data, tmp_path):
    rec = Recorder()
    run = _train(small_data, tmp_path / "r", [rec])
    epochs = [json.loads(x) for x in (run.run_dir / "metrics.jsonl").read_text().splitlines()
              if '"type": "epoch"' in x]
    assert rec.calls == [("fit_start", 0, 0),
                         ("epoch_start", 0), ("step", 0, 1), ("step", 1, 2), ("step", 2, 3),
                         ("epoch_end", 1, 3, epochs[0]["val_top1"]),
                         ("epoch_start", 1), ("step", 3, 4), ("step", 4, 5), ("step", 5, 6),
                         ("epoch_end", 2, 6, epochs[1]["val_top1"]),
                         ("fit_end", 2)]


def test_an_interrupt_reaches_on_interrupt_and_a_resume_starts_where_it_was(small_data, tmp_path):
    rec = Recorder(stop_at_step=4)
    with pytest.raises(KeyboardInterrupt):
        _train(small_data, tmp_path / "r", [rec])
    assert rec.calls[-3:] == [("step", 3, 4), ("step", 4, 5), ("interrupt",)]
    again = Recorder()
    cifarlab.train(resume=str(tmp_path / "r"), report=False, callbacks=[again])
    assert again.calls[:2] == [("fit_start", 1, 3), ("epoch_start", 1)]  # the last checkpoint: epoch 1's end
    assert again.calls[-1] == ("fit_end", 2)


def test_main_only_callbacks_are_skipped_off_rank_0():
    class Writer(Callback):
        main_only = True

    everywhere, writer = Callback(), Writer()
    assert CallbackList([everywhere, writer], main=False).callbacks == [everywhere]
    assert CallbackList([everywhere, writer], main=True).callbacks == [everywhere, writer]
    assert all(callable(getattr(Callback(), hook)) for hook in HOOKS)


RANK_SCRIPT = """
import os, sys
import cifarlab
from cifarlab.training.callbacks import Callback

rank = int(os.environ["RANK"])
out = sys.argv[2]

class Log(Callback):
    main_only = {main_only}
    def __init__(self, name):
        self.path = os.path.join(out, f"{{name}}-rank{{rank}}.txt")
    def _w(self, *what):
        with open(self.path, "a") as fh:
            fh.write(" ".join(map(str, what)) + "\\n")
    def on_fit_start(self, trainer): self._w("fit_start")
    def on_epoch_start(self, trainer, epoch): self._w("epoch_start", epoch)
    def on_step_end(self, trainer, step_log): self._w("step", step_log["step"])
    def on_epoch_end(self, trainer, row): self._w("epoch_end", row["epoch"])
    def on_fit_end(self, trainer, summary): self._w("fit_end")

cifarlab.train(data=sys.argv[1], model="resnet_small", epochs=1, batch_size=32, val_split=0.2, progress=False,
               report=False, device="cpu", out=os.path.join(out, "run"), callbacks=[Log("{name}")])
"""


def test_under_torchrun_every_rank_calls_hooks_and_main_only_ones_run_on_rank_0(tmp_path):
    make_cifar10_python(tmp_path / "data", per_batch=40, test=20)  # 160 train: 5 global steps of 32
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    for name, main_only in (("all", False), ("main", True)):
        script = tmp_path / f"{name}.py"
        script.write_text(RANK_SCRIPT.format(main_only=main_only, name=name))
        proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                               str(script), str(tmp_path / "data"), str(out / name)], env=env, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
    expected = ["fit_start", "epoch_start 0"] + [f"step {s}" for s in range(5)] + ["epoch_end 1", "fit_end"]
    for rank in (0, 1):
        assert (out / "all" / f"all-rank{rank}.txt").read_text().splitlines() == expected
    assert (out / "main" / "main-rank0.txt").read_text().splitlines() == expected
    assert not (out / "main" / "main-rank1.txt").exists()
