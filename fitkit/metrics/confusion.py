"""Metrics from confusion counts: precision, recall, F1 and AUC of the whole epoch.

Each keeps weighted true/false positive and negative counts (per threshold, per class, or a histogram
over thresholds for AUC) and computes its value from them in ``result()``, so the epoch's precision is
not a mean of per-batch precisions. Scores can be probabilities or, with ``from_logits``, logits.
"""

import torch
import torch.nn.functional as F

from fitkit.conventions import EPSILON
from fitkit.metrics.base import Metric, _as_float, _broadcast_weight, _div_no_nan, _is_sparse, _state_dtype
from fitkit.targets import match_rank, sparse_labels

__all__ = ["Precision", "Recall", "F1Score", "AUC"]


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


class _ConfusionCounts(Metric):
    """Weighted true/false positives and false negatives at fixed thresholds, treating every element
    of ``y_pred`` as one binary prediction (Keras's Precision/Recall semantics)."""

    def __init__(self, thresholds, top_k, class_id, name, from_logits):
        super().__init__(name)
        if thresholds is None:
            values = [0.5 if top_k is None else -1e10]  # with top_k, the k kept scores count as positive
        else:
            values = list(thresholds) if isinstance(thresholds, (list, tuple)) else [thresholds]
            if not values or any(not isinstance(t, (int, float)) or not 0 <= t <= 1 for t in values):
                raise ValueError("thresholds must be a number or a list of numbers in [0, 1]; "
                                 f"received thresholds={thresholds!r}.")
        self.thresholds = values
        self._vector = isinstance(thresholds, (list, tuple))
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
        if len(self.thresholds) == 1:
            above = (y_pred > self.thresholds[0]).unsqueeze(0)
        else:
            if self._thr is None or self._thr.device != y_pred.device:
                self._thr = torch.tensor(self.thresholds, dtype=y_pred.dtype, device=y_pred.device)
            above = y_pred.unsqueeze(0) > self._thr.unsqueeze(1)  # (thresholds, elements)
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


class F1Score(Metric):
    """Epoch F1 from accumulated counts.

    One output column: binary F1 of ``y_pred > threshold`` (0.5 by default, after a sigmoid when
    ``from_logits``). Several columns: per-class F1 of the argmax (or of ``y_pred > threshold`` when a
    threshold is given: multi-label), averaged by ``average``: "macro" (default), "micro", "weighted", or
    None for the per-class vector. Integer labels are accepted against several columns.
    Keras's F1Score defaults to ``average=None`` and ``threshold=None`` (argmax even for one column).
    """

    def __init__(self, average="macro", threshold=None, name="f1_score", from_logits=False):
        super().__init__(name)
        if average not in ("macro", "micro", "weighted", None):
            raise ValueError(f"average must be 'macro', 'micro', 'weighted' or None; received average={average!r}.")
        if threshold is not None and not (isinstance(threshold, (int, float)) and 0 <= threshold <= 1):
            raise ValueError(f"threshold must be a number in [0, 1] or None; received threshold={threshold!r}.")
        self.average = average
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
            if self.threshold is None:  # argmax is the same on logits and probabilities
                predicted = F.one_hot(y_pred.argmax(-1), y_pred.shape[-1])
            else:
                predicted = _probabilities(y_pred, self._logits) > self.threshold
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
        f1 = _div_no_nan(2 * tp, 2 * tp + fp + fn)
        if self.average == "macro":
            f1 = f1.mean()
        elif self.average == "weighted":
            f1 = _div_no_nan((f1 * self.support).sum(), self.support.sum())
        return f1.float()

    def states(self):
        names = ("true_positives", "false_positives", "false_negatives", "support")
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}

    def reset(self):
        for value in self.states().values():
            value.zero_()


class AUC(Metric):
    """Area under the ROC (or PR) curve from confusion counts at ``num_thresholds`` thresholds.

    Same thresholds, buckets and trapezoid (``summation_method="interpolation"``) as Keras's AUC, so the
    value approximates the exact AUC (``sklearn.metrics.roc_auc_score``) to about 1e-3. Predictions are
    clipped to [0, 1] after a sigmoid when ``from_logits``. Every element is one binary prediction, unless
    ``multi_label=True``, which averages the AUC of each column. Each update is one ``scatter_add_`` of
    the batch into a per-threshold histogram on the device; the curve is computed in ``result()``.
    """

    def __init__(self, num_thresholds=200, curve="ROC", summation_method="interpolation", name="auc",
                 multi_label=False, from_logits=False):
        super().__init__(name)
        if not isinstance(num_thresholds, int) or num_thresholds <= 1:
            raise ValueError(f"num_thresholds must be an integer > 1; received num_thresholds={num_thresholds!r}.")
        if str(curve).upper() not in ("ROC", "PR"):
            raise ValueError(f"curve must be 'ROC' or 'PR'; received curve={curve!r}.")
        if str(summation_method).lower() not in ("interpolation", "minoring", "majoring"):
            raise ValueError("summation_method must be 'interpolation', 'minoring' or 'majoring'; "
                             f"received summation_method={summation_method!r}.")
        self.num_thresholds = num_thresholds
        self.curve = str(curve).upper()
        self.summation_method = str(summation_method).lower()
        self.multi_label = multi_label
        self._logits = _logits_mode(from_logits)
        self.histogram = None  # (2, thresholds[, labels]): weights of positives, negatives per bucket

    @property
    def thresholds(self):
        n = self.num_thresholds
        return [0.0 - EPSILON] + [(i + 1) / (n - 1) for i in range(n - 2)] + [1.0 + EPSILON]

    def update(self, y_true, y_pred, sample_weight=None):
        y_pred = _as_float(y_pred) if y_pred.is_floating_point() else y_pred.float()
        y_true = _binary_targets(y_true, y_pred, self.name)
        y_pred = _probabilities(y_pred, self._logits).float().clamp(0.0, 1.0)
        n = self.num_thresholds
        labels = y_pred.shape[-1] if self.multi_label and y_pred.dim() > 1 else 1
        if self.histogram is None:
            self.histogram = torch.zeros((2, n, labels), dtype=_state_dtype(y_pred.device), device=y_pred.device)
        # Bucket b holds predictions above thresholds 0..b (Keras: ceil(p * (n - 1)) - 1, at least 0).
        bucket = (torch.ceil(y_pred * (n - 1)) - 1).clamp_min(0).long()
        negative = (y_true == 0).long()
        index = (negative * n + bucket) * labels
        if labels > 1:
            index = index + torch.arange(labels, device=index.device)
        if sample_weight is None:
            weights = torch.ones(index.shape, dtype=self.histogram.dtype, device=index.device)
        else:
            weights = _broadcast_weight(sample_weight, y_pred).to(self.histogram.dtype)
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
            recall = _div_no_nan(tp, tp + fn)
            if self.curve == "ROC":
                x, y = _div_no_nan(fp, fp + tn), recall
            else:
                x, y = recall, _div_no_nan(tp, tp + fp)
            if self.summation_method == "interpolation":
                heights = (y[:-1] + y[1:]) / 2
            elif self.summation_method == "minoring":
                heights = torch.minimum(y[:-1], y[1:])
            else:
                heights = torch.maximum(y[:-1], y[1:])
            area = ((x[:-1] - x[1:]) * heights).sum(0)
        return area.mean().float()

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
