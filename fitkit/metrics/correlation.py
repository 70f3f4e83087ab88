"""The correlation family: Pearson's and Lin's concordance correlation between targets and predictions.

As Keras's ``pearson_correlation`` and ``concordance_correlation``: each sample's coefficient is taken
along ``axis`` (the outputs of one sample, not the samples of a batch) and the metric is the mean of
those per-sample values over the epoch. With one output column that coefficient is undefined (NaN), as
in Keras.
"""

from fitkit.conventions import EPSILON
from fitkit.metrics.base import MeanMetricWrapper
from fitkit.metrics.regression import _floats

__all__ = ["PearsonCorrelation", "ConcordanceCorrelation", "pearson_correlation", "concordance_correlation"]


def pearson_correlation(y_true, y_pred, axis=-1):
    """Pearson's coefficient along ``axis``: ``mean(z(y_true) * z(y_pred))`` with population std."""
    y_true, y_pred = _floats(y_true, y_pred)
    t = y_true - y_true.mean(axis, keepdim=True)
    p = y_pred - y_pred.mean(axis, keepdim=True)
    t = t / t.std(axis, keepdim=True, correction=0)
    p = p / p.std(axis, keepdim=True, correction=0)
    return (t * p).mean(axis)


def concordance_correlation(y_true, y_pred, axis=-1):
    """Lin's concordance ``2 cov / (var_t + var_p + (mean_t - mean_p) ** 2)`` along ``axis``."""
    y_true, y_pred = _floats(y_true, y_pred)
    mean_t, mean_p = y_true.mean(axis, keepdim=True), y_pred.mean(axis, keepdim=True)
    var_t = (y_true - mean_t).var(axis, keepdim=True, correction=0)
    var_p = (y_pred - mean_p).var(axis, keepdim=True, correction=0)
    covariance = (y_true - mean_t) * (y_pred - mean_p)
    return (2.0 * covariance / (var_t + var_p + (mean_t - mean_p).square() + EPSILON)).mean(axis)


class PearsonCorrelation(MeanMetricWrapper):
    """Mean over the epoch of each sample's Pearson correlation between its targets and predictions."""

    def __init__(self, name="pearson_correlation", axis=-1):
        super().__init__(pearson_correlation, name, axis=axis)
        self.axis = axis


class ConcordanceCorrelation(MeanMetricWrapper):
    """Mean over the epoch of each sample's concordance correlation between its targets and predictions."""

    def __init__(self, name="concordance_correlation", axis=-1):
        super().__init__(concordance_correlation, name, axis=axis)
        self.axis = axis
