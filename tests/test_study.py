"""`cifarlab compare-to-study`: a run beside the figure of the study its recipe reproduces."""

from __future__ import annotations

import json

import pytest
import yaml

import cifarlab
from cifarlab.cli import main
from cifarlab.config import list_recipes, make_config
from cifarlab.training.callbacks import Callback


@pytest.mark.parametrize("recipe", [r for r in list_recipes() if r.startswith("seed")])
def test_every_study_recipe_names_its_study_and_figure(recipe):
    study = make_config(recipe).study
    assert study["id"] == recipe[4:7] and 0 < study["figure"] <= 100 and study["metric"]


def test_a_finished_run_beside_its_study(capsys, cifar10_dir, tmp_path):
    run = cifarlab.train("seed001_small", data=str(cifar10_dir), epochs=2, batch_size=50, out=str(tmp_path / "r"),
                         progress=False, report=False)
    assert main(["compare-to-study", str(run.run_dir), "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    last = run.history[-1]["val_top1"] * 100
    assert row["study"] == "001" and row["study_figure"] == 80.44 and row["finished"]
    assert row["final_val_top1"] == pytest.approx(last) and row["difference"] == pytest.approx(last - 80.44)
    assert main(["compare-to-study", str(run.run_dir)]) == 0
    text = capsys.readouterr().out
    assert "study 001: 80.44% test top-1 after 30 epochs" in text and "finished" in text and "JPEG" in text


class StopAfterEpoch1(Callback):
    def on_epoch_end(self, trainer, row):
        if row["epoch"] == 1:
            raise KeyboardInterrupt


def test_an_interrupted_run_says_where_it_stopped(capsys, cifar10_dir, tmp_path):
    with pytest.raises(KeyboardInterrupt):
        cifarlab.train("seed001_small", data=str(cifar10_dir), epochs=3, batch_size=50, out=str(tmp_path / "r"),
                       progress=False, report=False, callbacks=[StopAfterEpoch1()])
    assert main(["compare-to-study", str(tmp_path / "r")]) == 0
    assert "stopped after epoch 1 of 3" in capsys.readouterr().out


def test_a_run_without_a_study_or_no_run_is_one_line(capsys, cifar10_dir, tmp_path):
    cifarlab.train(model="resnet_small", data=str(cifar10_dir), epochs=1, batch_size=50, out=str(tmp_path / "r"),
                   progress=False, report=False)
    for target, words in ((tmp_path / "r", "names no study figure"), (tmp_path / "nothing", "not a run directory")):
        assert main(["compare-to-study", str(target)]) == 2
        err = capsys.readouterr().err
        assert words in err and err.count("\n") == 1, err


def test_a_run_from_before_recipes_carried_their_study_reads_it_from_the_recipe(capsys, cifar10_dir, tmp_path):
    run = cifarlab.train("seed001_medium", data=str(cifar10_dir), epochs=1, batch_size=50, out=str(tmp_path / "r"),
                         progress=False, report=False)
    config = run.run_dir / "config.yaml"
    saved = yaml.safe_load(config.read_text())
    del saved["study"]
    config.write_text(yaml.safe_dump(saved))
    assert main(["compare-to-study", str(run.run_dir), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["study_figure"] == 87.99


def test_a_figure_corrected_after_the_run_applies_to_it(capsys, cifar10_dir, tmp_path):
    """Study 001's figures were once read from the wrong epoch of its log; a run made then still compares with the
    corrected figure, and says which one its own config.yaml holds."""
    run = cifarlab.train("seed001_large", data=str(cifar10_dir), epochs=1, batch_size=50, out=str(tmp_path / "r"),
                         progress=False, report=False, model_args={"params": "100k"})
    config = run.run_dir / "config.yaml"
    saved = yaml.safe_load(config.read_text())
    saved["study"]["figure"] = 89.21
    config.write_text(yaml.safe_dump(saved))
    assert main(["compare-to-study", str(run.run_dir), "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["study_figure"] == 89.34 and row["run_config_figure"] == 89.21
    assert row["difference"] == pytest.approx(row["final_val_top1"] - 89.34)
    assert main(["compare-to-study", str(run.run_dir)]) == 0
    text = capsys.readouterr().out
    assert "study 001: 89.34%" in text and "config.yaml names 89.21%" in text


def test_fast_resnet_is_fast94_with_the_settings_measured_on_the_study_net():
    """The reproduction table's fast column: recipes/fast_resnet.yaml is the measured command
    (fast94 --model resnet_medium --lr 0.8 --weight-decay 0.0005 --bias-lr-scale 1), key for key."""
    import dataclasses

    from cifarlab.models import create_model

    ours = dataclasses.asdict(make_config("fast_resnet"))
    measured = dataclasses.asdict(make_config("fast94", model="resnet_medium", lr=0.8, weight_decay=0.0005,
                                              bias_lr_scale=1.0))
    differ = {k for k in ours if ours[k] != measured[k]}
    assert differ == {"recipe", "stem_bias_epochs"}
    assert not hasattr(create_model("resnet_medium"), "whiten")  # so fast94's stem_bias_epochs was a no-op there
