"""fit(epochs="auto"): fitkit's answer to "how many epochs?", and the wall-clock time budget."""

import time
import warnings

import numpy as np
import pytest
import torch
from sklearn.datasets import load_breast_cancer
from torch import nn

import fitkit
from fitkit.callbacks import Callback, EarlyStopping
from fitkit.trainer import auto_patience


def _cancer():
    x, y = load_breast_cancer(return_X_y=True)
    x = (x - x.mean(0)) / x.std(0)
    order = np.random.default_rng(0).permutation(len(x))
    return x[order].astype(np.float32), y[order]


def _model(seed=0):
    torch.manual_seed(seed)
    model = fitkit.Sequential(nn.Linear(30, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1))
    model.compile(optimizer=fitkit.optimizers.Adam(learning_rate=0.01), loss=nn.BCEWithLogitsLoss(),
                  metrics=["accuracy"])
    return model


def test_auto_patience_scales_with_steps_per_epoch():
    assert auto_patience(steps_per_epoch=15, max_epochs=1000) == 50   # ceil(1000/15) = 67, capped at 50
    assert auto_patience(steps_per_epoch=100, max_epochs=1000) == 10
    assert auto_patience(steps_per_epoch=10_000, max_epochs=1000) == 5
    assert auto_patience(steps_per_epoch=100, max_epochs=60) == 6     # a tenth of the cap
    assert auto_patience(steps_per_epoch=100, max_epochs=20) == 5     # never under 5


def test_auto_trains_until_val_loss_stops_improving_and_restores_the_best_epoch():
    x, y = _cancer()
    model = _model()
    weights = {}

    class Keep(Callback):
        def on_epoch_end(self, epoch, logs=None):
            weights[epoch] = [w.copy() for w in self.model.get_weights()]

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = model.fit(x, y, epochs="auto", batch_size=64, max_epochs=300, verbose=0, callbacks=[Keep()])
    said = [str(w.message) for w in caught if "epochs='auto'" in str(w.message)]
    assert len(said) == 1 and "validation_split=0.2" in said[0]
    assert "val_loss" in history.history
    ran = len(history.epoch)
    assert history.stop_reason == "early_stopping" and ran < 300
    patience = auto_patience(8, 300)  # floor(569 * 0.8) = 455 training samples / 64 -> 8 steps
    assert patience == 30
    best = history.best_epoch("val_loss")
    assert ran - 1 - best == patience  # stopped exactly `patience` epochs after the best
    assert history.restored_epoch == best
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), weights[best]))
    report = str(history.diagnose())
    assert f"epoch {best + 1}" in report


def test_auto_respects_max_epochs_and_the_users_own_early_stopping():
    x, y = _cancer()
    history = _model().fit(x, y, epochs="auto", max_epochs=3, validation_split=0.2, verbose=0)
    assert history.epoch == [0, 1, 2] and history.stop_reason == "epochs"
    mine = EarlyStopping(patience=1)
    history = _model().fit(x, y, epochs="auto", max_epochs=200, validation_split=0.2, verbose=0,
                           callbacks=[mine])
    assert history.stop_reason == "early_stopping" and mine.stopped_epoch == history.epoch[-1]


def test_auto_needs_validation_data_for_iterables():
    x, y = _cancer()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y)),
                                         batch_size=32)
    with pytest.raises(ValueError, match="epochs: 'auto' watches the validation loss"):
        _model().fit(loader, epochs="auto", verbose=0)
    with pytest.raises(ValueError, match="max_epochs: got 0"):
        _model().fit(x, y, epochs="auto", max_epochs=0, verbose=0)
    with pytest.raises(ValueError, match="epochs: got 'many'"):
        _model().fit(x, y, epochs="many", verbose=0)


def test_time_budget_stops_before_an_epoch_that_would_overrun():
    x, y = _cancer()
    ends = []

    class Slow(Callback):
        def on_epoch_end(self, epoch, logs=None):
            time.sleep(0.2)
            ends.append(time.perf_counter())

    started = time.perf_counter()
    history = _model().fit(x, y, epochs=100, time_budget=1.0, verbose=0, callbacks=[Slow()])
    elapsed = time.perf_counter() - started
    assert history.stop_reason == "time_budget"
    assert 1 <= len(history.epoch) <= 5
    longest = max(b - a for a, b in zip([started] + ends, ends))
    # it stops when the mean epoch would overrun, so it can only pass the budget by an epoch slower than the mean
    assert elapsed < 1.0 + longest
    with pytest.raises(ValueError, match="time_budget: got -1"):
        _model().fit(x, y, epochs=1, time_budget=-1, verbose=0)
