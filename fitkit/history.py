"""History: what ``fit`` returns, as in Keras, plus answers to "how many epochs should I train?".

Keras part: ``history.history`` (key -> list of per-epoch floats), ``history.epoch`` (the epoch
indices that ran), ``history.params`` (``verbose``, ``epochs``, ``steps``) and ``model.history``.

fitkit part: ``history.learning_rates`` (the rate each epoch trained with, aligned with ``history.epoch``:
an attribute, not a ``history`` key, so the keys stay Keras's), :meth:`History.best_epoch`,
:meth:`History.diagnose`, :meth:`History.plot`, and a plain-data
round trip (:meth:`History.to_dict` / :meth:`History.from_dict`) so a checkpoint can carry it. This module
holds the record; the rules and words of ``diagnose`` live in :mod:`fitkit.diagnosis`, the drawing of
``plot`` in :mod:`fitkit.plotting` (imported only when ``plot`` is called, so matplotlib stays unloaded).

Epoch *indices* (``history.epoch``, ``best_epoch()``, ``restored_epoch``, the ``Diagnosis`` fields) are
0-based like Keras's ``epoch`` argument; epoch numbers in *words* and on plots are 1-based, as Keras's
progress bar prints them: index 13 is "epoch 14". With ``initial_epoch=2`` the first index is 2
("epoch 3"). A second ``fit`` call without ``initial_epoch`` numbers its epochs from 1 again, as Keras
does; its History knows how many epochs the model had trained before (``epochs_before``) and says so.
"""

from __future__ import annotations

import math

from . import diagnosis
from .callbacks.base import Callback
from .callbacks.monitor import resolve_mode
from .diagnosis import Diagnosis  # re-exported: `from fitkit.history import Diagnosis` predates diagnosis.py
from .logs import to_float
from .optimizers import current_lr

__all__ = ["History", "Diagnosis"]


def _plain_float(value):
    """A Python float for a numeric log value; anything else is kept as it is."""
    try:
        return to_float(value)
    except (TypeError, ValueError, RuntimeError):
        return value


