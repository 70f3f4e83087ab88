"""Metrics from confusion counts: the counts themselves, precision, recall, F-scores and AUC of the whole
epoch.

Each keeps weighted true/false positive and negative counts (per threshold, per class, or a histogram
over thresholds for AUC) and computes its value from them in ``result()``, so the epoch's precision is
not a mean of per-batch precisions. Scores can be probabilities or, with ``from_logits``, logits.
"""

import torch
import torch.nn.functional as F

from fitkit.conventions import EPSILON
from fitkit.metrics.base import Metric, _as_float, _broadcast_weight, _div_no_nan, _is_sparse, _state_dtype
from fitkit.targets import match_rank, sparse_labels

__all__ = [
    "TruePositives", "FalsePositives", "TrueNegatives", "FalseNegatives", "Precision", "Recall", "FBetaScore",
    "F1Score", "AUC",
]


# --------------------------------------------------------------------------------------------------
# Scores and targets


def _check_same_shape(a, b, what):
    if a.shape != b.shape:
        raise ValueError(f"{what}: y_true of shape {tuple(a.shape)} does not match y_pred of shape {tuple(b.shape)}.")


def _probabilities(y_pred, logits):
    """Scores -> probabilities: ``logits`` is None (already probabilities), "sigmoid" or "softmax"."""
    if logits == "softmax" and y_pred.dim() > 0 and y_pred.shape[-1] > 1:
        return y_pred.softmax(-1)
    if logits:
        return y_pred.sigmoid()
    return y_pred


def _logits_mode(from_logits):
    if from_logits in (None, False):
        return None
    if from_logits is True or from_logits == "sigmoid":
        return "sigmoid"
    if from_logits == "softmax":
        return "softmax"
    raise ValueError(f"from_logits must be True, False or 'softmax'; received from_logits={from_logits!r}.")


def _binary_targets(y_true, y_pred, what):
    """0/1 targets shaped like ``y_pred``: class indices become one-hot columns."""
    if _is_sparse(y_true, y_pred):
        return F.one_hot(sparse_labels(y_true).long(), y_pred.shape[-1])
    y_true = match_rank(y_true, y_pred)
    _check_same_shape(y_true, y_pred, what)
    return y_true


# --------------------------------------------------------------------------------------------------
# Confusion-count metrics


def _parse_thresholds(thresholds, default):
    """``(list of thresholds, whether results are vectors)``; each in [0, 1], as Keras checks. As in Keras,
    one threshold gives a scalar result, even as a list of one."""
    if thresholds is None:
        return [default], False
    values = list(thresholds) if isinstance(thresholds, (list, tuple)) else [thresholds]
    if not values or any(isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 <= t <= 1 for t in values):
        raise ValueError("thresholds must be a number or a list of numbers in [0, 1]; "
                         f"received thresholds={thresholds!r}.")
    return values, len(values) > 1


def _evenly_spaced(thresholds):
    """Keras's test for thresholds it can bucket by ``ceil(p * (n - 1))``: n >= 3 values at i / (n - 1)."""
    n = len(thresholds)
    return n >= 3 and all(abs(t - i / (n - 1)) <= EPSILON + 1e-5 * abs(i / (n - 1)) for i, t in enumerate(thresholds))


def _above(metric, y_pred):
    """(thresholds, elements) booleans: ``y_pred > t`` for each of ``metric.thresholds`` (Keras's strict >).

    Several thresholds are compared as one tensor, cached on the metric as ``_thr``.
    """
    if len(metric.thresholds) == 1:
        return (y_pred > metric.thresholds[0]).unsqueeze(0)
    thr = getattr(metric, "_thr", None)
    if thr is None or thr.device != y_pred.device or thr.dtype != y_pred.dtype:
        thr = metric._thr = torch.tensor(metric.thresholds, dtype=y_pred.dtype, device=y_pred.device)
    return y_pred.unsqueeze(0) > thr.unsqueeze(1)


