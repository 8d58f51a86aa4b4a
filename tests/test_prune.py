"""Structured pruning (models/prune.py, pruning.py, `cifarlab prune`): the L1 criterion, exact surgery, budgets,
the smaller net end to end, and the refusals."""

from __future__ import annotations

import pytest
import torch

import cifarlab
from cifarlab.cli import main
from cifarlab.errors import CifarlabError
from cifarlab.models import count_params, create_model
from cifarlab.models.prune import amount_for_budget, prune_filters
from cifarlab.training.checkpoint import load_checkpoint
from datagen import make_cifar10_python

PRUNABLE = ["resnet9", "resnet18", "resnet_small", "resnet_medium", "resnet_large", "seed004_resnet"]


def _blocks(net):
    return [m for m in net.modules() if isinstance(m, cifarlab.models.resnet.BasicBlock)]


def test_the_filters_with_the_smallest_l1_norm_go_and_the_rest_keep_their_order():
    torch.manual_seed(0)
    net = create_model("resnet_small")  # blocks of 16, 32, 64 filters
    norms = []
    for block in _blocks(net):
        n = block.conv1.out_channels
        scale = torch.randperm(n).float() + 1  # filter i's L1 norm is proportional to scale[i]
        with torch.no_grad():
            block.conv1.weight.copy_(torch.sign(torch.randn_like(block.conv1.weight)) * scale[:, None, None, None])
        norms.append(scale)
    cut = prune_filters("resnet_small", 10, {}, net.state_dict(), 0.25)
    assert cut.model_args == {"inner_widths": [12, 24, 48]}
    for i, (prefix, scale) in enumerate(zip(["layer1.0.", "layer2.0.", "layer3.0."], norms, strict=True)):
        keep = [j for j in range(len(scale)) if scale[j] > len(scale) * 0.25]  # the top 75% of 1..n, in order
        assert len(keep) == cut.model_args["inner_widths"][i]
        old = net.state_dict()
        assert torch.equal(cut.state_dict[f"{prefix}conv1.weight"], old[f"{prefix}conv1.weight"][keep])
        assert torch.equal(cut.state_dict[f"{prefix}conv2.weight"], old[f"{prefix}conv2.weight"][:, keep])
        for t in ("weight", "bias", "running_mean", "running_var"):
            assert torch.equal(cut.state_dict[f"{prefix}bn1.{t}"], old[f"{prefix}bn1.{t}"][keep])


@pytest.mark.parametrize("name", PRUNABLE)
def test_a_pruned_net_computes_what_the_full_net_does_when_the_dropped_filters_are_dead(name):
    """Make the filters that will go contribute nothing (zero weights, BN output driven below the ReLU): the
    pruned net must then give the full net's outputs exactly, which checks every slice of the surgery."""
    torch.manual_seed(1)
    net = create_model(name).eval()
    with torch.no_grad():
        for block in _blocks(net):
            n = block.conv1.out_channels
            dead = torch.arange(n) % 3 == 0  # a third of the filters, spread over the block
            block.conv1.weight[dead] = 0
            block.conv1.weight[~dead] += torch.sign(block.conv1.weight[~dead]) * 0.5  # the live ones are larger
            block.bn1.running_mean[dead] = 0
            block.bn1.bias[dead] = -1.0  # relu(0 * ... - 1) = 0
            block.bn1.running_mean.uniform_(-0.1, 0.1)
            block.bn1.running_mean[dead] = 0
            block.bn1.running_var.uniform_(0.5, 2.0)
    amount = 1 / 3
    cut = prune_filters(name, net.linear.out_features if hasattr(net, "linear") else net.fc.out_features, {},
                        net.state_dict(), amount)
    small = create_model(name, **cut.model_args).eval()
    small.load_state_dict(cut.state_dict)
    x = torch.randn(4, 3, 32, 32, dtype=torch.float64)  # float64: the two nets' convs may differ in algorithm
    with torch.no_grad():
        torch.testing.assert_close(small.double()(x), net.double()(x), rtol=1e-9, atol=1e-9)
    assert count_params(small) == cut.after < cut.before == count_params(net)


@pytest.mark.parametrize("amount", [0.0, 0.1, 0.5, 0.9, 0.999])
def test_each_block_keeps_its_share_and_at_least_one_filter(amount):
    net = create_model("resnet9")
    cut = prune_filters("resnet9", 10, {}, net.state_dict(), amount)
    assert cut.model_args["inner_widths"] == [max(1, n - round(amount * n)) for n in (64, 128, 256, 512)]


@pytest.mark.parametrize("budget", ["4M", "3M", "2M", "1M", "500k"])
def test_a_parameter_budget_drops_the_fewest_filters_that_fit(budget):
    limit = cifarlab.models.parse_budget(budget)
    net = create_model("resnet9")
    amount = amount_for_budget("resnet9", 10, {}, budget)
    cut = prune_filters("resnet9", 10, {}, net.state_dict(), amount)
    assert cut.after <= limit
    # a slightly smaller share would not fit (or keeps the same filters): the fewest filters are dropped
    less = prune_filters("resnet9", 10, {}, net.state_dict(), max(0.0, amount - 0.002))
    assert less.after > limit or less.model_args == cut.model_args
    assert amount_for_budget("resnet9", 10, {}, "6M") == 0.0  # already within it


def test_a_pruned_net_can_be_pruned_again():
    net = create_model("resnet_medium")
    once = prune_filters("resnet_medium", 10, {}, net.state_dict(), 0.5)
    twice = prune_filters("resnet_medium", 10, once.model_args, once.state_dict, 0.5)
    assert twice.model_args["inner_widths"] == [8, 16, 32, 64]
    assert twice.after < once.after


