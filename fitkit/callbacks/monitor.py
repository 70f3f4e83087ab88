"""Watching one logged quantity: which way is better, when a value improves, and :class:`MonitorCallback`.

The functions are shared by every callback that watches a quantity and by ``History.best_epoch``, so
that they all agree on what "best" means. :class:`MonitorCallback` is the base of EarlyStopping,
ReduceLROnPlateau and ModelCheckpoint (as Keras 3's ``MonitorCallback`` is): it holds ``monitor``,
``mode``, ``min_delta`` and ``best``, and makes the improvement test and the missing-monitor warning.

>>> resolve_mode("val_accuracy", "auto")
'max'
>>> is_improvement(0.40, 0.45, "min", min_delta=0.01)
True
"""

import difflib
import warnings

import numpy as np

from .base import Callback

# Words that name a quantity to minimise or to maximise. A monitored name is split on "_" (after
# dropping "val_"); the last word found in either set decides, so "precision_at_recall" is "max"
# and "mean_squared_error" is "min".
_MIN_WORDS = frozenset({
    "loss", "mae", "mse", "rmse", "msle", "mape", "error", "crossentropy", "hinge", "divergence",
    "kld", "kl", "poisson", "logcosh", "huber", "perplexity",
})
_MAX_WORDS = frozenset({
    "accuracy", "acc", "auc", "precision", "recall", "f1", "fbeta", "iou", "r2", "similarity",
    "sensitivity", "specificity", "correlation",
})
_MODES = ("auto", "min", "max")


def resolve_mode(monitor, mode="auto"):
    """``"min"`` or ``"max"`` for ``monitor``; ``mode="auto"`` decides from the name.

    Loss- and error-like names (loss, mae, mse, rmse, ...error, ...crossentropy, hinge) are
    minimised; accuracy/acc, auc, precision, recall and f1 are maximised. A ``val_`` prefix is
    ignored. Raises ValueError when ``mode="auto"`` cannot tell.

    >>> resolve_mode("val_loss")
    'min'
    """
    if mode not in _MODES:
        raise ValueError(f"mode must be one of 'auto', 'min', 'max'; got mode={mode!r}.")
    if mode != "auto":
        return mode
    if not isinstance(monitor, str):
        raise TypeError(f"monitor must be a str naming a logged quantity; got {monitor!r}.")
    name = monitor.lower()
    if name.startswith("val_"):
        name = name[4:]
    name = name.replace("io_u", "iou")  # Keras's default names of the IoU family: "mean_io_u", ...
    decided = None
    for word in name.split("_"):
        if word in _MIN_WORDS:
            decided = "min"
        elif word in _MAX_WORDS:
            decided = "max"
    if decided is None:
        raise ValueError(
            f"mode='auto' cannot tell whether monitor={monitor!r} should go up or down; "
            "pass mode='min' (lower is better) or mode='max' (higher is better)."
        )
    return decided


def is_improvement(current, best, mode, min_delta=0.0):
    """Whether ``current`` beats ``best`` by more than ``min_delta`` in direction ``mode``.

    ``best=None`` (nothing seen yet) is always beaten; NaN never beats anything. The comparison
    is made in float32, as Keras makes it, so a change of exactly ``min_delta`` and values that
    differ only below float32 precision count the same way as in Keras.
    """
    if best is None:
        return True
    # The shift is made in Python floats and only the result rounded, exactly as Keras does.
    current, best, delta = float(current), float(best), abs(float(min_delta))
    if mode == "min":
        return bool(np.float32(current + delta) < np.float32(best))
    if mode == "max":
        return bool(np.float32(current - delta) > np.float32(best))
    raise ValueError(f"mode must be 'min' or 'max' (see resolve_mode); got mode={mode!r}.")


def checked_mode(callback_name, monitor, mode, stacklevel=3):
    """``resolve_mode`` for a callback's constructor: an unknown mode warns and falls back to auto.

    Keras does the same (a warning, not an error), so Keras code that passed a typo keeps running.
    ``stacklevel`` is ``warnings.warn``'s: the default names the caller of the constructor that calls this.
    """
    if mode not in _MODES:
        warnings.warn(
            f"{callback_name} mode {mode!r} is unknown, fallback to auto mode.", stacklevel=stacklevel
        )
        mode = "auto"
    return resolve_mode(monitor, mode)


def closest_key(name, logs):
    """The logged key ``name`` was most likely meant to be, or None.

    ``val_acc`` finds ``val_accuracy``, ``acc`` finds ``accuracy`` (one name a prefix of the other, or
    difflib's closest match). Without validation data (no ``val_`` key logged) the ``val_`` twins of the
    logged keys count too, since those are the keys validation would add.

    >>> closest_key("val_acc", {"loss": 1.0, "accuracy": 0.5, "val_loss": 1.1, "val_accuracy": 0.4})
    'val_accuracy'
    """
    keys = [k for k in (logs or {}) if isinstance(k, str)]
    if not any(k.startswith("val_") for k in keys):
        keys += ["val_" + k for k in keys]
    if not isinstance(name, str) or not keys or name in keys:
        return None
    split = name.startswith("val_")
    # Compared without "val_", among keys on the same side: "val_" alone makes any two names look alike.
    stems = {k[4:] if split else k: k for k in keys if k.startswith("val_") == split}
    stem = name[4:] if split else name
    prefixed = [s for s in stems if stem and s and (s.startswith(stem) or stem.startswith(s))]
    if prefixed:
        return stems[min(prefixed, key=lambda s: (abs(len(s) - len(stem)), s))]
    found = difflib.get_close_matches(stem, list(stems), n=1, cutoff=0.6)
    return stems[found[0]] if found else None


