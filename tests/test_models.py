"""The model registry: exact parameter counts, shapes, gradients, summaries and budgets."""

from __future__ import annotations

import inspect

import pytest
import torch

from cifarlab.config import make_config
from cifarlab.errors import CifarlabError
from cifarlab.models import count_params, create_model, list_models, parse_budget, summarize
from cifarlab.models.registry import _REGISTRY

EXPECTED = {
    "resnet9": 4_903_242, "resnet18": 11_173_962, "resnet_small": 78_042, "resnet_medium": 1_228_970,
    "resnet_large": 4_903_242, "seed002_net": 4_869_066, "seed004_resnet": 3_903_620,
}


@pytest.mark.parametrize("name,count", EXPECTED.items())
def test_parameter_counts(name, count):
    assert count_params(create_model(name, num_classes=100 if name == "seed004_resnet" else 10)) == count


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("num_classes", [10, 100])
def test_forward_backward_reaches_every_parameter(name, num_classes):
    torch.manual_seed(0)
    takes = inspect.signature(_REGISTRY[name]).parameters  # every net takes dropout; the CIFAR nets block_dropout
    model = create_model(name, num_classes=num_classes, dropout=0.1,
                         **({"block_dropout": 0.1} if "block_dropout" in takes else {}))
    x = torch.randn(2, 3, 32, 32)
    out = model(x)
    assert out.shape == (2, num_classes) and torch.isfinite(out).all()
    out.logsumexp(1).sum().backward()
    for pname, p in model.named_parameters():
        if not p.requires_grad:  # frozen by design (the fast nets' whitening filters and BN scales)
            continue
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


def test_dropout_options_reach_only_the_nets_that_take_them():
    from cifarlab.training.setup import model_args_of

    assert model_args_of(make_config(model="resnet18_imagenet")) == {}  # unset options are not passed
    assert model_args_of(make_config(model="resnet9", block_dropout=0.2)) == {"block_dropout": 0.2}
    with pytest.raises(CifarlabError, match="model 'resnet18_imagenet' takes no option 'block_dropout'"):
        create_model("resnet18_imagenet", block_dropout=0.1)
    # a factory's own class count is kept unless one is asked for
    assert create_model("seed004_resnet").fc.out_features == 100
    assert create_model("seed004_resnet", num_classes=10).fc.out_features == 10


def test_unknown_model_and_option_name_the_choices():
    with pytest.raises(CifarlabError, match="unknown model 'resnet7'; did you mean 'resnet9'.*; known models: .*50"):
        create_model("resnet7")
    with pytest.raises(CifarlabError, match="takes no option 'width'"):
        create_model("resnet9", width=3)


def test_summary_matches_study_001_tables():
    s = summarize(create_model("resnet_small"))
    assert s.rows[0] == ("Conv2d-1", [-1, 16, 32, 32], 432)
    assert s.rows[6] == ("BasicBlock-7", [-1, 16, 32, 32], 0)
    assert s.rows[-1] == ("Linear-23", [-1, 10], 650)
    assert len(s.rows) == 23
    assert round(s.params_mb, 2) == 0.30 and round(s.total_mb, 2) == 1.84
    large = summarize(create_model("resnet_large"))
    assert round(large.params_mb, 2) == 18.70 and round(large.total_mb, 2) == 25.28
    assert round(summarize(create_model("resnet_medium")).total_mb, 2) == 7.98
    assert "Total params: 78,042" in s.table()


def test_macs_of_a_single_conv():
    nn = torch.nn
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Flatten(), nn.Linear(8 * 32 * 32, 10))
    assert summarize(model).macs == 8 * 32 * 32 * 27 + 8 * 32 * 32 * 10


def test_parse_budget():
    assert parse_budget("5M") == 5_000_000 and parse_budget("78k") == 78_000 and parse_budget("4903242") == 4903242
    assert parse_budget("1.5m") == 1_500_000
    with pytest.raises(CifarlabError):
        parse_budget("lots")


def test_seed002_init_is_kaiming_fan_out_with_zero_bias():
    m = create_model("seed002_net")
    conv = m.res_block_3_2.conv1
    fan_out = conv.out_channels * 9
    assert abs(conv.weight.std().item() - (2 / fan_out) ** 0.5) < 0.002
    assert (conv.bias == 0).all() and (m.res_block_1_1.bn1.weight == 1).all()
