"""TerminateOnNaN reads the batch loss and stops or raises on NaN / inf."""

import math

import pytest
import torch
from torch import nn

from fitkit.callbacks import CallbackList, TerminateOnNaN
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
