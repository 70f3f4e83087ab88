"""Operating-point metrics: the best value of one rate where another rate reaches a target, as Keras's
SensitivityAtSpecificity, SpecificityAtSensitivity, PrecisionAtRecall and RecallAtPrecision.

Each keeps, per threshold of ``num_thresholds`` evenly spaced in [0, 1], the weights of positives and
negatives whose score falls in that threshold's bucket (one ``scatter_add_`` per batch on the device);
``result()`` turns the buckets into true/false positive/negative counts at every threshold and picks
the best feasible value. Every element of ``y_pred`` is one binary prediction (``class_id`` picks one
column), and every non-zero target is a positive.
"""

import numbers

import torch

from fitkit.metrics.base import Metric, _as_float, _broadcast_weight, _div_no_nan
from fitkit.metrics.confusion import _binary_targets

__all__ = ["SensitivityAtSpecificity", "SpecificityAtSensitivity", "PrecisionAtRecall", "RecallAtPrecision"]


class _OperatingPoint(Metric):
    """Confusion counts at ``num_thresholds`` thresholds; subclasses say which rate is constrained."""

    def __init__(self, value, argument, num_thresholds=200, class_id=None, name=None):
        super().__init__(name)
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value <= 1:
            raise ValueError(f"{argument}: got {value!r}; expected a number in [0, 1]")
        if isinstance(num_thresholds, bool) or not isinstance(num_thresholds, numbers.Integral) or num_thresholds < 1:
            raise ValueError(f"num_thresholds: got {num_thresholds!r}; expected an integer > 0")
        self.value = float(value)
        self.num_thresholds = int(num_thresholds)
        self.class_id = class_id
        n = self.num_thresholds
        self.thresholds = [0.5] if n == 1 else [0.0] + [(i + 1) / (n - 1) for i in range(n - 2)] + [1.0]
        # histogram[0]: weights of positives, [1]: of negatives; slot 0 holds scores above no threshold
        # and slot b + 1 scores above thresholds 0..b.
        self.add_state("histogram", (2, n + 1))

    def update(self, y_true, y_pred, sample_weight=None):
        y_pred = _as_float(y_pred) if y_pred.is_floating_point() else y_pred.float()
        y_true = _binary_targets(y_true, y_pred, self.name)
        weights = None if sample_weight is None else _broadcast_weight(sample_weight, y_pred)
        if self.class_id is not None:
            if y_pred.dim() < 2:
                raise ValueError(f"{self.name}: class_id needs y_pred of shape (samples, classes); got "
                                 f"{tuple(y_pred.shape)}")
            y_true, y_pred = y_true[..., self.class_id], y_pred[..., self.class_id]
            weights = None if weights is None else weights[..., self.class_id]
        y_pred = y_pred.reshape(-1)
        n = self.num_thresholds
        if n == 1:
            slot = (y_pred > 0.5).long()
        else:
            # Above threshold i/(n-1) for i < ceil(p (n - 1)): Keras's bucket of evenly spaced thresholds,
            # scores clipped to [0, 1]; a score of 0 is above none.
            slot = torch.ceil(y_pred.clamp(0.0, 1.0) * (n - 1)).long()
        negative = (y_true == 0).reshape(-1).long()
        index = negative * (n + 1) + slot
        if weights is None:
            weights = torch.ones(index.shape, dtype=self.histogram.dtype, device=index.device)
        self.histogram.view(-1).scatter_add_(0, index, weights.reshape(-1).to(self.histogram.dtype))

    def _counts(self):
        """(tp, fp, tn, fn) at each threshold, from the bucket weights."""
        n = self.num_thresholds
        positives, negatives = self.histogram[0], self.histogram[1]
        # Counts above threshold i: the slots after i. A triangular matmul, not a reversed cumsum, which
        # torch refuses on CUDA under use_deterministic_algorithms.
        above = torch.ones((n, n + 1), dtype=positives.dtype, device=positives.device).triu(1)
        tp, fp = above @ positives, above @ negatives
        return tp, fp, negatives.sum() - fp, positives.sum() - tp

    @property
    def true_positives(self):
        return self._counts()[0]

    @property
    def false_positives(self):
        return self._counts()[1]

    @property
    def true_negatives(self):
        return self._counts()[2]

    @property
    def false_negatives(self):
        return self._counts()[3]

    def _best(self, constrained, dependent):
        """The largest ``dependent`` where ``constrained >= value``; 0 when no threshold qualifies."""
        feasible = constrained >= self.value
        return torch.where(feasible, dependent, torch.zeros_like(dependent)).amax().clamp_min(0.0).float()


class SensitivityAtSpecificity(_OperatingPoint):
    """The best sensitivity (recall, ``tp / (tp + fn)``) at a threshold where the specificity
    (``tn / (tn + fp)``) is at least ``specificity``.

    >>> m = SensitivityAtSpecificity(0.5)
    >>> m.update(torch.tensor([0, 0, 0, 1, 1]), torch.tensor([0.0, 0.3, 0.8, 0.3, 0.8]))
    >>> float(m.result())
    0.5
    """

    def __init__(self, specificity, num_thresholds=200, class_id=None, name=None):
        super().__init__(specificity, "specificity", num_thresholds, class_id, name)
        self.specificity = self.value

    def result(self):
        tp, fp, tn, fn = self._counts()
        return self._best(_div_no_nan(tn, tn + fp), _div_no_nan(tp, tp + fn))


class SpecificityAtSensitivity(_OperatingPoint):
    """The best specificity (``tn / (tn + fp)``) at a threshold where the sensitivity (recall) is at
    least ``sensitivity``."""

    def __init__(self, sensitivity, num_thresholds=200, class_id=None, name=None):
        super().__init__(sensitivity, "sensitivity", num_thresholds, class_id, name)
        self.sensitivity = self.value

    def result(self):
        tp, fp, tn, fn = self._counts()
        return self._best(_div_no_nan(tp, tp + fn), _div_no_nan(tn, tn + fp))


class PrecisionAtRecall(_OperatingPoint):
    """The best precision (``tp / (tp + fp)``) at a threshold where the recall is at least ``recall``."""

    def __init__(self, recall, num_thresholds=200, class_id=None, name=None):
        super().__init__(recall, "recall", num_thresholds, class_id, name)
        self.recall = self.value

    def result(self):
        tp, fp, tn, fn = self._counts()
        return self._best(_div_no_nan(tp, tp + fn), _div_no_nan(tp, tp + fp))


class RecallAtPrecision(_OperatingPoint):
    """The best recall at a threshold where the precision is at least ``precision`` (0 when no threshold
    reaches it)."""

    def __init__(self, precision, num_thresholds=200, class_id=None, name=None):
        super().__init__(precision, "precision", num_thresholds, class_id, name)
        self.precision = self.value

    def result(self):
        tp, fp, tn, fn = self._counts()
        return self._best(_div_no_nan(tp, tp + fp), _div_no_nan(tp, tp + fn))
