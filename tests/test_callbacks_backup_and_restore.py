"""BackupAndRestore: a run killed at any moment and started again ends bit for bit where a run never killed ends."""

import os
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch
from torch import nn

import fitkit
from conftest import noisy_binary_data, same_optimizer, same_weights, small_mlp
from fitkit.callbacks import (EMA, BackupAndRestore, Callback, EarlyStopping, LearningRateScheduler,
                              ReduceLROnPlateau)

SCRIPT = os.path.join(os.path.dirname(__file__), "scripts", "resumable_train.py")


class Crash(Exception):
    pass


class CrashAt(Callback):
    """Raises at the end of batch ``batch`` of epoch ``epoch`` (or at the start of an epoch when batch is None)."""

    def __init__(self, epoch, batch=None):
        super().__init__()
        self.at = (epoch, batch)

    def on_epoch_begin(self, epoch, logs=None):
        if self.at == (epoch, None):
            raise Crash()

    def on_train_batch_end(self, batch, logs=None):
        if self.at == (self.model.training_state.epoch, batch):
            raise Crash()


def _model(seed=0, scheduler=True):
    fitkit.set_seed(seed)
    model = small_mlp()
    model.compile(optimizer=fitkit.optimizers.SGD(learning_rate=0.05, momentum=0.9), loss=nn.BCEWithLogitsLoss(),
                  metrics=["accuracy"],
                  scheduler=(lambda opt: torch.optim.lr_scheduler.ExponentialLR(opt, 0.9)) if scheduler else None)
    return model


def _callbacks(backup_dir, extra=(), reduce_lr=True, **kwargs):
    # One thing drives the learning rate: ReduceLROnPlateau here, or the scheduler given to compile.
    plateau = [ReduceLROnPlateau(monitor="val_loss", patience=1, factor=0.5)] if reduce_lr else []
    return [EarlyStopping(monitor="val_loss", patience=10), BackupAndRestore(backup_dir, **kwargs), *plateau, *extra]


FIT = dict(batch_size=16, epochs=4, validation_split=0.2, verbose=0)  # 130 training samples: 9 batches


def _crash_and_resume(tmp_path, crash, extra=lambda: (), scheduler=False, **kwargs):
    """(uninterrupted model, its History, resumed model, its History); the learning rate follows the
    scheduler given to compile when ``scheduler``, else ReduceLROnPlateau."""
    x, y = noisy_binary_data()
    kwargs["reduce_lr"] = not scheduler and kwargs.get("reduce_lr", True)
    ref = _model(scheduler=scheduler)
    ref_history = ref.fit(x, y, callbacks=_callbacks(tmp_path / "ref", extra(), **kwargs), **FIT)
    first = _model(scheduler=scheduler)
    with pytest.raises(Crash):
        first.fit(x, y, callbacks=_callbacks(tmp_path / "b", [*extra(), crash], **kwargs), **FIT)
    torch.rand(5), np.random.rand(3)  # the restarted process's RNGs are anywhere
    resumed = _model(seed=123, scheduler=scheduler)
    history = resumed.fit(x, y, callbacks=_callbacks(tmp_path / "b", extra(), **kwargs), **FIT)
    return ref, ref_history, resumed, history


@pytest.mark.parametrize("save_freq, crash, scheduler", [("epoch", CrashAt(2), False), (4, CrashAt(1, 5), True),
                                                         (5, CrashAt(2, 3), False)],
                         ids=["epoch-boundary", "mid-epoch-compile-scheduler", "mid-epoch-late"])
def test_a_crashed_run_resumes_bit_for_bit_with_the_same_history(tmp_path, save_freq, crash, scheduler):
    ref, ref_history, resumed, history = _crash_and_resume(tmp_path, crash, scheduler=scheduler, save_freq=save_freq)
    assert same_weights(ref, resumed)
    assert same_optimizer(ref.optimizer, resumed.optimizer)
    if scheduler:
        assert ref.scheduler.state_dict() == resumed.scheduler.state_dict()
    # The History comes back too, and the resumed epoch's running loss and accuracy were restored.
    assert history.history == ref_history.history and history.epoch == [0, 1, 2, 3]
    assert not (tmp_path / "b").exists()  # delete_checkpoint=True: gone once training finished


