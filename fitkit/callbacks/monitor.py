"""Which way is better for a monitored quantity, and when a new value counts as an improvement.

Shared by EarlyStopping, ReduceLROnPlateau, ModelCheckpoint and ``History.best_epoch`` so that they
all agree on what "best" means.

>>> resolve_mode("val_accuracy", "auto")
'max'
>>> is_improvement(0.40, 0.45, "min", min_delta=0.01)
True
"""

import warnings

import numpy as np

# Words that name a quantity to minimise or to maximise. A monitored name is split on "_" (after
# dropping "val_"); the last word found in either set decides, so "precision_at_recall" is "max"
# and "mean_squared_error" is "min".
_MIN_WORDS = frozenset({
    "loss", "mae", "mse", "rmse", "msle", "mape", "error", "crossentropy", "hinge", "divergence",
    "kld", "kl", "poisson", "logcosh", "huber", "perplexity",
})
_MAX_WORDS = frozenset({
    "accuracy", "acc", "auc", "precision", "recall", "f1", "fbeta", "iou", "r2", "similarity",
    "sensitivity", "specificity",
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


def checked_mode(callback_name, monitor, mode):
    """``resolve_mode`` for a callback's constructor: an unknown mode warns and falls back to auto.

    Keras does the same (a warning, not an error), so Keras code that passed a typo keeps running.
    """
    if mode not in _MODES:
        warnings.warn(
            f"{callback_name} mode {mode!r} is unknown, fallback to auto mode.", stacklevel=3
        )
        mode = "auto"
    return resolve_mode(monitor, mode)


def warn_missing(callback_name, monitor, logs):
    """Warn that ``monitor`` is not among the logged keys, naming the keys that are."""
    keys = ", ".join(logs or {}) or "(none)"
    hint = " (val_ keys need validation_data or validation_split)" if monitor.startswith("val_") else ""
    warnings.warn(
        f"{callback_name} is conditioned on monitor={monitor!r}, which is not in the logs{hint}. "
        f"Logged keys: {keys}.",
        stacklevel=3,
    )
