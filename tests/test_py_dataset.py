"""fitkit.py_dataset: Keras's PyDataset / Sequence, read by index each epoch; and the casts data gets
for the model (float64 to its float dtype, integer x to float), and predict's output structures."""

import math
import threading
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import fitkit
from fitkit.callbacks import Callback


class Batches(fitkit.utils.PyDataset):
    """The Keras docs' example, on arrays: batch i is rows [i * batch_size, (i + 1) * batch_size)."""

    def __init__(self, x, y, batch_size, **kwargs):
        super().__init__(**kwargs)
        self.x, self.y, self.batch_size = x, y, batch_size
        self.calls, self.epochs_begun, self.epochs_ended = [], 0, 0
        self.threads = set()

    def __len__(self):
        return math.ceil(len(self.x) / self.batch_size)

    def __getitem__(self, i):
        self.calls.append(i)
        self.threads.add(threading.current_thread().name)
        s = slice(i * self.batch_size, (i + 1) * self.batch_size)
        return self.x[s], self.y[s]

    def on_epoch_begin(self):
        self.epochs_begun += 1

    def on_epoch_end(self):
        self.epochs_ended += 1


def _data(n=20):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 3))  # float64, as NumPy makes it
    return x, (x[:, :1] > 0).astype(np.float64)


def _model():
    torch.manual_seed(0)
    model = fitkit.Sequential(nn.Linear(3, 1))
    model.compile(optimizer="sgd", loss=nn.BCEWithLogitsLoss(), metrics=["accuracy"])
    return model


def test_every_index_once_per_epoch_shuffled_as_keras_and_the_epoch_hooks():
    x, y = _data()
    ds = Batches(x, y, 4)
    history = _model().fit(ds, epochs=3, verbose=0)
    assert history.params["steps"] == 5 and len(history.epoch) == 3
    # fit's checks before the first step read the first batch (index 0) once; then the epochs
    assert ds.calls[0] == 0
    ds.calls = ds.calls[1:]
    assert [sorted(ds.calls[i:i + 5]) for i in range(0, 15, 5)] == [list(range(5))] * 3
    assert ds.calls[:5] != ds.calls[5:10] or ds.calls[5:10] != ds.calls[10:]  # a new order each epoch
    assert (ds.epochs_begun, ds.epochs_ended) == (3, 3)
    ordered = Batches(x, y, 4)
    _model().fit(ordered, epochs=2, shuffle=False, verbose=0)
    assert ordered.calls == [0] + list(range(5)) * 2  # the first batch read once by fit's checks


def test_the_same_numbers_as_the_arrays_it_slices():
    x, y = _data()
    from_arrays = _model().fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0)
    from_batches = _model().fit(Batches(x, y, 4), epochs=2, shuffle=False, verbose=0)
    assert from_batches.history.keys() == from_arrays.history.keys()
    for key, values in from_arrays.history.items():
        assert from_batches.history[key] == pytest.approx(values, rel=1e-6), key
    model = _model()
    assert model.evaluate(Batches(x, y, 4), verbose=0) == pytest.approx(model.evaluate(x, y, verbose=0))
    np.testing.assert_allclose(model.predict(Batches(x, y, 4), verbose=0).numpy(), model.predict(x, verbose=0),
                               rtol=1e-6)
    assert _model().fit(x, y, validation_data=Batches(x, y, 4), epochs=1, verbose=0).history["val_loss"]


def test_workers_read_ahead_in_threads_in_order_and_multiprocessing_falls_back_to_threads():
    x, y = _data(40)
    threaded = Batches(x, y, 4, workers=3, max_queue_size=2)
    one = _model().fit(threaded, epochs=2, shuffle=False, verbose=0)
    assert any(name.startswith("fitkit-pydataset") for name in threaded.threads)
    assert one.history == _model().fit(Batches(x, y, 4), epochs=2, shuffle=False, verbose=0).history
    with pytest.warns(UserWarning, match="use_multiprocessing=True reads batches in 2 threads"):
        _model().fit(Batches(x, y, 4, workers=2, use_multiprocessing=True), epochs=1, verbose=0)


