"""Issue 13's options: selective TTA's margin rule, validation only where asked (val_every), batched Muon."""

from __future__ import annotations

import json
import logging
import re
from types import SimpleNamespace

import pytest
import torch

import cifarlab
from cifarlab.config import make_config
from cifarlab.errors import CifarlabError
from cifarlab.models import create_model
from cifarlab.training.engine import TTA_VIEWS, tta_logits
from cifarlab.training.optim import MuonSGD, orthogonalize, param_groups
from cifarlab.training.trainer import Trainer
from datagen import make_cifar10_python


class _Fixed(torch.nn.Module):
    """A 'model' whose logits for image i are row i of a table, whatever view of it it sees: sure and unsure
    images by construction. A flipped or shifted view adds `shift` to every logit's first class."""

    def __init__(self, table: torch.Tensor, shift: float = 0.0):
        super().__init__()
        self.table, self.shift = table, shift
        self.seen: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids = x[:, 0, 0, 0].round().long()  # each image carries its index in one pixel (views keep it there)
        self.seen.append(len(x))
        out = self.table[ids].clone()
        out[:, 0] += self.shift * (x[:, 1, 0, 0] != 0).float()  # channel 1's corner marks a moved view
        return out


def _images(n: int) -> torch.Tensor:
    x = torch.zeros(n, 3, 8, 8)
    x[:, 0] = torch.arange(n, dtype=torch.float32).view(n, 1, 1)  # constant per image: shifts and flips keep it
    x[:, 1, :, 4:] = 1.0  # a right half that a flip or a one-pixel shift moves into the corner... or not
    return x


def test_selective_tta_applies_the_views_only_below_the_margin():
    # softmax margins: image 0 ~1.0 (sure), image 1 ~0.0 (unsure), image 2 ~0.46
    table = torch.tensor([[10.0, 0.0], [0.0, 0.0], [1.0, 0.0]])
    x = _images(3)
    model = _Fixed(table, shift=1.0)
    full = tta_logits(model, x, "flip_translate")
    plain = model(x)
    for margin, unsure in ((0.3, [1]), (0.5, [1, 2]), (1.0, [0, 1, 2])):
        model.seen.clear()
        out = tta_logits(model, x, "flip_translate", margin)
        for i in range(3):
            expected = full[i] if i in unsure else plain[i]
            assert torch.allclose(out[i], expected), (margin, i)
        # one plain pass over all images, then the five other views over the unsure ones only
        assert model.seen == [3] + [len(unsure)] * (len(TTA_VIEWS["flip_translate"]) - 1)
    assert torch.equal(tta_logits(model, x, "flip_translate", 0.0), full)  # 0: every image, every view


def test_selective_tta_on_a_real_net_equals_full_tta_for_the_unsure_images():
    torch.manual_seed(0)
    m = create_model("resnet_small").eval()
    x = torch.randn(16, 3, 32, 32)
    with torch.no_grad():
        plain, full = m(x), tta_logits(m, x, "flip")
        margin_of = plain.softmax(1).topk(2, dim=1).values
        margin_of = margin_of[:, 0] - margin_of[:, 1]
        cut = float(margin_of.median())
        out = tta_logits(m, x, "flip", cut)
    unsure = margin_of < cut
    assert 0 < int(unsure.sum()) < 16
    assert torch.allclose(out[unsure], full[unsure], atol=1e-5)
    assert torch.equal(out[~unsure], plain[~unsure])


def test_tta_margin_is_checked_everywhere(tmp_path):
    with pytest.raises(CifarlabError, match="tta_margin"):
        make_config(tta_margin=1.5)
    with pytest.raises(CifarlabError, match="tta_margin"):
        make_config(tta_margin=float("nan"))
    with pytest.raises(CifarlabError, match="tta_margin"):
        cifarlab.evaluate(tmp_path / "missing.pt", tta="flip", tta_margin=-0.1)
    with pytest.raises(CifarlabError, match="tta_margin"):
        cifarlab.predict(tmp_path / "missing.pt", tmp_path, tta="flip", tta_margin=2)


def _rows(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["type"] == "epoch"]


