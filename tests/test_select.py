"""Hard-example selection (select_keep): which images the model trains on, the proxy's steps, exact resume."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

import cifarlab
from cifarlab.config import make_config
from cifarlab.errors import CifarlabError
from cifarlab.training.checkpoint import load_checkpoint
from cifarlab.training.select import HardSelector
from datagen import make_cifar10_python


def _selector(**overrides) -> HardSelector:
    torch.manual_seed(0)
    cfg = make_config(model="fast94", lr=0.1, **overrides)
    return HardSelector(cfg, 10, torch.randn(50, 3, 32, 32), torch.device("cpu"), base_lr=lambda step: 0.1)


def test_the_model_gets_the_hardest_share_of_each_batch_in_batch_order():
    sel = _selector(select_keep=0.25, select_proxy_every=1000)
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
    with torch.no_grad():
        sel.model.train()
        losses = F.cross_entropy(sel.model(x).float(), y, reduction="none")
    kept_x, kept_y = sel(x, y, step=1)  # step 1: not a proxy step
    hardest = losses.topk(4).indices.sort().values
    assert torch.equal(kept_x, x[hardest]) and torch.equal(kept_y, y[hardest])
    assert sel.count(16) == 4 and sel.count(3) == 1 and sel.count(1) == 1  # at least one image, never more than all


def test_the_proxy_learns_only_every_kth_step_and_on_the_kept_images():
    sel = _selector(select_keep=0.5, select_proxy_every=3)
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    weights = lambda: [p.detach().clone() for p in sel.model.parameters() if p.requires_grad]  # noqa: E731
    for step, learns in ((1, False), (2, False), (3, True), (4, False), (6, True)):
        before = weights()
        sel(x, y, step)
        changed = any(not torch.equal(a, b) for a, b in zip(before, weights(), strict=True))
        assert changed == learns, step
    assert sel.optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * sel.optimizer.param_groups[0]["lr_scale"])


def test_soft_targets_are_selected_with_their_images():
    sel = _selector(select_keep=0.5)
    x = torch.randn(6, 3, 32, 32)
    y = torch.softmax(torch.randn(6, 10), 1)  # mixup/cutmix targets
    kept_x, kept_y = sel(x, y, step=1)
    assert kept_x.shape[0] == kept_y.shape[0] == 3
    for xi, yi in zip(kept_x, kept_y, strict=True):
        i = int(((x - xi).abs().flatten(1).sum(1) == 0).nonzero())
        assert torch.equal(y[i], yi)


def _epoch_rows(run_dir):
    return [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if r["type"] == "epoch"]


def test_a_run_trains_on_the_kept_share_and_resumes_exactly(tmp_path):
    make_cifar10_python(tmp_path / "data", per_batch=20, test=10)
    common = dict(data=str(tmp_path / "data"), model="fast94", model_args={"widths": [8, 16, 16]}, epochs=2,
                  batch_size=20, select_keep=0.5, select_proxy_widths=[4, 8, 8], select_proxy_every=2,
                  progress=False, report=False, deterministic=True, checkpoint_every=2, val_split=20,
                  augment=[{"name": "flip"}, {"name": "translate", "max_shift": 2}])
    full = cifarlab.train(out=str(tmp_path / "full"), **common)
    rows = _epoch_rows(full.run_dir)
    assert [r["images"] for r in rows] == [40, 40]  # 80 training images, half of each batch of 20
    assert full.summary["epochs_run"] == 2
    assert load_checkpoint(full.run_dir / "last.pt")["selector"]["model"]  # the proxy is saved for --resume

    class StopAtStep(cifarlab.Callback):
        def on_step_end(self, trainer, step_log):
            if step_log["step"] == 5:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cifarlab.train(out=str(tmp_path / "cut"), callbacks=[StopAtStep()], **common)
    cut = load_checkpoint(tmp_path / "cut" / "last.pt")
    assert cut["train_state"]["partial"]["batch"] == 2  # saved inside epoch 2, after a proxy step
    cifarlab.train(resume=str(tmp_path / "cut"), report=False)
    a = load_checkpoint(full.run_dir / "last.pt")
    b = load_checkpoint(tmp_path / "cut" / "last.pt")
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    assert all(torch.equal(a["selector"]["model"][k], b["selector"]["model"][k]) for k in a["selector"]["model"])


@pytest.mark.parametrize("bad", [{"select_keep": 0}, {"select_keep": 1.5}, {"select_keep": float("nan")},
                                 {"select_proxy_every": 0}, {"select_proxy_widths": [32, 64]},
                                 {"select_proxy_widths": [32, 64, True]}, {"select_proxy_widths": "wide"}])
def test_bad_selection_settings_are_one_line(bad):
    with pytest.raises(CifarlabError, match="select_"):
        make_config(model="fast94", **bad)


def test_selection_is_refused_under_torchrun_before_the_data_is_read(tmp_path):
    from types import SimpleNamespace

    from cifarlab.training.setup import build_parts

    cfg = make_config(model="fast94", select_keep=0.5, data=str(tmp_path / "never-read"))
    dist = SimpleNamespace(enabled=True, world=2, rank=0)
    with pytest.raises(CifarlabError, match="torchrun"):
        build_parts(cfg, dist, torch.device("cpu"), resuming=False)


def test_a_diverging_proxy_stops_the_run_with_one_line():
    from cifarlab.errors import Diverged

    sel = _selector(select_keep=0.5, select_proxy_every=1)
    with torch.no_grad():
        sel.model.head.weight.fill_(float("nan"))
    with pytest.raises(Diverged, match="selection proxy"):
        sel(torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,)), step=0)
