"""BackupAndRestore: a run killed at any moment and started again continues exactly where it was."""

import contextlib
import os
import warnings

import torch

from .. import checkpoint, distributed
from .base import Callback

_LATEST = "latest.pt"
_PREVIOUS = "previous.pt"


def _to_device(value, device):
    """Tensors in a callback's state back on the model's device (the backup is read onto the CPU)."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: _to_device(v, device) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_device(v, device) for v in value)
    return value


def _training_state_of(backup):
    """The backup's training state; a backup written before TrainingState owned it kept its parts at the
    top level, which are gathered here so that a run started with an older fitkit still resumes."""
    if "state" in backup:
        return backup["state"]
    trackers = backup.get("trackers")
    state = {key: backup[key] for key in ("weights", "optimizer", "scheduler", "generator", "epoch", "rng")}
    state.update({"step": backup["batches_done"], "source": backup.get("source"), "running": None})
    if trackers:
        state["running"] = {"loss": trackers["loss"], "parts": trackers.get("parts") or {},
                            "metrics": backup.get("metrics") or {}}
    return state


class BackupAndRestore(Callback):
    """Keeps the whole training state in ``backup_dir`` so that a killed run, started again with the same
    script, continues where it was and ends with exactly the weights of a run never killed.

    A backup holds the weights, the optimizer and scheduler state, every RNG state (Python, NumPy, torch
    CPU and CUDA, the model's data-order generator), the epoch and batch position, the position in the
    training data, the running loss (and metric sums) of an unfinished epoch, and the state of every
    callback that has ``state_dict()`` (EarlyStopping's wait and best, ReduceLROnPlateau's, EMA's, the
    History). At the start of ``fit`` the latest backup is restored and training resumes at the saved
    epoch and batch (SIGKILL included: every write is atomic, so a backup is whole or absent).

    save_freq: ``"epoch"`` backs up after each epoch; an int, after every that many training batches
        (a save due at an epoch's last batch is made at the epoch's end); ``False``, only when training
        is interrupted with Ctrl-C.
    double_checkpoint: keep the previous backup too, and fall back to it when the latest cannot be read.
    delete_checkpoint: delete the backup when training ends (finished or stopped early; not after
        Ctrl-C or an exception, so the next run resumes).

    Backups and resumed runs act after every other callback (the callback moves itself to the end of
    the list), so a backup holds what all of them did at that point. Keep ``backup_dir`` for this run
    alone. Under torchrun rank 0 writes the backup (every rank takes part in gathering it) and every rank
    restores it: ``backup_dir`` must be on a filesystem all of them see. Exact resume of an epoch in the middle needs the data to be arrays/tensors or a ``Dataset``
    (a DataLoader or generator is replayed up to the saved batch: exact when it repeats its order).

    >>> backup = BackupAndRestore("backup", save_freq=100)
    >>> model.fit(x, y, epochs=50, callbacks=[backup])   # run it again after a crash: it goes on
    """

    def __init__(self, backup_dir, save_freq="epoch", double_checkpoint=False, delete_checkpoint=True):
        super().__init__()
        try:
            backup_dir = os.fspath(backup_dir)
        except TypeError:
            raise TypeError(f"backup_dir: got {backup_dir!r}; expected a folder path (str or os.PathLike)") from None
        if not backup_dir:
            raise ValueError("backup_dir: got an empty path; expected a folder for the backup files")
        if save_freq != "epoch" and save_freq is not False and (
                isinstance(save_freq, bool) or not isinstance(save_freq, int) or save_freq < 1):
            raise ValueError(f"save_freq: got {save_freq!r}; expected 'epoch', a positive number of training "
                             "batches, or False (back up only on Ctrl-C)")
        for name, value in (("double_checkpoint", double_checkpoint), ("delete_checkpoint", delete_checkpoint)):
            if not isinstance(value, bool):
                raise TypeError(f"{name}: got {value!r}; expected True or False")
        self.backup_dir = backup_dir
        self.save_freq = save_freq
        self.double_checkpoint = double_checkpoint
        self.delete_checkpoint = delete_checkpoint
        self._latest = os.path.join(backup_dir, _LATEST)
        self._previous = os.path.join(backup_dir, _PREVIOUS)
        self._callbacks = None
        self._resume = None        # the backup being restored, until its last part is applied
        self._resume_state = None  # its training state
        self._phase = None         # what of a mid-epoch resume is still to apply: epoch_begin, batch_begin
        self._since_save = 0       # training batches since the last backup
        self._position = None      # (epoch, batches done in it) after the last hook seen
        self._saved_position = None
        self._epoch_begin_rng = None
        self._save_at_epoch_end = False
        self._read_path = self._latest

    # ------------------------------------------------------------------ restoring

    def restore_training(self, callbacks):
        """Called by fit before any ``on_train_begin``: load the latest backup, if there is one."""
        self._callbacks = callbacks
        # Act after every other callback, so that a backup holds the state they left at that point.
        if callbacks.callbacks[-1] is not self:
            callbacks.callbacks.remove(self)
            callbacks.append(self)
        self._resume, self._resume_state, self._phase, self._save_at_epoch_end = None, None, None, False
        self._since_save, self._position, self._saved_position = 0, None, None
        if distributed.is_writer(self.model):
            checkpoint.remove_stale_temporaries(self._latest)
            checkpoint.remove_stale_temporaries(self._previous)
        backup = self._read()
        if backup is None:
            return
        saved = _training_state_of(backup)
        self._check(backup, saved)
        model, state = self.model, self.model.training_state
        state.load_state_dict(saved, rng=False, checked=True)
        state.resume_epoch = state.epoch
        if backup["stop_training"]:
            # It had stopped (EarlyStopping) before it could finish: it ends now, as it would have.
            model.stop_training, model.stop_reason = True, backup["stop_reason"]
            state.resume_epoch = max(state.epoch, self.params.get("epochs") or 0)
            state.begin_fit()
        for key, cb in self._stateful():
            if key in backup["callbacks"] and not self._is_history(cb):
                cb.load_state_dict(_to_device(backup["callbacks"][key], model.device))
        self._since_save = backup["since_save"]
        self._position = self._saved_position = (state.epoch, state.step)
        self._epoch_begin_rng = backup.get("epoch_begin_rng")
        self._resume = backup
        self._resume_state = saved
        self._phase = "epoch_begin" if state.step else None

    def _read(self):
        """The latest backup, or the previous one when the latest is missing or unreadable."""
        errors = []
        for path in (self._latest, self._previous):
            self._read_path = path
            if not os.path.exists(path):
                continue
            try:
                backup = checkpoint.read(path, what="backup_dir")
            except (checkpoint.CorruptCheckpointError, checkpoint.UntrustedCheckpointError, OSError) as exc:
                errors.append(str(exc))
                continue
            if isinstance(backup, dict) and backup.get("format") == checkpoint.BACKUP_FORMAT:
                if errors:
                    warnings.warn(f"BackupAndRestore: the latest backup is unreadable ({errors[0]}); resuming from "
                                  "the previous one.", stacklevel=4)
                return backup
            errors.append(f"backup_dir: {path!r} is not a BackupAndRestore backup")
        if errors:
            raise ValueError("backup_dir: no readable backup in " + repr(self.backup_dir) + ": " + "; ".join(errors)
                             + ". Delete the folder to start training afresh.")
        return None

    def _check(self, backup, saved):
        """Every mismatch between the backup and this model, raised before anything changes."""
        if backup.get("version", 0) > checkpoint.FORMAT_VERSION:
            raise ValueError(f"backup_dir: the backup in {self.backup_dir!r} has format version {backup['version']}; "
                             f"this fitkit reads up to {checkpoint.FORMAT_VERSION}: upgrade fitkit")
        self.model.training_state.check(saved, what="backup_dir", where=self._read_path,
                                        remedy=f"Build and compile the model as the backed-up run did, or delete "
                                               f"{self.backup_dir!r} to start afresh.")

    def _set_rng(self, rng, generator):
        checkpoint.set_rng_state(rng)
        self.model.training_state.generator.set_state(generator)

    def on_train_begin(self, logs=None):
        backup = self._resume
        if backup is None:
            return
        # Last of all on_train_begin hooks: the RNGs are as they were when the backup was made.
        self._set_rng(self._resume_state["rng"], self._resume_state["generator"])
        for key, cb in self._stateful():
            if key in backup["callbacks"] and self._is_history(cb):
                cb.load_state_dict(backup["callbacks"][key])  # History's own on_train_begin clears it
        if self._phase is None:
            self._resume = None

    def on_epoch_begin(self, epoch, logs=None):
        if self._phase == "epoch_begin":
            # Resuming inside this epoch: other callbacks just ran on_epoch_begin once more (a
            # LearningRateScheduler set the rate again); put back what the backup holds, and the RNGs
            # of this epoch's start so the data order is drawn again as it was.
            self.model.training_state.load_state_dict(self._resume_state, rng=False, checked=True)
            if self._epoch_begin_rng is not None:
                self._set_rng(self._epoch_begin_rng["rng"], self._epoch_begin_rng["generator"])
            self._phase = "batch_begin"
        else:
            self._epoch_begin_rng = {"rng": checkpoint.get_rng_state(),
                                     "generator": self.model.training_state.generator.get_state()}
        self._save_at_epoch_end = False

    def on_train_batch_begin(self, batch, logs=None):
        if self._phase != "batch_begin":
            return
        # The skipped batches' data was drawn again; the RNGs go back to where the backup was made.
        self._set_rng(self._resume_state["rng"], self._resume_state["generator"])
        self._phase, self._resume, self._resume_state = None, None, None

    def on_train_batch_end(self, batch, logs=None):
        state = self.model.training_state
        self._position = (state.epoch, state.step)
        self._since_save += 1
        if self.save_freq in ("epoch", False) or self._since_save < self.save_freq:
            return
        steps = self.params.get("steps")
        if steps is not None and batch + 1 >= steps:
            self._save_at_epoch_end = True  # the epoch's end holds the complete state of this point
        else:
            self._save()

    def on_epoch_end(self, epoch, logs=None):
        self._position = (epoch + 1, 0)
        if self.save_freq == "epoch" or self._save_at_epoch_end:
            self._save()
        self._save_at_epoch_end = False

    def on_train_end(self, logs=None):
        model = self.model
        epochs = self.params.get("epochs") or 0
        if model.stop_reason == "interrupted":
            # Ctrl-C stopped it after a whole step: back up that point, unless it is an epoch's last batch.
            epoch, done = self._position or (None, 0)
            steps = self.params.get("steps")
            if epoch is not None and (done == 0 or steps is None or done < steps) and epoch < epochs:
                self._save()
        elif self.delete_checkpoint and (model.stop_training or (self._position or (0, 0)) >= (epochs, 0)):
            self._delete()
        self._resume, self._resume_state, self._phase, self._callbacks = None, None, None, None

    # ------------------------------------------------------------------ saving

    def _stateful(self):
        """(key, callback) for each other callback with state_dict/load_state_dict, keyed by position and class."""
        found, index = [], 0
        for cb in self._callbacks or ():
            if cb is self or not (callable(getattr(cb, "state_dict", None))
                                  and callable(getattr(cb, "load_state_dict", None))):
                continue
            found.append((f"{index}:{type(cb).__name__}", cb))
            index += 1
        return found

    @staticmethod
    def _is_history(cb):
        from ..history import History  # history imports callbacks: import it when first needed

        return isinstance(cb, History)

    def _save(self):
        if self._position is None or self._position == self._saved_position:
            return
        model = self.model
        done = self._position[1]
        # Every rank of a distributed model gathers (whole tensors of a sharded one, the epoch's sums over
        # the ranks); rank 0 alone writes.
        backup = {
            "format": checkpoint.BACKUP_FORMAT,
            "version": checkpoint.FORMAT_VERSION,
            "state": model.training_state.state_dict(),
            "epoch_begin_rng": self._epoch_begin_rng if done else None,
            "callbacks": {key: distributed.full_tensors(cb.state_dict()) for key, cb in self._stateful()},
            "stop_training": bool(model.stop_training),
            "stop_reason": model.stop_reason,
            "since_save": 0,
        }
        with distributed.one_writer(model) as writing:
            if writing:
                os.makedirs(self.backup_dir, exist_ok=True)
                if self.double_checkpoint and os.path.exists(self._latest):
                    os.replace(self._latest, self._previous)
                checkpoint.save(backup, self._latest)
        self._since_save, self._saved_position = 0, self._position

    def _delete(self):
        if not distributed.is_writer(self.model):
            return
        for path in (self._latest, self._previous):
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
        with contextlib.suppress(OSError):
            os.rmdir(self.backup_dir)  # only when empty: the folder may hold files that are not ours