@pytest.mark.parametrize("crash", [CrashAt(2, 4), CrashAt(2)], ids=["mid-epoch", "epoch-boundary"])
def test_callback_states_and_multiplicative_lr_schedule_and_ema_resume_exactly(tmp_path, crash):
    # LearningRateScheduler runs again at the resumed epoch's start; a multiplicative schedule must not
    # be applied twice. EMA's average (in the model between epochs) and EarlyStopping's best weights
    # come back on the model's device. Every 3 batches of 9: the save due at an epoch's last batch is
    # made at its end.
    def extra():
        return [LearningRateScheduler(lambda epoch, lr: lr * 0.8), EMA(decay=0.9),
                EarlyStopping(monitor="loss", patience=10, restore_best_weights=True)]

    ref, ref_history, resumed, history = _crash_and_resume(tmp_path, crash, extra, save_freq=3, reduce_lr=False)
    assert same_weights(ref, resumed)
    assert history.history == ref_history.history


def test_dataset_input_resumes_mid_epoch_exactly(tmp_path):
    x, y = noisy_binary_data()
    data = torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y))

    class NotTensorDataset(torch.utils.data.Dataset):  # goes through a DataLoader, not the array path
        def __len__(self):
            return len(data)

        def __getitem__(self, i):
            return data[i]

    kw = dict(batch_size=16, epochs=3, verbose=0)
    ref = _model()
    ref.fit(NotTensorDataset(), callbacks=[BackupAndRestore(tmp_path / "r", save_freq=4)], **kw)
    first = _model()
    with pytest.raises(Crash):
        first.fit(NotTensorDataset(), callbacks=[BackupAndRestore(tmp_path / "b", save_freq=4), CrashAt(1, 6)], **kw)
    resumed = _model(seed=9)
    resumed.fit(NotTensorDataset(), callbacks=[BackupAndRestore(tmp_path / "b", save_freq=4)], **kw)
    assert same_weights(ref, resumed)


def test_a_resumed_run_skips_the_done_epochs_and_batches(tmp_path):
    x, y = noisy_binary_data()
    seen = []

    class Spy(Callback):
        def on_train_batch_begin(self, batch, logs=None):
            seen.append((self.model.training_state.epoch, batch))

    with pytest.raises(Crash):
        _model().fit(x, y, callbacks=[BackupAndRestore(tmp_path, save_freq=4), CrashAt(1, 6)], **FIT)
    model = _model()
    history = model.fit(x, y, callbacks=[Spy(), BackupAndRestore(tmp_path, save_freq=4)], **FIT)
    # backups after 4, 8 (epoch 0) and 12 batches (epoch 1, batch 2): resume at epoch 1, batch 3
    assert seen[0] == (1, 3) and seen[6] == (2, 0)
    assert history.epoch == [0, 1, 2, 3]


def test_early_stopping_state_comes_back_and_a_stopped_run_stays_stopped(tmp_path):
    x, y = noisy_binary_data()
    stop = EarlyStopping(monitor="val_loss", patience=1, min_delta=10.0)  # no epoch improves by 10: stops at 1
    backup = BackupAndRestore(tmp_path, delete_checkpoint=False)
    history = _model().fit(x, y, callbacks=[stop, backup], **FIT)
    assert history.stop_reason == "early_stopping" and history.epoch == [0, 1]
    again = EarlyStopping(monitor="val_loss", patience=1, min_delta=10.0)
    model = _model(seed=3)
    history = model.fit(x, y, callbacks=[again, BackupAndRestore(tmp_path)], **FIT)
    assert history.epoch == [0, 1] and history.stop_reason == "early_stopping"  # nothing trained again
    assert (again.wait, again.best, again.stopped_epoch) == (stop.wait, stop.best, stop.stopped_epoch)


def test_double_checkpoint_falls_back_to_the_previous_backup_when_the_latest_is_corrupt(tmp_path):
    x, y = noisy_binary_data()
    with pytest.raises(Crash):
        _model().fit(x, y, callbacks=[BackupAndRestore(tmp_path, double_checkpoint=True), CrashAt(3)], **FIT)
    assert sorted(os.listdir(tmp_path)) == ["latest.pt", "previous.pt"]
    (tmp_path / "latest.pt").write_bytes(b"garbage")
    seen = []

    class Spy(Callback):
        def on_epoch_begin(self, epoch, logs=None):
            seen.append(epoch)

    with pytest.warns(UserWarning, match="latest backup is unreadable .*resuming from the previous one"):
        _model().fit(x, y, callbacks=[BackupAndRestore(tmp_path, double_checkpoint=True), Spy()], **FIT)
    assert seen == [2, 3]  # the previous backup was made after epoch 1


