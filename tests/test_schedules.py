"""LR schedules as pure functions of the step, checked against torch's schedulers where they exist."""

from __future__ import annotations

import math

import pytest
import torch

from cifarlab.config import make_config
from cifarlab.training.schedules import Plateau, lr_at


def _torch_lrs(make_sched, steps, lr=0.1):
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr, momentum=0.9)
    sched = make_sched(opt)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_cyclic_exp_range_matches_torch():
    cfg = make_config(schedule="cyclic", cyclic_mode="exp_range", cyclic_base_lr=1e-6, lr=1e-2,
                      cyclic_step_size=7, gamma=0.99, epochs=2)
    ref = _torch_lrs(lambda o: torch.optim.lr_scheduler.CyclicLR(
        o, base_lr=1e-6, max_lr=1e-2, step_size_up=7, step_size_down=7, mode="exp_range", gamma=0.99,
        cycle_momentum=False), 40)
    ours = [lr_at(cfg, s, 20) for s in range(40)]
    assert ours == pytest.approx(ref, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("mode", ["triangular", "triangular2"])
def test_cyclic_modes_match_torch(mode):
    cfg = make_config(schedule="cyclic", cyclic_mode=mode, cyclic_base_lr=0.001, lr=0.1, cyclic_step_size=5)
    ref = _torch_lrs(lambda o: torch.optim.lr_scheduler.CyclicLR(
        o, base_lr=0.001, max_lr=0.1, step_size_up=5, mode=mode, cycle_momentum=False), 33)
    assert [lr_at(cfg, s, 10) for s in range(33)] == pytest.approx(ref, rel=1e-9)


def test_onecycle_matches_torch():
    cfg = make_config(schedule="onecycle", lr=0.5, epochs=5, onecycle_pct_start=0.25)
    ref = _torch_lrs(lambda o: torch.optim.lr_scheduler.OneCycleLR(
        o, max_lr=0.5, total_steps=50, pct_start=0.25, cycle_momentum=False), 50)
    assert [lr_at(cfg, s, 10) for s in range(50)] == pytest.approx(ref, rel=1e-6)


def test_cosine_per_epoch_matches_torch_cosine_annealing():
    cfg = make_config(schedule="cosine", schedule_interval="epoch", lr=0.004, epochs=6)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.004)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=6)
    for epoch in range(6):
        for s in range(epoch * 3, epoch * 3 + 3):
            assert lr_at(cfg, s, 3) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-9)
        opt.step()
        sched.step()


def test_cosine_with_warmup_per_step():
    cfg = make_config(schedule="cosine", lr=1.0, min_lr=0.1, epochs=10, warmup_epochs=1)
    assert lr_at(cfg, 0, 10) == pytest.approx(0.1)
    assert lr_at(cfg, 9, 10) == pytest.approx(1.0)
    assert lr_at(cfg, 10, 10) == pytest.approx(1.0)
    assert lr_at(cfg, 55, 10) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 45 / 90)))
    assert lr_at(cfg, 100, 10) == pytest.approx(0.1)


def test_multistep_exponential_constant():
    cfg = make_config(schedule="multistep", lr=1.0, milestones=[2, 4], gamma=0.1, epochs=6)
    assert [lr_at(cfg, e * 5, 5) for e in range(6)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    cfg = make_config(schedule="exponential", lr=1.0, gamma=0.5, epochs=4)
    assert [lr_at(cfg, e * 5 + 4, 5) for e in range(4)] == pytest.approx([1, 0.5, 0.25, 0.125])
    assert lr_at(make_config(schedule="constant", lr=0.3), 123, 10) == 0.3


def test_plateau_patience_and_cooldown():
    p = Plateau("max", factor=0.5, patience=2, cooldown=1)
    reduced = [p.step(v) for v in [0.5, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.7]]
    # best 0.6 at epoch 2; three non-improving epochs exceed patience 2 -> reduce; one cool-down epoch
    assert reduced == [False, False, False, False, True, False, False, False, False]
    assert p.scale == 0.5
    q = Plateau("min", factor=0.1, patience=0)
    assert q.step(1.0) is False and q.step(1.0) is True and q.scale == pytest.approx(0.1)
    state = q.state_dict()
    r = Plateau()
    r.load_state_dict(state)
    assert r == q
