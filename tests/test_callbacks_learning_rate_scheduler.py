"""LearningRateScheduler on a torch optimizer with one or several param groups."""

import math

import numpy as np
import pytest
import torch
from conftest import labelled_data
from torch import nn

import fitkit
from fitkit.callbacks import CallbackList, LearningRateScheduler, ReduceLROnPlateau


def model_with(*lrs, tensor_lr=False):
    model = nn.Module()
    model.a, model.b = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
    params = [model.a, model.b]
    groups = [{"params": [p], "lr": torch.tensor(lr) if tensor_lr else lr} for p, lr in zip(params, lrs)]
    model.optimizer = torch.optim.Adam(groups)
    return model


def run(cb, model, n):
    cbs = CallbackList([cb], model=model)
    cbs.on_train_begin()
    seen, logged = [], []
    for epoch in range(n):
        cbs.on_epoch_begin(epoch)
        seen.append([float(g["lr"]) for g in model.optimizer.param_groups])
        logs = {"loss": 1.0}
        cbs.on_epoch_end(epoch, logs)
        logged.append(logs["learning_rate"])
    cbs.on_train_end()
    return seen, logged


def test_schedule_of_epoch_and_lr_sets_every_group_at_epoch_begin():
    model = model_with(0.1, 0.01)
    seen, logged = run(LearningRateScheduler(lambda epoch, lr: lr if epoch < 2 else lr * 0.5), model, 4)
    assert seen == [[0.1, 0.01], [0.1, 0.01], [0.05, 0.005], [0.025, 0.0025]]
    assert logged == [0.1, 0.1, 0.05, 0.025]  # the first group's lr of each epoch


def test_schedule_of_epoch_alone():
    model = model_with(0.1, 0.01)
    seen, _ = run(LearningRateScheduler(lambda epoch: 1.0 / (epoch + 1)), model, 3)
    assert seen == [[1.0, 1.0], [0.5, 0.5], [1 / 3, 1 / 3]]


def test_keras_docs_schedule_with_numpy_and_tensor_results():
    def schedule(epoch, lr):
        return lr if epoch < 1 else lr * np.exp(-0.1)

    model = model_with(0.01, 0.01)
    seen, _ = run(LearningRateScheduler(schedule), model, 3)
    assert seen[2][0] == pytest.approx(0.01 * math.exp(-0.2))
    seen, _ = run(LearningRateScheduler(lambda e, lr: torch.tensor(0.25)), model_with(0.1, 0.1), 1)
    assert seen == [[0.25, 0.25]]


def test_tensor_lrs_stay_tensors():
    model = model_with(0.1, 0.1, tensor_lr=True)
    run(LearningRateScheduler(lambda e, lr: 0.3), model, 1)
    assert all(isinstance(g["lr"], torch.Tensor) for g in model.optimizer.param_groups)
    assert model.optimizer.param_groups[0]["lr"].item() == pytest.approx(0.3)


def test_a_schedule_that_returns_no_number_is_an_error():
    with pytest.raises(ValueError, match="should be a float.*'fast'"):
        run(LearningRateScheduler(lambda e, lr: "fast"), model_with(0.1, 0.1), 1)
    with pytest.raises(TypeError, match="schedule must be a callable"):
        LearningRateScheduler(0.1)


def test_a_type_error_inside_the_schedule_is_not_swallowed():
    def schedule(epoch, lr):
        return lr + "oops"

    with pytest.raises(TypeError, match="unsupported operand"):
        run(LearningRateScheduler(schedule), model_with(0.1, 0.1), 1)


def test_verbose_message(capsys):
    run(LearningRateScheduler(lambda e, lr: 0.5, verbose=1), model_with(0.1, 0.1), 1)
    assert "Epoch 1: LearningRateScheduler setting learning rate to 0.5." in capsys.readouterr().out


def test_learning_rate_access_lives_with_the_optimizers():
    from fitkit.optimizers import current_lr, group_lr, optimizer_of, set_group_lr

    model = model_with(0.1, 0.2, tensor_lr=True)
    opt = optimizer_of(model, "LearningRateScheduler")
    assert opt is model.optimizer
    assert current_lr(opt) == pytest.approx(0.1) and group_lr(opt.param_groups[1]) == pytest.approx(0.2)
    set_group_lr(opt.param_groups[0], 0.05)
    assert isinstance(opt.param_groups[0]["lr"], torch.Tensor) and current_lr(opt) == pytest.approx(0.05)
    plain = model_with(0.1, 0.2).optimizer
    set_group_lr(plain.param_groups[1], 0.5)
    assert plain.param_groups[1]["lr"] == 0.5
    with pytest.raises(TypeError, match="LearningRateScheduler needs model.optimizer to be a torch.optim.Optimizer"):
        optimizer_of(nn.Module(), "LearningRateScheduler")


# ----- against a scheduler given to compile -----

@pytest.mark.parametrize("make", [
    lambda: LearningRateScheduler(lambda epoch, lr: lr * 0.5),
    lambda: ReduceLROnPlateau(monitor="loss", patience=0),
])
def test_a_compile_scheduler_and_an_lr_callback_are_refused_before_any_step(make):
    x, y = labelled_data()
    model = fitkit.Sequential(nn.Linear(4, 1), nn.Sigmoid())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model.compile(optimizer=optimizer, loss="binary_crossentropy",
                  scheduler=torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    callback = make()
    with pytest.raises(TypeError, match=rf"{type(callback).__name__}: got a model compiled with scheduler=StepLR"):
        model.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[callback])
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert optimizer.state_dict()["state"] == {} and optimizer.param_groups[0]["lr"] == 0.1
