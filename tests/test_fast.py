"""The fast engine's parts: fast nets, whitening, Muon, weight averaging, triangle schedule, TTA, time budget."""

from __future__ import annotations

import json
import time

import pytest
import torch
import torch.nn.functional as F

import cifarlab
from cifarlab.config import make_config
from cifarlab.errors import CifarlabError
from cifarlab.models import count_params, create_model
from cifarlab.training.ema import WeightAverage
from cifarlab.training.engine import tta_logits
from cifarlab.training.optim import MuonSGD, orthogonalize, param_groups
from cifarlab.training.schedules import lr_at
from datagen import assert_annealed_on_the_clock, make_cifar10_python


def test_fast_family_sizes_and_budget():
    assert count_params(create_model("fast94")) == 1_972_792
    assert count_params(create_model("fast95")) <= 5_000_000
    assert count_params(create_model("fast96")) > 5_000_000
    m = create_model("fast94", num_classes=100)
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 100)


@pytest.mark.parametrize("name, classes, params", [("fast94", 10, 1_972_792), ("fast95", 10, 4_839_256),
                                                    ("fast100", 100, 4_866_616)])
def test_fast_recipes_build_their_nets_within_budget(name, classes, params):
    from cifarlab.data import Pipeline

    cfg = make_config(name)
    Pipeline(cfg.augment)
    m = create_model(cfg.model, num_classes=classes, **cfg.model_args)
    assert count_params(m) == params and params <= 5_000_000


