"""Config precedence, validation and stats/splits that the config drives."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cifarlab.config import find_recipe, list_recipes, load_recipe, make_config
from cifarlab.data import channel_mean_std, stratified_split
from cifarlab.data.stats import grayscale_count
from cifarlab.errors import CifarlabError


def test_precedence_defaults_recipe_overrides():
    cfg = make_config("seed001_small")
    assert cfg.model == "resnet_small" and cfg.nesterov is True and cfg.batch_size == 64
    assert cfg.label_smoothing == 0.0  # default kept
    cfg = make_config("seed001_small", batch_size=32, lr=0.05)
    assert cfg.batch_size == 32 and cfg.lr == 0.05 and cfg.cyclic_mode == "exp_range"


@pytest.mark.parametrize("name", list_recipes())
def test_every_recipe_loads_and_builds_its_pipeline_and_model(name):
    from cifarlab.data import Pipeline
    from cifarlab.models.registry import check_model
    from cifarlab.training.setup import model_args_of

    cfg = make_config(name)
    Pipeline(cfg.augment)
    check_model(cfg.model, **model_args_of(cfg))  # every option the recipe passes is one the net takes
    assert cfg.recipe == name
    first = find_recipe(name).read_text().splitlines()[0]
    assert first.startswith("# Study" if name.startswith("seed") else "# ")  # `cifarlab recipes` shows this line


def test_seed000_pipeline_is_the_studys_order():
    names = [a["name"] for a in load_recipe("seed000_resnet9")["augment"]]
    assert names == ["color_jitter", "flip", "crop", "flip", "rotate", "crop"]


@pytest.mark.parametrize("overrides,match", [
    ({"lr": -0.1}, "'lr' must be >= 0"),
    ({"bogus": 1}, r"unknown config key 'bogus' \(cifarlab config lists every key\)"),
    ({"learning_rate": 1}, r"unknown config key 'learning_rate'; did you mean 'lr'\?"),
    ({"weight_decy": 1}, r"did you mean 'weight_decay'\?"),
    ({"epochs": "ten"}, "'epochs' expects int"),
    ({"optimizer": "lbfgs"}, "'optimizer' must be one of sgd, adam, adamw"),
    ({"mean": [0.5, 0.5]}, "'mean' must be 'auto' or a list of 3"),
    ({"augment": ["flip"]}, "'augment' item 0 must be a mapping"),
    ({"batch_size": 0}, "'batch_size' must be >= 1"),
])
def test_bad_values_name_the_key(overrides, match):
    with pytest.raises(CifarlabError, match=match):
        make_config(**overrides)


def test_exponent_floats_without_a_dot_are_numbers(tmp_path):
    # YAML 1.1 (PyYAML) reads 1e-3 as a string; a recipe, a sweep value or `--lr 1e-3` means the number
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: resnet_small\nlr: 1e-3\nweight_decay: 5e-4\n")
    cfg = make_config(str(recipe), label_smoothing="1E-1")
    assert (cfg.lr, cfg.weight_decay, cfg.label_smoothing) == (0.001, 0.0005, 0.1)
    with pytest.raises(CifarlabError, match="'lr' expects float, got 'fast'"):
        make_config(lr="fast")
    from cifarlab.cli import _parse_overrides
    assert make_config(**_parse_overrides(["--model", "resnet_small", "--lr", "1e12"])).lr == 1e12


def test_unknown_and_bad_recipe(tmp_path):
    with pytest.raises(CifarlabError, match="unknown recipe 'nope'; known recipes: .*seed000_resnet9"):
        make_config("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed")
    with pytest.raises(CifarlabError, match="not valid YAML"):
        make_config(str(bad))


def test_stratified_split_counts_and_determinism():
    labels = torch.arange(50_000) % 10
    tr, va = stratified_split(labels, 0.1, seed=0)
    assert len(tr) == 45_000 and len(va) == 5_000
    assert torch.bincount(labels[va]).tolist() == [500] * 10
    assert set(tr.tolist()).isdisjoint(va.tolist())
    assert torch.equal(va, stratified_split(labels, 0.1, seed=0)[1])
    assert not torch.equal(va, stratified_split(labels, 0.1, seed=1)[1])
    assert len(stratified_split(labels, 5000, seed=0)[1]) == 5000
    tr, va = stratified_split(labels, 0, seed=0)
    assert len(tr) == 50_000 and len(va) == 0


def test_mean_std_in_float64_match_numpy():
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (300, 3, 32, 32), dtype=np.uint8)
    mean, std = channel_mean_std(torch.from_numpy(imgs), chunk=64)
    x = imgs.astype(np.float64) / 255
    assert mean == pytest.approx(x.mean(axis=(0, 2, 3)).tolist(), abs=1e-12)
    assert std == pytest.approx(x.std(axis=(0, 2, 3)).tolist(), abs=1e-12)


def test_grayscale_count():
    imgs = torch.randint(0, 256, (5, 3, 4, 4), dtype=torch.uint8)
    imgs[1] = imgs[1, :1].expand(3, -1, -1)
    imgs[3] = imgs[3, 2:].expand(3, -1, -1)
    assert grayscale_count(imgs) == 2
