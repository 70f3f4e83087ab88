"""The regression family: errors and similarities between real-valued targets and predictions.

The per-sample functions (mae, mse, mape, msle, cosine similarity, log-cosh; each averages the last axis
as Keras does) and the streaming means of them, plus :class:`RootMeanSquaredError`, the root of the
epoch's mean squared error rather than a mean of per-batch roots.
"""

import math

import torch
import torch.nn.functional as F

from fitkit.conventions import EPSILON
from fitkit.metrics.base import Mean, MeanMetricWrapper, _as_float, _div_no_nan, _same_rank

__all__ = [
    "MeanAbsoluteError", "MeanSquaredError", "RootMeanSquaredError", "MeanAbsolutePercentageError",
    "MeanSquaredLogarithmicError", "CosineSimilarity", "LogCoshError", "mean_absolute_error", "mean_squared_error",
    "mean_absolute_percentage_error", "mean_squared_logarithmic_error", "cosine_similarity", "log_cosh",
]


# --------------------------------------------------------------------------------------------------
# Per-sample functions


def _floats(y_true, y_pred):
    y_pred = _as_float(y_pred) if y_pred.is_floating_point() else y_pred.float()
    y_true, y_pred = _same_rank(y_true, y_pred)
    return y_true.to(y_pred.dtype), y_pred


def _per_sample(x):
    # Keras averages the last axis; a 1-D prediction already has one value per sample.
    return x.mean(-1) if x.dim() > 1 else x


def mean_absolute_error(y_true, y_pred):
    y_true, y_pred = _floats(y_true, y_pred)
    return _per_sample((y_true - y_pred).abs())


def mean_squared_error(y_true, y_pred):
    y_true, y_pred = _floats(y_true, y_pred)
    return _per_sample((y_true - y_pred).square())


def mean_absolute_percentage_error(y_true, y_pred):
    y_true, y_pred = _floats(y_true, y_pred)
    return 100.0 * _per_sample(((y_true - y_pred) / y_true.abs().clamp_min(EPSILON)).abs())


def mean_squared_logarithmic_error(y_true, y_pred):
    y_true, y_pred = _floats(y_true, y_pred)
    return _per_sample((torch.log1p(y_pred.clamp_min(EPSILON)) - torch.log1p(y_true.clamp_min(EPSILON))).square())


def cosine_similarity(y_true, y_pred, axis=-1):
    y_true, y_pred = _floats(y_true, y_pred)
    if y_pred.dim() == 1:
        y_true, y_pred = y_true.unsqueeze(-1), y_pred.unsqueeze(-1)
    return (F.normalize(y_true, dim=axis, eps=EPSILON) * F.normalize(y_pred, dim=axis, eps=EPSILON)).sum(axis)


def log_cosh(y_true, y_pred):
    y_true, y_pred = _floats(y_true, y_pred)
    x = y_pred - y_true
    return _per_sample(x + F.softplus(-2.0 * x) - math.log(2.0))  # log(cosh(x)) without overflow


# --------------------------------------------------------------------------------------------------
# Mean metrics


class MeanAbsoluteError(MeanMetricWrapper):
    def __init__(self, name="mean_absolute_error"):
        super().__init__(mean_absolute_error, name)


class MeanSquaredError(MeanMetricWrapper):
    def __init__(self, name="mean_squared_error"):
        super().__init__(mean_squared_error, name)


class MeanAbsolutePercentageError(MeanMetricWrapper):
    def __init__(self, name="mean_absolute_percentage_error"):
        super().__init__(mean_absolute_percentage_error, name)


class MeanSquaredLogarithmicError(MeanMetricWrapper):
    def __init__(self, name="mean_squared_logarithmic_error"):
        super().__init__(mean_squared_logarithmic_error, name)


class CosineSimilarity(MeanMetricWrapper):
    def __init__(self, name="cosine_similarity", axis=-1):
        super().__init__(cosine_similarity, name, axis=axis)


class LogCoshError(MeanMetricWrapper):
    def __init__(self, name="logcosh"):
        super().__init__(log_cosh, name)


class RootMeanSquaredError(Mean):
    """Square root of the epoch's (weighted) mean squared error, not a mean of per-batch roots."""

    def __init__(self, name="root_mean_squared_error"):
        super().__init__(name)

    def update(self, y_true, y_pred, sample_weight=None):
        y_true, y_pred = _floats(y_true, y_pred)
        self._accumulate((y_pred - y_true).square(), sample_weight)

    def result(self):
        return _div_no_nan(self.total, self.count).sqrt().float()
