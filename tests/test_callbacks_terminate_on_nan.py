"""TerminateOnNaN reads the batch loss and stops or raises on NaN / inf."""

import math

import numpy as np
import pytest
import torch
from torch import nn

import fitkit
from fitkit.callbacks import BackupAndRestore, CallbackList, LambdaCallback, TerminateOnNaN
from fitkit.callbacks.terminate_on_nan import NaNLossError
from fitkit.logs import LazyLogs


def model():
    m = nn.Linear(1, 1)
    m.stop_training, m.stop_reason = False, None
    return m


def batches(cb, losses):
    m = model()
    cbs = CallbackList([cb], model=m)
    for b, loss in enumerate(losses):
        cbs.on_train_batch_end(b, LazyLogs(lambda loss=loss: {"loss": torch.tensor(loss)}))
        if m.stop_training:
            break
    return m, b


def test_finite_losses_go_on():
    m, last = batches(TerminateOnNaN(), [1.0, 0.5, 0.25])
    assert not m.stop_training and last == 2


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nan_or_inf_stops_with_a_reason(bad, capsys):
    m, last = batches(TerminateOnNaN(), [1.0, bad, 0.5])
    assert m.stop_training and m.stop_reason == "terminate_on_nan" and last == 1
    assert "Batch 1: Invalid loss, terminating training" in capsys.readouterr().out


def test_raise_error_raises_at_once():
    with pytest.raises(RuntimeError, match="NaN or Inf loss encountered at batch 1"):
        batches(TerminateOnNaN(raise_error=True), [1.0, math.nan])


def test_it_is_a_train_batch_hook_only():
    cbs = CallbackList([TerminateOnNaN()])
    assert cbs.has("on_train_batch_end") and not cbs.has("on_test_batch_end")



# ----- in fit -----

def _nan_fit(guard, tmp_path, seen):
    """Fit on data whose batch 1 holds a NaN, the guard first, then a recording callback and a backup."""
    x = np.ones((32, 2), dtype="float32")
    x[9] = np.nan  # batch 1 of size 8
    y = np.zeros((32, 1), dtype="float32")
    model = fitkit.Sequential(nn.Linear(2, 1))
    model.compile(optimizer="sgd", loss="mse")
    record = LambdaCallback(on_train_batch_end=lambda b, logs: seen.append(("batch", b)),
                            on_epoch_end=lambda e, logs: seen.append(("epoch_end", e)),
                            on_train_end=lambda logs: seen.append(("train_end",)))
    backup = BackupAndRestore(str(tmp_path / "backup"), save_freq=1)
    model.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0, callbacks=[guard, record, backup])
    return model


def test_in_fit_a_nan_stops_after_the_epoch_and_on_train_end_runs(tmp_path, capsys):
    seen = []
    model = _nan_fit(TerminateOnNaN(), tmp_path, seen)
    assert seen == [("batch", 0), ("batch", 1), ("epoch_end", 0), ("train_end",)]
    assert model.history.stop_reason == "terminate_on_nan" and model.history.epoch == [0]
    assert not (tmp_path / "backup" / "latest.pt").exists()  # training ended: the backup is cleaned up


def test_in_fit_raise_error_raises_at_once_and_no_on_train_end_runs(tmp_path):
    seen = []
    with pytest.raises(RuntimeError, match="NaN or Inf loss encountered at batch 1") as err:
        _nan_fit(TerminateOnNaN(raise_error=True), tmp_path, seen)
    assert isinstance(err.value, NaNLossError)
    # The guard comes first: the NaN batch reaches no later callback, and nothing ends the run.
    assert seen == [("batch", 0)]
    assert (tmp_path / "backup" / "latest.pt").exists()  # BackupAndRestore's on_train_end did not delete it