@pytest.mark.parametrize(("every", "validated"), [(0, [4]), (2, [2, 4]), (3, [3, 4]), (1, [1, 2, 3, 4])])
def test_val_every_validates_every_kth_epoch_and_always_the_last(tmp_path, every, validated):
    make_cifar10_python(tmp_path, per_batch=20, test=10)
    res = cifarlab.train(data=str(tmp_path), model="resnet_small", epochs=4, batch_size=25, val_every=every,
                         out=str(tmp_path / "r"), progress=False, report=False)
    rows = _rows(res.run_dir)
    assert [r["epoch"] for r in rows if "val_top1" in r] == validated
    # best.pt is chosen among the validated epochs only; the summary's final figures have the last val pass
    assert res.summary["best_epoch"] in validated
    assert "val_top1" in res.summary["final"]
    ckpt = torch.load(res.run_dir / "best.pt", weights_only=True)
    assert ckpt["epoch"] == res.summary["best_epoch"]


def test_val_every_zero_with_a_budget_validates_the_epoch_the_budget_ends_in(tmp_path):
    make_cifar10_python(tmp_path, per_batch=100, test=10)
    res = cifarlab.train(data=str(tmp_path), model="resnet_small", epochs=2, batch_size=25, val_every=0,
                         time_budget=4 / 60, tta="flip", tta_margin=0.5, out=str(tmp_path / "r"), progress=False,
                         report=False)
    rows = _rows(res.run_dir)
    assert "val_top1" in rows[-1] and not any("val_top1" in r for r in rows[:-1])
    assert 0 <= rows[-1]["val_unsure"] <= 1  # the share the final selective TTA will send through the views
    assert res.summary["final_tta"] is not None


def test_early_stopping_counts_only_validated_epochs(tmp_path):
    make_cifar10_python(tmp_path, per_batch=20, test=10)
    res = cifarlab.train(data=str(tmp_path), model="resnet_small", epochs=12, batch_size=25, val_every=3,
                         early_stop_patience=1, out=str(tmp_path / "r"), progress=False, report=False)
    # epoch 3 is the first best; the run can stop only at a later validated epoch that is no better (patience 1):
    # epochs 4 and 5, never validated, are not "bad" epochs
    assert res.summary["epochs_run"] in (6, 9, 12)


def test_batched_orthogonalization_equals_the_per_filter_one():
    torch.manual_seed(0)
    stack = torch.randn(4, 64, 288) * torch.tensor([0.01, 1.0, 30.0, 5.0]).view(4, 1, 1)
    batched = orthogonalize(stack)
    for i in range(4):
        assert torch.allclose(batched[i], orthogonalize(stack[i]), atol=1e-5)
    tall = torch.randn(3, 300, 40)  # transposed inside, both ways
    assert torch.allclose(orthogonalize(tall)[1], orthogonalize(tall[1]), atol=1e-5)


def test_batched_muon_steps_like_the_per_filter_one():
    torch.manual_seed(0)
    nets = [create_model("fast94"), create_model("fast94")]
    nets[1].load_state_dict(nets[0].state_dict())
    cfg = make_config("fast94", optimizer="muon")
    opts = [MuonSGD(param_groups(n, cfg), lr=0.05, momentum=0.9, batched=b)
            for n, b in zip(nets, (False, True), strict=True)]
    x = torch.randn(8, 3, 32, 32)
    for _ in range(2):
        for net, opt in zip(nets, opts, strict=True):
            opt.zero_grad()
            net(x).square().mean().backward()
            opt.step()
    for a, b in zip(nets[0].parameters(), nets[1].parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-5)


