"""Reconciling targets with predictions the way Keras does, shared by losses and metrics.

Keras lets ``y`` of shape ``(N,)`` meet a prediction of shape ``(N, 1)``, and casts integer labels for
losses that need float targets. torch does not: ``F.mse_loss`` silently broadcasts ``(N, 1)`` against
``(N,)`` into an ``(N, N)`` loss. Every loss and metric in fitkit passes its inputs through here first,
so that broadcast can never happen inside ``fit``. :func:`to_categorical` (Keras's
``keras.utils.to_categorical``) turns class indices into one-hot targets.
"""

import numbers

import numpy as np
import torch


def match_rank(y_true, y_pred):
    """Squeeze or expand ``y_true`` so that it has the rank of ``y_pred`` when they differ by a trailing 1.

    >>> match_rank(torch.zeros(4), torch.zeros(4, 1)).shape
    torch.Size([4, 1])
    """
    if y_true.dim() == y_pred.dim() - 1 and y_pred.shape[-1] == 1:
        return y_true.unsqueeze(-1)
    if y_true.dim() == y_pred.dim() + 1 and y_true.shape[-1] == 1:
        return y_true.squeeze(-1)
    return y_true


def as_float(y_true, y_pred):
    """``y_true`` in the floating dtype of ``y_pred`` (integer and bool labels become floats)."""
    if y_true.dtype != y_pred.dtype and y_pred.is_floating_point():
        return y_true.to(y_pred.dtype)
    return y_true


def sparse_labels(y_true):
    """Integer class indices of shape ``(N, ...)``: a trailing axis of 1 is dropped, floats become long."""
    if y_true.dim() > 1 and y_true.shape[-1] == 1:
        y_true = y_true.squeeze(-1)
    if y_true.is_floating_point() or y_true.dtype == torch.bool:
        y_true = y_true.long()
    return y_true


def dense_targets(y_true, y_pred):
    """``y_true`` shaped and typed like ``y_pred``: the reconciliation every float-target loss needs."""
    return as_float(match_rank(y_true, y_pred), y_pred)


def to_categorical(x, num_classes=None):
    """Class indices -> one-hot rows, as ``keras.utils.to_categorical``: the class axis is added last.

    ``x`` holds integers from 0 to ``num_classes - 1`` (array-like; a trailing axis of 1 is dropped);
    ``num_classes`` defaults to ``max(x) + 1``. Arrays and lists give a float64 NumPy array, as Keras
    does; a torch tensor gives a float32 tensor on its device (Keras's backend one-hot).

    >>> to_categorical([0, 2, 1], num_classes=3)
    array([[1., 0., 0.],
           [0., 0., 1.],
           [0., 1., 0.]])
    """
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral)
                                    or num_classes < 0):
        raise ValueError(f"num_classes: got {num_classes!r}; expected a positive integer or None (max(x) + 1)")
    if isinstance(x, torch.Tensor):
        labels = x
        if labels.dim() > 1 and labels.shape[-1] == 1:
            labels = labels.squeeze(-1)
        labels = _class_indices(labels, labels.is_floating_point(), torch.round)
        classes = _num_classes(num_classes, labels.numel(), lambda: int(labels.max()) + 1 if labels.numel() else 0)
        _check_range(labels.min() if labels.numel() else 0, labels.max() if labels.numel() else 0, classes,
                     num_classes)
        return torch.nn.functional.one_hot(labels.long(), classes).float()
    values = np.asarray(x)
    if values.dtype.kind not in "biuf":
        raise ValueError(f"x: got an array of {values.dtype}; expected integer class indices")
    labels = _class_indices(values, values.dtype.kind == "f", np.round).astype(np.int64)
    shape = labels.shape[:-1] if labels.ndim > 1 and labels.shape[-1] == 1 else labels.shape
    labels = labels.reshape(-1)
    classes = _num_classes(num_classes, labels.size, lambda: int(labels.max()) + 1 if labels.size else 0)
    _check_range(labels.min() if labels.size else 0, labels.max() if labels.size else 0, classes, num_classes)
    categorical = np.zeros((labels.size, classes))
    categorical[np.arange(labels.size), labels] = 1
    return categorical.reshape(shape + (classes,))


def _class_indices(labels, floating, rounding):
    # Keras casts floats to int; a fraction (0.5) is not a class index, so it is refused rather than cut.
    if floating and bool((rounding(labels) != labels).any()):
        raise ValueError("x: got values with a fractional part; expected integer class indices")
    return labels


