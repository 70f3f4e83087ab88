"""Reconciling targets with predictions the way Keras does, shared by losses and metrics.

Keras lets ``y`` of shape ``(N,)`` meet a prediction of shape ``(N, 1)``, and casts integer labels for
losses that need float targets. torch does not: ``F.mse_loss`` silently broadcasts ``(N, 1)`` against
``(N,)`` into an ``(N, N)`` loss. Every loss and metric in fitkit passes its inputs through here first,
so that broadcast can never happen inside ``fit``.
"""

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
