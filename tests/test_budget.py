"""Parameter budgets by rule (models/budget.py): `params: N` picks the widest net of a family within N."""

from __future__ import annotations

import pytest
import torch

from cifarlab import CifarlabError
from cifarlab.cli import main
from cifarlab.models import count_params, create_model
from cifarlab.models.registry import resolve_model_args
from cifarlab.training.checkpoint import load_checkpoint


@pytest.mark.parametrize("model, budget", [
    ("resnet_small", 50_000), ("resnet_small", 300_000), ("resnet_medium", 2_000_000), ("resnet9", 1_500_000),
    ("resnet18", 700_000), ("fast94", 500_000), ("fast94", 3_000_000), ("fast95", 5_000_000),
])
def test_the_chosen_net_is_within_5_percent_under_the_budget_and_trains_a_step(model, budget):
    torch.manual_seed(0)
    net = create_model(model, params=budget)
    n = count_params(net)
    assert 0.95 * budget <= n <= budget, (model, budget, n)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    if hasattr(net, "init_from_data"):  # the fast nets' whitening stem is set from data
        net.init_from_data(torch.randn(64, 3, 32, 32))
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.1)
    before = [p.detach().clone() for p in net.parameters()]
    loss = torch.nn.functional.cross_entropy(net(x), y)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss) and any(not torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))


def test_a_budget_is_read_like_summarys_and_a_larger_one_buys_a_wider_net():
    small = resolve_model_args("resnet9", 10, params="1M")["widths"]
    large = resolve_model_args("resnet9", 10, params="4M")["widths"]
    assert all(a < b for a, b in zip(small, large, strict=True))
    assert resolve_model_args("resnet9", 10, params=1_000_000)["widths"] == small


@pytest.mark.parametrize("model, exact", [("resnet_small", 78_042), ("resnet_medium", 1_228_970),
                                          ("resnet_large", 4_903_242)])
def test_study_001s_own_counts_give_back_study_001s_widths(model, exact):
    """Study 001 sized its nets by hand; its own counts as budgets find the same widths (multiples of 8)."""
    default = create_model(model)
    assert count_params(create_model(model, params=exact)) == count_params(default) == exact


def test_the_class_count_is_part_of_the_budget():
    ten = count_params(create_model("resnet_small", 10, params="100k"))
    hundred = count_params(create_model("resnet_small", 100, params="100k"))
    assert 95_000 <= hundred <= 100_000 and 95_000 <= ten <= 100_000


@pytest.mark.parametrize("model, args, words", [
    ("seed002_net", {"params": "1M"}, "takes no option 'params'"),
    ("resnet9", {"params": "1M", "widths": [8, 8, 8, 8]}, "not both"),
    ("resnet9", {"params": "100"}, "below the smallest"),
    ("resnet9", {"params": "lots"}, "not a number"),
])
def test_budgets_that_cannot_be_met_are_one_line(model, args, words):
    with pytest.raises(CifarlabError, match=words):
        create_model(model, **args)


def test_train_with_a_budget_saves_the_widths_and_eval_rebuilds_the_same_net(caplog, tmp_path, cifar10_dir):
    import logging

    import cifarlab

    caplog.set_level(logging.INFO, logger="cifarlab")
    out = tmp_path / "run"
    cifarlab.train(model="resnet_small", params="40k", data=str(cifar10_dir), epochs=1, batch_size=32, out=str(out),
                   progress=False, report=False)
    ckpt = load_checkpoint(out / "best.pt")
    widths = ckpt["model_args"]["widths"]
    net = create_model("resnet_small", **ckpt["model_args"])
    assert "params" not in ckpt["model_args"] and 38_000 <= count_params(net) <= 40_000
    assert f"widths {widths}" in caplog.text  # the exact count is printed
    assert main(["eval", str(out / "best.pt"), "--out", str(tmp_path / "ev")]) == 0


def test_a_bad_budget_is_refused_before_the_run_starts(capsys, tmp_path, cifar10_dir):
    assert main(["train", "--model", "resnet_small", "--params", "2X", "--data", str(cifar10_dir), "--out",
                 str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "config key 'params'" in err and err.count("\n") == 1 and not (tmp_path / "r").exists()