def _flat_weights(sample_weight, y_pred):
    return None if sample_weight is None else _broadcast_weight(sample_weight, y_pred).reshape(-1)


class _ConditionCount(Metric):
    """The weighted count of one confusion-matrix condition at each threshold, every element of
    ``y_pred`` being one binary prediction and every non-zero target a positive (Keras semantics)."""

    _condition = None  # (prediction above the threshold?, target positive?)

    def __init__(self, thresholds=None, name=None):
        super().__init__(name)
        self.init_thresholds = thresholds
        self.thresholds, self._vector = _parse_thresholds(thresholds, 0.5)
        self._thr = None
        self.add_state("accumulator", (len(self.thresholds),))

    def update(self, y_true, y_pred, sample_weight=None):
        y_pred = _as_float(y_pred) if y_pred.is_floating_point() else y_pred.float()
        y_true = _binary_targets(y_true, y_pred, self.name)
        above = _above(self, y_pred.reshape(-1))
        positive = (y_true != 0).reshape(-1)
        predicted, actual = self._condition
        hit = (above if predicted else ~above) & (positive if actual else ~positive)
        w = _flat_weights(sample_weight, y_pred)
        self.accumulator += hit.sum(1) if w is None else (hit * w).sum(1)

    def result(self):
        return self.accumulator.float() if self._vector else self.accumulator[0].float()


class TruePositives(_ConditionCount):
    """The (weighted) number of positives predicted above ``thresholds`` (0.5 by default; a list gives
    one count per threshold).

    >>> m = TruePositives()
    >>> m.update(torch.tensor([0, 1, 1, 1]), torch.tensor([1.0, 0.0, 1.0, 1.0]))
    >>> float(m.result())
    2.0
    """

    _condition = (True, True)


class FalsePositives(_ConditionCount):
    """The (weighted) number of negatives predicted above ``thresholds``."""

    _condition = (True, False)


class TrueNegatives(_ConditionCount):
    """The (weighted) number of negatives predicted at or below ``thresholds``."""

    _condition = (False, False)


class FalseNegatives(_ConditionCount):
    """The (weighted) number of positives predicted at or below ``thresholds``."""

    _condition = (False, True)


class _ConfusionCounts(Metric):
    """Weighted true/false positives and false negatives at fixed thresholds, treating every element
    of ``y_pred`` as one binary prediction (Keras's Precision/Recall semantics)."""

    def __init__(self, thresholds, top_k, class_id, name, from_logits):
        super().__init__(name)
        # with top_k, the k kept scores count as positive
        values, self._vector = _parse_thresholds(thresholds, 0.5 if top_k is None else -1e10)
        self.thresholds = values
        self.top_k = top_k
        self.class_id = class_id
        self._logits = _logits_mode(from_logits)
        self._thr = None
        for state in ("true_positives", "false_positives", "false_negatives"):
            self.add_state(state, (len(values),))

    def update(self, y_true, y_pred, sample_weight=None):
        y_pred = _as_float(y_pred) if y_pred.is_floating_point() else y_pred.float()
        y_true = _binary_targets(y_true, y_pred, self.name)
        y_pred = _probabilities(y_pred, self._logits)
        if self.top_k is not None:
            kept = y_pred.topk(min(self.top_k, y_pred.shape[-1]), dim=-1).indices
            y_pred = torch.full_like(y_pred, -1e10).scatter(-1, kept, y_pred.gather(-1, kept))
        if self.class_id is not None:
            y_true, y_pred = y_true[..., self.class_id], y_pred[..., self.class_id]
        positive = (y_true != 0).reshape(-1)
        y_pred = y_pred.reshape(-1)
        above = _above(self, y_pred)
        if sample_weight is None:
            tp = (above & positive).sum(1)
            fp = (above & ~positive).sum(1)
            fn = positive.sum() - tp
        else:
            w = _broadcast_weight(sample_weight, y_pred).reshape(-1)
            pos_w = w * positive
            tp = (above * pos_w).sum(1)
            fp = (above * (w - pos_w)).sum(1)
            fn = pos_w.sum() - tp
        self.true_positives += tp
        self.false_positives += fp
        self.false_negatives += fn

    def _finish(self, value):
        return value.float() if self._vector else value[0].float()


