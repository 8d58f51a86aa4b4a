"""Every name a config key accepts is implemented, and config validation reads the implementation tables."""

from __future__ import annotations

import math

import pytest
import torch

from cifarlab.config import make_config
from cifarlab.errors import CifarlabError
from cifarlab.training.engine import TTA_VIEWS, tta_logits
from cifarlab.training.optim import OPTIMIZERS, make_optimizer
from cifarlab.training.schedules import SCHEDULES, lr_at
from cifarlab.training.setup import VOCABULARIES


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_every_schedule_gives_a_finite_positive_lr(name):
    cfg = make_config(schedule=name, epochs=3, milestones=[1], cyclic_step_size=5)
    lrs = [lr_at(cfg, s, 10) for s in range(30)]
    assert all(math.isfinite(v) and v >= 0 for v in lrs) and max(lrs) > 0


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_every_optimizer_steps_the_weights(name):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.Linear(4 * 30 * 30, 2))
    opt = make_optimizer(model, make_config(optimizer=name, lr=0.01))
    before = [p.detach().clone() for p in model.parameters()]
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    opt.step()
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


@pytest.mark.parametrize("mode", list(TTA_VIEWS))
def test_every_tta_mode_averages_views_with_weights_summing_to_one(mode):
    assert sum(w for _, _, w in TTA_VIEWS[mode]) == pytest.approx(1.0)
    x = torch.randn(3, 3, 8, 8)
    const = tta_logits(lambda v: torch.ones(len(v), 5), x, mode)  # a model blind to the view
    assert torch.allclose(const, torch.ones(3, 5))


@pytest.mark.parametrize("key", list(VOCABULARIES))
def test_config_validation_reads_the_tables(key):
    with pytest.raises(CifarlabError, match=f"'{key}' must be one of {', '.join(VOCABULARIES[key])}"):
        make_config(**{key: "no_such_name"})
    for name in VOCABULARIES[key]:
        assert getattr(make_config(**{key: name}), key) == name
