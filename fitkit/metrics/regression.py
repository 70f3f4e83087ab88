"""The regression family: errors and similarities between real-valued targets and predictions.

The per-sample functions (mae, mse, mape, msle, cosine similarity, log-cosh, huber; each averages the
last axis as Keras does) and the streaming means of them, plus :class:`RootMeanSquaredError`, the root
of the epoch's mean squared error rather than a mean of per-batch roots, and :class:`R2Score`, the
coefficient of determination of the whole epoch from per-output sums.
"""

import math
import numbers
import warnings

import torch
import torch.nn.functional as F

from fitkit.conventions import EPSILON
from fitkit.metrics.base import Mean, MeanMetricWrapper, Metric, _as_float, _div_no_nan, _same_rank

__all__ = [
    "MeanAbsoluteError", "MeanSquaredError", "RootMeanSquaredError", "MeanAbsolutePercentageError",
    "MeanSquaredLogarithmicError", "CosineSimilarity", "LogCoshError", "R2Score", "mean_absolute_error",
    "mean_squared_error", "mean_absolute_percentage_error", "mean_squared_logarithmic_error", "cosine_similarity",
    "log_cosh", "huber",
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


def huber(y_true, y_pred, delta=1.0):
    """Quadratic within ``delta`` of the target, linear beyond, averaged over the last axis."""
    y_true, y_pred = _floats(y_true, y_pred)
    return _per_sample(F.huber_loss(y_pred, y_true, reduction="none", delta=float(delta)))


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


class R2Score(Metric):
    """The coefficient of determination ``1 - SS_res / SS_tot`` of the whole epoch, per output column.

    Sums of ``y``, ``y**2``, squared residuals and weights per column (and the count of samples with a
    non-zero weight) accumulate on the device; ``result()`` combines them. ``class_aggregation``:
    ``"uniform_average"`` (mean over columns), ``"variance_weighted_average"`` (weighted by each
    column's variance) or None (the vector). ``num_regressors=p`` > 0 gives the adjusted R2
    ``1 - (1 - R2) (n - 1) / (n - p - 1)``, falling back to R2 with a warning when ``n - 1 <= p``, as
    Keras does. Inputs are ``(N, outputs)``; ``(N,)`` is one output.

    >>> m = R2Score()
    >>> m.update(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 2.0, 4.0]))
    >>> float(m.result())
    0.5
    """

    def __init__(self, class_aggregation="uniform_average", num_regressors=0, name="r2_score"):
        super().__init__(name)
        if class_aggregation not in (None, "uniform_average", "variance_weighted_average"):
            raise ValueError(f"class_aggregation: got {class_aggregation!r}; expected None, 'uniform_average' or "
                             "'variance_weighted_average'")
        if isinstance(num_regressors, bool) or not isinstance(num_regressors, numbers.Integral) or num_regressors < 0:
            raise ValueError(f"num_regressors: got {num_regressors!r}; expected an integer >= 0")
        self.class_aggregation = class_aggregation
        self.num_regressors = int(num_regressors)
        self.add_state("num_samples")

    def update(self, y_true, y_pred, sample_weight=None):
        y_true, y_pred = _floats(y_true, y_pred)
        if y_pred.dim() == 1:
            y_true, y_pred = y_true.unsqueeze(-1), y_pred.unsqueeze(-1)
        if y_pred.dim() != 2 or y_true.shape != y_pred.shape:
            raise ValueError(f"{self.name}: expected y_true and y_pred of one shape (N, outputs); got "
                             f"{tuple(y_true.shape)} and {tuple(y_pred.shape)}")
        if "sum" not in self._state_specs:  # one entry per output column, known at the first batch
            for state in ("sum", "squared_sum", "residual", "count"):
                self.add_state(state, (y_pred.shape[-1],))
            self._place_states(y_pred.device)
        elif self.sum.shape[0] != y_pred.shape[-1]:
            raise ValueError(f"{self.name}: y_pred has {y_pred.shape[-1]} columns; earlier batches had "
                             f"{self.sum.shape[0]}")
        if sample_weight is None:
            w = torch.ones_like(y_true)
        else:
            w = sample_weight.to(device=y_true.device, dtype=y_true.dtype)
            if w.dim() == 1:
                w = w.unsqueeze(-1)
            w = torch.broadcast_to(w, y_true.shape)
        weighted = y_true * w
        dtype = self.num_samples.dtype
        self.sum += weighted.sum(0).to(dtype)
        self.squared_sum += (y_true * weighted).sum(0).to(dtype)
        self.residual += ((y_true - y_pred).square() * w).sum(0).to(dtype)
        self.count += w.sum(0).to(dtype)
        self.num_samples += (w != 0).any(-1).sum()

    def result(self):
        if "sum" not in self._state_specs:
            return torch.zeros(())
        mean = self.sum / self.count
        total = self.squared_sum - self.sum * mean
        raw = 1.0 - self.residual / total
        raw = torch.where(torch.isinf(raw), torch.zeros_like(raw), raw)
        if self.class_aggregation == "uniform_average":
            score = raw.mean()
        elif self.class_aggregation == "variance_weighted_average":
            score = (total * raw).sum() / total.sum()
        else:
            score = raw
        if self.num_regressors:
            n = float(self.num_samples)  # one read, at result time
            p = self.num_regressors
            if p > n - 1:
                warnings.warn("More independent predictors than datapoints in adjusted R2 score. Falling back to "
                              "standard R2 score.", stacklevel=2)
            elif p == n - 1:
                warnings.warn("Division by zero in Adjusted R2 score. Falling back to standard R2 score.",
                              stacklevel=2)
            else:
                score = 1.0 - (1.0 - score) * (n - 1.0) / (n - p - 1.0)
        return score.float()