class History(Callback):
    """Records every epoch's logs; ``fit`` returns it and sets ``model.history`` to it.

    >>> history = model.fit(x, y, epochs=20, validation_split=0.2)   # doctest: +SKIP
    >>> history.history["val_loss"][:2]                               # doctest: +SKIP
    [0.71, 0.64]
    >>> history.best_epoch()         # 0-based index: "epoch 15" in words  # doctest: +SKIP
    14
    >>> print(history.diagnose())                                     # doctest: +SKIP

    Beyond Keras, ``learning_rates`` holds the learning rate each epoch trained with (aligned with
    ``epoch``; read at the end of the epoch's training batches, before ReduceLROnPlateau cuts it; None
    for epochs recorded by hand). ``history.history`` has a ``learning_rate`` key only where Keras writes
    one (ReduceLROnPlateau, LearningRateScheduler) or ``compile(scheduler=...)`` drives the rate.

    ``fit`` also fills ``stop_reason`` (``"epochs"``, ``"early_stopping"``,
    ``"terminate_on_nan"``, ``"interrupted"``, ``"time_budget"``, ``"data_exhausted"``, ``"stopped"`` (a
    callback set ``stop_training`` without a reason) or another string a callback put in
    ``model.stop_reason``), ``interrupted`` (True after Ctrl-C) and may fill ``stop_monitor`` (the
    key the stopping callback watched) and ``restored_epoch`` (the epoch whose weights
    ``EarlyStopping(restore_best_weights=True)`` put back, as with ``fit(epochs="auto")``). The trainer
    alone decides these, before ``on_train_end``; a History driven by hand keeps what it is given.

    It also keeps ``epochs_before``, the epochs of training the weights had when this fit call began
    (the model's earlier fit calls, read from ``model.history``, counted up to the restored epoch
    where EarlyStopping put back its best weights; 0 for a new model), and ``last_learning_rate``, the
    learning rate after the last epoch's callbacks, so that a cut at the last epoch is seen.
    ``nan_loss_epoch`` is the first epoch whose training ``loss`` was NaN or infinite (None if none
    was): without ``TerminateOnNaN`` such a run goes on with NaN weights, and ``diagnose()`` says so.
    """

    def __init__(self):
        super().__init__()
        self.history = {}
        self.epoch = []
        self.stop_reason = None
        self.interrupted = False
        self.stop_monitor = None
        # The epoch whose weights EarlyStopping(restore_best_weights=True) put back, when it did.
        self.restored_epoch = None
        self.epochs_before = 0
        self.last_learning_rate = None
        # The first epoch whose training loss was NaN or infinite (diagnose() says what that means).
        self.nan_loss_epoch = None
        # The epoch index of every value of every key: val_ keys skip epochs when validation_freq > 1.
        self._logged_at = {}
        # The learning rate each epoch trained with, aligned with self.epoch (None where nobody said).
        self.learning_rates = []
        self._pending_lr = None

    # ----- Keras hooks -----

    def on_train_begin(self, logs=None):
        # What the model trained before this call, read before this History replaces model.history.
        previous = getattr(self.model, "history", None) if self.model is not None else None
        before = previous.epochs_trained() if isinstance(previous, History) else 0
        # Keras resets the epoch list but keeps the history dict (fit makes a new History each call).
        self.epoch = []
        self.learning_rates = []
        self._pending_lr = None
        self.stop_reason = None
        self.interrupted = False
        self.stop_monitor = None
        self.restored_epoch = None
        self.epochs_before = before
        self.last_learning_rate = None
        self.nan_loss_epoch = None
        if self.model is not None:
            self.model.history = self

    def record_learning_rate(self, lr):
        """The learning rate the coming ``on_epoch_end`` records for its epoch (fit calls it each epoch with
        the rate the epoch trained with, read before a callback such as ReduceLROnPlateau cuts it)."""
        self._pending_lr = None if lr is None else float(lr)

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        self.learning_rates.append(self._pending_lr)
        self._pending_lr = None
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(_plain_float(value))
            self._logged_at.setdefault(key, []).append(epoch)
        self._note_learning_rate()
        loss = self.history["loss"][-1] if "loss" in (logs or {}) else None
        if self.nan_loss_epoch is None and isinstance(loss, float) and not math.isfinite(loss):
            self.nan_loss_epoch = epoch
        if self.model is not None:
            self.model.history = self

    def on_train_end(self, logs=None):
        # Read again: every epoch-end callback has run by now, wherever this History sits in the list.
        self._note_learning_rate()

    def _note_learning_rate(self):
        optimizer = getattr(self.model, "optimizer", None) if self.model is not None else None
        if self.epoch and hasattr(optimizer, "param_groups") and optimizer.param_groups:
            self.last_learning_rate = current_lr(optimizer)

    def epochs_trained(self):
        """Epochs of training the model's weights have after this fit call: ``epochs_before`` plus the
        epochs it ran, or up to ``restored_epoch`` when EarlyStopping put those weights back."""
        ran = len(self.epoch)
        if self.restored_epoch is not None and self.restored_epoch in self.epoch:
            ran = self.epoch.index(self.restored_epoch) + 1
        return int(self.epochs_before or 0) + ran

    # ----- reading the record -----

    def _series(self, key):
        """``(epoch indices, float values)`` of ``key``; non-numbers read as NaN."""
        values = [v if isinstance(v, float) else math.nan for v in self.history[key]]
        epochs = self._logged_at.get(key)
        if epochs is None or len(epochs) != len(values):
            # Filled by hand or by Keras-era code: align with self.epoch when the lengths agree.
            if len(values) == len(self.epoch):
                epochs = list(self.epoch)
            else:
                last = self.epoch[-1] if self.epoch else len(values) - 1
                start = max(last - len(values) + 1, 0)
                epochs = list(range(start, start + len(values)))
        return list(epochs), values

    def _missing(self, monitor, where):
        keys = ", ".join(repr(k) for k in self.history) or "none (no epoch has ended yet)"
        return KeyError(f"{where}: monitor={monitor!r} is not in this History; the keys are: {keys}")

    def best_epoch(self, monitor="val_loss", mode="auto"):
        """The epoch index (as in ``self.epoch``) where ``monitor`` was best.

        ``mode`` is ``"min"``, ``"max"`` or ``"auto"`` (from the name: losses min, accuracy-like max).
        Ties go to the first epoch; NaN and infinite values are skipped. The index is 0-based: with
        ``initial_epoch=2`` the first possible answer is 2, and 13 is "epoch 14" on the progress bar.

        >>> history.best_epoch("val_accuracy")   # doctest: +SKIP
        13
        """
        if monitor not in self.history:
            raise self._missing(monitor, "best_epoch")
        mode = resolve_mode(monitor, mode)
        epochs, values = self._series(monitor)
        i = diagnosis.argbest(values, mode)
        if i is None:
            raise ValueError(
                f"best_epoch: monitor={monitor!r} has no finite value "
                f"({len(values)} recorded, all NaN or infinite)")
        return epochs[i]

    def _default_monitor(self):
        for key in ("val_loss", "loss"):
            if key in self.history:
                return key
        keys = ", ".join(repr(k) for k in self.history) or "none (no epoch has ended yet)"
        raise KeyError(f"diagnose: neither 'val_loss' nor 'loss' is in this History; pass monitor= one of: {keys}")

    def diagnose(self, monitor=None, mode="auto"):
        """Why training stopped, where it was best, whether it overfitted or should go on.

        ``monitor`` defaults to ``"val_loss"`` when validation ran, else ``"loss"``. Returns a
        :class:`Diagnosis`; ``print`` it for the worded report. Epoch numbers in the words are 1-based
        (as the progress bar prints them); the fields are 0-based indices as in ``self.epoch``.

        The rules, so that you can check them against your own curves:

        * **overfitting_epoch**: the epoch where ``val_loss`` was lowest (first one on ties), when at
          least 2 validated epochs came after it, ``val_loss`` at the last of them is more than 2% above
          that lowest value, the least-squares trend of ``val_loss`` from the best epoch to the end is
          rising, and the training ``loss`` at the end is lower than at the best epoch (it kept falling
          while validation got worse). Otherwise None (also without validation). A rise that comes
          back to within 2% of the best is a plateau, not overfitting.
        * **still_improving**: ``monitor`` is at its best (strictly, so a flat tail does not count) in
          the last or second-to-last epoch, and the best of the last ``w = min(5, epochs - 1)`` epochs
          beats the best of all epochs before them by more than 1% of that earlier best. A single
          epoch is never "still improving" (there is no trend to read), nor is a run whose last
          value of ``monitor`` is NaN or infinite (it broke).
        * **lr_reductions**: ``(epoch, old_lr, new_lr)`` each time the learning rate went down;
          ``epoch`` is the epoch at whose end it was lowered, as ReduceLROnPlateau announces it
          ("Epoch 7: ReduceLROnPlateau reducing" is index 6, "at the end of epoch 7"). The rates are
          ``self.learning_rates`` when fit recorded them, else the logged ``learning_rate``; a cut
          after the last epoch is read from ``last_learning_rate``.
        * **unstable**: words when the training ``loss`` became NaN or infinite after a finite epoch,
          ended more than 5% above where it began, began at least 100 times above its lowest and fell
          more than 10-fold into the second epoch, or jumped to at least twice its lowest so far by
          more than a quarter of its median (the largest jump is named); None otherwise. The advice is
          then to lower the learning rate before reading anything else from the curves.
        * **restored_epoch**: the epoch whose weights EarlyStopping put back (the report says so, and
          stops advising ``restore_best_weights=True``).
        * **epochs_before**: the epochs the model had trained before this fit call. After
          ``fit(epochs=50)`` twice, the second History numbers its epochs from 1 again (as its
          progress bar did); the report says so, and its advice counts epochs "in all".

        >>> print(history.diagnose())   # doctest: +SKIP
        """
        return diagnosis.diagnose(self, monitor, mode)

    # ----- plotting -----

    def plot(self, path=None, show=None):
        """Plot the curves: loss with val_loss, each metric with its ``val_`` twin, and the learning
        rate (log scale) when it changed; the best epoch is marked on every panel.

        Saves to ``path`` when given (the format from its extension, e.g. ``"history.png"``) and returns
        the matplotlib ``Figure``. ``show=True`` opens it with ``plt.show()``; otherwise nothing pops up:
        in a notebook the returned figure shows as the cell's value. Needs ``pip install fitkit[plot]``.

        >>> fig = history.plot("history.png")   # doctest: +SKIP
        """
        from .plotting import plot  # here, not at the top: matplotlib loads only when plotting

        return plot(self, path, show)

    # ----- plain data -----

    def to_dict(self):
        """Plain data (lists, floats, strings) that :meth:`from_dict` turns back into a History."""
        return {
            "history": {k: list(v) for k, v in self.history.items()},
            "epoch": list(self.epoch),
            "params": dict(self.params) if isinstance(self.params, dict) else {},
            "stop_reason": self.stop_reason,
            "interrupted": bool(self.interrupted),
            "stop_monitor": self.stop_monitor,
            "restored_epoch": self.restored_epoch,
            "nan_loss_epoch": self.nan_loss_epoch,
            "logged_at": {k: list(v) for k, v in self._logged_at.items()},
            "learning_rates": list(self.learning_rates),
            "epochs_before": int(self.epochs_before or 0),
            "last_learning_rate": self.last_learning_rate,
        }

    @classmethod
    def from_dict(cls, data):
        """A History from :meth:`to_dict`'s output (or a plain ``{key: [values]}`` Keras history dict)."""
        history = cls()
        history.load_state_dict(data)
        return history

    def state_dict(self):
        """Same as :meth:`to_dict`, under torch's name, so a checkpoint can hold it."""
        return self.to_dict()

    def load_state_dict(self, data):
        """Replace this History's record with ``data`` from :meth:`to_dict`."""
        if not isinstance(data, dict):
            raise TypeError(f"load_state_dict: data must be a dict from History.to_dict(), got {type(data).__name__}")
        if "history" not in data:
            # A bare Keras ``history.history`` dict: one value per epoch from 0.
            data = {"history": data, "epoch": list(range(max((len(v) for v in data.values()), default=0)))}
        self.history = {k: [_plain_float(x) for x in v] for k, v in data["history"].items()}
        self.epoch = [int(e) for e in data.get("epoch", [])]
        self.params = dict(data.get("params") or {})
        self.stop_reason = data.get("stop_reason")
        self.interrupted = bool(data.get("interrupted", False))
        self.stop_monitor = data.get("stop_monitor")
        self.restored_epoch = data.get("restored_epoch")
        self.nan_loss_epoch = data.get("nan_loss_epoch")
        self._logged_at = {k: [int(e) for e in v] for k, v in (data.get("logged_at") or {}).items()}
        self.learning_rates = self._saved_learning_rates(data)
        self._pending_lr = None
        self.epochs_before = int(data.get("epochs_before") or 0)
        self.last_learning_rate = data.get("last_learning_rate")

    def _saved_learning_rates(self, data):
        """``learning_rates`` from a dict; dicts written before it existed logged ``learning_rate`` every epoch."""
        saved = data.get("learning_rates")
        if saved is None:
            logged = self.history.get("learning_rate")
            saved = logged if logged is not None and len(logged) == len(self.epoch) else [None] * len(self.epoch)
        return [None if v is None else _plain_float(v) for v in saved]

    def __repr__(self):
        if not self.epoch:
            return "History(no epochs yet)"
        first, last = diagnosis.epoch_number(self.epoch[0]), diagnosis.epoch_number(self.epoch[-1])
        parts = [f"epochs {first}-{last}", "keys=[" + ", ".join(self.history) + "]"]
        try:
            monitor = self._default_monitor()
            best = self.best_epoch(monitor)
            parts.append(f"best {monitor} at epoch {diagnosis.epoch_number(best)}")
        except (KeyError, ValueError):
            pass
        if self.stop_reason is not None:
            parts.append(f"stop_reason={self.stop_reason!r}")
        return "History(" + ", ".join(parts) + ")"
