"""fitkit.callbacks.base: the hooks, and CallbackList calling only what a callback implements."""

from fitkit.callbacks.base import HOOKS, Callback, CallbackList


class Counting(Callback):
    def __init__(self):
        super().__init__()
        self.seen = []

    def on_epoch_end(self, epoch, logs=None):
        self.seen.append(("epoch_end", epoch, logs))

    def on_batch_end(self, batch, logs=None):  # the Keras 2 name still works
        self.seen.append(("batch_end", batch))


class DuckTyped:
    """Not a Callback subclass: only the hooks it has are called."""

    def __init__(self):
        self.seen = []

    def set_model(self, model):
        self.model = model

    def set_params(self, params):
        self.params = params

    def on_train_begin(self, logs=None):
        self.seen.append("train_begin")


def test_only_overridden_hooks_are_registered_and_called_in_order():
    a, b = Counting(), Counting()
    cbs = CallbackList([a, b], model="model", params={"epochs": 2})
    assert a.model == "model" and b.params == {"epochs": 2}
    assert cbs.has("on_epoch_end") and cbs.has("on_train_batch_end")
    assert not cbs.has("on_train_batch_begin") and not cbs.has("on_test_end")
    cbs.on_epoch_end(3, {"loss": 1.0})
    cbs.on_train_batch_end(7)
    assert a.seen == [("epoch_end", 3, {"loss": 1.0}), ("batch_end", 7)] == b.seen


def test_duck_typed_callbacks_and_append():
    duck = DuckTyped()
    cbs = CallbackList([duck], model="m", params={})
    cbs.on_train_begin()
    assert duck.seen == ["train_begin"] and not cbs.has("on_epoch_end")
    late = Counting()
    cbs.append(late)
    assert late.model == "m" and cbs.has("on_epoch_end")
    assert list(cbs) == [duck, late]


def test_every_hook_exists_on_the_base_and_does_nothing():
    cb = Callback()
    for hook in HOOKS:
        method = getattr(cb, hook)
        args = (0, None) if "batch" in hook or "epoch" in hook else (None,)
        assert method(*args) is None


class GoesLast(Callback):
    """Moves itself to the end of the list in restore_training, as BackupAndRestore does."""

    def __init__(self, log):
        super().__init__()
        self.log = log

    def restore_training(self, callbacks):
        self.log.append(("restore", self))
        callbacks.callbacks.remove(self)
        callbacks.callbacks.append(self)

    def on_train_begin(self, logs=None):
        self.log.append(("train_begin", self))


class Restores(Callback):
    def __init__(self, log):
        super().__init__()
        self.log = log

    def restore_training(self, callbacks):
        self.log.append(("restore", self))

    def on_train_begin(self, logs=None):
        self.log.append(("train_begin", self))


def test_restore_training_is_a_declared_no_op_hook_outside_the_index():
    cb = Callback()
    assert cb.restore_training(CallbackList()) is None
    assert "restore_training" not in HOOKS
    cbs = CallbackList([Counting()])
    cbs.restore_training()  # nothing overrides it: nothing happens
    assert cbs.has("on_epoch_end") and not cbs.has("on_train_begin")


def test_restore_training_calls_each_callback_once_and_reindexes_after_a_move():
    log = []
    last, plain, other = GoesLast(log), Counting(), Restores(log)
    cbs = CallbackList([last, plain, other])
    cbs.restore_training()
    assert log == [("restore", last), ("restore", other)]  # each once, though `last` moved
    assert list(cbs) == [plain, other, last]
    log.clear()
    cbs.on_train_begin()
    assert log == [("train_begin", other), ("train_begin", last)]  # the hooks follow the new order


def test_when_an_on_train_begin_raises_the_callbacks_that_began_end_and_the_rest_are_left_alone(tmp_path):
    import numpy as np
    import pytest
    import torch

    import fitkit

    class Fails(Callback):
        def on_train_begin(self, logs=None):
            raise RuntimeError("cannot begin")

    ended = []

    class Ends(Callback):
        def __init__(self, name):
            super().__init__()
            self.name = name

        def on_train_end(self, logs=None):
            ended.append(self.name)

    csv = fitkit.callbacks.CSVLogger(tmp_path / "log.csv")
    model = fitkit.Sequential(torch.nn.Linear(2, 1))
    model.compile(optimizer="sgd", loss="mse")
    weights = [p.clone() for p in model.parameters()]
    with pytest.raises(RuntimeError, match="cannot begin"):
        model.fit(np.zeros((4, 2), np.float32), np.zeros(4, np.float32), verbose=0,
                  callbacks=[Ends("before"), csv, Fails(), Ends("after")])
    assert csv.csv_file.closed  # the file it opened in on_train_begin is closed again
    assert ended == ["before"]  # in order; the one that failed and those after it get nothing
    assert all(torch.equal(a, b) for a, b in zip(weights, model.parameters()))

    class BadEnd(Ends):
        def on_train_end(self, logs=None):
            raise ValueError("cleanup failed too")

    ended.clear()
    cbs = CallbackList([BadEnd("x"), Ends("y"), Fails()])
    with pytest.raises(RuntimeError, match="cannot begin"):  # the first error is the one reported
        cbs.on_train_begin()
    assert ended == ["y"]
