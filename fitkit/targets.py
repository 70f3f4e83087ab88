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