class Precision(_ConfusionCounts):
    """Epoch precision ``tp / (tp + fp)`` at ``thresholds`` (0.5 by default; a list gives a vector).

    Every element of ``y_pred`` is a binary prediction (integer labels against several columns become
    one-hot). ``from_logits=True`` applies a sigmoid first; ``class_id`` and ``top_k`` follow Keras.
    """

    def __init__(self, thresholds=None, top_k=None, class_id=None, name="precision", from_logits=False):
        super().__init__(thresholds, top_k, class_id, name, from_logits)

    def result(self):
        return self._finish(_div_no_nan(self.true_positives, self.true_positives + self.false_positives))


class Recall(_ConfusionCounts):
    """Epoch recall ``tp / (tp + fn)``; arguments as :class:`Precision`."""

    def __init__(self, thresholds=None, top_k=None, class_id=None, name="recall", from_logits=False):
        super().__init__(thresholds, top_k, class_id, name, from_logits)

    def result(self):
        return self._finish(_div_no_nan(self.true_positives, self.true_positives + self.false_negatives))


class FBetaScore(Metric):
    """Epoch F-beta score ``(1 + beta**2) tp / ((1 + beta**2) tp + beta**2 fn + fp)`` from accumulated counts.

    Several columns (one per class or label; integer labels are accepted too): per-class scores of the
    argmax prediction (every column that ties with the maximum counts, and none of an all-zero row, as
    Keras) or, with ``threshold``, of ``y_pred > threshold`` (multi-label). ``average``: None (the
    per-class vector, Keras's default), "micro" (from the summed counts), "macro" (the mean of the
    classes) or "weighted" (weighted by each class's support). In fit's logs a vector shows as its mean.
    One column: binary F-beta of ``y_pred > threshold``, 0.5 by default (**fitkit**: Keras's argmax over
    one column would call every non-zero score positive). ``from_logits`` (**fitkit**) applies a sigmoid,
    or "softmax", before thresholding.
    """

    beta = 1.0  # F1Score's, also for one unpickled from a file saved before FBetaScore existed

    def __init__(self, average=None, beta=1.0, threshold=None, name="fbeta_score", from_logits=False):
        super().__init__(name)
        if average not in ("macro", "micro", "weighted", None):
            raise ValueError(f"average must be 'macro', 'micro', 'weighted' or None; received average={average!r}.")
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not beta > 0:
            raise ValueError(f"beta: got {beta!r}; expected a number > 0")
        if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))
                                      or not 0 <= threshold <= 1):
            raise ValueError(f"threshold must be a number in [0, 1] or None; received threshold={threshold!r}.")
        self.average = average
        self.beta = float(beta)
        self.threshold = threshold
        self._logits = _logits_mode(from_logits)
        for state in ("true_positives", "false_positives", "false_negatives", "support"):
            setattr(self, state, None)  # one entry per class, made at the first update

    def update(self, y_true, y_pred, sample_weight=None):
        y_pred = _as_float(y_pred) if y_pred.is_floating_point() else y_pred.float()
        if y_pred.dim() <= 1 or y_pred.shape[-1] == 1:
            y_true = match_rank(y_true, y_pred)
            _check_same_shape(y_true, y_pred, self.name)
            predicted = _probabilities(y_pred, self._logits) > (0.5 if self.threshold is None else self.threshold)
        else:
            y_true = _binary_targets(y_true, y_pred, self.name)
            p = _probabilities(y_pred, self._logits)
            if self.threshold is None:  # Keras: every column equal to the row's maximum, unless it is ~0
                predicted = (p >= p.amax(-1, keepdim=True)) & (p.abs() > 1e-9)
            else:
                predicted = p > self.threshold
        columns = y_pred.shape[-1] if y_pred.dim() > 1 else 1
        y_true = y_true.to(y_pred.dtype).reshape(-1, columns)
        predicted = predicted.to(y_pred.dtype).reshape(-1, columns)
        if sample_weight is not None:
            w = _broadcast_weight(sample_weight, y_pred).reshape(-1, columns)
            weighted_true, weighted_pred = y_true * w, predicted * w
        else:
            weighted_true, weighted_pred = y_true, predicted
        tp = (weighted_pred * y_true).sum(0)
        if self.true_positives is None:
            zeros = torch.zeros(columns, dtype=_state_dtype(y_pred.device), device=y_pred.device)
            self.true_positives, self.false_positives = zeros.clone(), zeros.clone()
            self.false_negatives, self.support = zeros.clone(), zeros
        self.true_positives += tp
        self.false_positives += weighted_pred.sum(0) - tp
        self.false_negatives += weighted_true.sum(0) - tp
        self.support += weighted_true.sum(0)

    def result(self):
        if self.true_positives is None:
            return torch.zeros(())
        tp, fp, fn = self.true_positives, self.false_positives, self.false_negatives
        if self.average == "micro":
            tp, fp, fn = tp.sum(), fp.sum(), fn.sum()
        b2 = self.beta ** 2
        score = _div_no_nan((1.0 + b2) * tp, (1.0 + b2) * tp + b2 * fn + fp)
        if self.average == "macro":
            score = score.mean()
        elif self.average == "weighted":
            score = _div_no_nan((score * self.support).sum(), self.support.sum())
        return score.float()

    def states(self):
        names = ("true_positives", "false_positives", "false_negatives", "support")
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}

    def reset(self):
        for value in self.states().values():
            value.zero_()


