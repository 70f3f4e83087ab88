"""The probabilistic family: cross-entropies, Kullback-Leibler divergence and Poisson, as Keras's metrics.

The per-sample functions (Keras's ``keras.metrics.binary_crossentropy``, ``categorical_crossentropy``,
``sparse_categorical_crossentropy``, the two focal cross-entropies, ``kl_divergence``, ``poisson``) and
the streaming means of them. Probabilities are clipped to [eps, 1 - eps] (and renormalised over the
class axis for the categorical ones) exactly as Keras's torch backend does, unless ``from_logits``.
"""

import torch
import torch.nn.functional as F

from fitkit.conventions import EPSILON
from fitkit.metrics.base import MeanMetricWrapper
from fitkit.metrics.regression import _floats, _per_sample
from fitkit.targets import sparse_labels

__all__ = [
    "BinaryCrossentropy", "CategoricalCrossentropy", "SparseCategoricalCrossentropy", "KLDivergence", "Poisson",
    "binary_crossentropy", "categorical_crossentropy", "sparse_categorical_crossentropy",
    "binary_focal_crossentropy", "categorical_focal_crossentropy", "kl_divergence", "poisson",
]


def _check_axis(axis):
    if isinstance(axis, bool) or not isinstance(axis, int):
        raise ValueError(f"axis: got {axis!r}; expected an int")


def _bce(y_true, p):
    p = p.clamp(EPSILON, 1.0 - EPSILON)
    return -(y_true * torch.log(p) + (1.0 - y_true) * torch.log(1.0 - p))


def binary_crossentropy(y_true, y_pred, from_logits=False, label_smoothing=0.0, axis=-1):
    """Binary cross-entropy per element, averaged over ``axis`` (the last one): one value per sample.

    >>> binary_crossentropy(torch.tensor([[1.0]]), torch.tensor([[0.0]]), from_logits=True)
    tensor([0.6931])
    """
    y_true, y_pred = _floats(y_true, y_pred)
    if label_smoothing:
        y_true = y_true * (1.0 - label_smoothing) + 0.5 * label_smoothing
    if from_logits:
        values = F.binary_cross_entropy_with_logits(y_pred, y_true, reduction="none")
    else:
        values = _bce(y_true, y_pred)
    return values.mean(axis) if values.dim() > 1 else values


def binary_focal_crossentropy(y_true, y_pred, apply_class_balancing=False, alpha=0.25, gamma=2.0,
                              from_logits=False, label_smoothing=0.0, axis=-1):
    """Binary cross-entropy times ``(1 - p_t) ** gamma`` (Lin et al.), optionally class-balanced by ``alpha``."""
    y_true, y_pred = _floats(y_true, y_pred)
    if label_smoothing:
        y_true = y_true * (1.0 - label_smoothing) + 0.5 * label_smoothing
    p = y_pred.sigmoid() if from_logits else y_pred
    p_t = y_true * p + (1.0 - y_true) * (1.0 - p)
    values = (1.0 - p_t).pow(gamma) * _bce(y_true, p)
    if apply_class_balancing:
        values = (y_true * alpha + (1.0 - y_true) * (1.0 - alpha)) * values
    return values.mean(axis) if values.dim() > 1 else values


def _log_probabilities(y_pred, from_logits, axis):
    if from_logits:
        return F.log_softmax(y_pred, dim=axis)
    p = y_pred / y_pred.sum(axis, keepdim=True)
    return torch.log(p.clamp(EPSILON, 1.0 - EPSILON))


def _one_hot_targets(y_true, y_pred, what):
    if y_true.shape != y_pred.shape:
        raise ValueError(
            f"{what}: y_true of shape {tuple(y_true.shape)} does not match y_pred of shape {tuple(y_pred.shape)}; "
            "expected one-hot targets shaped like y_pred (for integer class labels use the sparse_ version)."
        )
    return y_true


def categorical_crossentropy(y_true, y_pred, from_logits=False, label_smoothing=0.0, axis=-1):
    """Cross-entropy over the class ``axis`` against one-hot (or soft) targets shaped like ``y_pred``."""
    _check_axis(axis)
    y_true, y_pred = _floats(y_true, y_pred)
    y_true = _one_hot_targets(y_true, y_pred, "categorical_crossentropy")
    if label_smoothing:
        y_true = y_true * (1.0 - label_smoothing) + label_smoothing / y_pred.shape[axis]
    return -(y_true * _log_probabilities(y_pred, from_logits, axis)).sum(axis)


def categorical_focal_crossentropy(y_true, y_pred, alpha=0.25, gamma=2.0, from_logits=False, label_smoothing=0.0,
                                   axis=-1):
    """Categorical cross-entropy with each class term times ``alpha * (1 - p) ** gamma`` (Lin et al.)."""
    _check_axis(axis)
    y_true, y_pred = _floats(y_true, y_pred)
    y_true = _one_hot_targets(y_true, y_pred, "categorical_focal_crossentropy")
    if label_smoothing:
        y_true = y_true * (1.0 - label_smoothing) + label_smoothing / y_pred.shape[axis]
    p = y_pred.softmax(axis) if from_logits else y_pred
    p = (p / p.sum(axis, keepdim=True)).clamp(EPSILON, 1.0 - EPSILON)
    return (alpha * (1.0 - p).pow(gamma) * -y_true * torch.log(p)).sum(axis)


