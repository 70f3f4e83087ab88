"""fitkit.epoch_iterator: which batches make each epoch, checked against tables worked out from Keras 3's
``keras/src/trainers/epoch_iterator.py`` (``_enumerate_iterator`` and ``__next__``) for each kind of source.

How a table is read from Keras's code, for data of N batches and ``steps_per_epoch`` S: the pass runs on
from epoch to epoch; before each step Keras checks ``steps_seen >= N`` and, if so, warns "Your input ran
out of data" and ends the epoch; after an epoch that reached ``steps_seen >= N`` the next epoch starts a
new pass. So N=5, S=2 gives 2, 2, 1 (warning), 2, 2, 1 (warning); N=3, S=5 gives 3 batches and a
warning every epoch. A pass of unknown length (an IterableDataset) is only known to end when a draw
fails: Keras then learns N as the steps counted including the failed one (N + 1), warns, and the next
epoch starts a new pass: 5 batches with S=3 gives 3, 2 (warning), 3, 2 (warning).
"""

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import fitkit
from fitkit import data
from fitkit.callbacks import Callback
from fitkit.epoch_iterator import EpochIterator


def _run(it, epochs):
    """Per epoch: the first sample index of every batch, and whether Keras's warning came."""
    table = []
    for _ in range(epochs):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            firsts = [int(b[1][0]) for _, _, batches in it.epoch() for b in batches]
        table.append((firsts, any("Your input ran out of data" in str(w.message) for w in caught)))
    return table


def _arrays(n, batch_size=1):
    return data.source(torch.arange(float(n)).unsqueeze(1), torch.arange(n), batch_size=batch_size)


class _Counting(torch.utils.data.IterableDataset):
    """An IterableDataset of n samples: a DataLoader over it has no length."""

    def __init__(self, n):
        self.n = n

    def __iter__(self):
        return iter([(torch.tensor([float(i)]), torch.tensor(i)) for i in range(self.n)])


def _loader(n, sized=True):
    ds = torch.utils.data.TensorDataset(torch.arange(float(n)).unsqueeze(1), torch.arange(n)) if sized \
        else _Counting(n)
    return data.source(torch.utils.data.DataLoader(ds, batch_size=1))


@pytest.mark.parametrize("make", [_arrays, _loader], ids=["arrays", "dataloader"])
def test_steps_per_epoch_below_and_above_a_known_pass(make):
    # N=5, S=2: the pass runs on into the next epoch and ends inside the third, which ends there.
    assert _run(EpochIterator(make(5), steps_per_epoch=2), 6) == [
        ([0, 1], False), ([2, 3], False), ([4], True), ([0, 1], False), ([2, 3], False), ([4], True)]
    # N=4, S=2: the pass ends with an epoch: no warning.
    assert _run(EpochIterator(make(4), steps_per_epoch=2), 4) == [
        ([0, 1], False), ([2, 3], False), ([0, 1], False), ([2, 3], False)]
    # N=3, S=5: every epoch is the whole pass, and warns.
    assert _run(EpochIterator(make(3), steps_per_epoch=5), 3) == [([0, 1, 2], True)] * 3
    # No steps_per_epoch: an epoch is a pass.
    assert _run(EpochIterator(make(3)), 2) == [([0, 1, 2], False)] * 2


def test_a_pass_of_unknown_length():
    assert _run(EpochIterator(_loader(5, sized=False), steps_per_epoch=3), 4) == [
        ([0, 1, 2], False), ([3, 4], True), ([0, 1, 2], False), ([3, 4], True)]
    it = EpochIterator(_loader(4, sized=False))
    assert it.num_steps is None
    assert _run(it, 2) == [([0, 1, 2, 3], False)] * 2


def test_a_one_shot_generator_that_runs_dry_inside_an_epoch():
    def gen(n):
        for i in range(n):
            yield np.array([[float(i)]]), np.array([i])
    it = EpochIterator(data.source(gen(5)), steps_per_epoch=2)
    assert _run(it, 3) == [([0, 1], False), ([2, 3], False), ([4], True)]
    assert it.exhausted
    it = EpochIterator(data.source(gen(4)), steps_per_epoch=2)
    # it runs dry exactly at an epoch's end: the next epoch finds nothing, as in Keras, and warns
    assert _run(it, 3) == [([0, 1], False), ([2, 3], False), ([], True)]


def test_steps_per_execution_hands_out_k_batches_with_keras_batch_indices():
    def executions(it):
        return [(first, last, [int(b[1][0]) for b in batches]) for first, last, batches in it.epoch()]

    # 10 batches, k=4: the last execution is partial and still ends at begin + k - 1, as Keras's.
    assert executions(EpochIterator(_arrays(10), steps_per_execution=4)) == [
        (0, 3, [0, 1, 2, 3]), (4, 7, [4, 5, 6, 7]), (8, 11, [8, 9])]
    # steps_per_epoch=5 with k=2: ceil(5 / 2) executions of 2 batches, 6 batches in all (as Keras)
    it = EpochIterator(_arrays(100), steps_per_epoch=5, steps_per_execution=2)
    assert executions(it) == [(0, 1, [0, 1]), (2, 3, [2, 3]), (4, 5, [4, 5])]
    assert executions(it) == [(0, 1, [6, 7]), (2, 3, [8, 9]), (4, 5, [10, 11])]
    # k larger than the epoch: one execution of the whole epoch
    assert executions(EpochIterator(_arrays(3), steps_per_execution=5)) == [(0, 4, [0, 1, 2])]


