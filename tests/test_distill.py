"""Knowledge distillation (training/distill.py): Hinton's loss, a teacher that never changes, exact resume."""

from __future__ import annotations

import hashlib
import math

import pytest
import torch

import cifarlab
from cifarlab.cli import main
from cifarlab.training.callbacks import Callback
from cifarlab.training.checkpoint import load_checkpoint
from cifarlab.training.distill import distillation_loss
from datagen import make_cifar10_python


def _hinton_by_hand(s: list[list[float]], t: list[list[float]], y: list[int], alpha: float, temp: float) -> float:
    """The formula written out in plain Python: (1-a) CE + a T^2 mean_i sum_k p_t log(p_t / p_s) at T."""
    def softmax(row, k):
        e = [math.exp(v / k) for v in row]
        return [v / sum(e) for v in e]

    ce = sum(-math.log(softmax(row, 1)[label]) for row, label in zip(s, y, strict=True)) / len(y)
    kl = sum(sum(pt * math.log(pt / ps) for pt, ps in zip(softmax(tr, temp), softmax(sr, temp), strict=True))
             for sr, tr in zip(s, t, strict=True)) / len(y)
    return (1 - alpha) * ce + alpha * temp * temp * kl


@pytest.mark.parametrize("alpha, temp", [(0.5, 4.0), (0.9, 2.0), (0.0, 3.0), (1.0, 1.0)])
def test_the_loss_is_hintons_formula_on_hand_computed_logits(alpha, temp):
    s = [[2.0, -1.0, 0.5], [0.1, 0.2, 3.0]]
    t = [[1.5, 0.0, -0.5], [-1.0, 2.5, 1.0]]
    y = [0, 2]
    got = distillation_loss(torch.tensor(s, dtype=torch.float64), torch.tensor(t, dtype=torch.float64),
                            torch.tensor(y), alpha=alpha, temperature=temp)
    assert got.item() == pytest.approx(_hinton_by_hand(s, t, y, alpha, temp), rel=1e-12)


def test_the_gradient_reaches_the_student_only():
    s = torch.randn(4, 10, requires_grad=True)
    t = torch.randn(4, 10)
    distillation_loss(s, t, torch.arange(4), alpha=0.7, temperature=3.0).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0 and t.grad is None


@pytest.fixture
def data_and_teacher(tmp_path):
    make_cifar10_python(tmp_path / "data", per_batch=20, test=10)  # 100 images: 90 train / 10 val
    run = cifarlab.train(data=str(tmp_path / "data"), model="resnet_small", epochs=1, batch_size=30,
                         out=str(tmp_path / "teacher"), progress=False, report=False)
    return str(tmp_path / "data"), run.run_dir / "best.pt"


class Watch(Callback):
    """The teacher's weights when the run starts and when it ends."""

    def on_fit_start(self, trainer):
        self.before = {k: v.clone() for k, v in trainer.parts.teacher.model.state_dict().items()}
        self.grads = [p.requires_grad for p in trainer.parts.teacher.parameters()]

    def on_fit_end(self, trainer, summary):
        self.after = trainer.parts.teacher.model.state_dict()


def test_the_teachers_weights_never_change(data_and_teacher, tmp_path):
    data, teacher = data_and_teacher
    digest = hashlib.sha256(teacher.read_bytes()).hexdigest()
    watch = Watch()
    run = cifarlab.train(data=data, model="resnet_small", epochs=2, batch_size=30, teacher=str(teacher),
                         distill_alpha=0.7, distill_temperature=3.0, out=str(tmp_path / "student"), progress=False,
                         report=False, callbacks=[watch])
    assert run.summary["epochs_run"] == 2
    assert not any(watch.grads)
    assert all(torch.equal(watch.before[k], watch.after[k]) for k in watch.before)  # BN statistics too
    assert hashlib.sha256(teacher.read_bytes()).hexdigest() == digest


