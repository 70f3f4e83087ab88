"""fitkit.trainer: every fit / evaluate / predict argument and input form, logs, callbacks order."""
import collections.abc
import re

import numpy as np
import pytest
import torch
from torch import nn

import fitkit
from fitkit.callbacks import Callback


def _data(n=100, d=5, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = (x @ rng.normal(size=d) > 0).astype(np.int64)
    return x, y


def _model(d=5, seed=0, lr=0.1):
    torch.manual_seed(seed)
    model = fitkit.Sequential(nn.Linear(d, 1))
    model.compile(optimizer=fitkit.optimizers.SGD(learning_rate=lr), loss=nn.BCEWithLogitsLoss(),
                  metrics=["accuracy"])
    return model


class Recorder(Callback):
    """Records every hook call as (hook, arg) and the logs keys seen."""

    def __init__(self):
        super().__init__()
        self.calls = []
        self.epoch_logs = []

    def on_train_begin(self, logs=None):
        self.calls.append(("train_begin", None))

    def on_train_end(self, logs=None):
        self.calls.append(("train_end", None))

    def on_epoch_begin(self, epoch, logs=None):
        self.calls.append(("epoch_begin", epoch))

    def on_epoch_end(self, epoch, logs=None):
        self.calls.append(("epoch_end", epoch))
        self.epoch_logs.append(dict(logs))

    def on_train_batch_begin(self, batch, logs=None):
        self.calls.append(("batch_begin", batch))

    def on_train_batch_end(self, batch, logs=None):
        self.calls.append(("batch_end", batch))

    def on_test_begin(self, logs=None):
        self.calls.append(("test_begin", None))

    def on_test_end(self, logs=None):
        self.calls.append(("test_end", None))


def test_epoch_loss_is_the_mean_over_samples_with_the_partial_batch_weighted_by_its_size():
    x, y = _data(n=10)
    model = _model()
    batch_losses = []

    class Capture(Callback):
        def on_train_batch_begin(self, batch, logs=None):
            lo, hi = batch * 4, min(batch * 4 + 4, 10)
            with torch.no_grad():
                out = self.model(torch.from_numpy(x[lo:hi]))
                batch_losses.append((float(nn.functional.binary_cross_entropy_with_logits(
                    out.squeeze(-1), torch.from_numpy(y[lo:hi]).float())), hi - lo))

    history = model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0, callbacks=[Capture()])
    expected = sum(loss * n for loss, n in batch_losses) / 10
    per_batch_mean = sum(loss for loss, _ in batch_losses) / 3
    assert history.history["loss"][0] == pytest.approx(expected, abs=1e-6)
    assert abs(expected - per_batch_mean) > 1e-4  # the two definitions differ here, so the test can tell


def test_hooks_order_batch_indices_restart_and_logs_keys():
    x, y = _data(n=10)
    model = _model()
    rec = Recorder()
    model.fit(x, y, batch_size=4, epochs=2, validation_split=0.2, verbose=0, callbacks=[rec])
    # 8 training samples -> 2 batches per epoch; validation after each epoch
    expected = [("train_begin", None)]
    for epoch in range(2):
        expected += [("epoch_begin", epoch), ("batch_begin", 0), ("batch_end", 0), ("batch_begin", 1),
                     ("batch_end", 1), ("test_begin", None), ("test_end", None), ("epoch_end", epoch)]
    expected += [("train_end", None)]
    assert rec.calls == expected
    assert list(rec.epoch_logs[0]) == ["loss", "accuracy", "val_loss", "val_accuracy"]


def test_epoch_logs_hold_exactly_keras_keys_and_the_history_keeps_each_epochs_rate(tmp_path):
    x, y = _data(n=40)
    model = _model(lr=0.1)
    csv_path = tmp_path / "log.csv"
    history = model.fit(x, y, batch_size=8, epochs=2, validation_split=0.25, verbose=0,
                        callbacks=[fitkit.callbacks.CSVLogger(csv_path)])
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all("val_" + k in history.history for k in history.history if not k.startswith("val_"))
    assert history.learning_rates == [pytest.approx(0.1)] * 2 and len(history.learning_rates) == len(history.epoch)
    assert csv_path.read_text().splitlines()[0] == "epoch,accuracy,loss,val_accuracy,val_loss"