def _sparse(y_true, y_pred, from_logits, ignore_class, axis):
    """(per-position cross-entropy, mask of the positions counted or None)."""
    _check_axis(axis)
    y_pred = y_pred if y_pred.is_floating_point() else y_pred.float()
    class_axis = axis % y_pred.dim()
    if y_true.dim() == y_pred.dim() and y_true.shape[class_axis] == 1:
        y_true = y_true.squeeze(class_axis)
    labels = sparse_labels(y_true) if y_true.dim() else y_true.long()
    expected = y_pred.shape[:class_axis] + y_pred.shape[class_axis + 1:]
    if labels.shape != expected:
        raise ValueError(
            f"sparse_categorical_crossentropy: y_true of shape {tuple(y_true.shape)} does not match y_pred of shape "
            f"{tuple(y_pred.shape)}; expected integer class labels of shape {tuple(expected)}."
        )
    mask = None if ignore_class is None else labels != ignore_class
    if mask is not None:
        labels = labels.where(mask, torch.zeros_like(labels))
    log_p = _log_probabilities(y_pred, from_logits, class_axis)
    values = -log_p.gather(class_axis, labels.unsqueeze(class_axis)).squeeze(class_axis)
    if mask is not None:
        values = values.where(mask, torch.zeros_like(values))
    return values, mask


def sparse_categorical_crossentropy(y_true, y_pred, from_logits=False, ignore_class=None, axis=-1):
    """Cross-entropy against integer class labels (``(N,)`` or ``(N, 1)``); positions labelled
    ``ignore_class`` give 0."""
    return _sparse(y_true, y_pred, from_logits, ignore_class, axis)[0]


def kl_divergence(y_true, y_pred):
    """``sum(y_true * log(y_true / y_pred), axis=-1)`` with both clipped to [eps, 1]."""
    y_true, y_pred = _floats(y_true, y_pred)
    y_true, y_pred = y_true.clamp(EPSILON, 1.0), y_pred.clamp(EPSILON, 1.0)
    values = y_true * torch.log(y_true / y_pred)
    return values.sum(-1) if values.dim() > 1 else values


def poisson(y_true, y_pred):
    """``mean(y_pred - y_true * log(y_pred + eps), axis=-1)``."""
    y_true, y_pred = _floats(y_true, y_pred)
    return _per_sample(y_pred - y_true * torch.log(y_pred + EPSILON))


class BinaryCrossentropy(MeanMetricWrapper):
    """Mean binary cross-entropy over the epoch (``from_logits``, ``label_smoothing`` as Keras)."""

    def __init__(self, name="binary_crossentropy", from_logits=False, label_smoothing=0):
        super().__init__(binary_crossentropy, name, from_logits=from_logits, label_smoothing=label_smoothing)
        self.from_logits = from_logits
        self.label_smoothing = label_smoothing


class CategoricalCrossentropy(MeanMetricWrapper):
    """Mean categorical cross-entropy over the epoch, one-hot targets (``from_logits``, ``label_smoothing``,
    ``axis`` as Keras)."""

    def __init__(self, name="categorical_crossentropy", from_logits=False, label_smoothing=0, axis=-1):
        _check_axis(axis)
        super().__init__(categorical_crossentropy, name, from_logits=from_logits, label_smoothing=label_smoothing,
                         axis=axis)
        self.from_logits = from_logits
        self.label_smoothing = label_smoothing
        self.axis = axis


class SparseCategoricalCrossentropy(MeanMetricWrapper):
    """Mean cross-entropy against integer labels over the epoch.

    ``ignore_class`` (e.g. -1 or 255 in segmentation maps) leaves those positions out of the mean, with
    or without sample weights. (Keras leaves them out only when sample weights are given; without, it
    counts them as zeros in the mean.)
    """

    def __init__(self, name="sparse_categorical_crossentropy", from_logits=False, ignore_class=None, axis=-1):
        _check_axis(axis)
        super().__init__(sparse_categorical_crossentropy, name, from_logits=from_logits, ignore_class=ignore_class,
                         axis=axis)
        self.from_logits = from_logits
        self.ignore_class = ignore_class
        self.axis = axis

    def update(self, y_true, y_pred, sample_weight=None):
        values, mask = _sparse(y_true, y_pred, self.from_logits, self.ignore_class, self.axis)
        if mask is not None:
            weight = mask.to(values.dtype)
            if sample_weight is not None:
                w = sample_weight.to(device=values.device, dtype=values.dtype)
                while w.dim() > weight.dim() and w.shape[-1] == 1:
                    w = w.squeeze(-1)
                while w.dim() < weight.dim():
                    w = w.unsqueeze(-1)
                weight = weight * w
            sample_weight = weight
        self._accumulate(values, sample_weight, scalar_count=y_pred.shape[0] if y_pred.dim() else 1)


class KLDivergence(MeanMetricWrapper):
    """Mean Kullback-Leibler divergence ``sum(y_true * log(y_true / y_pred))`` over the epoch."""

    def __init__(self, name="kl_divergence"):
        super().__init__(kl_divergence, name)


class Poisson(MeanMetricWrapper):
    """Mean Poisson deviance ``y_pred - y_true * log(y_pred)`` over the epoch."""

    def __init__(self, name="poisson"):
        super().__init__(poisson, name)
