"""ModelCheckpoint: save the model or its weights every epoch or every N batches, or only the best."""

import numbers
import os
import string
import warnings

from .. import distributed
from .monitor import MonitorCallback, missing_key_hint


def check_template(filepath, what="filepath"):
    """Raise a ValueError unless ``filepath`` is a format string whose fields name log keys plainly.

    The template is filled with numbers only (``epoch``, ``batch`` and the logged values), so a field that
    reaches into a value (``{epoch.__class__}``, ``{loss[0]}``) or names no key (``{}``, ``{0}``) can only be
    a mistake, or an attempt to read the program's objects into a file name.

    >>> check_template("ckpt/{epoch:02d}-{val_loss:.3f}.pt")
    """
    try:
        fields = list(string.Formatter().parse(filepath))
    except ValueError as exc:
        raise ValueError(f"{what}: got {filepath!r}, which is not a valid format template ({exc}); write "
                         "{{ and }} for literal braces") from None
    for _, field, spec, _ in fields:
        if field is None:
            continue
        if field == "" or field.isdigit() or any(c in field for c in ".[]") or "{" in (spec or ""):
            raise ValueError(f"{what}: the template field {{{field}{':' + spec if spec else ''}}} in {filepath!r} "
                             "is not a plain log key; the template is filled with numbers only: write a key and "
                             "a number format, such as {epoch:02d} or {val_loss:.4f}")


def _numbers(logs):
    """The log values that are numbers, as Python numbers (a template formats nothing else)."""
    values = {}
    for key, value in logs.items():
        if isinstance(value, numbers.Number) and not isinstance(value, bool):
            values[key] = value if isinstance(value, (int, float)) else float(value)
        elif callable(getattr(value, "item", None)) and getattr(value, "ndim", None) == 0:
            values[key] = float(value.item())  # a NumPy scalar or 0-dim tensor a callback put in the logs
    return values


class ModelCheckpoint(MonitorCallback):
    """Saves the model (``model.save``) or its weights (``model.save_weights``) during training.

    ``filepath`` is a format string filled with ``epoch`` (1-based), every key of the logs
    (``"{epoch:02d}-{val_loss:.2f}.pt"``) and, for saves every N batches, ``batch`` (1-based within
    the epoch). Missing parent folders are created. Under torchrun every rank decides alike and rank 0
    alone writes (``model.save`` gathers a sharded model's state from every rank). ``save_freq="epoch"`` saves after each epoch; an
    int saves after that many training batches, counted across epoch boundaries. With
    ``save_best_only`` a save happens only when ``monitor`` improves on the best so far, which starts
    at ``initial_value_threshold`` (if given).

    >>> ckpt = ModelCheckpoint("ckpt/best.pt", monitor="val_loss", save_best_only=True,
    ...                        save_weights_only=True)
    """

    def __init__(self, filepath, monitor="val_loss", verbose=0, save_best_only=False,
                 save_weights_only=False, mode="auto", save_freq="epoch",
                 initial_value_threshold=None):
        try:
            path = os.fspath(filepath)
        except TypeError:
            raise TypeError(f"filepath must be a str or os.PathLike; got {filepath!r}.") from None
        if save_freq != "epoch" and (isinstance(save_freq, bool) or not isinstance(save_freq, int)
                                     or save_freq < 1):
            raise ValueError(
                f"Unrecognized save_freq: {save_freq!r}. Expected 'epoch' or a positive int "
                "(a number of training batches)."
            )
        check_template(path)
        # Only save_best_only compares values, so only then must the direction be known.
        super().__init__(monitor, mode, compares=save_best_only)
        self.filepath = path
        self.verbose = verbose
        self.save_best_only = save_best_only
        self.save_weights_only = save_weights_only
        self.save_freq = save_freq
        self.initial_value_threshold = initial_value_threshold
        # Like Keras, best is not reset between fits: a second fit saves only what beats the first.
        self.best = initial_value_threshold
        self._batches_seen_since_last_saving = 0
        self._last_batch_seen = None
        self._current_epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._current_epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self._should_save_on_batch(batch):
            self._save(self._current_epoch, batch, logs)

    def on_epoch_end(self, epoch, logs=None):
        if self.save_freq == "epoch":
            self._save(epoch, None, logs)

    def _should_save_on_batch(self, batch):
        if self.save_freq == "epoch":
            return False
        # Batch indices restart each epoch; the count carries over so saves stay every N batches.
        if self._last_batch_seen is None or batch <= self._last_batch_seen:
            self._batches_seen_since_last_saving += batch + 1
        else:
            self._batches_seen_since_last_saving += batch - self._last_batch_seen
        self._last_batch_seen = batch
        if self._batches_seen_since_last_saving >= self.save_freq:
            self._batches_seen_since_last_saving = 0
            return True
        return False

    def _file_path(self, epoch, batch, logs):
        logs = _numbers(logs)
        try:
            if batch is None or "batch" in logs:
                return self.filepath.format(**logs, epoch=epoch + 1)
            return self.filepath.format(**logs, epoch=epoch + 1, batch=batch + 1)
        except KeyError as e:
            hint = missing_key_hint(e.args[0] if e.args else None, logs)
            raise KeyError(
                f'Failed to format the ModelCheckpoint filepath "{self.filepath}": {e} is not '
                f"logged{' (' + hint + ')' if hint else ''}. Logged keys: {', '.join(logs) or '(none)'}."
            ) from None

    def _should_save(self, epoch, logs, filepath):
        if not self.save_best_only:
            if self.verbose > 0:
                print(f"\nEpoch {epoch + 1}: saving model to {filepath}")
            return True
        current = logs.get(self.monitor)
        if current is None:
            hint = missing_key_hint(self.monitor, logs)
            warnings.warn(f"Can save best model only with {self.monitor} available"
                          f"{' (' + hint + ')' if hint else ''}.", stacklevel=3)
            return True
        best_str = "None" if self.best is None else f"{self.best:.5f}"
        if self._is_improvement(current, self.best):
            if self.verbose > 0:
                print(f"\nEpoch {epoch + 1}: {self.monitor} improved from {best_str} to "
                      f"{current:.5f}, saving model to {filepath}")
            self.best = current
            return True
        if self.verbose > 0:
            print(f"\nEpoch {epoch + 1}: {self.monitor} did not improve from {best_str}")
        return False

    def _save(self, epoch, batch, logs):
        # Batch logs are lazy; reading them (a device sync) happens only here, when a save is due.
        logs = dict(logs or {})
        filepath = self._file_path(epoch, batch, logs)
        if not self._should_save(epoch, logs, filepath):
            return
        if os.path.isdir(filepath):
            raise IsADirectoryError(
                f"ModelCheckpoint filepath is an existing directory: {filepath}. Give a file path."
            )
        dirname = os.path.dirname(filepath)
        if dirname and distributed.is_writer(self.model):
            os.makedirs(dirname, exist_ok=True)
        if self.save_weights_only:
            self.model.save_weights(filepath)
        else:
            self.model.save(filepath)
        if self.verbose > 0:
            print(f"\nEpoch {epoch + 1}: finished saving model to {filepath}")

    def state_dict(self):
        return {
            "best": self.best,
            "batches_seen_since_last_saving": self._batches_seen_since_last_saving,
            "last_batch_seen": self._last_batch_seen,
            "current_epoch": self._current_epoch,
        }

    def load_state_dict(self, state):
        self.best = state["best"]
        self._batches_seen_since_last_saving = state["batches_seen_since_last_saving"]
        self._last_batch_seen = state["last_batch_seen"]
        self._current_epoch = state["current_epoch"]
