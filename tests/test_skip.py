"""Skipping easy images (skip_easy): which images an epoch keeps, their loss weights, the loader's subset, resume."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

import cifarlab
from cifarlab.config import make_config
from cifarlab.data import BatchLoader
from cifarlab.data.formats import ImageSet
from cifarlab.data.loader import epoch_generator
from cifarlab.errors import CifarlabError
from cifarlab.training.checkpoint import load_checkpoint
from cifarlab.training.skip import EasySkipper
from datagen import make_cifar10_python


def test_below_mean_images_are_skipped_with_the_probability_and_the_kept_ones_weigh_more():
    skip = EasySkipper(8, probability=0.5, until=0.875, seed=3)
    skip.scores = torch.tensor([0.1, 0.2, 0.3, 5.0, 6.0, 0.05, float("inf"), 0.4])  # image 6 never trained on
    skip.begin_epoch(4, progress=0.5)
    seen = skip.scores[torch.isfinite(skip.scores)]
    easy = torch.isfinite(skip.scores) & (skip.scores < seen.mean())  # mean 1.72: images 0, 1, 2, 5, 7
    draw = torch.rand(8, generator=epoch_generator(3, 4, stream=3))
    skipped = easy & (draw < 0.5)
    assert torch.equal(skip.kept, (~skipped).nonzero().squeeze(1))
    assert 0 < int(skipped.sum()) < int(easy.sum())  # this seed skips some easy images and keeps others
    assert {3, 4, 6} <= set(skip.kept.tolist())  # hard images and unseen ones always train
    assert torch.equal(skip.weights, torch.where(easy & ~skipped, 2.0, 1.0))


@pytest.mark.parametrize("progress, scores", [(0.875, [0.1, 5.0]), (0.95, [0.1, 5.0]),
                                              (0.0, [float("inf"), float("inf")])])
def test_every_image_trains_at_weight_one_after_until_and_before_any_score(progress, scores):
    skip = EasySkipper(2, probability=0.9, until=0.875, seed=0)
    skip.scores = torch.tensor(scores)
    skip.weights.fill_(7.0)
    skip.begin_epoch(1, progress)
    assert skip.kept is None and torch.equal(skip.weights, torch.ones(2))


def test_a_restored_skipper_keeps_its_epochs_choice_and_a_new_epoch_chooses_again():
    skip = EasySkipper(100, probability=0.5, until=1.0, seed=0)
    skip.scores = torch.linspace(0, 1, 100)
    skip.begin_epoch(2, progress=0.1)
    restored = EasySkipper(100, probability=0.5, until=1.0, seed=0)
    restored.load_state_dict(skip.state_dict())
    restored.scores[:] = 0.5  # scores move during the epoch; the epoch's images do not
    restored.begin_epoch(2, progress=0.99)
    assert torch.equal(restored.kept, skip.kept) and torch.equal(restored.weights, skip.weights)
    restored.begin_epoch(3, progress=0.2)
    assert restored.kept is None  # all scores equal: none is below the mean


def test_the_loss_trains_on_weighted_losses_logs_the_plain_mean_and_scores_each_image():
    skip = EasySkipper(6, probability=0.75, until=1.0, seed=0)
    skip.weights = torch.tensor([1.0, 4.0, 1.0, 4.0, 1.0, 1.0])
    logits, y, idx = torch.randn(3, 10), torch.tensor([1, 2, 3]), torch.tensor([5, 1, 3])
    trained, shown = skip.loss(logits, y, idx, label_smoothing=0.2)
    each = F.cross_entropy(logits, y, label_smoothing=0.2, reduction="none")
    assert torch.allclose(trained, (each * torch.tensor([1.0, 4.0, 4.0])).mean())
    assert torch.allclose(shown, each.mean())
    assert torch.allclose(skip.scores[idx], each) and torch.isinf(skip.scores[[0, 2, 4]]).all()


def test_the_loader_gives_a_subset_in_the_epochs_order_with_each_images_index():
    images = torch.arange(23, dtype=torch.uint8).view(23, 1, 1, 1).expand(23, 3, 8, 8).contiguous()
    data = ImageSet(images, torch.arange(23) % 10, [str(c) for c in range(10)])
    loader = BatchLoader(data, 4, mean=[0, 0, 0], std=[1, 1, 1], shuffle=True, seed=1)
    subset = torch.tensor([0, 3, 4, 9, 10, 11, 15, 22, 21])
    batches = list(loader.indexed_epoch(2, subset=subset))
    order = loader.order(2)
    expected = order[torch.isin(order, subset)]
    assert [len(i) for i, _, _ in batches] == [4, 4, 1] and loader.batches(9) == 3
    assert torch.equal(torch.cat([i for i, _, _ in batches]), expected)
    for idx, x, y in batches:  # each image and label is the one its index names
        assert torch.equal((x[:, 0, 0, 0] * 255).round().long(), idx) and torch.equal(y, idx % 10)
    resumed = list(loader.indexed_epoch(2, start_batch=1, subset=subset))
    assert torch.equal(torch.cat([i for i, _, _ in resumed]), expected[4:])
    assert [x.tolist() for x, _ in loader.epoch(2)] == [x.tolist() for _, x, _ in loader.indexed_epoch(2)]


@pytest.mark.parametrize("bad, message", [({"skip_easy": 0.5, "time_budget": 0}, "needs a --time-budget"),
                                          ({"skip_easy": 1.0}, "skip_easy"), ({"skip_easy": -0.1}, "skip_easy"),
                                          ({"skip_easy": float("nan")}, "skip_easy"),
                                          ({"skip_easy_until": 0}, "skip_easy_until"),
                                          ({"skip_easy": 0.5, "select_keep": 0.5}, "select_keep"),
                                          ({"skip_easy": 0.5, "teacher": "t.pt"}, "teacher")])
def test_bad_skip_settings_are_one_line(bad, message):
    with pytest.raises(CifarlabError, match=message):
        make_config(model="fast94", **{"time_budget": 1, **bad})


def test_skipping_is_refused_under_torchrun_before_the_data_is_read(tmp_path):
    from types import SimpleNamespace

    from cifarlab.training.setup import build_parts

    cfg = make_config(model="fast94", skip_easy=0.5, time_budget=1, data=str(tmp_path / "never-read"))
    with pytest.raises(CifarlabError, match="torchrun"):
        build_parts(cfg, SimpleNamespace(enabled=True, world=2, rank=0), torch.device("cpu"), resuming=False)


def test_a_budgeted_run_skips_easy_images_after_its_first_epoch_and_resumes_with_the_epochs_choice(tmp_path):
    make_cifar10_python(tmp_path / "data", per_batch=20, test=10)
    common = dict(data=str(tmp_path / "data"), model="fast94", model_args={"widths": [8, 16, 16]},
                  time_budget=0.04, batch_size=20, skip_easy=0.6, skip_easy_until=1.0, progress=False,
                  report=False, deterministic=True, checkpoint_every=1, val_split=20, lr=0.05)
    run = cifarlab.train(out=str(tmp_path / "full"), **common)
    rows = [r for r in map(json.loads, (run.run_dir / "metrics.jsonl").read_text().splitlines())
            if r["type"] == "epoch"]
    assert len(rows) >= 3 and rows[0]["images"] == 80  # the first epoch scores every image
    assert all(r["images"] < 80 for r in rows[1:-1])  # later ones skip some (the last may be cut by the budget)
    assert all(r["train_loss"] > 0 for r in rows)

    saved = {}

    class StopInEpochTwo(cifarlab.Callback):
        def on_step_end(self, trainer, step_log):
            if trainer.epoch_state.epoch == 1 and trainer.epoch_state.batch == 1:
                saved["kept"] = trainer.parts.skipper.kept.clone()
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cifarlab.train(out=str(tmp_path / "cut"), callbacks=[StopInEpochTwo()], **common)
    assert torch.equal(load_checkpoint(tmp_path / "cut" / "last.pt")["skip"]["kept"], saved["kept"])

    class FirstStep(cifarlab.Callback):
        def on_step_end(self, trainer, step_log):
            saved.setdefault("resumed", (trainer.epoch_state.epoch, trainer.parts.skipper.kept.clone()))

    cifarlab.train(resume=str(tmp_path / "cut"), report=False, callbacks=[FirstStep()])
    epoch, kept = saved["resumed"]
    assert epoch == 1 and torch.equal(kept, saved["kept"])  # the resumed epoch trains the images it chose