# ----------------------------------------------------------------------------------------- in fit

class _Batches(Callback):
    def __init__(self):
        super().__init__()
        self.begins, self.ends, self.per_epoch = [], [], []

    def on_epoch_begin(self, epoch, logs=None):
        self.per_epoch.append(0)

    def on_train_batch_begin(self, batch, logs=None):
        self.begins.append(batch)

    def on_train_batch_end(self, batch, logs=None):
        self.ends.append(batch)
        self.per_epoch[-1] += 1


def _model(k=1):
    torch.manual_seed(0)
    model = fitkit.Sequential(nn.Linear(1, 1))
    model.compile(optimizer="sgd", loss="mse", steps_per_execution=k)
    return model


def test_fit_with_a_one_shot_generator_ends_with_the_warning_never_silently():
    def gen():
        for i in range(5):
            yield np.full((2, 1), float(i), np.float32), np.zeros((2, 1), np.float32)

    with pytest.warns(UserWarning, match="Your input ran out of data.*training stops after this epoch"):
        history = _model().fit(gen(), epochs=3, verbose=0)
    assert history.epoch == [0] and history.stop_reason == "data_exhausted"

    seen = _Batches()
    with pytest.warns(UserWarning, match="Your input ran out of data"):
        history = _model().fit(gen(), epochs=5, steps_per_epoch=2, verbose=0, callbacks=[seen])
    assert history.epoch == [0, 1, 2] and seen.per_epoch == [2, 2, 1] and history.stop_reason == "data_exhausted"

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # exactly the data the epochs asked for: no warning
        history = _model().fit(gen(), epochs=1, verbose=0)
    assert history.epoch == [0] and history.stop_reason == "epochs"


def test_fit_with_steps_per_execution_calls_the_batch_hooks_once_per_execution():
    x, y = np.arange(10, dtype=np.float32)[:, None], np.zeros((10, 1), np.float32)
    seen = _Batches()
    steps = []

    class Steps(Callback):
        def on_train_batch_end(self, batch, logs=None):
            steps.append(self.model.training_state.step)

    model = _model(k=4)
    history = model.fit(x, y, batch_size=1, epochs=2, shuffle=False, verbose=0, callbacks=[seen, Steps()])
    assert seen.begins == [0, 4, 8] * 2 and seen.ends == [3, 7, 11] * 2
    assert steps == [4, 8, 10] * 2  # every batch trained
    # the same weights and epoch losses as one step per execution
    again = _model(k=1)
    expected = again.fit(x, y, batch_size=1, epochs=2, shuffle=False, verbose=0)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), again.parameters()))
    assert history.history == expected.history


def test_evaluate_and_predict_with_steps_per_execution():
    x, y = np.arange(10, dtype=np.float32)[:, None], np.zeros((10, 1), np.float32)
    model = _model(k=3)
    ends, outputs = [], []

    class Record(Callback):
        def on_test_batch_end(self, batch, logs=None):
            ends.append(batch)

        def on_predict_batch_end(self, batch, logs=None):
            outputs.append((batch, logs["outputs"].shape[0]))

    loss = model.evaluate(x, y, batch_size=2, verbose=0, callbacks=[Record()])
    assert ends == [2, 5] and loss == pytest.approx(_model(k=1).evaluate(x, y, batch_size=2, verbose=0))
    out = model.predict(x, batch_size=2, verbose=0, callbacks=[Record()])
    assert outputs == [(2, 6), (5, 4)] and out.shape == (10, 1)


def test_stop_evaluating_and_stop_predicting_end_their_loops_and_are_reset_at_the_start():
    x, y = np.arange(8, dtype=np.float32)[:, None], np.zeros((8, 1), np.float32)
    model = _model()

    class StopAfterTwo(Callback):
        def on_test_batch_end(self, batch, logs=None):
            if batch == 1:
                self.model.stop_evaluating = True

        def on_predict_batch_end(self, batch, logs=None):
            if batch == 1:
                self.model.stop_predicting = True

    model.stop_evaluating = model.stop_predicting = True  # left over: evaluate and predict reset them
    assert model.predict(x, batch_size=2, verbose=0).shape == (8, 1)
    full = model.evaluate(x, y, batch_size=2, verbose=0)
    first_two = model.evaluate(x[:4], y[:4], batch_size=2, verbose=0)
    assert model.evaluate(x, y, batch_size=2, verbose=0, callbacks=[StopAfterTwo()]) == pytest.approx(first_two)
    assert first_two != pytest.approx(full)
    out = model.predict(x, batch_size=2, verbose=0, callbacks=[StopAfterTwo()])
    np.testing.assert_array_equal(out, model.predict(x[:4], batch_size=2, verbose=0))