class F1Score(FBetaScore):
    """Epoch F1, the harmonic mean of precision and recall: :class:`FBetaScore` with ``beta=1``.

    ``average=None`` (Keras's default) gives one score per class, which fit logs as their mean (the
    macro average); the string metric "f1" / "f1_score" is the macro average itself.

    >>> m = F1Score(average="macro")
    >>> m.update(torch.tensor([0, 1, 2, 1]), torch.eye(3)[[0, 1, 1, 1]])
    >>> round(float(m.result()), 4)   # classes 0, 1, 2: 1.0, 0.8, 0.0
    0.6
    """

    def __init__(self, average=None, threshold=None, name="f1_score", from_logits=False):
        super().__init__(average=average, beta=1.0, threshold=threshold, name=name, from_logits=from_logits)


class AUC(Metric):
    """Area under the ROC, PR or PR-gain curve from confusion counts at ``num_thresholds`` thresholds.

    Same thresholds, buckets and trapezoid (``summation_method="interpolation"``) as Keras's AUC, so the
    value approximates the exact AUC (``sklearn.metrics.roc_auc_score``) to about 1e-3. ``thresholds``
    gives the inner thresholds instead (``num_thresholds`` is then their number + 2, as in Keras).
    Predictions are clipped to [0, 1] after a sigmoid when ``from_logits``. Every element is one binary
    prediction, unless ``multi_label=True``, which averages the AUC of each column (weighted by
    ``label_weights`` when given; without ``multi_label``, ``label_weights`` weighs each column's
    predictions). ``num_labels`` (with ``multi_label``) checks the number of columns. Each update is one
    ``scatter_add_`` of the batch into a per-threshold histogram on the device; the curve is computed in
    ``result()``.
    """

    # Defaults for an AUC unpickled from a file saved before these arguments existed.
    _custom_thresholds = None
    _even = True
    num_labels = None
    label_weights = None
    _thr = None
    _weights_on = None  # label_weights on the device of the data

    def __init__(self, num_thresholds=200, curve="ROC", summation_method="interpolation", name="auc",
                 multi_label=False, from_logits=False, thresholds=None, num_labels=None, label_weights=None):
        super().__init__(name)
        if thresholds is not None:
            custom, _ = _parse_thresholds(list(thresholds), None)
            self._custom_thresholds = sorted(float(t) for t in custom)
            self._even = _evenly_spaced([0.0] + self._custom_thresholds + [1.0])
            num_thresholds = len(custom) + 2
        elif isinstance(num_thresholds, bool) or not isinstance(num_thresholds, int) or num_thresholds <= 1:
            raise ValueError(f"num_thresholds must be an integer > 1; received num_thresholds={num_thresholds!r}.")
        if str(curve).upper() not in ("ROC", "PR", "PRGAIN"):
            raise ValueError(f"curve must be 'ROC', 'PR' or 'PRGAIN'; received curve={curve!r}.")
        if str(summation_method).lower() not in ("interpolation", "minoring", "majoring"):
            raise ValueError("summation_method must be 'interpolation', 'minoring' or 'majoring'; "
                             f"received summation_method={summation_method!r}.")
        if num_labels is not None and not multi_label:
            raise ValueError(f"num_labels: got {num_labels!r} without multi_label=True; it is needed only then")
        self.num_thresholds = num_thresholds
        self.curve = str(curve).upper()
        self.summation_method = str(summation_method).lower()
        self.multi_label = multi_label
        self.num_labels = num_labels
        if label_weights is not None:
            label_weights = torch.as_tensor(label_weights, dtype=torch.float64).reshape(-1)
            if (label_weights < 0).any():
                raise ValueError(f"label_weights: got {label_weights.tolist()}; expected weights >= 0")
        self.label_weights = label_weights
        self._logits = _logits_mode(from_logits)
        self.histogram = None  # (2, thresholds[, labels]): weights of positives, negatives per bucket

    @property
    def thresholds(self):
        n = self.num_thresholds
        inner = self._custom_thresholds
        if inner is None:
            inner = [(i + 1) / (n - 1) for i in range(n - 2)]
        return [0.0 - EPSILON] + list(inner) + [1.0 + EPSILON]

    def _buckets(self, y_pred):
        """Bucket b of each prediction: above thresholds 0..b (every prediction in [0, 1] is above the first)."""
        n = self.num_thresholds
        if self._even:
            # Keras's bucket of evenly spaced thresholds: ceil(p * (n - 1)) - 1, at least 0.
            return (torch.ceil(y_pred * (n - 1)) - 1).clamp_min(0).long()
        if self._thr is None or self._thr.device != y_pred.device:
            self._thr = torch.tensor(self.thresholds, dtype=torch.float32, device=y_pred.device)
        return (torch.searchsorted(self._thr, y_pred.contiguous(), right=False) - 1).clamp(0, n - 1)

    def update(self, y_true, y_pred, sample_weight=None):
        y_pred = _as_float(y_pred) if y_pred.is_floating_point() else y_pred.float()
        y_true = _binary_targets(y_true, y_pred, self.name)
        y_pred = _probabilities(y_pred, self._logits).float().clamp(0.0, 1.0)
        n = self.num_thresholds
        labels = y_pred.shape[-1] if self.multi_label and y_pred.dim() > 1 else 1
        if self.multi_label and self.num_labels is not None and labels != self.num_labels:
            raise ValueError(f"{self.name}: y_pred has {labels} labels (columns); num_labels={self.num_labels}")
        if self.histogram is None:
            self.histogram = torch.zeros((2, n, labels), dtype=_state_dtype(y_pred.device), device=y_pred.device)
        bucket = self._buckets(y_pred)
        negative = (y_true == 0).long()
        index = (negative * n + bucket) * labels
        if labels > 1:
            index = index + torch.arange(labels, device=index.device)
        if sample_weight is None:
            weights = torch.ones(index.shape, dtype=self.histogram.dtype, device=index.device)
        else:
            weights = _broadcast_weight(sample_weight, y_pred).to(self.histogram.dtype)
        if self.label_weights is not None and not self.multi_label:
            # Each column's predictions weigh its label weight (Keras: not for multi-class data).
            if self._weights_on is None or self._weights_on.device != weights.device:
                self._weights_on = self.label_weights.to(device=weights.device, dtype=weights.dtype)
            weights = weights * self._weights_on
        self.histogram.view(-1).scatter_add_(0, index.reshape(-1), weights.reshape(-1))

    def result(self):
        if self.histogram is None:
            return torch.zeros(())
        n = self.num_thresholds
        positives, negatives = self.histogram[0], self.histogram[1]
        # Counts above threshold t are sums over buckets >= t: a triangular matmul (float cumsum on CUDA
        # is refused under torch.use_deterministic_algorithms).
        above = torch.ones((n, n), dtype=positives.dtype, device=positives.device).triu()
        tp, fp = above @ positives, above @ negatives
        fn, tn = positives.sum(0) - tp, negatives.sum(0) - fp
        if self.curve == "PR" and self.summation_method == "interpolation":
            area = self._interpolated_pr(tp, fp, fn)
        else:
            if self.curve == "ROC":
                x, y = _div_no_nan(fp, fp + tn), _div_no_nan(tp, tp + fn)
            elif self.curve == "PR":
                x, y = _div_no_nan(tp, tp + fn), _div_no_nan(tp, tp + fp)
            else:
                x, y = self._gains(tp, fp, tn, fn)
            if self.summation_method == "interpolation":
                heights = (y[:-1] + y[1:]) / 2
            elif self.summation_method == "minoring":
                heights = torch.minimum(y[:-1], y[1:])
            else:
                heights = torch.maximum(y[:-1], y[1:])
            area = ((x[:-1] - x[1:]) * heights).sum(0)
        if self.multi_label and self.label_weights is not None:
            weights = self.label_weights.to(device=area.device, dtype=area.dtype)
            return _div_no_nan((area * weights).sum(), weights.sum()).float()
        return area.mean().float()

    @staticmethod
    def _gains(tp, fp, tn, fn):
        """(recall gain, precision gain) of Flach & Kull's PR-gain curve, with Keras's guards: no true
        positive gives recall gain 0 and precision gain 1; a negative recall gain becomes 0."""
        scale = _div_no_nan(tp + fn, tn + fp)
        none = tp == 0
        recall_gain = (1.0 - scale * _div_no_nan(fn, tp)).masked_fill(none, 0.0).clamp_min(0.0)
        precision_gain = (1.0 - scale * _div_no_nan(fp, tp)).masked_fill(none, 1.0)
        return recall_gain, precision_gain

    @staticmethod
    def _interpolated_pr(tp, fp, fn):
        # Davis & Goadrich interpolation between thresholds, as Keras's interpolate_pr_auc.
        dtp = tp[:-1] - tp[1:]
        p = tp + fp
        dp = p[:-1] - p[1:]
        slope = _div_no_nan(dtp, dp.clamp_min(0))
        intercept = tp[1:] - slope * p[1:]
        both = (p[:-1] > 0) & (p[1:] > 0)
        ratio = torch.where(both, _div_no_nan(p[:-1], p[1:].clamp_min(0)), torch.ones_like(p[1:]))
        return _div_no_nan(slope * (dtp + intercept * torch.log(ratio)), (tp[1:] + fn[1:]).clamp_min(0)).sum(0)

    def states(self):
        return {} if self.histogram is None else {"histogram": self.histogram}

    def reset(self):
        if self.histogram is not None:
            self.histogram.zero_()
