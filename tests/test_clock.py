"""The clock: schedule progress from steps or wall time, the evaluation reserve, and the LR of a step."""

from __future__ import annotations

import time

import pytest

from cifarlab.config import make_config
from cifarlab.training.clock import Clock
from cifarlab.training.schedules import lr_at, step_lrs


def _at(clock: Clock, seconds: float) -> Clock:
    clock.start = time.perf_counter() - seconds  # as if `seconds` of training had passed
    return clock


def test_without_a_budget_progress_is_the_step():
    clock = Clock(0, total_steps=100)
    assert clock.progress(37) == 37 and not _at(clock, 1e9).past_budget()


def test_with_a_budget_progress_is_the_used_fraction_on_the_planned_steps():
    clock = _at(Clock(1.0, total_steps=200), 15.0)  # a minute's budget, a quarter used
    assert clock.progress(3) == pytest.approx(50, abs=0.5) and not clock.past_budget()
    assert _at(clock, 61).progress(3) == 200 and clock.past_budget()


def test_the_reserve_for_the_final_evaluation_is_capped_at_half_the_budget():
    clock = Clock(1.0, total_steps=100)
    clock.keep_for_evaluation(4.0, passes=7)  # 28 s of evaluation kept back: training gets 32 s
    assert clock.train_budget() == pytest.approx(32.0)
    clock.keep_for_evaluation(1.0, passes=7)  # a faster evaluation later does not shrink the reserve
    assert clock.train_budget() == pytest.approx(32.0)
    clock.keep_for_evaluation(100.0, passes=1)
    assert clock.train_budget() == pytest.approx(30.0)
    assert _at(clock, 30.5).past_budget()
    no_budget = Clock(0, 10)
    no_budget.keep_for_evaluation(5.0, 2)
    assert no_budget.reserve == 0


def test_the_setup_before_training_is_taken_off_the_budget():
    clock = Clock(1.0, total_steps=100, setup=12.0)  # 12 s reading the data: 48 s of training remain
    clock.keep_for_evaluation(3.0, passes=2)
    assert clock.train_budget() == pytest.approx(42.0)
    assert _at(clock, 21.0).progress(0) == pytest.approx(50)
    assert Clock(1.0, total_steps=100, setup=50.0).train_budget() == pytest.approx(30.0)  # never under half


def test_a_resumed_clock_carries_on_and_ranks_read_the_agreed_clock():
    clock = Clock(1.0, total_steps=100, elapsed=30.0)
    assert clock.elapsed() >= 30.0 and clock.progress(0) == pytest.approx(50, abs=0.5)
    shared = Clock(1.0, total_steps=100, elapsed=6.0, shared=True)
    assert shared.progress(0) == pytest.approx(10)  # the agreed clock, not this process's
    shared.agreed = 45.0
    assert shared.progress(0) == pytest.approx(75)


def test_step_lrs_composes_schedule_plateau_batch_scaling_and_group_multipliers():
    cfg = make_config(schedule="cosine", lr=0.4, epochs=2, batch_size=128, lr_reference_batch=512)
    base = lr_at(cfg, 5, 10)
    lrs = step_lrs(cfg, 5, 10, plateau_scale=0.1, group_scales=[1.0, 64.0])
    assert lrs == pytest.approx([base * 0.1 * 0.25, base * 0.1 * 0.25 * 64])
    assert step_lrs(make_config(lr=0.3, schedule="constant"), 0, 10, 1.0, [1.0]) == [0.3]
