"""TensorBoard writes event files that TensorBoard itself reads back, laid out as Keras does."""

import subprocess
import sys

import pytest
import torch
from torch import nn

from fitkit.callbacks import CallbackList, TensorBoard

pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 1)
        self.optimizer = torch.optim.SGD(self.parameters(), lr=0.05)

    def forward(self, x):
        return self.lin(x)


def scalars(folder):
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    return {tag: [(e.step, round(e.value, 6)) for e in acc.Scalars(tag)]
            for tag in acc.Tags()["scalars"]}, acc.Tags()["histograms"]


def fit_by_hand(cb, model, epochs=2, batches=3, val=True):
    cbs = CallbackList([cb], model=model)
    cbs.on_train_begin()
    for epoch in range(epochs):
        cbs.on_epoch_begin(epoch)
        for b in range(batches):
            cbs.on_train_batch_begin(b)
            model(torch.ones(4, 3))
            cbs.on_train_batch_end(b, {"loss": 1.0 + b})
        logs = {"loss": 1.0 - 0.25 * epoch}
        if val:
            cbs.on_test_begin()
            cbs.on_test_end({"loss": 2.0 - 0.5 * epoch})
            logs["val_loss"] = 2.0 - 0.5 * epoch
        cbs.on_epoch_end(epoch, logs)
    cbs.on_train_end()


def test_epoch_scalars_train_and_validation_folders(tmp_path):
    fit_by_hand(TensorBoard(log_dir=tmp_path), Net())
    train, _ = scalars(tmp_path / "train")
    val, _ = scalars(tmp_path / "validation")
    assert train["epoch_loss"] == [(0, 1.0), (1, 0.75)]
    assert train["epoch_learning_rate"] == [(0, 0.05), (1, 0.05)]
    assert val["epoch_loss"] == [(0, 2.0), (1, 1.5)]
    assert val["evaluation_loss_vs_iterations"] == [(3, 2.0), (6, 1.5)]
    assert not any(tag.startswith("batch_") for tag in train)  # update_freq="epoch"


def test_no_validation_no_validation_folder(tmp_path):
    fit_by_hand(TensorBoard(log_dir=tmp_path), Net(), val=False)
    assert (tmp_path / "train").is_dir() and not (tmp_path / "validation").exists()


def test_batch_scalars_histograms_and_graph(tmp_path):
    fit_by_hand(TensorBoard(log_dir=tmp_path, update_freq=2, histogram_freq=1, write_graph=True), Net())
    train, histograms = scalars(tmp_path / "train")
    assert train["batch_loss"] == [(2, 2.0), (4, 1.0), (6, 3.0)]  # every 2nd of 6 batches
    assert set(histograms) == {"lin.weight/histogram", "lin.bias/histogram"}
    acc = EventAccumulator(str(tmp_path / "train"))
    acc.Reload()
    assert acc.Tags()["graph"]


def test_update_freq_is_checked_and_keras_only_arguments_warn():
    with pytest.raises(ValueError, match="update_freq"):
        TensorBoard(update_freq="sometimes")
    with pytest.warns(UserWarning, match=r"\['profile_batch', 'write_images'\]; ignored"):
        TensorBoard(write_images=True, profile_batch=2)


def test_missing_tensorboard_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import now fails
    with pytest.raises(ImportError, match=r"pip install fitkit\[tensorboard\]"):
        TensorBoard()


def test_importing_fitkit_callbacks_does_not_import_tensorboard():
    code = ("import sys, fitkit, fitkit.callbacks; "
            "print(any(m.startswith(('tensorboard', 'torch.utils.tensorboard')) for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