def test_learning_rate_is_logged_where_keras_logs_it_and_with_a_compile_scheduler():
    x, y = _data(n=32)
    model = _model(lr=0.1)
    cut = fitkit.callbacks.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=0, min_delta=10.0)
    history = model.fit(x, y, batch_size=8, epochs=3, verbose=0, callbacks=[cut])
    # ReduceLROnPlateau writes the rate the epoch used, before its cut (from the second epoch on), as Keras's
    assert history.history["learning_rate"] == pytest.approx([0.1, 0.1, 0.05])
    assert history.learning_rates == pytest.approx([0.1, 0.1, 0.05])

    model = _model(lr=0.1)
    model.compile(optimizer=model.optimizer, loss=nn.BCEWithLogitsLoss(),
                  scheduler=lambda opt: torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.1))
    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    assert list(history.history) == ["loss", "learning_rate"]  # fitkit's extension: the scheduler it drives
    assert history.history["learning_rate"] == history.learning_rates == pytest.approx([0.1, 0.01])


def test_every_hook_gets_a_dict_never_none():
    seen = {}

    class Logs(Callback):
        pass

    cb = Logs()
    for hook in fitkit.callbacks.base.HOOKS:
        def record(*args, hook=hook):
            seen.setdefault(hook, []).append(args[-1])
        setattr(cb, hook, record)
    x, y = _data(n=20)
    model = _model()
    model.fit(x, y, batch_size=8, epochs=1, validation_split=0.2, verbose=0, callbacks=[cb])
    model.evaluate(x, y, verbose=0, callbacks=[cb])
    model.predict(x, verbose=0, callbacks=[cb])
    assert set(seen) == set(fitkit.callbacks.base.HOOKS)
    for hook, logs in seen.items():
        # batch logs are a lazy Mapping (read only when a callback looks), the others plain dicts
        assert all(isinstance(v, collections.abc.Mapping) for v in logs), hook
    assert seen["on_train_begin"] == [{}] and seen["on_predict_end"] == [{}]


def test_history_params_and_epochs_with_initial_epoch():
    x, y = _data()
    model = _model()
    history = model.fit(x, y, batch_size=32, epochs=5, initial_epoch=2, verbose=0)
    assert history.epoch == [2, 3, 4]
    assert history.params == {"verbose": 0, "epochs": 5, "steps": 4}
    assert len(history.history["loss"]) == 3
    assert history.stop_reason == "epochs"


def test_validation_data_forms_give_the_same_val_numbers():
    x, y = _data()
    xv, yv = _data(n=30, seed=1)
    results = []
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.from_numpy(xv), torch.from_numpy(yv)),
                                         batch_size=7)
    for val in [(xv, yv), (xv, yv, np.ones(30, dtype=np.float32)), loader]:
        model = _model()
        history = model.fit(x, y, epochs=2, shuffle=False, verbose=0, validation_data=val)
        results.append(history.history["val_loss"])
    assert results[0] == pytest.approx(results[1], abs=1e-6)
    assert results[0] == pytest.approx(results[2], abs=1e-6)


def test_validation_split_is_the_last_fraction_and_validation_data_overrides_it():
    x, y = _data(n=50)
    model = _model()
    seen = []

    class Spy(Callback):
        def on_test_batch_begin(self, batch, logs=None):
            seen.append(batch)

    h1 = model.fit(x, y, epochs=1, validation_split=0.2, validation_batch_size=5, verbose=0, callbacks=[Spy()])
    assert len(seen) == 2  # 10 validation samples in batches of 5
    ref = _model()
    ref.fit(x[:40], y[:40], epochs=1, verbose=0, shuffle=True)
    assert h1.params["steps"] == 2  # 40 training samples, batch 32
    model2 = _model()
    h2 = model2.fit(x, y, epochs=1, validation_split=0.2, validation_data=(x[:5], y[:5]), verbose=0)
    assert h2.history["val_loss"][0] == pytest.approx(model2.evaluate(x[:5], y[:5], verbose=0)[0], abs=1e-6)