def test_a_budget_alone_chooses_the_recipe_measured_best_for_it_on_this_machine(capsys, tmp_path, monkeypatch):
    from cifarlab.config import BUDGET_RECIPES, recipe_for_budget
    from cifarlab.training import probe

    # the crossovers are in fast94 epochs: 100-s epochs (the development CPU) and far shorter ones (a GPU)
    (first_upto, first, _), (_, second, _) = BUDGET_RECIPES[0], BUDGET_RECIPES[1]
    largest = BUDGET_RECIPES[-1][1]
    at_crossover = first_upto * 100 / 60  # minutes
    assert recipe_for_budget(at_crossover, 100)[0] == first
    assert recipe_for_budget(at_crossover * 1.01, 100)[0] == second
    assert recipe_for_budget(at_crossover, 100 / 1e6)[0] == largest  # a fast machine: the largest
    monkeypatch.setattr(probe, "fast94_epoch_seconds", lambda device="auto", threads=0: 100.0)
    assert make_config(time_budget=at_crossover).recipe == first
    assert make_config(time_budget=525_600).recipe == largest
    monkeypatch.setattr(probe, "fast94_epoch_seconds", lambda device="auto", threads=0: 100 / 1e6)
    assert make_config(time_budget=at_crossover).recipe == largest  # the same minutes, a faster machine
    for _, name, settings in BUDGET_RECIPES:  # every recipe the table names is bundled and valid with its settings
        assert make_config(name).recipe == name and make_config(name, **settings).recipe == name
    # fast95 under a budget starts at 24 px (measured better there); the recipe named, or a schedule given, is as asked
    assert make_config(time_budget=60).resize_schedule == [[0, 24], [13, 32]]
    assert make_config("fast95", time_budget=60).resize_schedule == []
    assert make_config(time_budget=60, resize_schedule=[[0, 32]]).resize_schedule == [[0, 32]]
    assert recipe_for_budget(60, 1)[1] is not BUDGET_RECIPES[-1][2]  # a copy: a caller cannot change the table
    assert make_config("fast94_select").select_keep == 0.5
    assert make_config(time_budget=5, model="resnet_small").recipe == ""  # a model given: no recipe chosen
    assert make_config("seed001_small", time_budget=5).recipe == "seed001_small"

    def never(device="auto", threads=0):
        raise AssertionError("an invalid value must be refused before the machine is timed")

    monkeypatch.setattr(probe, "fast94_epoch_seconds", never)
    for bad, key in (({"time_budget": float("nan")}, "time_budget"), ({"time_budget": "5m"}, "time_budget"),
                     ({"time_budget": 5, "threads": -1}, "threads"), ({"time_budget": 5, "lr": -1}, "lr")):
        with pytest.raises(CifarlabError, match=f"'{key}'"):
            make_config(**bad)
    from cifarlab.cli import main

    monkeypatch.setattr(probe, "fast94_epoch_seconds", lambda device="auto", threads=0: 100.0)
    assert main(["train", "--time-budget", "7", "--print-config"]) == 0
    printed = capsys.readouterr().out
    assert f"recipe: {recipe_for_budget(7, 100)[0]}" in printed and "time_budget: 7" in printed
    assert main(["train", "--data", str(tmp_path)]) == 2
    assert "--time-budget" in capsys.readouterr().err


def test_the_speed_probe_reads_the_fastest_timed_step(monkeypatch):
    from cifarlab.training import probe

    probe.fast94_epoch_seconds.cache_clear()
    probe.take_unbilled()
    # clock readings: the ledger's start; the warm-up step (5 s, not counted); three timed steps of 0.3 s, 1.0 s (the
    # cores shared with a process still ending) and 0.4 s; the ledger's end
    clock = iter([0.0, 0.0, 5.0, 5.0, 5.3, 5.3, 6.3, 6.3, 6.7, 7.0])
    monkeypatch.setattr(probe.time, "perf_counter", lambda: next(clock))
    assert probe.fast94_epoch_seconds("cpu", 1) == pytest.approx(0.3 * probe.EPOCH_IMAGES / probe.BATCH)
    assert probe.take_unbilled() == pytest.approx(7.0)  # the whole probe, warm-up included, is billed to the run
    probe.fast94_epoch_seconds.cache_clear()


def test_the_speed_probe_times_fast94_and_leaves_the_process_as_it_was(monkeypatch, capsys):
    from cifarlab.cli import main
    from cifarlab.training import probe

    probe.fast94_epoch_seconds.cache_clear()
    probe.take_unbilled()
    rng, threads = torch.get_rng_state(), torch.get_num_threads()
    with torch.no_grad():  # the probe trains whatever the caller's autograd mode
        seconds = probe.fast94_epoch_seconds("cpu", 1)
    spent = probe.take_unbilled()  # what the run it chose for takes off its budget, once
    assert 0 < spent < 600 and probe.take_unbilled() == 0
    assert 0 < seconds < 1e5 and seconds == probe.fast94_epoch_seconds("cpu", 1)  # measured once, then cached
    assert probe.take_unbilled() == 0  # a cached answer cost nothing
    assert torch.equal(torch.get_rng_state(), rng) and torch.get_num_threads() == threads
    assert torch.is_grad_enabled()
    assert main(["train", "--time-budget", "7", "--device", "tpu", "--print-config"]) == 2
    assert "unknown device 'tpu'" in capsys.readouterr().err
    monkeypatch.setenv("WORLD_SIZE", "2")  # ranks could time themselves into different recipes: refused
    probe.fast94_epoch_seconds.cache_clear()
    assert main(["train", "--time-budget", "7", "--print-config"]) == 2
    err = capsys.readouterr().err.strip()
    assert "name the recipe" in err and len(err.splitlines()) == 1
    assert main(["train", "--recipe", "fast94", "--time-budget", "7", "--print-config"]) == 0  # a recipe named: fine
    monkeypatch.delenv("WORLD_SIZE")
    capsys.readouterr()

    def out_of_memory(dev):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\n(details)")

    for threads in ("true", "1000000"):  # refused by validation before anything is timed (a million would crash)
        assert main(["train", "--time-budget", "7", "--threads", threads, "--print-config"]) == 2
        assert "config key 'threads'" in capsys.readouterr().err
    monkeypatch.setattr(probe, "_time_steps", out_of_memory)
    assert main(["train", "--time-budget", "7", "--threads", "1", "--print-config"]) == 2
    err = capsys.readouterr().err.strip()
    assert "CUDA out of memory. Tried to allocate 2.00 GiB" in err and "--recipe" in err and len(err.splitlines()) == 1
    probe.fast94_epoch_seconds.cache_clear()