@pytest.mark.parametrize("args, words", [
    ({"inner_widths": [8, 8]}, "takes 4 positive integers"),
    ({"inner_widths": [8, 8, 8, 0]}, "takes 4 positive integers"),
    ({"inner_widths": "abc"}, "takes 4 positive integers"),
    ({"inner_widths": [8, 8, 8, 8], "params": "1M"}, "not both"),
])
def test_bad_inner_widths_are_one_line(args, words):
    with pytest.raises(CifarlabError, match=words):
        create_model("resnet9", **args)


def test_a_net_without_residual_blocks_cannot_be_pruned():
    with pytest.raises(CifarlabError, match="cannot be pruned.*resnet9"):
        prune_filters("fast94", 10, {}, {}, 0.5)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("prune")
    make_cifar10_python(root / "data", per_batch=20, test=10)  # 100 images: 90 train / 10 val
    run = cifarlab.train(data=str(root / "data"), model="resnet_small", epochs=1, batch_size=30,
                         out=str(root / "run"), progress=False, report=False)
    return root, run.run_dir / "best.pt"


def test_prune_and_fine_tune_in_one_command_gives_a_smaller_run_that_resumes(trained, capsys):
    root, best = trained
    out = root / "pruned"
    assert main(["prune", str(best), "--amount", "0.5", "--out", str(out), "--epochs", "2", "--batch-size", "45",
                 "--progress", "false", "--no-report"]) == 0
    said = capsys.readouterr().out
    assert "78,042 -> " in said and "8, 16, 32" in said
    pruned = load_checkpoint(out / "pruned.pt")
    assert pruned["model_args"]["inner_widths"] == [8, 16, 32] and pruned["pruned_from"] == str(best)
    last = load_checkpoint(out / "last.pt")
    assert last["model_args"]["inner_widths"] == [8, 16, 32] and last["epoch"] == 2
    assert last["config"]["batch_size"] == 45 and last["config"]["pretrained"] == str((out / "pruned.pt").resolve())
    net = cifarlab.load_model(str(out / "best.pt"))
    assert count_params(net) == count_params(create_model("resnet_small", inner_widths=[8, 16, 32])) < 78_042
    # the fine-tuning started from the pruned weights: its first step moved them, not random ones
    assert main(["train", "--resume", str(out), "--epochs", "3", "--progress", "false", "--no-report"]) == 0
    assert load_checkpoint(out / "last.pt")["epoch"] == 3


def test_the_fine_tuning_starts_from_the_pruned_weights(trained):
    root, best = trained
    out = root / "from_pruned"
    main(["prune", str(best), "--amount", "0.25", "--out", str(out), "--epochs", "1", "--lr", "0", "--progress",
          "false", "--no-report", "--ema-decay", "0"])
    pruned, tuned = load_checkpoint(out / "pruned.pt"), load_checkpoint(out / "last.pt")
    for key, value in pruned["state_dict"].items():  # lr 0: the conv and linear weights are the pruned ones
        if key.endswith("conv1.weight") or key.endswith("linear.weight"):
            assert torch.equal(tuned["state_dict"][key], value), key


def test_cut_only_writes_just_pruned_pt_and_says_how_to_fine_tune(trained, capsys):
    root, best = trained
    out = root / "cut"
    assert main(["prune", str(root / "run"), "--params", "50k", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["pruned.pt"]
    said = capsys.readouterr().out
    assert "--pretrained" in said and "inner_widths" in said
    assert count_params(cifarlab.load_model(str(out / "pruned.pt"))) <= 50_000


@pytest.mark.parametrize("args, words", [
    (["--amount", "0.3", "--lr", "0.1"], "give --epochs N"),
    (["--amount", "0.3", "--epochs", "1", "--lr", "-1"], "'lr' must be >= 0"),
    (["--amount", "0.3", "--epochs", "1", "--bogus", "3"], "unknown config key 'bogus'"),
    (["--amount", "0.3", "--epochs", "1", "--model", "resnet9"], "--model cannot change"),
    (["--params", "10"], "below 'resnet_small' pruned to one filter a block"),
    (["--params", "abc"], "not a number like 5M"),
])
def test_bad_settings_are_one_line_and_write_nothing(trained, capsys, args, words):
    root, best = trained
    out = root / "refused"
    assert main(["prune", str(best), "--out", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1
    assert not out.exists()


@pytest.mark.parametrize("amount", ["1", "nan", "-0.1", "inf"])
def test_an_amount_outside_0_1_is_a_usage_error(trained, capsys, amount):
    root, best = trained
    with pytest.raises(SystemExit) as exc:
        main(["prune", str(best), "--out", str(root / "x"), "--amount", amount])
    assert exc.value.code == 2 and "must be in [0, 1)" in capsys.readouterr().err


def test_an_occupied_folder_is_refused_and_kept(trained, capsys):
    root, best = trained
    out = root / "occupied"
    main(["prune", str(best), "--amount", "0.2", "--out", str(out)])
    before = (out / "pruned.pt").read_bytes()
    assert main(["prune", str(best), "--amount", "0.5", "--out", str(out)]) == 2
    assert "already holds pruned.pt" in capsys.readouterr().err
    assert (out / "pruned.pt").read_bytes() == before


def test_prune_under_torchrun_is_refused_before_anything_is_written(trained, capsys, monkeypatch):
    root, best = trained
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["prune", str(best), "--amount", "0.5", "--out", str(root / "ddp"), "--epochs", "1"]) == 2
    assert "runs in one process" in capsys.readouterr().err and not (root / "ddp").exists()
