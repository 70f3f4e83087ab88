"""ModelCheckpoint with a stand-in model whose save/save_weights write torch.save files."""

import os

import pytest
import torch
from torch import nn

from fitkit.callbacks import CallbackList, ModelCheckpoint
from fitkit.logs import LazyLogs


class Saver(nn.Module):
    """A small model with fitkit's save/save_weights surface, written with torch.save."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 1)
        self.saved = []  # (kind, path)

    def save_weights(self, filepath):
        torch.save(self.state_dict(), filepath)
        self.saved.append(("weights", filepath))

    def save(self, filepath):
        torch.save({"state_dict": self.state_dict(), "class": "Saver"}, filepath)
        self.saved.append(("model", filepath))


def epochs(cb, logs_per_epoch, model=None, batches=0):
    model = model or Saver()
    cbs = CallbackList([cb], model=model)
    cbs.on_train_begin()
    for epoch, logs in enumerate(logs_per_epoch):
        cbs.on_epoch_begin(epoch)
        for b in range(batches):
            cbs.on_train_batch_end(b, LazyLogs(lambda: {"loss": torch.tensor(0.5)}))
        cbs.on_epoch_end(epoch, dict(logs))
    cbs.on_train_end()
    return model


def names(model, root):
    return [os.path.relpath(p, root) for _, p in model.saved]


def test_epoch_template_is_one_based_and_takes_any_log_key(tmp_path):
    cb = ModelCheckpoint(str(tmp_path / "ck-{epoch:02d}-{val_loss:.2f}.pt"), save_weights_only=True)
    model = epochs(cb, [{"loss": 1, "val_loss": 0.912}, {"loss": 1, "val_loss": 0.5}])
    assert names(model, tmp_path) == ["ck-01-0.91.pt", "ck-02-0.50.pt"]
    assert all(kind == "weights" for kind, _ in model.saved)


def test_saves_are_loadable_with_torch_load(tmp_path):
    cb = ModelCheckpoint(tmp_path / "w.pt", save_weights_only=True)
    model = epochs(cb, [{"val_loss": 1.0}])
    fresh = Saver()
    fresh.load_state_dict(torch.load(tmp_path / "w.pt", weights_only=True))
    assert torch.equal(fresh.lin.weight, model.lin.weight)


def test_whole_model_saves_call_model_save(tmp_path):
    model = epochs(ModelCheckpoint(str(tmp_path / "m.pt")), [{"val_loss": 1.0}])
    assert model.saved == [("model", str(tmp_path / "m.pt"))]


def test_parent_folders_are_created(tmp_path):
    cb = ModelCheckpoint(str(tmp_path / "a" / "b" / "{epoch}.pt"), save_weights_only=True)
    epochs(cb, [{"val_loss": 1.0}])
    assert (tmp_path / "a" / "b" / "1.pt").exists()


def test_save_best_only_follows_the_monitor_and_the_initial_threshold(tmp_path):
    path = str(tmp_path / "best-{epoch}.pt")
    values = [1.0, 0.8, 0.9, 0.8, 0.7]
    model = epochs(ModelCheckpoint(path, save_best_only=True), [{"val_loss": v} for v in values])
    assert names(model, tmp_path) == ["best-1.pt", "best-2.pt", "best-5.pt"]  # the tie at 4 is not better
    model = epochs(ModelCheckpoint(path, save_best_only=True, initial_value_threshold=0.85),
                   [{"val_loss": v} for v in values])
    assert names(model, tmp_path) == ["best-2.pt", "best-5.pt"]
    model = epochs(ModelCheckpoint(path, monitor="val_accuracy", save_best_only=True),
                   [{"val_accuracy": v} for v in [0.5, 0.4, 0.6]])
    assert names(model, tmp_path) == ["best-1.pt", "best-3.pt"]


def test_save_best_only_without_the_monitor_warns_and_saves(tmp_path):
    cb = ModelCheckpoint(str(tmp_path / "x.pt"), save_best_only=True)
    with pytest.warns(UserWarning, match="val_loss"):
        model = epochs(cb, [{"loss": 1.0}])
    assert len(model.saved) == 1


def test_best_carries_over_to_a_second_fit_as_in_keras(tmp_path):
    cb = ModelCheckpoint(str(tmp_path / "x.pt"), save_best_only=True)
    model = epochs(cb, [{"val_loss": 0.5}])
    epochs(cb, [{"val_loss": 0.6}], model)
    assert len(model.saved) == 1 and cb.best == 0.5


def test_save_freq_counts_batches_across_epochs(tmp_path):
    cb = ModelCheckpoint(str(tmp_path / "e{epoch}-b{batch}.pt"), save_freq=3, save_weights_only=True)
    model = epochs(cb, [{"val_loss": 1.0}] * 3, batches=4)
    # 12 batches, a save every 3rd; batch is 1-based within its epoch; none at epoch ends
    assert names(model, tmp_path) == ["e1-b3.pt", "e2-b2.pt", "e3-b1.pt", "e3-b4.pt"]


def test_batch_saves_can_use_the_batch_logs(tmp_path):
    cb = ModelCheckpoint(str(tmp_path / "{batch}-{loss:.1f}.pt"), save_freq=2, save_weights_only=True)
    model = epochs(cb, [{}], batches=2)
    assert names(model, tmp_path) == ["2-0.5.pt"]


@pytest.mark.parametrize("bad", [0, -1, "batch", 1.5, True])
def test_bad_save_freq(bad):
    with pytest.raises(ValueError, match="save_freq"):
        ModelCheckpoint("x.pt", save_freq=bad)


def test_missing_template_key_names_the_logged_keys(tmp_path):
    cb = ModelCheckpoint(str(tmp_path / "{val_acc:.2f}.pt"))
    with pytest.raises(KeyError, match="val_acc.*Logged keys: loss"):
        epochs(cb, [{"loss": 1.0}])


def test_a_directory_as_filepath_is_refused(tmp_path):
    with pytest.raises(IsADirectoryError, match="existing directory"):
        epochs(ModelCheckpoint(str(tmp_path)), [{"val_loss": 1.0}])


def test_auto_mode_is_checked_only_when_saving_the_best():
    ModelCheckpoint("x.pt", monitor="val_widgets")  # not compared: fine
    with pytest.raises(ValueError, match="mode='max'"):
        ModelCheckpoint("x.pt", monitor="val_widgets", save_best_only=True)


def test_state_dict_round_trip(tmp_path):
    cb = ModelCheckpoint(str(tmp_path / "x.pt"), save_freq=3, save_best_only=True, monitor="loss")
    epochs(cb, [{}], batches=4)
    other = ModelCheckpoint(str(tmp_path / "x.pt"), save_freq=3, save_best_only=True, monitor="loss")
    other.load_state_dict(cb.state_dict())
    assert other.state_dict() == cb.state_dict() == {
        "best": 0.5, "batches_seen_since_last_saving": 1, "last_batch_seen": 3, "current_epoch": 0}


def test_verbose_messages(tmp_path, capsys):
    cb = ModelCheckpoint(str(tmp_path / "x.pt"), save_best_only=True, verbose=1)
    epochs(cb, [{"val_loss": 0.5}, {"val_loss": 0.6}])
    out = capsys.readouterr().out
    assert "Epoch 1: val_loss improved from None to 0.50000, saving model to" in out
    assert "Epoch 2: val_loss did not improve from 0.50000" in out


@pytest.mark.parametrize("template", ["{epoch.__class__}.pt", "{epoch.__init__.__globals__}.pt", "{loss[0]}.pt",
                                      "{}.pt", "{0}.pt", "{epoch:{width}}.pt", "{epoch.real}.pt"])
def test_a_filepath_template_that_reaches_into_a_value_is_refused(template):
    with pytest.raises(ValueError, match=r"^filepath: the template field \{.*\} in .* is not a plain log key; the "
                                         r"template is filled with numbers only"):
        ModelCheckpoint(template)
    with pytest.raises(ValueError, match=r"^filepath: got '\{epoch.pt', which is not a valid format template"):
        ModelCheckpoint("{epoch.pt")


def test_the_filepath_is_filled_with_numbers_only(tmp_path):
    ckpt = ModelCheckpoint(str(tmp_path / "{epoch:02d}-{loss:.2f}-{note}.pt"), save_weights_only=True)
    with pytest.raises(KeyError, match="note"):  # a string in the logs is no value to put in a file name
        ckpt._file_path(0, None, {"loss": 0.25, "note": "../../etc/passwd"})
    plain = ModelCheckpoint(str(tmp_path / "{epoch:02d}-{loss:.2f}.pt"))
    assert plain._file_path(2, None, {"loss": torch.tensor(0.25)}).endswith("03-0.25.pt")
