"""On a GPU, fit never waits for the device inside the step loop (DESIGN.md: no host sync per step).

``torch.cuda.set_sync_debug_mode("error")`` turns every host-device synchronisation into an error.
It is switched on from the end of each epoch's first batch to the end of its last batch, so it covers
the data path (slicing and gathering batches on the device), ``train_step`` (forward, loss, backward,
optimizer, loss tracker, metrics) and the batch hooks of every following step. What it leaves out is
where fitkit syncs on purpose: placing the data and drawing each pass's permutation (once per pass,
in the first batch), and reading the logs at the epoch end (and the progress bar at its own rate).

Runs only where CUDA is; elsewhere it is skipped with the reason.
"""

import pytest
import torch
from torch import nn

import fitkit
from fitkit.callbacks import Callback

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="needs a CUDA device: checks that fit does not sync per step on the GPU")


class SyncsAreErrors(Callback):
    """Sync debug mode "error" between the end of an epoch's first batch and the end of its last."""

    def __init__(self):
        super().__init__()
        self.guarded_steps = 0

    def on_train_batch_end(self, batch, logs=None):
        last = batch == self.params["steps"] - 1
        if torch.cuda.get_sync_debug_mode() != 0:
            self.guarded_steps += 1
        torch.cuda.set_sync_debug_mode(0 if last else "error")

    def on_train_end(self, logs=None):
        torch.cuda.set_sync_debug_mode(0)


def _data(n=640, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 16, generator=g)
    y = (x[:, 0] > 0).long()
    return x, y


@pytest.mark.parametrize("optimizer", ["adam", "torch-adam", "sgd"])
def test_fit_on_cuda_does_not_sync_inside_the_step_loop(optimizer):
    x, y = _data()
    fitkit.set_seed(0)
    model = fitkit.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3) if optimizer == "torch-adam" else optimizer
    model.compile(optimizer=opt, loss="binary_crossentropy", metrics=["accuracy"], device="cuda")
    guard = SyncsAreErrors()
    try:
        history = model.fit(x, y, batch_size=32, epochs=2, validation_split=0.2, callbacks=[guard], verbose=0)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    steps_per_epoch = 512 // 32
    assert guard.guarded_steps == 2 * (steps_per_epoch - 1)
    assert len(history.history["loss"]) == 2 and all(v == v for v in history.history["loss"])
    assert next(model.parameters()).device.type == "cuda"


def test_sync_debug_mode_catches_a_per_step_read():
    """The guard itself works: a callback that reads the loss every step is caught."""
    x, y = _data()
    model = fitkit.Sequential(nn.Linear(16, 1))
    model.compile(optimizer="sgd", loss="mse", device="cuda")

    class ReadsEveryStep(SyncsAreErrors):
        def on_train_batch_end(self, batch, logs=None):
            super().on_train_batch_end(batch, logs)
            if batch >= 1:
                logs["loss"]  # noqa: B018 (the read is the point)

    with pytest.raises(RuntimeError):
        try:
            model.fit(x, y, batch_size=32, epochs=1, callbacks=[ReadsEveryStep()], verbose=0)
        finally:
            torch.cuda.set_sync_debug_mode(0)


def test_labels_arriving_on_the_gpu_are_checked_without_a_sync_per_step():
    """fit's per-batch label check of an iterable: targets already on the device are summed there and read
    once, after the epoch's last batch (fitkit.preflight.BatchLabels); a bad label is still caught."""
    x, _ = _data()
    y = torch.randint(0, 3, (640,), generator=torch.Generator().manual_seed(1))
    x, y = x.cuda(), y.cuda()

    def batches(labels):
        return ((x[i:i + 32], labels[i:i + 32]) for i in range(0, 640, 32))

    fitkit.set_seed(0)
    model = fitkit.Sequential(nn.Linear(16, 3))
    model.compile(optimizer="sgd", loss=nn.CrossEntropyLoss(), device="cuda")
    guard = SyncsAreErrors()
    try:
        model.fit(batches(y), epochs=1, callbacks=[guard], verbose=0, steps_per_epoch=20)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert guard.guarded_steps == 19
    bad = y.clone()
    bad[-1] = 3  # in the last batch: read at the epoch's end
    with pytest.raises(ValueError, match=r"^y: got labels from 0 to 3 .*3 classes"):
        model.fit(batches(bad), epochs=1, verbose=0, steps_per_epoch=20)
