"""However the epochs are spread over fit calls, the weights and the logs are the same, bit for bit."""

import random

import numpy as np
import pytest
import torch
from torch import nn

import fitkit
from conftest import regression_data, small_mlp
from fitkit import seed as seed_module


SCHEDULERS = {
    "step": (lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5), "epoch"),
    "per-step": (lambda opt: torch.optim.lr_scheduler.ExponentialLR(opt, 0.99), "step"),
    "plateau": (lambda opt: torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=0, factor=0.5), "epoch"),
}


def _model(scheduler, use_set_seed=True):
    if use_set_seed:
        fitkit.set_seed(0)
    else:  # torch.manual_seed alone: the data-order generator is drawn from torch's RNG at the first fit
        torch.manual_seed(0)
    model = small_mlp()
    factory, interval = SCHEDULERS[scheduler]
    model.compile(optimizer=fitkit.optimizers.SGD(learning_rate=0.05, momentum=0.9), loss="mse", metrics=["mae"],
                  scheduler=factory, scheduler_interval=interval)
    return model


def _train(splits, scheduler="step", use_set_seed=True, **fit_kwargs):
    """Train over the fit calls that end at each epoch in ``splits``; the model and the joined logs."""
    model = _model(scheduler, use_set_seed)
    x, y = regression_data()
    logs, epochs, start = {}, [], 0
    for end in splits:
        history = model.fit(x, y, batch_size=16, epochs=end, initial_epoch=start, validation_split=0.2, verbose=0,
                            **fit_kwargs)
        for key, values in history.history.items():
            logs.setdefault(key, []).extend(values)
        epochs += history.epoch
        start = end
    return model, logs, epochs


@pytest.mark.parametrize("scheduler, use_set_seed, fit_kwargs", [
    ("step", True, {}),
    ("per-step", False, {}),
    ("plateau", True, {"validation_freq": 2}),  # the plateau scheduler reads val_loss: validation must line up
], ids=["step-scheduler", "per-step-scheduler-manual-seed", "plateau-validation-freq"])
def test_one_call_two_calls_and_five_calls_give_the_same_weights_and_logs(scheduler, use_set_seed, fit_kwargs,
                                                                          monkeypatch):
    monkeypatch.setattr(seed_module, "_seed", None)
    one, logs_one, epochs_one = _train([5], scheduler, use_set_seed, **fit_kwargs)
    two, logs_two, epochs_two = _train([2, 5], scheduler, use_set_seed, **fit_kwargs)
    five, logs_five, epochs_five = _train([1, 2, 3, 4, 5], scheduler, use_set_seed, **fit_kwargs)
    for other in (two, five):
        for (name, a), b in zip(one.state_dict().items(), other.state_dict().values()):
            assert torch.equal(a, b), name
        assert one.optimizer.state_dict()["param_groups"] == other.optimizer.state_dict()["param_groups"]
    assert logs_one == logs_two == logs_five
    assert epochs_one == epochs_two == epochs_five == [0, 1, 2, 3, 4]
    assert len(logs_one["loss"]) == 5 and "val_loss" in logs_one


def test_validation_freq_counts_epochs_from_zero_as_keras_does(monkeypatch):
    monkeypatch.setattr(seed_module, "_seed", None)
    _, logs, _ = _train([1, 3], "step", validation_freq=2)
    assert len(logs["val_loss"]) == 1  # epoch index 1 only (the 2nd epoch), even though the 2nd call began there


def test_fit_draws_nothing_from_the_global_rngs_after_the_first_call(monkeypatch):
    # Without dropout a fit uses no global RNG; only the very first fit draws the model's data-order seed.
    monkeypatch.setattr(seed_module, "_seed", None)
    torch.manual_seed(0)
    model = fitkit.Sequential(nn.Linear(6, 1))
    model.compile(optimizer="sgd", loss="mse")
    x, y = regression_data()
    model.fit(x, y, epochs=1, verbose=0, validation_split=0.2)
    states = (torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy())
    model.fit(x, y, epochs=2, verbose=0, validation_split=0.2, shuffle=True)
    model.evaluate(x, y, verbose=0)
    assert torch.equal(states[0], torch.get_rng_state())
    assert states[1] == random.getstate() and np.array_equal(states[2], np.random.get_state()[1])
