"""Keras 3's guide "Customizing what happens in fit() with PyTorch" (keras.io/guides/custom_train_step_in_torch),
ported with only the model definition changed (a torch layer instead of ``keras.Input`` + ``Dense``), and
``v.value.grad`` read as ``v.grad``: a Keras variable wraps its torch tensor in ``.value``, fitkit's
weights are the torch Parameters themselves.

Each logged number is checked against a hand computation: the optimizer's learning rate is 0, so the
weights stay put and every batch's loss is a plain function of the data (shuffle=False: the batches are
the data in order).
"""

import numpy as np
import pytest
import torch
from torch import nn

import fitkit

N, D, BATCH = 100, 8, 32  # 4 batches: 32, 32, 32 and a short one of 4


def _data(seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((N, D)), rng.random((N, 1)), rng.random((N, 1))  # float64, as np.random.random


def _outputs(model, x):
    with torch.no_grad():
        return model.dense(torch.as_tensor(x, dtype=torch.float32)).numpy().astype(np.float64)


def _batches(*arrays):
    for start in range(0, N, BATCH):
        yield tuple(a[start:start + BATCH] for a in arrays)


def _frozen():
    return fitkit.optimizers.Adam(learning_rate=0.0)


class _Dense(fitkit.Model):
    def __init__(self):
        super().__init__()
        self.dense = nn.Linear(D, 1)

    def forward(self, x):
        return self.dense(x)


class GuideStep(_Dense):
    """The guide's first example, its train_step as written."""

    def train_step(self, data):
        x, y = data
        self.zero_grad()
        y_pred = self(x, training=True)  # Forward pass
        loss = self.compute_loss(y=y, y_pred=y_pred)
        loss.backward()
        trainable_weights = [v for v in self.trainable_weights]
        gradients = [v.grad for v in trainable_weights]
        with torch.no_grad():
            self.optimizer.apply(gradients, trainable_weights)
        for metric in self.metrics:
            if metric.name == "loss":
                metric.update_state(loss)
            else:
                metric.update_state(y, y_pred)
        return {m.name: m.result() for m in self.metrics}


def test_first_example_logs_the_mean_of_the_batch_losses_as_keras():
    x, y, _ = _data()
    torch.manual_seed(0)
    model = GuideStep()
    model.compile(optimizer="adam", loss="mse", metrics=["mae"])
    history = model.fit(x, y, epochs=3, verbose=0)
    assert set(history.history) == {"loss", "mae"} and history.history["loss"][-1] < history.history["loss"][0]
    assert model.optimizer.iterations == 12

    model.compile(optimizer=_frozen(), loss="mse", metrics=["mae"])
    history = model.fit(x, y, epochs=1, shuffle=False, verbose=0)
    p = _outputs(model, x)
    # the loss tracker got update_state(loss): each batch weighs 1, as Keras's Mean does
    batch_losses = [np.mean((pb - yb) ** 2) for pb, yb in _batches(p, y)]
    assert history.history["loss"][0] == pytest.approx(np.mean(batch_losses), rel=1e-5)
    assert history.history["mae"][0] == pytest.approx(np.mean(np.abs(p - y)), rel=1e-5)  # a mean over samples
    assert np.mean(batch_losses) != pytest.approx(np.mean((p - y) ** 2), rel=1e-4)  # the two differ here


class LowLevel(_Dense):
    """The guide's second example: its own metrics, listed by overriding ``metrics``; compile without a loss."""

    def __init__(self):
        super().__init__()
        self.loss_tracker = fitkit.metrics.Mean(name="loss")
        self.mae_metric = fitkit.metrics.MeanAbsoluteError(name="mae")
        self.loss_fn = fitkit.losses.MeanSquaredError()

    def train_step(self, data):
        x, y = data
        self.zero_grad()
        y_pred = self(x, training=True)
        loss = self.loss_fn(y, y_pred)
        loss.backward()
        trainable_weights = [v for v in self.trainable_weights]
        gradients = [v.grad for v in trainable_weights]
        with torch.no_grad():
            self.optimizer.apply(gradients, trainable_weights)
        self.loss_tracker.update_state(loss)
        self.mae_metric.update_state(y, y_pred)
        return {"loss": self.loss_tracker.result(), "mae": self.mae_metric.result()}

    @property
    def metrics(self):
        return [self.loss_tracker, self.mae_metric]


def test_second_example_own_metrics_are_reset_each_epoch():
    x, y, _ = _data()
    torch.manual_seed(0)
    model = LowLevel()
    model.compile(optimizer=_frozen())
    history = model.fit(x, y, epochs=2, shuffle=False, verbose=0)
    p = _outputs(model, x)
    expected = np.mean([np.mean((pb - yb) ** 2) for pb, yb in _batches(p, y)])
    # reset at each epoch start (they are in model.metrics): both epochs log the same one-epoch means
    assert history.history["loss"] == pytest.approx([expected] * 2, rel=1e-5)
    assert history.history["mae"] == pytest.approx([np.mean(np.abs(p - y))] * 2, rel=1e-5)


class Weighted(_Dense):
    """The guide's third example: sample weights unpacked from ``data``."""

    def train_step(self, data):
        if len(data) == 3:
            x, y, sample_weight = data
        else:
            sample_weight = None
            x, y = data
        self.zero_grad()
        y_pred = self(x, training=True)
        loss = self.compute_loss(y=y, y_pred=y_pred, sample_weight=sample_weight)
        loss.backward()
        trainable_weights = [v for v in self.trainable_weights]
        gradients = [v.grad for v in trainable_weights]
        with torch.no_grad():
            self.optimizer.apply(gradients, trainable_weights)
        for metric in self.metrics:
            if metric.name == "loss":
                metric.update_state(loss)
            else:
                metric.update_state(y, y_pred, sample_weight=sample_weight)
        return {m.name: m.result() for m in self.metrics}


def test_third_example_sample_weights_reach_the_step():
    x, y, sw = _data()
    torch.manual_seed(0)
    model = Weighted()
    model.compile(optimizer=_frozen(), loss="mse", metrics=["mae"])
    history = model.fit(x, y, sample_weight=sw, epochs=1, shuffle=False, verbose=0)
    p = _outputs(model, x)
    # Keras's weighted loss: the sum of weighted per-sample losses over the batch size
    batch_losses = [np.mean((pb - yb) ** 2 * wb) for pb, yb, wb in _batches(p, y, sw)]
    assert history.history["loss"][0] == pytest.approx(np.mean(batch_losses), rel=1e-5)
    # "mae" is a compile metric (not weighted_metrics): it takes no weights, in Keras as here
    assert history.history["mae"][0] == pytest.approx(np.mean(np.abs(p - y)), rel=1e-5)
    plain = model.fit(x, y, epochs=1, shuffle=False, verbose=0)  # no weights: data is (x, y)
    assert plain.history["loss"][0] == pytest.approx(np.mean([np.mean((pb - yb) ** 2)
                                                              for pb, yb in _batches(p, y)]), rel=1e-5)


class OwnTestStep(_Dense):
    """The guide's fourth example: evaluate with a custom test_step."""

    def test_step(self, data):
        x, y = data
        y_pred = self(x, training=False)
        loss = self.compute_loss(y=y, y_pred=y_pred)
        for metric in self.metrics:
            if metric.name == "loss":
                metric.update_state(loss)
            else:
                metric.update_state(y, y_pred)
        return {m.name: m.result() for m in self.metrics}


def test_fourth_example_custom_test_step():
    x, y, _ = _data()
    torch.manual_seed(0)
    model = OwnTestStep()
    model.compile(loss="mse", metrics=["mae"])
    logs = model.evaluate(x, y, return_dict=True, verbose=0)
    p = _outputs(model, x)
    assert logs["loss"] == pytest.approx(np.mean([np.mean((pb - yb) ** 2) for pb, yb in _batches(p, y)]), rel=1e-5)
    assert logs["mae"] == pytest.approx(np.mean(np.abs(p - y)), rel=1e-5)
    assert model.evaluate(x, y, verbose=0) == pytest.approx([logs["loss"], logs["mae"]])


# ----------------------------------------------------------------------------------------- the pieces

def test_fitkits_own_steps_keep_the_mean_over_samples():
    x, y, _ = _data()
    torch.manual_seed(0)
    model = _Dense()
    model.compile(optimizer=_frozen(), loss="mse", metrics=["mae"])
    history = model.fit(x, y, epochs=1, shuffle=False, verbose=0)
    p = _outputs(model, x)
    assert history.history["loss"][0] == pytest.approx(np.mean((p - y) ** 2), rel=1e-5)
    assert model.evaluate(x, y, return_dict=True, verbose=0)["loss"] == pytest.approx(np.mean((p - y) ** 2), rel=1e-5)


def test_a_compute_loss_override_without_training_and_a_metric_attribute_in_the_logs():
    class Penalised(_Dense):
        def __init__(self):
            super().__init__()
            self.penalty = fitkit.metrics.Mean(name="penalty")

        def compute_loss(self, x, y, y_pred, sample_weight=None):  # no `training`, as before Keras 3.3
            penalty = 0.1 * (self.dense.weight ** 2).sum()
            self.penalty.update_state(penalty.detach())
            return super().compute_loss(x, y, y_pred, sample_weight) + penalty

    x, y, _ = _data()
    torch.manual_seed(0)
    model = Penalised()
    model.compile(optimizer=_frozen(), loss="mse")
    assert [m.name for m in model.metrics] == ["loss", "penalty"]
    history = model.fit(x, y, epochs=2, shuffle=False, verbose=0)
    penalty = 0.1 * float((model.dense.weight.detach() ** 2).sum())
    p = _outputs(model, x)
    assert history.history["penalty"] == pytest.approx([penalty] * 2, rel=1e-5)  # reset each epoch
    assert history.history["loss"][0] == pytest.approx(np.mean((p - y) ** 2) + penalty, rel=1e-5)
    assert model.evaluate(x, y, return_dict=True, verbose=0)["penalty"] == pytest.approx(penalty, rel=1e-5)


def test_metrics_and_unpacking_utilities():
    model = _Dense()
    assert model.metrics == []
    model.compile(optimizer="sgd", loss="mse", metrics=["mae", "mse"])
    tracker, compile_metrics = model.metrics
    assert (tracker.name, compile_metrics.name) == ("loss", "compile_metrics")
    x, y = torch.ones(4, D), torch.zeros(4, 1)
    tracker.update_state(torch.tensor(2.0), sample_weight=4)
    tracker.update_state(torch.tensor(4.0))
    assert float(tracker.result()) == pytest.approx((2.0 * 4 + 4.0) / 5)
    with torch.no_grad():
        compile_metrics.update_state(y, model(x))
    assert set(compile_metrics.result()) == {"mae", "mse"}
    assert set(model.get_metrics_result()) == {"loss", "mae", "mse"}
    model.reset_metrics()
    assert float(tracker.result()) == 0.0 and float(compile_metrics.result()["mae"]) == 0.0
    unpack = fitkit.utils.unpack_x_y_sample_weight
    assert unpack((x, y)) == (x, y, None) and unpack([x]) == (x, None, None) and unpack(x)[0] is x
    with pytest.raises(ValueError, match="expected"):
        unpack((x, y, y, y))


def test_training_argument_sets_the_mode_for_the_call_only():
    class Drop(fitkit.Model):
        def __init__(self):
            super().__init__()
            self.drop = nn.Dropout(0.5)

        def forward(self, x):
            return self.drop(x)

    model = Drop().eval()
    x = torch.ones(1000)
    assert torch.equal(model(x, training=False), x)
    assert (model(x, training=True) == 0).any() and not model.training

    class TakesTraining(fitkit.Model):
        def forward(self, x, training=None):
            return x * (2 if training else 1)

    assert float(TakesTraining()(torch.ones(1), training=True)) == 2.0