def test_a_corrupt_backup_without_a_previous_one_is_a_clear_error(tmp_path):
    (tmp_path / "latest.pt").write_bytes(b"\x00" * 10)
    model = _model()
    before = [p.clone() for p in model.parameters()]
    with pytest.raises(ValueError, match="backup_dir: no readable backup"):
        model.fit(*noisy_binary_data(), callbacks=[BackupAndRestore(tmp_path)], **FIT)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_a_backup_of_another_model_is_refused_before_anything_changes(tmp_path):
    x, y = noisy_binary_data()
    with pytest.raises(Crash):
        _model().fit(x, y, callbacks=[BackupAndRestore(tmp_path), CrashAt(2)], **FIT)
    other = fitkit.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 1))
    other.compile(optimizer="sgd", loss=nn.BCEWithLogitsLoss())
    before = [p.clone() for p in other.parameters()]
    with pytest.raises(ValueError, match=r"backup_dir: .*do not fit Sequential.*with another shape: 0.weight"):
        other.fit(x, y, callbacks=[BackupAndRestore(tmp_path)], **FIT)
    assert all(torch.equal(a, b) for a, b in zip(before, other.parameters()))


def test_delete_checkpoint_false_keeps_the_backup_and_an_exception_always_does(tmp_path):
    x, y = noisy_binary_data()
    _model().fit(x, y, callbacks=[BackupAndRestore(tmp_path / "keep", delete_checkpoint=False)], **FIT)
    assert os.listdir(tmp_path / "keep") == ["latest.pt"]
    with pytest.raises(Crash):
        _model().fit(x, y, callbacks=[BackupAndRestore(tmp_path / "crash"), CrashAt(1, 2)], **FIT)
    assert os.listdir(tmp_path / "crash") == ["latest.pt"]
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    _model().fit(x, y, callbacks=[BackupAndRestore(tmp_path / "other")], **FIT)
    assert os.listdir(tmp_path / "other") == ["notes.txt"]  # only its own files are deleted


def test_ctrl_c_backs_up_the_step_it_stopped_at_and_the_next_run_goes_on(tmp_path):
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals need the main thread")
    x, y = noisy_binary_data()

    class InterruptAt(Callback):
        def on_train_batch_end(self, batch, logs=None):
            if (self.model.training_state.epoch, batch) == (1, 4):
                os.kill(os.getpid(), signal.SIGINT)

    ref = _model()
    ref.fit(x, y, callbacks=[BackupAndRestore(tmp_path / "ref", save_freq=False)], **FIT)
    history = _model().fit(x, y, callbacks=[BackupAndRestore(tmp_path / "b", save_freq=False), InterruptAt()], **FIT)
    assert history.interrupted and os.listdir(tmp_path / "b") == ["latest.pt"]
    resumed = _model(seed=5)
    resumed.fit(x, y, callbacks=[BackupAndRestore(tmp_path / "b", save_freq=False)], **FIT)
    assert same_weights(ref, resumed)


def test_it_backs_up_after_every_other_callback_and_clears_temporaries_of_killed_writes(tmp_path):
    (tmp_path / ".latest.pt.abc123.tmp").write_bytes(b"half a file")

    class Counter(Callback):  # listed after BackupAndRestore, yet its epoch end is in the backup
        def __init__(self):
            super().__init__()
            self.ends = 0

        def on_epoch_end(self, epoch, logs=None):
            self.ends += 1

        def state_dict(self):
            return {"ends": self.ends}

        def load_state_dict(self, state):
            self.ends = state["ends"]

    _model().fit(*noisy_binary_data(), callbacks=[BackupAndRestore(tmp_path, delete_checkpoint=False), Counter()],
                 **dict(FIT, epochs=2))
    assert os.listdir(tmp_path) == ["latest.pt"]
    backup = torch.load(tmp_path / "latest.pt", weights_only=True)
    assert backup["callbacks"]["0:Counter"] == {"ends": 2} and backup["state"]["epoch"] == 2
    assert backup["callbacks"]["1:History"]["epoch"] == [0, 1]


