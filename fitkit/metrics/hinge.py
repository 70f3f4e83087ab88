"""The hinge family: margins of scores against -1/+1 (or 0/1) targets, as Keras's hinge metrics.

The per-sample functions (Keras's ``keras.metrics.hinge``, ``squared_hinge``, ``categorical_hinge``) and
the streaming means of them. Targets of 0 and 1 become -1 and +1 when a batch holds nothing else, as
Keras converts them; the check runs on the device (no host sync).
"""

from fitkit.metrics.base import MeanMetricWrapper
from fitkit.metrics.regression import _floats, _per_sample

__all__ = ["Hinge", "SquaredHinge", "CategoricalHinge", "hinge", "squared_hinge", "categorical_hinge"]


def _signed(y_true):
    """{0, 1} labels as {-1, +1}; any other labels (already -1/+1) as they are."""
    binary = ((y_true == 0) | (y_true == 1)).all()
    return (2.0 * y_true - 1.0).where(binary, y_true)


def hinge(y_true, y_pred):
    """``mean(max(1 - y_true * y_pred, 0), axis=-1)`` per sample.

    >>> hinge(torch.tensor([[0.0, 1.0]]), torch.tensor([[0.5, 0.5]]))
    tensor([1.])
    """
    y_true, y_pred = _floats(y_true, y_pred)
    return _per_sample((1.0 - _signed(y_true) * y_pred).clamp_min(0.0))


def squared_hinge(y_true, y_pred):
    """``mean(max(1 - y_true * y_pred, 0) ** 2, axis=-1)`` per sample."""
    y_true, y_pred = _floats(y_true, y_pred)
    return _per_sample((1.0 - _signed(y_true) * y_pred).clamp_min(0.0).square())


def categorical_hinge(y_true, y_pred):
    """``max(max((1 - y_true) * y_pred) - sum(y_true * y_pred) + 1, 0)`` over the last axis (one-hot targets)."""
    y_true, y_pred = _floats(y_true, y_pred)
    positive = (y_true * y_pred).sum(-1)
    negative = ((1.0 - y_true) * y_pred).amax(-1)
    return (negative - positive + 1.0).clamp_min(0.0)


class Hinge(MeanMetricWrapper):
    """Mean hinge loss over the epoch; targets in {-1, 1} or {0, 1}."""

    def __init__(self, name="hinge"):
        super().__init__(hinge, name)


class SquaredHinge(MeanMetricWrapper):
    """Mean squared hinge loss over the epoch; targets in {-1, 1} or {0, 1}."""

    def __init__(self, name="squared_hinge"):
        super().__init__(squared_hinge, name)


class CategoricalHinge(MeanMetricWrapper):
    """Mean categorical hinge loss over the epoch; one-hot targets shaped like the scores."""

    def __init__(self, name="categorical_hinge"):
        super().__init__(categorical_hinge, name)
