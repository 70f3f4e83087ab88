"""The callbacks inside the real ``fit``, on scikit-learn's digits (shipped with sklearn, no download)."""

import csv

import numpy as np
import pytest
import torch
from torch import nn

import fitkit
from fitkit.callbacks import (
    EMA, CSVLogger, EarlyStopping, LambdaCallback, LearningRateScheduler, ModelCheckpoint,
    ReduceLROnPlateau, TerminateOnNaN,
)


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    rng = np.random.RandomState(0)
    idx = rng.permutation(len(x))[:600]
    return x[idx], y[idx].astype(np.int64)


def make_model(lr=1e-2, hidden=128):
    fitkit.set_seed(0)
    model = fitkit.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))
    model.compile(optimizer=torch.optim.Adam(model.parameters(), lr=lr),
                  loss=nn.CrossEntropyLoss(), metrics=["accuracy"], device="cpu")
    return model


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_early_stopping_restores_the_weights_of_the_best_epoch(digits):
    x, y = digits
    model = make_model(lr=3e-2, hidden=256)  # a big step on few samples: it overfits quickly
    per_epoch = []
    capture = LambdaCallback(on_epoch_end=lambda epoch, logs: per_epoch.append(snapshot(model)))
    stop = EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True)
    history = model.fit(x[:200], y[:200], validation_data=(x[300:], y[300:]), epochs=60,
                        batch_size=32, verbose=0, callbacks=[capture, stop])
    val = history.history["val_loss"]
    assert stop.stopped_epoch > 0 and len(history.epoch) == stop.stopped_epoch + 1 < 60
    assert history.stop_reason == "early_stopping"
    assert stop.best_epoch == int(np.argmin(val))
    best = per_epoch[stop.best_epoch]
    assert all(torch.equal(v, best[k]) for k, v in model.state_dict().items())
    restored = model.evaluate(x[300:], y[300:], verbose=0, return_dict=True)["loss"]
    assert restored == pytest.approx(val[stop.best_epoch], rel=1e-5)


def test_checkpoint_files_are_written_and_loadable(digits, tmp_path):
    x, y = digits
    model = make_model()
    ckpt = ModelCheckpoint(str(tmp_path / "ckpt" / "w-{epoch:02d}-{val_loss:.3f}.pt"),
                           save_weights_only=True)
    history = model.fit(x, y, validation_split=0.25, epochs=3, batch_size=64, verbose=0, callbacks=[ckpt])
    expected = [f"w-{e + 1:02d}-{v:.3f}.pt" for e, v in enumerate(history.history["val_loss"])]
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == expected
    fresh = make_model()
    fresh.load_state_dict(torch.load(tmp_path / "ckpt" / expected[-1], weights_only=True))
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), model.state_dict().values()))


def test_best_only_checkpoint_holds_the_best_epoch(digits, tmp_path):
    x, y = digits
    model = make_model(lr=3e-2, hidden=256)
    per_epoch = []
    capture = LambdaCallback(on_epoch_end=lambda epoch, logs: per_epoch.append(snapshot(model)))
    ckpt = ModelCheckpoint(str(tmp_path / "best.pt"), save_best_only=True, save_weights_only=True)
    history = model.fit(x[:200], y[:200], validation_data=(x[300:], y[300:]), epochs=8, batch_size=32,
                        verbose=0, callbacks=[capture, ckpt])
    best = per_epoch[int(np.argmin(history.history["val_loss"]))]
    saved = torch.load(tmp_path / "best.pt", weights_only=True)
    assert all(torch.equal(saved[k], v) for k, v in best.items())


def test_csv_rows_equal_the_history(digits, tmp_path):
    x, y = digits
    model = make_model()
    path = tmp_path / "log.csv"
    history = model.fit(x, y, validation_split=0.25, epochs=3, batch_size=64, verbose=0,
                        callbacks=[CSVLogger(path)])
    with open(path, newline="") as f:
        table = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in table] == history.epoch
    assert set(table[0]) == {"epoch"} | set(history.history)
    for key, values in history.history.items():
        assert [float(r[key]) for r in table] == values, key


def test_reduce_lr_on_plateau_shows_in_the_history(digits):
    x, y = digits
    model = make_model()
    # min_delta=10: after the first epoch (always "best so far") nothing counts as an improvement.
    reduce = ReduceLROnPlateau(monitor="loss", factor=0.5, patience=0, min_delta=10.0)
    history = model.fit(x, y, epochs=3, batch_size=64, verbose=0, callbacks=[reduce])
    # learning_rate is the lr each epoch trained with, logged before the reduction at its end
    assert history.history["learning_rate"] == pytest.approx([1e-2, 1e-2, 5e-3])
    assert model.optimizer.param_groups[0]["lr"] == pytest.approx(2.5e-3)


def test_learning_rate_scheduler_in_fit(digits):
    x, y = digits
    model = make_model()
    sched = LearningRateScheduler(lambda epoch, lr: 0.1 / (epoch + 1))
    history = model.fit(x, y, epochs=3, batch_size=64, verbose=0, callbacks=[sched])
    assert history.history["learning_rate"] == pytest.approx([0.1, 0.05, 0.1 / 3])


def test_terminate_on_nan_stops_with_its_reason(digits):
    x, y = digits
    model = make_model()
    x = x.copy()
    x[100] = np.nan  # the loss of the batch holding sample 100 is NaN
    history = model.fit(x, y, epochs=5, batch_size=64, shuffle=False, verbose=0,
                        callbacks=[TerminateOnNaN()])
    assert history.stop_reason == "terminate_on_nan" and history.epoch == [0]


def test_ema_weights_give_the_validation_numbers(digits):
    x, y = digits
    model = make_model()
    history = model.fit(x[:450], y[:450], validation_data=(x[450:], y[450:]), epochs=2, batch_size=32,
                        verbose=0, callbacks=[EMA(decay=0.9)])
    # use_ema_at_end: the model ends with the average, whose loss fit reported as val_loss
    val = model.evaluate(x[450:], y[450:], verbose=0, return_dict=True)
    assert val["loss"] == pytest.approx(history.history["val_loss"][-1], rel=1e-6)
