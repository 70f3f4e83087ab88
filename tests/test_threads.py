"""fit(threads=...) (fitkit/threads.py): the count during fit, torch's count restored on every way out, and
threads="auto" a fixed rule of the step's size, so weights stay the same call after call and run after run."""

import pytest
import torch
from torch import nn

import fitkit
from conftest import regression_data, same_weights
from fitkit import threads
from fitkit.callbacks import Callback


@pytest.fixture(autouse=True)
def three_threads():
    """torch at a known count (3) during each test, whatever the machine has, and as it was afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    yield 3
    torch.set_num_threads(before)


class Counts(Callback):
    """torch's thread count at the end of every training batch, and at validation."""

    def __init__(self):
        super().__init__()
        self.train, self.test = [], []

    def on_train_batch_end(self, batch, logs=None):
        self.train.append(torch.get_num_threads())

    def on_test_batch_end(self, batch, logs=None):
        self.test.append(torch.get_num_threads())


def _tiny(seed=0):
    fitkit.set_seed(seed)
    model = fitkit.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Dropout(0.2), nn.Linear(8, 1))
    model.compile(optimizer="adam", loss="mse")
    return model


def _wide(seed=0):
    # 6 -> 1024 -> 1024 -> 1 at batch 32: 67 MFLOP per forward, enough for 16 threads by the rule
    fitkit.set_seed(seed)
    model = fitkit.Sequential(nn.Linear(6, 1024), nn.ReLU(), nn.Dropout(0.2), nn.Linear(1024, 1024), nn.ReLU(),
                              nn.Linear(1024, 1))
    model.compile(optimizer="adam", loss="mse")
    return model


def test_the_rule():
    assert threads.choose(640, 16) == 1  # the article's logistic regression
    assert threads.choose(51e6, 2) == 2 and threads.choose(51e6, 16) == 12  # the benchmark's MLP
    assert threads.choose(threads.FLOPS_PER_THREAD * 2 - 1, 16) == 1
    assert threads.choose(1e12, 3) == 3  # never more than torch had
    model = _tiny()
    x = torch.randn(32, 6)
    assert threads.forward_flops(model, x) == 2 * 32 * (6 * 8 + 8 * 1)  # matrix products: 2 * m * n * k


def test_auto_trains_a_small_model_on_one_thread_and_validates_on_it_then_restores_torchs_count():
    x, y = regression_data()
    seen = Counts()
    _tiny().fit(x, y, batch_size=16, epochs=2, validation_split=0.2, verbose=0, callbacks=[seen])
    assert set(seen.train) == {1} and set(seen.test) == {1} and len(seen.train) == 12
    assert torch.get_num_threads() == 3


def test_auto_gives_a_big_step_up_to_torchs_count_and_explicit_counts_and_none_are_obeyed():
    x, y = regression_data(n=64)
    for setting, expected in (("auto", 3), (2, 2), (5, 5), (None, 3)):
        seen = Counts()
        (_wide() if setting == "auto" else _tiny()).fit(x, y, batch_size=32, epochs=1, verbose=0, threads=setting,
                                                        callbacks=[seen])
        assert set(seen.train) == {expected}, setting
        assert torch.get_num_threads() == 3


def test_auto_decides_at_the_first_batch_of_a_dataloader_too():
    x, y = regression_data(n=64)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y)),
                                         batch_size=16)
    seen = Counts()
    _tiny().fit(loader, epochs=2, verbose=0, callbacks=[seen])
    assert seen.train == [1] * 8 and torch.get_num_threads() == 3


class Boom(Exception):
    pass


@pytest.mark.parametrize("error", [Boom, KeyboardInterrupt])
def test_torchs_count_comes_back_after_an_exception_or_ctrl_c(error):
    class Raise(Callback):
        def on_train_batch_end(self, batch, logs=None):
            assert torch.get_num_threads() == 1
            if batch == 2:
                raise error()

    x, y = regression_data()
    with pytest.raises(error):
        _tiny().fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[Raise()])
    assert torch.get_num_threads() == 3


def test_bad_values_are_refused_before_anything_changes():
    x, y = regression_data()
    model = _tiny()
    weights = [p.detach().clone() for p in model.parameters()]
    for bad in (0, -1, 1.5, "max", True):
        with pytest.raises(ValueError, match=rf"^threads: got {bad!r}; expected 'auto', a positive integer or None$"):
            model.fit(x, y, epochs=1, verbose=0, threads=bad)
    assert all(torch.equal(a, b) for a, b in zip(weights, model.parameters()))
    assert model.training_state.epoch == 0 and torch.get_num_threads() == 3


@pytest.mark.parametrize("make", [_tiny, _wide], ids=["one-thread", "three-threads"])
def test_the_same_weights_run_after_run_and_however_the_epochs_are_split(make):
    x, y = regression_data(n=96)
    fit = dict(batch_size=32, validation_split=0.25, verbose=0)
    once = make()
    once.fit(x, y, epochs=3, **fit)
    again = make()  # make() seeds everything again (dropout draws from torch's RNG)
    again.fit(x, y, epochs=3, **fit)
    split = make()
    split.fit(x, y, epochs=1, **fit)
    split.fit(x, y, epochs=3, initial_epoch=1, **fit)
    assert same_weights(once, again) and same_weights(once, split)