def missing_key_hint(name, logs):
    """What to add to a message about ``name`` not being logged: "did you mean ...?" and, only when the
    logs hold no ``val_`` key at all, that ``val_`` keys need validation data. Empty when neither applies."""
    parts = []
    suggestion = closest_key(name, logs)
    if suggestion is not None:
        parts.append(f"did you mean {suggestion!r}?")
    if isinstance(name, str) and name.startswith("val_") and not any(
            isinstance(k, str) and k.startswith("val_") for k in (logs or {})):
        parts.append("val_ keys are logged only in epochs that validate, given validation_data or validation_split")
    return "; ".join(parts)


def warn_missing(callback_name, monitor, logs, stacklevel=3):
    """Warn that ``monitor`` is not among the logged keys, naming the closest key and the keys that are."""
    keys = ", ".join(logs or {}) or "(none)"
    hint = missing_key_hint(monitor, logs)
    warnings.warn(
        f"{callback_name} is conditioned on monitor={monitor!r}, which is not in the logs"
        f"{' (' + hint + ')' if hint else ''}. Logged keys: {keys}.",
        stacklevel=stacklevel,
    )


class MonitorCallback(Callback):
    """Base class of the callbacks that watch one logged quantity and keep its best value.

    ``monitor`` is the logged key, ``mode`` is ``"auto"``, ``"min"`` or ``"max"`` as given (an unknown
    mode warns and falls back to ``"auto"``, as in Keras), ``min_delta`` the margin by which a value
    must beat the best (its sign is ignored) and ``best`` the best value so far (None until one is
    seen). The direction is resolved in the constructor, so ``mode="auto"`` on a name it cannot read
    fails at once; a subclass that never compares values passes ``compares=False`` and accepts any name.

    For subclasses:

    * ``_is_improvement(current, reference)``: whether ``current`` beats ``reference`` (``best``, or a
      baseline) by more than ``min_delta``; a None reference is always beaten, NaN never beats.
    * ``_monitor_value(logs)``: ``logs[monitor]``, or None after a warning naming the logged keys, once
      per fit (``_reset`` re-arms it).
    * ``_reset()`` forgets ``best`` (extend it with the subclass's counters); ``_begin_fit()``, called
      from ``on_train_begin``, resets unless ``load_state_dict`` just resumed a run, which it marks
      with ``_mark_resumed()``.

    >>> class StopAtTarget(MonitorCallback):
    ...     def __init__(self, target, monitor="val_accuracy"):
    ...         super().__init__(monitor)
    ...         self.target = target
    ...     def on_epoch_end(self, epoch, logs=None):
    ...         current = self._monitor_value(logs)
    ...         if current is not None and self._is_improvement(current, self.target):
    ...             self.model.stop_training = True
    """

    def __init__(self, monitor="val_loss", mode="auto", min_delta=0, *, compares=True):
        super().__init__()
        self.monitor = monitor
        self.mode = mode
        # stacklevel 4: the mode warning names the line that built the callback, past this __init__
        # and the subclass's.
        self._direction = checked_mode(type(self).__name__, monitor, mode, stacklevel=4) if compares else None
        self.min_delta = abs(min_delta)
        self.best = None
        self._seen_monitor = False  # seen, or its absence already warned about, in this fit
        self._resumed = False

    def _is_improvement(self, current, reference):
        """Whether ``current`` beats ``reference`` by more than ``min_delta`` in this callback's direction."""
        return is_improvement(current, reference, self._direction, self.min_delta)

    def _monitor_value(self, logs):
        """``logs[monitor]``, or None when it was not logged (warned about once per fit)."""
        current = (logs or {}).get(self.monitor)
        if current is None:
            if not self._seen_monitor:
                # stacklevel 4 points where it did when each callback called warn_missing itself.
                warn_missing(type(self).__name__, self.monitor, logs, stacklevel=4)
                self._seen_monitor = True  # once per fit is enough
            return None
        self._seen_monitor = True
        return current

    def _reset(self):
        self.best = None
        self._seen_monitor = False

    def _begin_fit(self):
        # Each fit starts afresh (Keras re-uses instances this way), unless a state was just loaded.
        if not self._resumed:
            self._reset()
        self._resumed = False

    def _mark_resumed(self):
        # A restored best means the monitor was logged before; the next fit continues, not resets.
        self._seen_monitor = self.best is not None
        self._resumed = True