def test_validation_freq_and_validation_steps():
    x, y = _data()
    model = _model()
    rec = Recorder()
    history = model.fit(x, y, epochs=4, validation_data=(x, y), validation_freq=2, validation_steps=1,
                        validation_batch_size=10, verbose=0, callbacks=[rec])
    assert ["val_loss" in logs for logs in rec.epoch_logs] == [False, True, False, True]
    assert len(history.history["val_loss"]) == 2


def test_steps_per_epoch_with_arrays_and_an_endless_generator():
    x, y = _data()
    model = _model()
    history = model.fit(x, y, batch_size=10, steps_per_epoch=3, epochs=2, verbose=0)
    assert history.params["steps"] == 3

    def endless():
        rng = np.random.default_rng(0)
        while True:
            xb = rng.normal(size=(8, 5)).astype(np.float32)
            yield xb, (xb[:, 0] > 0).astype(np.int64)

    rec = Recorder()
    model.fit(endless(), steps_per_epoch=4, epochs=2, verbose=0, callbacks=[rec])
    assert sum(1 for c in rec.calls if c[0] == "batch_end") == 8


def test_generator_with_sample_weights_and_dataset_and_dataloader():
    x, y = _data(n=40)
    model = _model()

    def gen():
        for i in range(0, 40, 10):
            yield x[i:i + 10], y[i:i + 10], np.full(10, 2.0, dtype=np.float32)
    h = model.fit(gen(), epochs=1, verbose=0)
    assert np.isfinite(h.history["loss"][0])
    ds = torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
    assert len(model.fit(ds, batch_size=8, epochs=2, verbose=0).epoch) == 2
    loader = torch.utils.data.DataLoader(ds, batch_size=8, shuffle=True)
    assert model.fit(loader, epochs=1, verbose=0).params["steps"] == 5


def test_sample_weight_and_class_weight_weigh_the_loss_like_keras():
    x, y = _data(n=40)
    sw = np.where(y == 1, 3.0, 0.5).astype(np.float32)
    a, b = _model(seed=1), _model(seed=1)
    ha = a.fit(x, y, sample_weight=sw, epochs=2, shuffle=False, verbose=0)
    hb = b.fit(x, y, class_weight={0: 0.5, 1: 3.0}, epochs=2, shuffle=False, verbose=0)
    assert ha.history["loss"] == pytest.approx(hb.history["loss"], abs=1e-6)
    plain = _model(seed=1).fit(x, y, epochs=2, shuffle=False, verbose=0)
    assert ha.history["loss"][0] != pytest.approx(plain.history["loss"][0], abs=1e-4)
    # the weighted loss over the epoch is sum(w * l) / N, Keras's sum_over_batch_size
    model = _model(seed=2)
    with torch.no_grad():
        per = nn.functional.binary_cross_entropy_with_logits(model(torch.from_numpy(x)).squeeze(-1),
                                                             torch.from_numpy(y).float(), reduction="none")
    got = model.evaluate(x, y, sample_weight=sw, batch_size=40, verbose=0)[0]
    assert got == pytest.approx(float((per * torch.from_numpy(sw)).sum() / 40), abs=1e-6)


def test_weighted_metrics_get_the_sample_weights():
    x, y = _data(n=40)
    model = _model()
    model.compile(optimizer="sgd", loss=nn.BCEWithLogitsLoss(), metrics=["accuracy"],
                  weighted_metrics=["accuracy"])
    sw = np.zeros(40, dtype=np.float32)
    sw[:10] = 1.0
    logs = model.evaluate(x, y, sample_weight=sw, return_dict=True, verbose=0)
    with torch.no_grad():
        pred = (model(torch.from_numpy(x)).squeeze(-1) > 0).long().numpy()
    assert logs["accuracy"] == pytest.approx(float((pred == y).mean()))
    weighted_key = [k for k in logs if k != "accuracy" and "accuracy" in k][0]
    assert logs[weighted_key] == pytest.approx(float((pred[:10] == y[:10]).mean()))


def test_evaluate_return_forms():
    x, y = _data()
    model = _model()
    both = model.evaluate(x, y, verbose=0)
    assert isinstance(both, list) and len(both) == 2
    assert model.evaluate(x, y, return_dict=True, verbose=0) == {"loss": pytest.approx(both[0]),
                                                                  "accuracy": pytest.approx(both[1])}
    model.compile(optimizer="sgd", loss=nn.BCEWithLogitsLoss())
    assert isinstance(model.evaluate(x, y, verbose=0), float)
    assert model.evaluate(x, y, batch_size=10, steps=1, verbose=0) == pytest.approx(
        model.evaluate(x[:10], y[:10], verbose=0), abs=1e-6)