def test_backups_load_with_weights_only_and_hold_the_training_state(tmp_path):
    x, y = noisy_binary_data()
    with pytest.raises(Crash):
        _model().fit(x, y, callbacks=[BackupAndRestore(tmp_path, save_freq=4), CrashAt(1, 5)], **FIT)
    backup = torch.load(tmp_path / "latest.pt", weights_only=True)
    state = backup["state"]  # TrainingState.state_dict(): the one owner of the run state
    assert backup["format"] == "fitkit.backup" and (state["epoch"], state["step"]) == (1, 3)
    assert set(state["rng"]) == {"python", "numpy", "torch", "cuda"}
    assert set(state) >= {"weights", "optimizer", "scheduler", "generator", "source", "running"}
    assert set(state["running"]) == {"loss", "parts", "metrics"} and "callbacks" in backup
    assert sorted(backup["callbacks"]) == ["0:History"]
    model = _model()
    model.load_weights(tmp_path / "latest.pt")  # a backup's weights load like a model file's
    assert torch.equal(model.state_dict()["0.weight"], state["weights"]["0.weight"])


@pytest.mark.parametrize("kwargs, message", [
    (dict(backup_dir=""), "backup_dir: got an empty path"),
    (dict(backup_dir="b", save_freq=0), "save_freq: got 0"),
    (dict(backup_dir="b", save_freq="batch"), "save_freq: got 'batch'"),
    (dict(backup_dir="b", save_freq=True), "save_freq: got True"),
])
def test_bad_arguments_name_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BackupAndRestore(**kwargs)
    with pytest.raises(TypeError, match="double_checkpoint: got 1"):
        BackupAndRestore("b", double_checkpoint=1)


def _run(env, tmp_path, name):
    out = tmp_path / f"{name}.pt"
    full = dict(os.environ, FITKIT_OUT=str(out), OMP_NUM_THREADS="1", **env)
    return subprocess.Popen([sys.executable, SCRIPT], env=full, stdout=subprocess.PIPE, stderr=subprocess.PIPE), out


def _wait(proc):
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err.decode()