def test_fast_widths_and_convs_per_group():
    m = create_model("fast95", widths=[128, 304, 304], convs=3)
    assert count_params(m) == 4_839_256 and m(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    g = m.groups[2]
    assert [n for n, _ in g.named_children() if n.startswith("conv")] == ["conv1", "conv2", "conv3"]
    assert torch.equal(g.conv3.weight[:, :, 1, 1], torch.eye(304))  # every conv starts as the identity
    g.eval()
    x = torch.randn(2, 304, 6, 6)
    with torch.no_grad():  # deeper groups add the residual before the last activation
        x0 = F.gelu(g.bn1(F.max_pool2d(g.conv1(x), 2)))
        expected = F.gelu(x0 + g.bn3(g.conv3(F.gelu(g.bn2(g.conv2(x0))))))
        assert torch.allclose(g(x), expected)
    # one conv per group, no residual: conv -> pool -> BN -> GELU only
    stem, convs, bns, head = 24 * 3 * 4 + 24, 9 * (24 * 8 + 2 * 64), 3 * 16, 80
    assert count_params(create_model("fast94", widths=[8, 8, 8], convs=1)) == stem + convs + bns + head
    with pytest.raises(CifarlabError, match="'widths' takes three positive integers"):
        create_model("fast95", widths=[128, 384])
    with pytest.raises(CifarlabError, match="not 5"):
        create_model("fast95", widths=5)
    with pytest.raises(CifarlabError, match="'convs'"):
        create_model("fast95", convs=0)


def test_fast_net_frozen_parts_and_dirac_init():
    m = create_model("fast94")
    assert not m.whiten.weight.requires_grad and m.whiten.bias.requires_grad
    assert all(not bn.weight.requires_grad for bn in (m.groups[0].bn1, m.groups[2].bn2))
    w = m.groups[1].conv2.weight  # 256 -> 256: identity on all channels
    assert torch.equal(w[:, :, 1, 1], torch.eye(256)) and w[:, :, 0, 0].abs().sum() == 0
    w = m.groups[1].conv1.weight  # 64 -> 256: identity on the first 64 outputs only
    assert torch.equal(w[:64, :, 1, 1], torch.eye(64))


def test_whitening_stem_decorrelates_patches():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(400, 1, 32, 32, generator=g)
    x = torch.cat([base, 0.9 * base + 0.1 * torch.randn(400, 1, 32, 32, generator=g),
                   torch.randn(400, 1, 32, 32, generator=g)], 1)  # strongly correlated channels
    m = create_model("fast94")
    m.init_from_data(x, eps=0.0)
    out = torch.nn.functional.conv2d(x, m.whiten.weight[:12])  # the 12 whitening directions
    feats = out.permute(0, 2, 3, 1).reshape(-1, 12)
    cov = torch.cov(feats.T.double())
    assert torch.allclose(cov, torch.eye(12, dtype=torch.float64), atol=0.05)
    assert torch.equal(m.whiten.weight[12:], -m.whiten.weight[:12])


def test_orthogonalize_pushes_singular_values_towards_one():
    g = torch.randn(64, 200) * torch.linspace(0.01, 10, 200)
    s = torch.linalg.svdvals(orthogonalize(g))
    assert s.min() > 0.5 and s.max() < 1.5


def test_muon_steps_conv_filters_and_sgd_the_rest():
    torch.manual_seed(0)
    m = create_model("fast94")
    cfg = make_config(optimizer="muon", lr=0.1, bias_lr_scale=4)
    groups = param_groups(m, cfg)
    assert groups[0]["muon"] and not groups[1]["muon"] and groups[1]["lr_scale"] == 4
    opt = MuonSGD(groups, lr=0.1, momentum=0.9)
    before = [p.detach().clone() for p in m.parameters()]
    m(torch.randn(4, 3, 32, 32)).sum().backward()
    opt.step()
    changed = [not torch.equal(a, p) for a, p in zip(before, m.parameters(), strict=True)]
    trainable = [p.requires_grad for p in m.parameters()]
    assert changed == trainable


def test_weight_average_and_lookahead():
    m = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        m.weight.fill_(1.0)
    avg = WeightAverage(m, decay=0.5, every=2, lookahead=True)
    with torch.no_grad():
        m.weight.fill_(3.0)
    avg.update(m, step=0)  # not an update step
    assert torch.equal(m.weight, torch.full((1, 2), 3.0))
    avg.update(m, step=1, keep=0.25)  # average = 0.25 * 1 + 0.75 * 3 = 2.5, copied back (lookahead)
    assert torch.allclose(avg.shadow["weight"], torch.full((1, 2), 2.5))
    assert torch.allclose(m.weight, avg.shadow["weight"])


def test_triangle_schedule():
    cfg = make_config(schedule="triangle", lr=2.0, epochs=10, onecycle_pct_start=0.2, onecycle_div_factor=5,
                      final_lr_frac=0.1)
    assert lr_at(cfg, 0, 10) == pytest.approx(0.4)
    assert lr_at(cfg, 10, 10) == pytest.approx(0.4 + 1.6 * 0.5)
    assert lr_at(cfg, 20, 10) == pytest.approx(2.0)
    assert lr_at(cfg, 100, 10) == pytest.approx(0.2)
    assert lr_at(cfg, 60, 10) == pytest.approx(2.0 - 1.8 * 0.5)


def test_tta_views():
    torch.manual_seed(0)
    m = create_model("resnet_small").eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(tta_logits(m, x, "none"), m(x))
        flip = tta_logits(m, x, "flip")
        assert torch.allclose(flip, (m(x) + m(x.flip(3))) / 2, atol=1e-5)
        full = tta_logits(m, x, "flip_translate")
        padded = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")
        moved = [padded[:, :, :32, :32], padded[:, :, 2:, 2:]]  # one pixel down-right and up-left, reflected
        expected = (flip + sum(m(v) + m(v.flip(3)) for v in moved) / 4) / 2
    assert full.shape == (3, 10) and not torch.allclose(full, flip)
    assert torch.allclose(full, expected, atol=1e-5)


def test_fast94_recipe_trains_with_every_method(tmp_path):
    make_cifar10_python(tmp_path, per_batch=40, test=10)
    res = cifarlab.train("fast94", data=str(tmp_path), epochs=4, batch_size=50, stem_bias_epochs=2,
                         out=str(tmp_path / "r"), progress=False)
    s = res.summary
    assert s["tta"] == "flip_translate" and 0 <= s["final_tta"]["val_top1"] <= 1
    ckpt = torch.load(res.run_dir / "last.pt", weights_only=True)
    assert ckpt["ema"] is not None and ckpt["train_state_dict"] is not None
    # the saved weights are the average; they evaluate to what training reported
    m = cifarlab.evaluate(res.run_dir / "last.pt", out=tmp_path / "ev")
    assert m["top1"] == pytest.approx(res.history[-1]["val_top1"])


def test_muon_recipe_option_trains(tmp_path):
    make_cifar10_python(tmp_path, per_batch=20, test=10)
    res = cifarlab.train("fast94", data=str(tmp_path), epochs=1, batch_size=50, optimizer="muon", lr=0.05,
                         muon_lr_ratio=2.0, out=str(tmp_path / "r"), progress=False)
    assert res.history[-1]["train_loss"] < 10


def test_time_budget_ends_on_time_with_a_fully_annealed_schedule(tmp_path):
    make_cifar10_python(tmp_path, per_batch=100, test=10)
    budget_s = 4.0
    t = time.perf_counter()
    res = cifarlab.train(data=str(tmp_path), model="resnet_small", epochs=2, batch_size=25, schedule="cosine",
                         lr=0.1, min_lr=0.001, time_budget=budget_s / 60, out=str(tmp_path / "r"), progress=False)
    elapsed = time.perf_counter() - t
    steps = [json.loads(x) for x in (res.run_dir / "metrics.jsonl").read_text().splitlines() if '"step"' in x]
    # training runs until the clock says so, not for the planned 2 epochs (40 steps, under a second here)
    assert res.summary["epochs_run"] >= 1
    assert_annealed_on_the_clock([s["lr"] for s in steps], res.summary["train_seconds"], budget_s, 0.1, 0.001, lag=2)
    assert elapsed < budget_s + 15  # setup, the last epoch's evaluation and checkpoints come on top


def test_saved_weights_are_the_average_even_without_a_val_split(tmp_path):
    make_cifar10_python(tmp_path, per_batch=20, test=10)
    res = cifarlab.train(data=str(tmp_path), model="resnet_small", epochs=1, batch_size=25, val_split=0,
                         ema_decay=0.5, ema_every=1, out=str(tmp_path / "r"), progress=False, report=False)
    ckpt = torch.load(res.run_dir / "last.pt", weights_only=True)
    for k, v in ckpt["ema"].items():
        assert torch.equal(ckpt["state_dict"][k], v), k


def test_progressive_resizing_schedule():
    from cifarlab.data.formats import ImageSet
    from cifarlab.data.loader import BatchLoader

    data = ImageSet(torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8), torch.zeros(8, dtype=torch.long))
    loader = BatchLoader(data, 4, mean=[0.5] * 3, std=[0.25] * 3, resize_schedule=[[0, 16], [2, 24], [3, 32]])
    assert [next(iter(loader.epoch(e)))[0].shape[-1] for e in range(5)] == [16, 16, 24, 32, 32]
    # downscaling a constant image keeps its value
    flat = ImageSet(torch.full((4, 3, 32, 32), 200, dtype=torch.uint8), torch.zeros(4, dtype=torch.long))
    x, _ = next(iter(BatchLoader(flat, 4, mean=[0] * 3, std=[1] * 3, resize_schedule=[[0, 20]]).epoch(0)))
    assert torch.allclose(x, torch.full_like(x, 200 / 255), atol=1e-5)
    with pytest.raises(cifarlab.CifarlabError, match="resize_schedule"):
        make_config(resize_schedule=[[0, 4]])


def test_fast_net_trains_with_progressive_resizing(tmp_path):
    make_cifar10_python(tmp_path, per_batch=20, test=10)
    res = cifarlab.train("fast94", data=str(tmp_path), epochs=2, batch_size=50, resize_schedule=[[0, 24], [1, 32]],
                         out=str(tmp_path / "r"), progress=False, report=False)
    assert len(res.history) == 2
