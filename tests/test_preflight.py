"""fitkit.preflight: in-memory targets reconciled with the loss once per fit, before the first step."""

import numpy as np
import torch
from torch import nn

import fitkit
from conftest import Net, labelled_data
from fitkit import preflight


def test_the_first_outputs_move_no_rng_no_statistics_and_no_training_mode():
    torch.manual_seed(0)
    model = fitkit.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Dropout(0.5), nn.Linear(8, 2))
    model.train()
    stats = [t.clone() for t in model.state_dict().values()]
    x = torch.randn(6, 4)
    rng = torch.get_rng_state()
    out = preflight.first_outputs(model, x)
    assert out.shape == (6, 2) and not out.requires_grad
    assert torch.equal(rng, torch.get_rng_state()) and model.training
    assert all(torch.equal(a, b) for a, b in zip(stats, model.state_dict().values()))


class _TargetsSeen(fitkit.callbacks.Callback):
    """Records the dtype and shape of the targets fit holds after each batch."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def on_train_batch_end(self, batch, logs=None):
        source = self.model.training_state.source.source  # the epoch iterator's data source
        y = source._leaves[1]
        self.seen.append((y.dtype, tuple(y.shape)))


def test_fit_reconciles_in_memory_targets_with_the_loss_once():
    x, y = labelled_data()
    torch.manual_seed(0)
    model = Net()
    model.compile(optimizer="sgd", loss=nn.BCEWithLogitsLoss(), metrics=["accuracy"])
    seen = _TargetsSeen()
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[seen])
    assert seen.seen[0] == (torch.float32, (64, 1))  # from the first step on: (N,) int64 -> float (N, 1)
    assert set(seen.seen) == {(torch.float32, (64, 1))}

    torch.manual_seed(0)
    twin = Net()
    twin.compile(optimizer="sgd", loss=nn.BCEWithLogitsLoss(), metrics=["accuracy"])
    twin.fit(x, y.astype(np.float32).reshape(-1, 1), batch_size=16, epochs=2, verbose=0)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), twin.parameters()))
    assert model.history.history == twin.history.history


def test_targets_are_reconciled_where_the_data_is_prepared_not_by_compute_loss():
    x, y = labelled_data()

    class Penalised(Net):  # a compute_loss override that knows nothing of target preparation
        def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
            return super().compute_loss(x, y, y_pred, sample_weight, training) + 0.0 * y_pred.sum()

    class BeforeFirstStep(fitkit.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if batch == 0:
                y = self.model.training_state.source.source._leaves[1]
                self.seen = (y.dtype, tuple(y.shape))

    torch.manual_seed(0)
    model = Penalised()
    model.compile(optimizer="sgd", loss=nn.BCEWithLogitsLoss(), metrics=["accuracy"])
    seen = BeforeFirstStep()
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[seen])
    assert seen.seen == (torch.float32, (64, 1))
    torch.manual_seed(0)
    twin = Net()
    twin.compile(optimizer="sgd", loss=nn.BCEWithLogitsLoss(), metrics=["accuracy"])
    twin.fit(x, y.astype(np.float32).reshape(-1, 1), batch_size=16, epochs=1, verbose=0)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), twin.parameters()))


def test_a_custom_train_step_or_metric_object_sees_the_targets_as_given():
    x, y = labelled_data()

    class Custom(Net):
        def train_step(self, data):
            self.dtypes.append(data[1].dtype)
            return super().train_step(data)

    model = Custom()
    model.dtypes = []
    model.compile(optimizer="sgd", loss=nn.BCEWithLogitsLoss())
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert model.dtypes == [torch.int64] * 4

    model = Net()
    model.compile(optimizer="sgd", loss=nn.BCEWithLogitsLoss(), metrics=[fitkit.metrics.BinaryAccuracy()])
    seen = _TargetsSeen()
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[seen])
    assert set(seen.seen) == {(torch.int64, (64,))}
