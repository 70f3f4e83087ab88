"""TensorBoard writes event files that TensorBoard itself reads back, laid out as Keras does."""

import subprocess
import sys

import numpy as np
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
    with pytest.raises(ValueError, match="histogram_freq: got -1"):
        TensorBoard(histogram_freq=-1)
    with pytest.warns(UserWarning, match=r"\['embeddings_freq', 'profile_batch'\]; ignored"):
        TensorBoard(embeddings_freq=1, profile_batch=2)
    with pytest.warns(UserWarning, match="with histogram_freq=0 it draws none"):
        TensorBoard(write_images=True)


class Clock:
    """Stands in for time.perf_counter: the test moves it."""

    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_steps_per_second_per_epoch_and_per_written_batch(tmp_path, monkeypatch):
    import fitkit.callbacks.tensorboard as tb_module

    clock = Clock()
    monkeypatch.setattr(tb_module.time, "perf_counter", clock)
    model = Net()
    cbs = CallbackList([TensorBoard(log_dir=tmp_path, update_freq=2, write_steps_per_second=True)], model=model)
    cbs.on_train_begin()
    for epoch, batch_seconds in enumerate([0.25, 0.5]):
        cbs.on_epoch_begin(epoch)
        for b in range(4):
            cbs.on_train_batch_begin(b)
            clock.now += batch_seconds
            cbs.on_train_batch_end(b, {"loss": 1.0})
        clock.now += 1.0  # validation: part of the epoch's time, as Keras measures it
        cbs.on_epoch_end(epoch, {"loss": 1.0})
    cbs.on_train_end()
    train, _ = scalars(tmp_path / "train")
    assert train["epoch_steps_per_second"] == [(0, 2.0), (1, round(4 / 3.0, 6))]
    assert train["batch_steps_per_second"] == [(2, 4.0), (4, 4.0), (6, 2.0), (8, 2.0)]  # every 2nd batch
    assert [step for step, _ in train["batch_loss"]] == [2, 4, 6, 8]


def test_steps_per_second_with_epoch_updates_is_per_epoch_only_and_costs_no_batch_hook(tmp_path):
    cb = TensorBoard(log_dir=tmp_path, write_steps_per_second=True)
    assert not CallbackList([cb]).has("on_train_batch_begin")
    fit_by_hand(cb, Net())
    train, _ = scalars(tmp_path / "train")
    assert [step for step, _ in train["epoch_steps_per_second"]] == [0, 1]
    assert all(value > 0 for _, value in train["epoch_steps_per_second"])
    assert "batch_steps_per_second" not in train


class Convs(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv1d(2, 4, 3)          # torch (4, 2, 3): Keras (3, 2, 4)
        self.conv2 = nn.Conv2d(2, 3, 2)          # torch (3, 2, 2, 2): Keras (2, 2, 2, 3), 3 channels
        self.wide = nn.Conv2d(2, 5, 2, bias=False)  # 5 output channels: Keras draws no image
        self.bn = nn.BatchNorm1d(5)
        self.lin = nn.Linear(5, 3)
        self.optimizer = torch.optim.SGD(self.parameters(), lr=0.1)

    def forward(self, x):
        return x


def images(folder):
    acc = EventAccumulator(str(folder), size_guidance={"images": 0, "histograms": 0})
    acc.Reload()
    return {tag: acc.Images(tag) for tag in acc.Tags()["images"]}, acc.Tags()["histograms"]


def test_histograms_of_every_weight_and_buffer_and_images_as_keras_draws_them(tmp_path):
    import io

    from PIL import Image

    model = Convs()
    with torch.no_grad():
        model.lin.weight.copy_(torch.linspace(-0.5, 1.5, 15).reshape(3, 5))
    fit_by_hand(TensorBoard(log_dir=tmp_path, histogram_freq=2, write_images=True), model, epochs=3, val=False)
    drawn, histograms = images(tmp_path / "train")
    weights = ["conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "wide.weight", "bn.weight", "bn.bias",
               "bn.running_mean", "bn.running_var", "lin.weight", "lin.bias"]
    assert sorted(histograms) == sorted(f"{w}/histogram" for w in weights)  # not bn.num_batches_tracked
    # (height, width) of each image; the first 3 of a kernel's images side by side.
    sizes = {tag: (events[0].height, events[0].width) for tag, events in drawn.items()}
    assert sizes == {
        "conv1.weight/image": (3, 6),  # 4 images of k=3 x in=2; 3 shown
        "conv1.bias/image": (4, 1), "conv2.bias/image": (3, 1),
        "conv2.weight/image": (2, 4),  # 2 images of 2 x 2 with 3 channels
        "bn.weight/image": (5, 1), "bn.bias/image": (5, 1), "bn.running_mean/image": (5, 1),
        "bn.running_var/image": (5, 1),
        "lin.weight/image": (3, 5), "lin.bias/image": (3, 1),
    }
    assert all([e.step for e in events] == [0, 2] for events in drawn.values())  # histogram epochs only
    pixels = np.asarray(Image.open(io.BytesIO(drawn["lin.weight/image"][0].encoded_image_string)))
    expected = np.clip(model.lin.weight.detach().numpy() * 255.5, 0, 255).astype(np.uint8)
    assert np.array_equal(pixels[..., 0], expected)  # grey: one channel repeated


def test_missing_tensorboard_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import now fails
    with pytest.raises(ImportError, match=r"pip install fitkit\[tensorboard\]"):
        TensorBoard()


def test_importing_fitkit_callbacks_does_not_import_tensorboard():
    code = ("import sys, fitkit, fitkit.callbacks; "
            "print(any(m.startswith(('tensorboard', 'torch.utils.tensorboard')) for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
