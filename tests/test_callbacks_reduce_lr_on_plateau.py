"""ReduceLROnPlateau driven by hand with a tiny model and a torch optimizer."""

import pytest
import torch
from torch import nn

from fitkit.callbacks import CallbackList, ReduceLROnPlateau


class Tiny(nn.Module):
    def __init__(self, lrs=(0.1,), tensor_lr=False):
        super().__init__()
        self.a = nn.Parameter(torch.zeros(1))
        self.b = nn.Parameter(torch.zeros(1))
        params = [self.a, self.b]
        groups = [{"params": [p], "lr": torch.tensor(lr) if tensor_lr else lr}
                  for p, lr in zip(params, lrs)]
        if len(lrs) == 1:
            groups = [{"params": params, "lr": torch.tensor(lrs[0]) if tensor_lr else lrs[0]}]
        self.optimizer = torch.optim.Adam(groups, lr=lrs[0])
        self.stop_training = False


def run(cb, values, model=None):
    model = model or Tiny()
    cbs = CallbackList([cb], model=model)
    cbs.on_train_begin()
    logged = []
    for epoch, v in enumerate(values):
        logs = {"loss": 1.0, "val_loss": v}
        cbs.on_epoch_end(epoch, logs)
        logged.append(logs["learning_rate"])
    cbs.on_train_end()
    return model, logged


def lrs(model):
    return [float(g["lr"]) for g in model.optimizer.param_groups]


def test_factor_of_one_or_more_is_refused():
    with pytest.raises(ValueError, match="factor=1.0"):
        ReduceLROnPlateau(factor=1.0)
    with pytest.raises(ValueError, match="factor >= 1.0"):
        ReduceLROnPlateau(factor=2)


def test_reduces_after_patience_and_logs_the_lr_used_before_the_reduction():
    cb = ReduceLROnPlateau(factor=0.5, patience=2)
    model, logged = run(cb, [1.0, 1.0, 1.0, 1.0, 1.0])
    assert logged == [0.1, 0.1, 0.1, 0.05, 0.05]
    assert lrs(model) == [0.025]


def test_every_param_group_is_reduced_and_floored_at_min_lr():
    model = Tiny(lrs=(0.1, 0.004))
    cb = ReduceLROnPlateau(factor=0.1, patience=0, min_lr=0.001)
    run(cb, [1.0, 1.0], model)
    assert lrs(model) == pytest.approx([0.01, 0.001])  # 0.004 * 0.1 is below min_lr
    run(cb, [1.0, 1.0], model)
    assert lrs(model) == pytest.approx([0.001, 0.001])
    run(cb, [1.0, 1.0], model)  # both groups at the floor: nothing more happens
    assert lrs(model) == pytest.approx([0.001, 0.001])


def test_tensor_learning_rates_stay_tensors():
    model = Tiny(tensor_lr=True)
    run(ReduceLROnPlateau(factor=0.5, patience=0), [1.0, 1.0], model)
    lr = model.optimizer.param_groups[0]["lr"]
    assert isinstance(lr, torch.Tensor) and lr.item() == pytest.approx(0.05)


def test_cooldown_waits_before_counting_again():
    cb = ReduceLROnPlateau(factor=0.5, patience=1, cooldown=2)
    _, logged = run(cb, [1.0] * 7)
    # Reduced after epoch 1; epoch 2 is spent cooling down; in epoch 3 the counter reaches 0 and
    # that epoch already counts again (Keras semantics), so the next reduction comes after epoch 3.
    assert logged == [0.1, 0.1, 0.05, 0.05, 0.025, 0.025, 0.0125]
    cb = ReduceLROnPlateau(factor=0.5, patience=1, cooldown=0)
    _, logged = run(cb, [1.0] * 4)
    assert logged == [0.1, 0.1, 0.05, 0.025]


def test_min_delta_decides_what_is_an_improvement():
    cb = ReduceLROnPlateau(factor=0.5, patience=1, min_delta=0.1)
    model, _ = run(cb, [1.0, 0.95, 0.9])
    assert lrs(model) == pytest.approx([0.025])
    cb = ReduceLROnPlateau(monitor="val_accuracy", factor=0.5, patience=1)
    model = Tiny()
    cbs = CallbackList([cb], model=model)
    cbs.on_train_begin()
    for epoch, v in enumerate([0.5, 0.6, 0.7]):
        cbs.on_epoch_end(epoch, {"val_accuracy": v})
    assert lrs(model) == [0.1]  # accuracy rising: max mode from the name


def test_missing_monitor_warns_naming_the_logged_keys_and_still_logs_the_lr():
    cb = ReduceLROnPlateau(patience=0)
    model = Tiny()
    cbs = CallbackList([cb], model=model)
    cbs.on_train_begin()
    logs = {"loss": 1.0}
    with pytest.warns(UserWarning, match=r"'val_loss'.*Logged keys: loss, learning_rate"):
        cbs.on_epoch_end(0, logs)
    assert logs["learning_rate"] == 0.1 and lrs(model) == [0.1]


def test_without_an_optimizer_the_error_says_compile():
    cb = ReduceLROnPlateau()
    cb.set_model(nn.Linear(1, 1))
    with pytest.raises(TypeError, match="compile the model"):
        cb.on_epoch_end(0, {"val_loss": 1.0})


def test_extra_keras_arguments_are_ignored_with_a_warning():
    with pytest.warns(UserWarning, match="epsilon"):
        cb = ReduceLROnPlateau(epsilon=0.5)
    assert cb.min_delta == 1e-4


def test_state_dict_resumes_where_it_was():
    values = [1.0, 0.9, 0.9, 0.9, 0.95, 0.8, 0.8, 0.8, 0.8]
    whole, _ = run(ReduceLROnPlateau(factor=0.5, patience=2, cooldown=1), values)
    first_cb = ReduceLROnPlateau(factor=0.5, patience=2, cooldown=1)
    model, _ = run(first_cb, values[:4])
    second = ReduceLROnPlateau(factor=0.5, patience=2, cooldown=1)
    second.load_state_dict(first_cb.state_dict())
    cbs = CallbackList([second], model=model)
    cbs.on_train_begin()
    for epoch in range(4, len(values)):
        cbs.on_epoch_end(epoch, {"val_loss": values[epoch]})
    assert lrs(model) == lrs(whole)


def test_verbose_message(capsys):
    run(ReduceLROnPlateau(factor=0.5, patience=0, verbose=1), [1.0, 1.0])
    assert "Epoch 2: ReduceLROnPlateau reducing learning rate to 0.05." in capsys.readouterr().out
