"""TrainingState: the one owner of the resumable run state (state_dict / load_state_dict)."""

import os
import shutil

import numpy as np
import pytest
import torch
from torch import nn

import fitkit
from conftest import FIXTURES, fixture_script, same_weights
from fitkit import checkpoint
from fitkit.callbacks import BackupAndRestore, Callback



def test_a_backup_written_before_training_state_owned_the_run_state_still_resumes_bit_for_bit(tmp_path):
    made = fixture_script("make_backup_before_training_state")
    reference = made.model()
    reference.fit(*made.data(), **made.FIT)

    shutil.copy(os.path.join(FIXTURES, "backup_before_training_state.pt"), tmp_path / "latest.pt")
    resumed = made.model()
    started_at = []

    class Where(Callback):
        def on_train_batch_begin(self, batch, logs=None):
            started_at.append((self.model.training_state.epoch, batch))

    history = resumed.fit(*made.data(), callbacks=[BackupAndRestore(tmp_path), Where()], **made.FIT)
    assert started_at[0] == (1, 3)  # the old backup was made with 3 batches of epoch 1 done
    assert same_weights(reference, resumed)
    assert history.history == reference.history.history  # the resumed epoch's loss and AUC sums included
    assert not os.path.exists(tmp_path / "latest.pt")


def _net(optimizer="sgd"):
    fitkit.set_seed(0)
    model = fitkit.Sequential(nn.Linear(3, 4), nn.Dropout(0.5), nn.Linear(4, 1))
    model.compile(optimizer=optimizer, loss="mse", metrics=["mae"])
    return model


def _xy():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 3)).astype(np.float32)
    return x, x.sum(1, keepdims=True)


def test_state_dict_holds_the_run_state_and_loads_into_a_twin_that_then_trains_identically(tmp_path):
    x, y = _xy()
    model = _net()
    model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    state = model.training_state.state_dict()
    assert {"epoch", "step", "generator", "source", "running", "weights", "optimizer", "scheduler", "rng"} <= set(state)
    assert state["epoch"] == 2 and state["step"] == 0 and state["running"] is None and state["source"] is None
    checkpoint.save(state, tmp_path / "state.pt")
    model.fit(x, y, batch_size=8, epochs=4, initial_epoch=2, verbose=0)

    twin = _net()
    twin.training_state.load_state_dict(checkpoint.read(tmp_path / "state.pt"))
    assert twin.training_state.epoch == 2
    twin.fit(x, y, batch_size=8, epochs=4, initial_epoch=2, verbose=0)
    assert same_weights(model, twin)


def test_state_dict_without_the_model_state_is_what_a_model_file_keeps():
    model = _net()
    assert model.training_state.state_dict(model_state=False) == {
        "epoch": 0, "step": 0, "generator": None, "source": None, "running": None, "accumulation": None,
        "grad_scaler": None}
    before = torch.get_rng_state()
    model.training_state.state_dict()  # reading the state never creates the generator (it would draw a seed)
    assert torch.equal(before, torch.get_rng_state()) and model.training_state._generator is None


def test_loading_another_optimizers_state_is_refused_before_anything_changes():
    x, y = _xy()
    sgd = _net("sgd")
    sgd.fit(x, y, batch_size=8, epochs=1, verbose=0)
    adam = _net("adam")
    weights = {k: v.clone() for k, v in adam.state_dict().items()}
    optimizer = adam.optimizer.state_dict()
    with pytest.raises(ValueError, match=r"state: the saved optimizer is a SGD, not a Adam.*\['dampening', 'momentum'"):
        adam.training_state.load_state_dict(sgd.training_state.state_dict())
    assert all(torch.equal(v, adam.state_dict()[k]) for k, v in weights.items())
    assert adam.optimizer.state_dict() == optimizer and adam.training_state.epoch == 0


def test_a_mid_epoch_state_carries_the_running_sums_and_the_data_position():
    x, y = _xy()
    saved = {}

    class Snapshot(Callback):
        def on_train_batch_end(self, batch, logs=None):
            if self.model.training_state.epoch == 1 and batch == 2:
                saved.update(self.model.training_state.state_dict())

    model = _net()
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[Snapshot()])
    assert saved["epoch"] == 1 and saved["step"] == 3
    assert saved["source"]["source"]["cursor"] == 24 and saved["source"]["steps_seen"] == 3
    assert saved["running"]["loss"]["count"] == 24
    assert set(saved["running"]["metrics"]) == {"mae"}