@pytest.mark.parametrize("d", [-2, -1, 1, 2])
@pytest.mark.parametrize("channels_last", [False, True])
def test_tta_moves_views_as_shift_does_and_keeps_the_memory_format(d, channels_last):
    from cifarlab.data.augment import shift
    from cifarlab.training.engine import _moved

    x = torch.randn(3, 3, 8, 8)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    moved = _moved(x, d)
    assert torch.equal(moved, shift(x, torch.full((3,), d), torch.full((3,), d), mode="reflect"))
    assert moved.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def test_newton_schulz_steps_and_bf16_arithmetic():
    torch.manual_seed(0)
    g = torch.randn(32, 96)
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g / (g.norm() + 1e-7)
    for _ in range(3):  # three iterations by hand
        s = x @ x.T
        x = a * x + (b * s + c * s @ s) @ x
    assert torch.allclose(orthogonalize(g, steps=3), x, atol=1e-6)
    half = orthogonalize(g, steps=3, dtype=torch.bfloat16)
    assert half.dtype == torch.float32 and torch.allclose(half, x, atol=0.05)
    cfg = make_config(optimizer="muon", muon_ns_steps=3, muon_ns_precision="bf16")
    from cifarlab.training.optim import make_optimizer

    opt = make_optimizer(create_model("fast94"), cfg)
    assert opt.ns == {"steps": 3, "dtype": torch.bfloat16}
    for bad in ({"muon_ns_steps": 0}, {"muon_ns_precision": "fp16"}):
        with pytest.raises(CifarlabError, match="muon_ns"):
            make_config(optimizer="muon", **bad)