def _num_classes(num_classes, size, inferred):
    if num_classes:  # None or 0: max(x) + 1, as Keras infers
        return int(num_classes)
    if not size:
        raise ValueError("x: got no labels and num_classes=None; pass num_classes to make an empty (0, C) array")
    return inferred()


def _check_range(low, high, classes, given):
    if int(low) < 0 or int(high) >= classes:
        bad = int(low) if int(low) < 0 else int(high)
        source = f"num_classes={classes}" if given else "num_classes inferred as max(x) + 1"
        raise ValueError(f"x: got the class index {bad}; expected integers in [0, {classes}) ({source})")
# ------------------------------------------------------------------------------------ shape checks
# Each loss calls one of these on its reconciled targets, every call: a comparison of shapes (host
# metadata, no device work), so any pair that reconciliation could not make agree is an error before
# torch can broadcast it into a wrong loss.

def _shape(t):
    return tuple(t.shape)


def _batch_mismatch(y_true, y_pred, loss_name):
    if y_true.dim() and y_pred.dim() and y_true.shape[0] != y_pred.shape[0]:
        raise ValueError(
            f"y: got targets for {y_true.shape[0]} samples (shape {_shape(y_true)}) against model outputs for "
            f"{y_pred.shape[0]} (shape {_shape(y_pred)}) in the loss {loss_name!r}; expected one target per "
            "output: x and y must hold the same samples, batch for batch")


def check_same_shape(y_true, y_pred, loss_name, expected=None):
    """Raise a ValueError unless the reconciled ``y_true`` has exactly the shape of ``y_pred``.

    For the losses that compare targets with outputs element by element (mse, binary cross-entropy,
    ...). ``expected`` words what the loss needs, when it says more than "shaped like the outputs".

    >>> check_same_shape(torch.zeros(4, 1), torch.zeros(4, 1), "mse")
    """
    if y_true.shape == y_pred.shape:
        return
    _batch_mismatch(y_true, y_pred, loss_name)
    pred = _shape(y_pred)
    if expected is None:
        alt = f", or {pred[:-1]} for one output unit" if pred and pred[-1] == 1 else ""
        expected = f"targets shaped like the outputs ({pred}{alt})"
    try:
        broadcast = f"; torch would broadcast them to {tuple(torch.broadcast_shapes(y_true.shape, y_pred.shape))}"
    except RuntimeError:
        broadcast = ""
    fix = "reshape the targets"
    if len(pred) == y_true.dim() and pred[-1] != y_true.shape[-1]:
        fix += f" or give the model's last layer {y_true.shape[-1]} units"
    raise ValueError(f"y: got targets of shape {_shape(y_true)} for model outputs of shape {pred}; the loss "
                     f"{loss_name!r} needs {expected}{broadcast}. Fix: {fix}")


def check_label_shape(y_true, y_pred, expected, loss_name):
    """Raise a ValueError unless the class labels ``y_true`` have the shape ``expected`` (the outputs'
    shape without their class axis), for the class-index losses."""
    if _shape(y_true) == tuple(expected):
        return
    _batch_mismatch(y_true, y_pred, loss_name)
    raise ValueError(
        f"y: got labels of shape {_shape(y_true)} for model outputs of shape {_shape(y_pred)}; the loss "
        f"{loss_name!r} needs one class index per sample, of shape {tuple(expected)} (or with a trailing axis "
        "of 1). For one-hot targets use 'categorical_crossentropy'")


def check_no_broadcast(y_true, y_pred, loss_name):
    """Raise a ValueError when ``y_true`` would broadcast against ``y_pred`` into another shape, or when
    their first (sample) axes differ.

    For losses whose use of the targets fitkit does not know (a callable, a torch loss it has no entry
    for, a ``Loss`` subclass's ``call``): targets of another shape that torch cannot broadcast (labels
    against scores) are the callable's business; targets that would silently broadcast are not.
    """
    if y_true.shape == y_pred.shape or not y_true.dim() or not y_pred.dim():
        return
    _batch_mismatch(y_true, y_pred, loss_name)
    try:
        broadcast = torch.broadcast_shapes(y_true.shape, y_pred.shape)
    except RuntimeError:
        return
    if broadcast != y_pred.shape:
        check_same_shape(y_true, y_pred, loss_name)