def test_sigkill_at_an_epoch_boundary_and_mid_epoch_then_restart_ends_bit_for_bit(tmp_path):
    epoch_dir, batch_dir = str(tmp_path / "epoch"), str(tmp_path / "batch")
    runs = [_run(dict(FITKIT_BACKUP_DIR=str(tmp_path / "ref"), FITKIT_SAVE_FREQ="4"), tmp_path, "ref"),
            _run(dict(FITKIT_BACKUP_DIR=epoch_dir, FITKIT_KILL_AT="epoch:2"), tmp_path, "epoch"),
            _run(dict(FITKIT_BACKUP_DIR=batch_dir, FITKIT_SAVE_FREQ="4", FITKIT_DOUBLE="1",
                      FITKIT_KILL_AT="batch:1:6"), tmp_path, "batch")]
    codes = [_wait(proc) for proc, _ in runs]
    assert codes[0][0] == 0, codes[0][1]
    assert [c for c, _ in codes[1:]] == [-signal.SIGKILL] * 2, codes
    assert os.listdir(epoch_dir) == ["latest.pt"] and sorted(os.listdir(batch_dir)) == ["latest.pt", "previous.pt"]
    assert torch.load(os.path.join(batch_dir, "latest.pt"), weights_only=True)["state"]["step"] == 3
    restarts = [_run(dict(FITKIT_BACKUP_DIR=epoch_dir), tmp_path, "epoch"),
                _run(dict(FITKIT_BACKUP_DIR=batch_dir, FITKIT_SAVE_FREQ="4", FITKIT_DOUBLE="1"), tmp_path, "batch")]
    for proc, _ in restarts:
        code, err = _wait(proc)
        assert code == 0, err
    ref = torch.load(runs[0][1], weights_only=True)
    for _, out in restarts:
        got = torch.load(out, weights_only=True)
        assert all(torch.equal(ref["weights"][k], got["weights"][k]) for k in ref["weights"])
        assert ref["optimizer"]["param_groups"] == got["optimizer"]["param_groups"]
        for i, state in ref["optimizer"]["state"].items():
            assert all(torch.equal(v, got["optimizer"]["state"][i][k]) for k, v in state.items())
        assert got["history"] == ref["history"] and got["epoch"] == [0, 1, 2, 3]
        assert not got["backup_left"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device: resume with states on the GPU")
def test_resume_on_cuda_restores_device_states_and_ends_where_the_uninterrupted_run_ends(tmp_path):
    def cuda_model(seed=0):
        model = _model(seed)
        model.compile(optimizer=fitkit.optimizers.Adam(learning_rate=1e-2), loss=nn.BCEWithLogitsLoss(),
                      metrics=["accuracy"], device="cuda")
        return model

    def extra():
        return [EMA(decay=0.9), EarlyStopping(monitor="loss", patience=10, restore_best_weights=True)]

    x, y = noisy_binary_data()
    ref = cuda_model()
    ref_history = ref.fit(x, y, callbacks=_callbacks(tmp_path / "ref", extra(), save_freq=4), **FIT)
    with pytest.raises(Crash):
        cuda_model().fit(x, y, callbacks=_callbacks(tmp_path / "b", [*extra(), CrashAt(1, 5)], save_freq=4), **FIT)
    resumed = cuda_model(seed=3)
    history = resumed.fit(x, y, callbacks=_callbacks(tmp_path / "b", extra(), save_freq=4), **FIT)
    assert resumed.device.type == "cuda" and same_weights(ref, resumed)
    assert history.history == ref_history.history
    resumed.save(tmp_path / "m.pt")
    loaded = fitkit.load_model(tmp_path / "m.pt")
    assert loaded.device.type == "cuda" and same_weights(resumed, loaded)


def _compiled_like(optimizer, scheduler):
    fitkit.set_seed(0)
    model = small_mlp()
    model.compile(optimizer=optimizer, loss=nn.BCEWithLogitsLoss(), metrics=["accuracy"], scheduler=scheduler)
    return model


@pytest.mark.parametrize("optimizer, scheduler, match", [
    ("adam", lambda o: torch.optim.lr_scheduler.ExponentialLR(o, 0.9),
     r"^backup_dir: the saved optimizer is a SGD, not a Adam like this model's \(it has the hyperparameters "
     r"\['dampening', 'momentum'"),
    (None, None, None),  # the same compile: it resumes
    ("sgd", lambda o: torch.optim.lr_scheduler.StepLR(o, 2),
     r"^backup_dir: the saved scheduler is a ExponentialLR; this model's is a StepLR"),
    ("sgd", None, r"^backup_dir: the saved optimizer/scheduler do not match this model's compile: the saved state "
                  r"has optimizer and scheduler, this model has optimizer"),
])
def test_a_backup_of_another_optimizer_or_scheduler_is_refused_before_anything_changes(tmp_path, optimizer,
                                                                                       scheduler, match):
    x, y = noisy_binary_data()
    with pytest.raises(Crash):
        _model().fit(x, y, callbacks=[BackupAndRestore(tmp_path / "b"), CrashAt(1, 3)], **FIT)
    if match is None:
        _model().fit(x, y, callbacks=[BackupAndRestore(tmp_path / "b")], **FIT)
        return
    model = _compiled_like(optimizer, scheduler)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    opt_state = model.optimizer.state_dict()
    backup = (tmp_path / "b" / "latest.pt").read_bytes()
    with pytest.raises(ValueError, match=match + r".*delete '.*b' to start afresh"):
        model.fit(x, y, callbacks=[BackupAndRestore(tmp_path / "b")], **FIT)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in weights.items())
    assert model.optimizer.state_dict() == opt_state and (tmp_path / "b" / "latest.pt").read_bytes() == backup
    model.fit(x, y, callbacks=[BackupAndRestore(tmp_path / "fresh")], **FIT)  # and the model still trains


def test_adam_and_adamw_with_the_same_hyperparameters_are_told_apart_by_their_class(tmp_path):
    x, y = noisy_binary_data()
    with pytest.raises(Crash):
        _compiled_like("adam", None).fit(x, y, callbacks=[BackupAndRestore(tmp_path), CrashAt(1, 3)],
                                                   **FIT)
    model = _compiled_like("adamw", None)
    with pytest.raises(ValueError, match=r"^backup_dir: the saved optimizer is a Adam, not a AdamW"):
        model.fit(x, y, callbacks=[BackupAndRestore(tmp_path)], **FIT)