class _StepClock(cifarlab.Callback):
    """A clock that moves only with the optimizer steps, each 1/2.5 of an epoch's share of a 60-s budget, so a
    budget's run has the same timeline on any machine under any load."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now

    def on_step_end(self, trainer, step_log) -> None:
        self.now += 60 / (2.5 * trainer.steps_per_epoch)


def test_under_a_budget_the_resize_schedule_follows_the_clock(tmp_path, monkeypatch):
    import cifarlab.training.clock as clock_module
    import cifarlab.training.setup as setup_module
    import cifarlab.training.trainer as trainer_module

    make_cifar10_python(tmp_path, per_batch=100, test=10)
    # planned: 2 epochs, the first at 16 px. The 1-minute budget holds 2.5 epochs: epoch 2 starts at 40% of it
    # (the schedule's epoch 0.8: 16 px), epoch 3 at 80% (epoch 1.6: 32 px)
    clock = _StepClock()
    for module in (clock_module, setup_module, trainer_module):
        monkeypatch.setattr(module, "time", clock)
    res = cifarlab.train(data=str(tmp_path), model="resnet_small", epochs=2, batch_size=25, val_every=0,
                         resize_schedule=[[0, 16], [1, 32]], time_budget=1, out=str(tmp_path / "r"),
                         progress=False, report=False, callbacks=[clock])
    monkeypatch.undo()
    sizes = [r["image_size"] for r in _rows(res.run_dir)]
    # two epochs at 16 px where the planned count would give one: the sizes follow the clock, not the epoch count
    assert sizes == [16, 16, 32]
    plain = cifarlab.train(data=str(tmp_path), model="resnet_small", epochs=3, batch_size=25, val_every=0,
                           resize_schedule=[[0, 16], [2, 24]], out=str(tmp_path / "p"), progress=False,
                           report=False)
    assert [r["image_size"] for r in _rows(plain.run_dir)] == [16, 16, 24]


class _SeeSetup(cifarlab.Callback):
    def on_fit_start(self, trainer) -> None:
        self.setup = trainer.clock.setup


def test_the_seconds_spent_choosing_a_recipe_come_off_the_budget(tmp_path, monkeypatch):
    from cifarlab.training import probe

    make_cifar10_python(tmp_path, per_batch=20, test=10)
    probe.take_unbilled()
    monkeypatch.setattr(probe._Ledger, "unbilled", 12.0)  # as if the probe had timed fast94 for 12 s before this run
    seen = _SeeSetup()
    cifarlab.train(data=str(tmp_path), model="resnet_small", epochs=1, batch_size=25, val_every=0, time_budget=0.05,
                   out=str(tmp_path / "r"), progress=False, report=False, callbacks=[seen])
    assert 12.0 <= seen.setup < 12.0 + 60  # the probe's seconds and the data's, taken off the (3-s) budget
    assert probe.take_unbilled() == 0  # charged once: the next run owes nothing


def test_a_budget_too_short_for_the_runs_fixed_costs_says_so_at_the_end(tmp_path, monkeypatch, caplog):
    from cifarlab.training import probe

    make_cifar10_python(tmp_path, per_batch=20, test=10)
    caplog.set_level(logging.WARNING, logger="cifarlab")
    probe.take_unbilled()
    monkeypatch.setattr(probe._Ledger, "unbilled", 12.0)  # 12 s spent before training, against a 3-s budget
    res = cifarlab.train(data=str(tmp_path), model="resnet_small", epochs=1, batch_size=25, val_every=0,
                         time_budget=0.05, out=str(tmp_path / "r"), progress=False, report=False)
    over = [r.getMessage() for r in caplog.records if "over its --time-budget of 0.05 minutes" in r.getMessage()]
    assert len(over) == 1, caplog.text
    fixed = float(re.search(r"; (\d+) s of it went to reading", over[0]).group(1))
    need = float(re.search(r"a budget of at least ([\d.]+) minutes holds them", over[0]).group(1))
    assert fixed >= 12 and 2 * (fixed - 0.5) / 60 <= need <= 2 * (fixed + 0.5) / 60 + 0.1  # rounded up to 0.1 min
    assert res.summary["final"]["val_top1"] >= 0  # the run itself ends as before, evaluated and saved

    def said(budget_min, setup, elapsed, train_seconds):
        caplog.clear()
        clock = SimpleNamespace(budget_s=budget_min * 60, setup=setup, elapsed=lambda: elapsed)
        run = SimpleNamespace(clock=clock, cfg=SimpleNamespace(time_budget=budget_min))
        Trainer._warn_if_over_budget(run, {"train_seconds": train_seconds})
        return caplog.text

    assert said(10, 5, 612, 580) == ""  # 617 s of a 600-s budget: within 3%, nothing to say
    assert said(0, 5, 612, 580) == ""  # no budget
    late = said(10, 5, 655, 580)  # 660 s: 10% over, but the fixed costs (80 s) fit in half the budget: no advice
    assert "took 660 s, 10% over its --time-budget of 10 minutes; 80 s of it" in late and "at least" not in late
    tiny = said(0.001, 1.0, 0.2, 0.1)  # 1.1 s of fixed costs: the advice rounds up, never "at least 0.0 minutes"
    assert "a budget of at least 0.1 minutes holds them" in tiny


@pytest.mark.parametrize("margin", [0.0, 0.5])
def test_tta_and_plain_logits_score_the_plain_view_once(margin):
    from cifarlab.training.engine import tta_and_plain_logits

    table = torch.tensor([[10.0, 0.0], [0.0, 0.0], [1.0, 0.0]])
    x = _images(3)
    model = _Fixed(table, shift=1.0)
    plain, alone = model(x), tta_logits(model, x, "flip_translate", margin)
    model.seen.clear()
    both, plain_out = tta_and_plain_logits(model, x, "flip_translate", margin)
    assert torch.equal(plain_out, plain)
    assert torch.allclose(both, alone)
    # one plain pass over every image, then the five other views (over the unsure ones with a margin)
    assert model.seen == [3] + [3 if margin == 0 else 2] * (len(TTA_VIEWS["flip_translate"]) - 1)
    none, none_plain = tta_and_plain_logits(model, x, "none", margin)
    assert torch.equal(none, plain) and torch.equal(none_plain, plain)


def test_an_evaluation_with_plain_too_gives_both_figures_from_one_set_of_passes():
    from cifarlab.data import BatchLoader
    from cifarlab.data.formats import ImageSet
    from cifarlab.training.engine import evaluate_model

    torch.manual_seed(0)
    images = torch.randint(0, 256, (40, 3, 32, 32), dtype=torch.uint8)
    loader = BatchLoader(ImageSet(images, torch.randint(0, 10, (40,))), 16, mean=[0.5] * 3, std=[0.25] * 3)
    model = create_model("resnet_small").eval()
    calls = []
    model.register_forward_hook(lambda m, i, o: calls.append(len(i[0])))
    plain = evaluate_model(model, loader, 10, tta_margin=0.3, return_outputs=True)
    tta = evaluate_model(model, loader, 10, tta="flip_translate", tta_margin=0.3)
    calls.clear()
    both = evaluate_model(model, loader, 10, tta="flip_translate", tta_margin=0.3, plain_too=True,
                          return_outputs=True)
    for key in ("loss", "top1", "top2", "top3", "unsure"):
        assert both["plain"][key] == pytest.approx(plain[key], abs=1e-6)
    for key in ("loss", "top1", "top2", "top3"):
        assert both[key] == pytest.approx(tta[key], abs=1e-6)
    assert torch.equal(both["plain"]["confusion"], plain["confusion"])
    assert torch.allclose(both["plain"]["probs"], plain["probs"], atol=1e-6)
    unsure_images = round(plain["unsure"] * 40)
    assert sum(calls) == 40 + unsure_images * (len(TTA_VIEWS["flip_translate"]) - 1)  # no second plain pass


def test_a_run_scores_its_last_val_pass_and_its_final_tta_in_one_evaluation(tmp_path, monkeypatch):
    from cifarlab.training import trainer as trainer_module

    make_cifar10_python(tmp_path, per_batch=20, test=10)
    calls = []
    real = trainer_module.evaluate_model
    monkeypatch.setattr(trainer_module, "evaluate_model", lambda *a, **k: calls.append(k) or real(*a, **k))
    res = cifarlab.train(data=str(tmp_path), model="resnet_small", epochs=2, batch_size=25, val_every=0,
                         tta="flip_translate", tta_margin=0.5, out=str(tmp_path / "r"), progress=False,
                         report=False)
    assert [(k.get("tta"), k.get("plain_too")) for k in calls] == [("flip_translate", True)]
    # the figures are those of separate evaluations of the final weights
    ckpt = torch.load(res.run_dir / "last.pt", weights_only=False)
    ev = cifarlab.evaluate(res.run_dir / "last.pt", data=str(tmp_path), split="val", tta="flip_translate",
                           tta_margin=0.5)
    assert res.summary["final_tta"]["val_top1"] == pytest.approx(ev["top1"], abs=1e-6)
    assert _rows(res.run_dir)[-1]["val_top1"] == pytest.approx(ckpt["metrics"]["val_top1"])


def test_the_reserve_for_the_final_evaluation_counts_one_plain_pass_and_the_unsure_views():
    from types import SimpleNamespace

    from cifarlab.training.clock import Clock
    from cifarlab.training.trainer import UNSURE_PRIOR, Trainer

    def reserve(row, **cfg):
        cfg = make_config(tta="flip_translate", **cfg)
        stub = SimpleNamespace(cfg=cfg, clock=Clock(10.0, 100, 0.0, False),
                               parts=SimpleNamespace(val_loader=SimpleNamespace(labels=torch.zeros(300))))
        Trainer._keep_time_for_evaluation(stub, row)
        return stub.clock.reserve

    views = len(TTA_VIEWS["flip_translate"]) - 1
    timed = {"train_time": 60.0, "images": 900, "eval_time": 2.0}
    assert reserve(timed) == pytest.approx(2.0 * (1 + views))  # every image gets the views
    assert reserve({**timed, "val_unsure": 0.2}, tta_margin=0.5) == pytest.approx(2.0 * (1 + views * 0.2))
    # no val pass timed yet: a pass is a third of training's time per image, the unsure share the prior
    untimed = {"train_time": 60.0, "images": 900}
    assert reserve(untimed, tta_margin=0.5) == pytest.approx(60 / 900 * 300 / 3 * (1 + views * UNSURE_PRIOR))
