"""TrainState: the best epoch, early stopping and a strict state dict; the metric table's directions."""

from __future__ import annotations

import pytest

from cifarlab.errors import CifarlabError
from cifarlab.metrics import METRICS, improves
from cifarlab.training.state import EpochState, TrainState


def _row(epoch: int, **metrics) -> dict:
    return {"type": "epoch", "epoch": epoch, "train_loss": 1.0, "elapsed": 10.0 * epoch, **metrics}


def test_record_epoch_keeps_the_best_and_counts_epochs_without_one():
    st = TrainState(metric="val_top1", patience=2)
    assert st.record_epoch(_row(1, val_top1=0.5)) is True
    assert st.record_epoch(_row(2, val_top1=0.4)) is False
    assert (st.best, st.best_epoch, st.bad_epochs, st.epoch, st.elapsed) == (0.5, 1, 1, 2, 20.0)
    assert not st.should_stop()
    st.record_epoch(_row(3, val_top1=0.5))  # equal is not better
    assert st.should_stop() and [r["epoch"] for r in st.history] == [1, 2, 3]


def test_val_loss_is_minimized_and_no_val_split_means_lowest_train_loss():
    st = TrainState(metric="val_loss")
    st.record_epoch(_row(1, val_loss=0.9))
    assert st.record_epoch(_row(2, val_loss=0.7)) and st.best == 0.7
    no_val = TrainState(metric="val_top1")
    no_val.record_epoch({**_row(1), "train_loss": 2.0})
    assert no_val.record_epoch({**_row(2), "train_loss": 1.5}) and no_val.best == -1.5
    assert not no_val.record_epoch({**_row(3), "train_loss": 1.7})
    assert TrainState(patience=0).should_stop() is False  # 0 = never


def test_state_dict_round_trip_is_exact_and_strict():
    st = TrainState()
    st.record_epoch(_row(1, val_top1=0.3))
    st.partial = EpochState(1, batch=3, loss_sum=2.5, seen=30, steps=[{"step": 9}])
    st.step = 12
    again = TrainState()
    again.load_state_dict(st.state_dict())
    assert again.state_dict() == st.state_dict() and again.partial == st.partial
    with pytest.raises(CifarlabError, match="train_state .* unknown extra"):
        again.load_state_dict({**st.state_dict(), "extra": 1})
    broken = st.state_dict()
    del broken["elapsed"]
    with pytest.raises(CifarlabError, match="missing elapsed"):
        again.load_state_dict(broken)


@pytest.mark.parametrize("metric", list(METRICS))
def test_every_metric_has_a_direction(metric):
    better, worse = (0.2, 0.8) if METRICS[metric] == "min" else (0.8, 0.2)
    assert improves(metric, better, worse) and not improves(metric, worse, better) and improves(metric, worse, None)