def test_a_teacher_changes_the_training_and_alpha_0_does_not(data_and_teacher, tmp_path):
    data, teacher = data_and_teacher
    common = dict(data=data, model="resnet_small", epochs=1, batch_size=30, progress=False, report=False,
                  deterministic=True)
    plain = cifarlab.train(out=str(tmp_path / "plain"), **common)
    taught = cifarlab.train(out=str(tmp_path / "taught"), teacher=str(teacher), distill_alpha=0.9, **common)
    zero = cifarlab.train(out=str(tmp_path / "zero"), teacher=str(teacher), distill_alpha=0.0, **common)
    weights = {name: load_checkpoint(r.run_dir / "last.pt")["state_dict"] for name, r in
               (("plain", plain), ("taught", taught), ("zero", zero))}
    assert all(torch.equal(weights["plain"][k], weights["zero"][k]) for k in weights["plain"])
    assert not all(torch.equal(weights["plain"][k], weights["taught"][k]) for k in weights["plain"])


class StopAtStep(Callback):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, trainer, step_log):
        if step_log["step"] == self.step:
            raise KeyboardInterrupt


def test_resume_mid_epoch_with_a_teacher_is_exact(data_and_teacher, tmp_path):
    data, teacher = data_and_teacher
    common = dict(data=data, model="resnet_small", epochs=2, batch_size=30, progress=False, report=False,
                  deterministic=True, teacher=str(teacher), checkpoint_every=2,
                  augment=[{"name": "crop", "padding": 2}, {"name": "flip"}])
    full = cifarlab.train(out=str(tmp_path / "full"), **common)
    with pytest.raises(KeyboardInterrupt):
        cifarlab.train(out=str(tmp_path / "cut"), callbacks=[StopAtStep(4)], **common)
    cut = load_checkpoint(tmp_path / "cut" / "last.pt")
    assert cut["train_state"]["step"] == 4 and cut["train_state"]["partial"]["batch"] == 1  # inside epoch 2
    cifarlab.train(resume=str(tmp_path / "cut"), report=False)
    a = load_checkpoint(full.run_dir / "last.pt")["state_dict"]
    b = load_checkpoint(tmp_path / "cut" / "last.pt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_an_onnx_teacher_teaches(data_and_teacher, tmp_path):
    from cifarlab.exporting import export

    data, teacher = data_and_teacher
    onnx_teacher = export(teacher, "onnx", tmp_path / "teacher.onnx")
    run = cifarlab.train(data=data, model="resnet_small", epochs=1, batch_size=30, teacher=str(onnx_teacher),
                         out=str(tmp_path / "student"), progress=False, report=False)
    assert run.summary["epochs_run"] == 1


@pytest.mark.parametrize("args, words", [
    (["--teacher", "/no/such/teacher.pt"], "is not a file"),
    (["--distill-alpha", "1.5"], "distill_alpha"),
    (["--distill-temperature", "0"], "distill_temperature"),
])
def test_bad_teacher_settings_are_one_line_before_the_data_is_read(capsys, tmp_path, args, words):
    make_cifar10_python(tmp_path / "data", per_batch=10, test=10)
    code = main(["train", "--model", "resnet_small", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "r"),
                 *args])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and words in err, err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("student, words", [
    (["--label-mode", "coarse"], "has 10 classes; the student's data has 20"),
    (["--resize", "64"], "has 10 classes; the student's data has 100"),  # classes are checked first
])
def test_a_teacher_that_does_not_fit_the_student_is_one_line(capsys, data_and_teacher, tmp_path, student, words):
    from datagen import make_cifar100_python

    _, teacher = data_and_teacher
    make_cifar100_python(tmp_path / "c100", n_train=60, n_test=10)
    code = main(["train", "--model", "resnet_small", "--data", str(tmp_path / "c100"), "--out", str(tmp_path / "r"),
                 "--teacher", str(teacher), "--epochs", "1", *student])
    err = capsys.readouterr().err
    assert code == 2 and words in err and err.count("\n") == 1, err


def test_a_teacher_for_another_image_size_is_one_line(capsys, data_and_teacher, tmp_path):
    data, teacher = data_and_teacher
    code = main(["train", "--model", "resnet_small", "--data", data, "--out", str(tmp_path / "r"), "--teacher",
                 str(teacher), "--resize", "64", "--epochs", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "takes 32-px images; the student trains on 64 px" in err and err.count("\n") == 1, err