def test_shuffle_false_is_deterministic_and_true_uses_the_seed():
    x, y = _data()
    w = []
    for _ in range(2):
        fitkit.set_seed(3)
        model = _model()
        model.fit(x, y, epochs=2, verbose=0)
        w.append(model.get_weights())
    assert all(np.array_equal(a, b) for a, b in zip(*w))
    fitkit.set_seed(4)
    other = _model()
    other.fit(x, y, epochs=2, verbose=0)
    assert not all(np.array_equal(a, b) for a, b in zip(w[0], other.get_weights()))


def test_stop_training_from_a_callback_ends_after_the_epoch():
    class StopAt(Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                self.model.stop_training = True
                self.model.stop_reason = "my_reason"

    history = _model().fit(*_data(), epochs=10, verbose=0, callbacks=[StopAt()])
    assert history.epoch == [0, 1] and history.stop_reason == "my_reason"


def test_bad_fit_arguments_are_rejected_before_any_weight_changes():
    x, y = _data()
    model = _model()
    before = model.get_weights()
    bad = [
        (dict(epochs=-1), "epochs: got -1"),
        (dict(epochs=2.5), "epochs: got 2.5"),
        (dict(batch_size=0), "batch_size: got 0"),
        (dict(validation_split=1.5), "validation_split: got 1.5"),
        (dict(validation_freq=0), "validation_freq: got 0"),
        (dict(verbose=3), "verbose: got 3"),
        (dict(shuffle="yes"), "shuffle: got 'yes'"),
        (dict(callbacks=[object()]), "callbacks: got <object"),
        (dict(initial_epoch=-2), "initial_epoch: got -2"),
        (dict(steps_per_epoch=0), "steps_per_epoch: got 0"),
        (dict(class_weight={"a": 1}), "class_weight: got the key 'a'"),
        (dict(validation_data=(x,)), "validation_data: got a tuple of 1 items"),
    ]
    for kwargs, message in bad:
        with pytest.raises((ValueError, TypeError), match=message.replace("(", r"\(").replace("[", r"\[")):
            model.fit(x, y, **kwargs)
    with pytest.raises(ValueError, match=r"x, y and sample_weight: the arrays have different numbers of samples"):
        model.fit(x, y[:50])
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def test_batch_logs_are_read_only_when_a_callback_reads_them(monkeypatch):
    import fitkit.logs as logs_module
    reads = []
    original = logs_module.LazyLogs._materialize

    def counting(self):
        if self._values is None:
            reads.append(1)
        return original(self)
    monkeypatch.setattr(logs_module.LazyLogs, "_materialize", counting)
    model = _model()
    model.fit(*_data(), epochs=2, batch_size=10, verbose=0)
    assert len(reads) == 2  # once per epoch end: no per-step read

    class Reader(Callback):
        def on_train_batch_end(self, batch, logs=None):
            assert 0.0 < logs["loss"] < 10.0
    reads.clear()
    model.fit(*_data(), epochs=1, batch_size=10, verbose=0, callbacks=[Reader()])
    assert len(reads) == 10  # each step's logs once; the epoch end reuses the last step's reading


def test_predict_rejects_no_data():
    with pytest.raises(ValueError, match="x: got None"):
        _model().predict(None)


def test_stop_training_in_a_batch_hook_ends_the_epoch_after_that_batch_as_keras():
    seen = []

    class StopAtBatch(Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(batch)
            if batch == 1:
                self.model.stop_training = True

    rec = Recorder()
    history = _model().fit(*_data(), batch_size=10, epochs=3, validation_split=0.2, verbose=0,
                           callbacks=[StopAtBatch(), rec])
    assert seen == [0, 1] and history.epoch == [0]
    assert "val_loss" in history.history  # the epoch still validates and ends normally
    assert ("epoch_end", 0) in rec.calls


def test_wrong_data_types_raise_value_errors_as_keras():
    """Keras raises ValueError for data it does not recognise ("Unrecognized data type"), a class_weight
    that is not a mapping and loss_weights of the wrong type; fitkit does too, naming the argument."""
    x, y = _data(n=8)
    model = _model()
    cases = [
        (lambda: model.fit(3, verbose=0), "x: got a int; expected a NumPy array"),
        (lambda: model.fit("data.csv", verbose=0), "x: got a str 'data.csv'; expected arrays"),
        (lambda: model.predict(object(), verbose=0), "x: got a object"),
        (lambda: model.evaluate(x, y[:5], verbose=0), "x, y and sample_weight: the arrays have different"),
        (lambda: model.fit(x, y, class_weight=[1.0, 2.0], verbose=0), "class_weight: got [1.0, 2.0]"),
        (lambda: model.compile(loss="mse", loss_weights="heavy"), "`loss_weights`"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=re.escape(message)):
            call()


# ------------------------------------------------------------------------------------------ bad input

def test_a_callback_class_instead_of_an_instance_says_pass_an_instance():
    x, y = _data()
    model = _model()
    for callbacks in ([fitkit.callbacks.EarlyStopping], fitkit.callbacks.EarlyStopping):
        with pytest.raises(TypeError, match=r"^callbacks: got the class EarlyStopping; expected an instance: pass "
                                            r"EarlyStopping\(\.\.\.\)"):
            model.fit(x, y, verbose=0, callbacks=callbacks)
    with pytest.raises(TypeError, match=r"^callbacks: got the class CSVLogger"):
        model.evaluate(x, y, verbose=0, callbacks=[fitkit.callbacks.CSVLogger])
    assert model.training_state.epoch == 0


def test_a_validation_generator_that_runs_dry_warns_and_keeps_the_history_aligned():
    x, y = _data()

    def once():
        for i in range(0, 40, 20):
            yield x[i:i + 20], y[i:i + 20]

    model = _model()
    with pytest.warns(UserWarning, match=r"^validation_data: the iterable yielded no batches .*NaN") as seen:
        history = model.fit(x, y, epochs=3, verbose=0, validation_data=once())
    assert len([w for w in seen if "validation_data" in str(w.message)]) == 1  # once, not every epoch
    assert history.epoch == [0, 1, 2]
    assert all(len(v) == 3 for v in history.history.values())
    assert np.isfinite(history.history["val_loss"][0]) and np.isnan(history.history["val_loss"][1:]).all()
    assert np.isnan(history.history["val_accuracy"][2])


def test_evaluate_on_data_without_batches_is_an_error():
    with pytest.raises(ValueError, match=r"^x: evaluate got no batches"):
        _model().evaluate(iter([]), verbose=0)
    with pytest.raises(ValueError, match=r"^x: got arrays of 0 samples"):
        _model().evaluate(np.zeros((0, 5), np.float32), np.zeros(0), verbose=0)


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("where", ["preflight", "forward", "callback"])
def test_a_fit_that_raises_keeps_none_of_the_training_data(where, shuffle):
    import gc
    import weakref

    class Net(fitkit.Model):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(5, 1)
            self.calls = 0

        def forward(self, x):
            self.calls += 1
            if where == "forward" and self.calls == 4:
                raise RuntimeError("boom")
            return self.fc(x)

    class Raise(Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 2:
                raise RuntimeError("boom")

    x, y = _data()
    val = _data(seed=1)
    refs = [weakref.ref(a) for a in (x, y) + val]
    model = Net()
    model.compile(optimizer="sgd", loss=nn.BCEWithLogitsLoss())
    gc.disable()  # freed by reference counting alone: no cycle may hold them
    try:
        try:
            model.fit(x, y if where != "preflight" else y[:, None, None], batch_size=10, epochs=2, verbose=0,
                      shuffle=shuffle, validation_data=val, callbacks=[Raise()] if where == "callback" else [])
        except (RuntimeError, ValueError):
            pass
        del x, y, val
        assert [r() for r in refs] == [None] * 4
    finally:
        gc.enable()
    assert model.training_state.source is None


def test_after_a_fit_the_model_keeps_a_copy_of_one_input_not_the_data():
    import weakref

    x, y = _data()
    ref = weakref.ref(x)
    model = _model()
    model.fit(x, y, epochs=1, verbose=0)
    del x
    assert ref() is None and model._input_example.shape == (1, 5)
