"""EarlyStopping driven by hand through CallbackList with a tiny model."""

import warnings

import pytest
import torch
from torch import nn

from fitkit.callbacks import CallbackList, EarlyStopping


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(2))
        self.register_buffer("count", torch.zeros(()))
        self.optimizer = torch.optim.SGD(self.parameters(), lr=0.1)
        self.stop_training = False
        self.stop_reason = None


def drive(cb, values, model=None, key="val_loss"):
    """Run epochs with the given monitored values; weights = epoch index. Returns (model, epochs run)."""
    model = model or Tiny()
    cbs = CallbackList([cb], model=model, params={"epochs": len(values), "steps": 1, "verbose": 0})
    model.stop_training, model.stop_reason = False, None
    cbs.on_train_begin()
    run = 0
    for epoch, v in enumerate(values):
        run += 1
        with torch.no_grad():
            model.w.fill_(epoch)
            model.count.fill_(epoch)
        cbs.on_epoch_end(epoch, {"loss": 1.0, key: v})
        if model.stop_training:
            break
    cbs.on_train_end()
    return model, run


def test_stops_after_patience_and_says_why():
    cb = EarlyStopping(patience=2)
    model, run = drive(cb, [1.0, 0.9, 0.95, 0.92, 0.5])
    assert run == 4 and cb.stopped_epoch == 3 and cb.best_epoch == 1 and cb.best == 0.9
    assert model.stop_training and model.stop_reason == "early_stopping"
    assert model.w[0].item() == 3  # no restore asked


def test_restores_best_weights_and_buffers_even_without_stopping():
    cb = EarlyStopping(patience=10, restore_best_weights=True)
    model, run = drive(cb, [1.0, 0.5, 0.7, 0.8])
    assert run == 4 and cb.stopped_epoch == 0
    assert model.w.tolist() == [1.0, 1.0] and model.count.item() == 1.0
    assert model.stop_reason is None


def test_best_weights_are_clones_on_the_same_device():
    cb = EarlyStopping(patience=5, restore_best_weights=True)
    model = Tiny()
    drive(cb, [1.0, 0.5], model)
    w = cb.best_weights["w"]
    assert isinstance(w, torch.Tensor) and w.device == model.w.device
    assert w.data_ptr() != model.w.data_ptr()
    with torch.no_grad():
        model.w.fill_(42)
    assert cb.best_weights["w"].tolist() == [1.0, 1.0]


def test_never_stops_at_epoch_zero_and_patience_zero_stops_on_first_non_improvement():
    cb = EarlyStopping(patience=0)
    _, run = drive(cb, [1.0, 1.0, 0.5])
    assert run == 2 and cb.stopped_epoch == 1


def test_min_delta_baseline_and_start_from_epoch():
    cb = EarlyStopping(patience=1, min_delta=0.1)
    _, run = drive(cb, [1.0, 0.95, 0.93])  # improvements smaller than min_delta do not count
    assert run == 2
    # Improvements that do not beat the baseline leave the count running (Keras semantics): with
    # patience 2 this stops at epoch 2, where without a baseline it would go on.
    cb = EarlyStopping(patience=2, baseline=0.5, restore_best_weights=True)
    model, run = drive(cb, [0.9, 0.8, 0.85, 0.7])
    assert run == 3 and cb.best_epoch == 1 and model.w[0].item() == 1
    _, run = drive(EarlyStopping(patience=2), [0.9, 0.8, 0.85, 0.7])
    assert run == 4
    cb = EarlyStopping(patience=0, start_from_epoch=3)
    _, run = drive(cb, [1.0, 2.0, 3.0, 4.0, 5.0])  # the warm-up epochs are not watched
    assert run == 5 and cb.best_epoch == 3


def test_max_mode_from_the_name():
    cb = EarlyStopping(monitor="val_accuracy", patience=0)
    _, run = drive(cb, [0.5, 0.6, 0.55], key="val_accuracy")
    assert run == 3 and cb.best == 0.6 and cb.stopped_epoch == 2


def test_auto_mode_that_cannot_tell_fails_at_construction():
    with pytest.raises(ValueError, match="mode='min'"):
        EarlyStopping(monitor="val_widgets")
    assert EarlyStopping(monitor="val_widgets", mode="max")._direction == "max"


def test_unknown_mode_warns_and_falls_back_to_auto_as_keras():
    with pytest.warns(UserWarning, match="mode 'lowest' is unknown"):
        cb = EarlyStopping(mode="lowest")
    assert cb._direction == "min"


def test_monitor_never_logged_warns_once_naming_the_logged_keys():
    cb = EarlyStopping(monitor="val_loss", patience=0)
    model = Tiny()
    cbs = CallbackList([cb], model=model)
    cbs.on_train_begin()
    with pytest.warns(UserWarning) as record:
        cbs.on_epoch_end(0, {"loss": 1.0, "accuracy": 0.5})
        cbs.on_epoch_end(1, {"loss": 0.9, "accuracy": 0.6})
    assert len(record) == 1
    msg = str(record[0].message)
    assert "'val_loss'" in msg and "loss, accuracy" in msg and "validation" in msg
    assert not model.stop_training


def test_epochs_without_the_monitor_are_skipped_silently_once_it_was_seen():
    cb = EarlyStopping(patience=1)
    model = Tiny()
    cbs = CallbackList([cb], model=model)
    cbs.on_train_begin()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cbs.on_epoch_end(0, {"loss": 1.0, "val_loss": 1.0})
        cbs.on_epoch_end(1, {"loss": 1.0})  # validation_freq=2, say
        cbs.on_epoch_end(2, {"loss": 1.0, "val_loss": 1.0})
    assert cb.wait == 1 and model.stop_training


def test_each_fit_starts_afresh():
    cb = EarlyStopping(patience=0)
    drive(cb, [1.0, 2.0])
    assert cb.stopped_epoch == 1
    model, run = drive(cb, [5.0, 4.0, 3.0])
    assert run == 3 and cb.stopped_epoch == 0 and cb.best == 3.0 and not model.stop_training


def test_state_dict_resumes_where_it_was():
    values = [1.0, 0.8, 0.9, 0.85, 0.95, 0.7, 0.9, 0.91, 0.92]
    whole = EarlyStopping(patience=3, restore_best_weights=True)
    model_a, run_a = drive(whole, values)

    first = EarlyStopping(patience=3, restore_best_weights=True)
    drive(first, values[:4])
    resumed = EarlyStopping(patience=3, restore_best_weights=True)
    resumed.load_state_dict(first.state_dict())
    model_b = Tiny()
    cbs = CallbackList([resumed], model=model_b)
    cbs.on_train_begin()  # keeps the loaded state
    for epoch in range(4, len(values)):
        with torch.no_grad():
            model_b.w.fill_(epoch)
        cbs.on_epoch_end(epoch, {"val_loss": values[epoch]})
        if model_b.stop_training:
            break
    cbs.on_train_end()
    assert (resumed.stopped_epoch, resumed.best_epoch, resumed.best, resumed.wait) == \
        (whole.stopped_epoch, whole.best_epoch, whole.best, whole.wait)
    assert model_b.w.tolist() == model_a.w.tolist()


def test_verbose_messages(capsys):
    cb = EarlyStopping(patience=0, verbose=1, restore_best_weights=True)
    drive(cb, [1.0, 2.0])
    out = capsys.readouterr().out
    assert "Epoch 2: early stopping" in out
    assert "Restoring model weights from the end of the best epoch: 1." in out