def test_an_old_style_sequence_and_the_super_init_reminder():
    x, y = _data()

    class OldSequence:  # __len__ and __getitem__, no __iter__: a Keras Sequence, not a torch Dataset
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return x[i * 10:(i + 1) * 10], y[i * 10:(i + 1) * 10]

    assert len(_model().fit(OldSequence(), epochs=2, verbose=0).epoch) == 2

    class NoSuper(fitkit.utils.Sequence):
        def __init__(self):  # forgets super().__init__()
            self.n = 1

        def __len__(self):
            return 1

        def __getitem__(self, i):
            return x, y

    with pytest.warns(UserWarning, match=r"should call `super\(\).__init__\(\*\*kwargs\)`"):
        _model().fit(NoSuper(), epochs=1, verbose=0)
    with pytest.raises(ValueError, match="batch_size: got 8 with a NoSuper"):
        _model().fit(NoSuper(), batch_size=8, verbose=0)


def test_float64_from_any_source_becomes_the_models_float_dtype():
    x, y = _data()
    seen = []

    class Dtypes(Callback):
        def on_train_batch_begin(self, batch, logs=None):
            pass

    class Spy(fitkit.Model):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 1)

        def forward(self, x):
            seen.append(x.dtype)
            return self.fc(x)

    def gen():
        yield torch.from_numpy(x), torch.from_numpy(y)  # float64 torch tensors

    for data in (dict(x=x, y=y), dict(x=gen()), dict(x=Batches(x, y, 10))):
        model = Spy()
        model.compile(optimizer="sgd", loss="mse")
        model.fit(**data, epochs=1, verbose=0, callbacks=[Dtypes()])
    assert set(seen) == {torch.float32}
    seen.clear()
    double = Spy().double()
    double.compile(optimizer="sgd", loss="mse")
    double.fit(x, y, epochs=1, verbose=0)  # a float64 model keeps float64 data
    assert set(seen) == {torch.float64}


def test_integer_inputs_train_a_float_model_with_one_warning_and_ids_stay_integer():
    x = np.array([range(100), range(100, 200)]).T  # int64, as in the tutorials
    y = (x[:, :1] > 150).astype(np.float32)
    model = _model_linear(2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = model.fit(x, y, batch_size=10, epochs=2, validation_split=0.2, verbose=0)
    casts = [w for w in caught if "integer inputs (torch.int64) are cast to torch.float32" in str(w.message)]
    assert len(casts) == 1 and len(history.epoch) == 2
    with pytest.warns(UserWarning, match="integer inputs"):
        assert model.predict(x[:3], verbose=0).dtype == np.float32

    torch.manual_seed(0)
    ids = fitkit.Sequential(nn.Embedding(10, 4), nn.Flatten(), nn.Linear(8, 1))
    ids.compile(optimizer="sgd", loss="mse")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ids.fit(np.arange(20).reshape(10, 2) % 10, np.zeros((10, 1), np.float32), epochs=1, verbose=0)


def _model_linear(d):
    torch.manual_seed(0)
    model = fitkit.Sequential(nn.Linear(d, 1))
    model.compile(optimizer=fitkit.optimizers.SGD(learning_rate=1e-5), loss="mse")
    return model


def test_predict_keeps_the_output_structure_list_tuple_or_dict():
    class Heads(fitkit.Model):
        def __init__(self, kind):
            super().__init__()
            self.a, self.b, self.kind = nn.Linear(3, 1), nn.Linear(3, 2), kind

        def forward(self, x):
            a, b = self.a(x), self.b(x)
            return {"a": a, "b": b} if self.kind == "dict" else [a, b] if self.kind == "list" else (a, b)

    x, _ = _data(10)
    for kind, cls in (("list", list), ("tuple", tuple), ("dict", dict)):
        out = Heads(kind).predict(x, batch_size=4, verbose=0)
        assert type(out) is cls
        parts = list(out.values()) if cls is dict else list(out)
        assert [p.shape for p in parts] == [(10, 1), (10, 2)] and all(isinstance(p, np.ndarray) for p in parts)
