"""Streaming metrics with Keras names and semantics, accumulated on the device of the data.

A metric keeps running sums (totals, counts, confusion counts) over a whole epoch and turns them into a
value only when :meth:`Metric.result` is called, so precision, recall, F1, AUC and RMSE are those of the
epoch, not means of per-batch values. The sums live on the device of the first batch: they are created
there at the first update, which costs no host sync, and ``result()`` returns a 0-dim tensor on that
device without reading it.

>>> m = get("mae")
>>> m.update(torch.tensor([1.0, 2.0]), torch.tensor([[1.5], [2.0]]))
>>> float(m.result())
0.25

``compile(metrics=[...])`` accepts Keras names ("accuracy", "precision", "auc", "mae", ...), :class:`Metric`
objects, torchmetrics-style objects (``update``/``compute``/``reset``) and plain ``fn(y_true, y_pred)``
callables; the compiled metrics container (``fitkit.compiled``) turns them into the named log entries of
``fit``, calling :func:`get` for each.
"""

import functools
import math

import torch
import torch.nn.functional as F

from fitkit.conventions import EPSILON, snake_case
from fitkit.targets import match_rank, sparse_labels

__all__ = [
    "Metric", "Mean", "MeanMetricWrapper", "TorchMetricWrapper", "get",
    "Accuracy", "BinaryAccuracy", "CategoricalAccuracy", "SparseCategoricalAccuracy",
    "TopKCategoricalAccuracy", "SparseTopKCategoricalAccuracy", "Precision", "Recall", "F1Score", "AUC",
    "MeanAbsoluteError", "MeanSquaredError", "RootMeanSquaredError", "MeanAbsolutePercentageError",
    "MeanSquaredLogarithmicError", "CosineSimilarity", "LogCoshError",
    "accuracy", "binary_accuracy", "categorical_accuracy", "sparse_categorical_accuracy",
    "top_k_categorical_accuracy", "sparse_top_k_categorical_accuracy", "mean_absolute_error",
    "mean_squared_error", "mean_absolute_percentage_error", "mean_squared_logarithmic_error",
    "cosine_similarity", "log_cosh",
]

# --------------------------------------------------------------------------------------------------
# Small tensor helpers


def _tensor(x):
    """Tensors pass through; NumPy arrays, lists and numbers become tensors (for direct calls)."""
    if x is None or isinstance(x, torch.Tensor):
        return x
    return torch.as_tensor(x)


def _state_dtype(device):
    # float64 keeps epoch sums exact over millions of samples; MPS has no float64.
    return torch.float32 if device.type == "mps" else torch.float64


def _as_float(x):
    """``x`` in a floating dtype at least as wide as float32 (half inputs are summed in float32)."""
    if x.dtype in (torch.float32, torch.float64):
        return x
    return x.float()


def _div_no_nan(num, den):
    return torch.where(den == 0, torch.zeros_like(num), num / torch.where(den == 0, torch.ones_like(den), den))


def _same_rank(x1, x2):
    """Keras's squeeze-or-expand: make ranks equal when they differ by a trailing axis of 1."""
    if x1.dim() == x2.dim() + 1 and x1.shape[-1] == 1:
        return (x1, x2.unsqueeze(-1)) if x2.dim() == 1 else (x1.squeeze(-1), x2)
    if x2.dim() == x1.dim() + 1 and x2.shape[-1] == 1:
        return (x1.unsqueeze(-1), x2) if x1.dim() == 1 else (x1, x2.squeeze(-1))
    return x1, x2


def _is_sparse(y_true, y_pred):
    """True when ``y_true`` holds class indices for a ``y_pred`` with one column per class."""
    if y_pred.dim() == 0 or y_pred.shape[-1] <= 1:
        return False
    return y_true.dim() == y_pred.dim() - 1 or (y_true.dim() == y_pred.dim() and y_true.shape[-1] == 1)


def _broadcast_weight(sample_weight, ref):
    """``sample_weight`` ((N,), (N, 1), or ``ref``'s shape) broadcast to ``ref``'s shape and dtype."""
    w = sample_weight.to(device=ref.device, dtype=ref.dtype if ref.is_floating_point() else torch.float32)
    while w.dim() > ref.dim() and w.shape[-1] == 1:
        w = w.squeeze(-1)
    while w.dim() < ref.dim():
        w = w.unsqueeze(-1)
    try:
        return torch.broadcast_to(w, ref.shape)
    except RuntimeError:
        raise ValueError(
            f"sample_weight of shape {tuple(sample_weight.shape)} does not fit predictions of shape "
            f"{tuple(ref.shape)}; expected shape ({ref.shape[0] if ref.dim() else 1},) or {tuple(ref.shape)}."
        ) from None


def _check_same_shape(a, b, what):
    if a.shape != b.shape:
        raise ValueError(f"{what}: y_true of shape {tuple(a.shape)} does not match y_pred of shape {tuple(b.shape)}.")


# --------------------------------------------------------------------------------------------------
# Base class


def _on_data_device(update):
    """Wrap a subclass's ``update`` so its states live on the device of the data before it runs."""

    @functools.wraps(update)
    def wrapper(self, *args, **kwargs):
        args = [_tensor(a) for a in args]
        kwargs = {k: _tensor(v) for k, v in kwargs.items()}
        device = next(a for a in (*args, *kwargs.values()) if a is not None).device
        if getattr(self, "_device", None) != device:
            self._place_states(device)
        with torch.no_grad():  # outputs that still carry a graph must not chain the epoch's sums into it
            return update(self, *args, **kwargs)

    wrapper._fitkit_wrapped = True
    return wrapper


def _empty_is_zero(result):
    """Wrap a subclass's ``result`` so that it works before any update (states are zeros, on the CPU)."""

    @functools.wraps(result)
    def wrapper(self):
        if getattr(self, "_device", None) is None and getattr(self, "_state_specs", None):
            self._place_states(torch.device("cpu"))
            try:
                return result(self)
            finally:  # stay unplaced so the first update creates the states on the data's device
                for name in self._state_specs:
                    setattr(self, name, None)
                self._device = None
        return result(self)

    wrapper._fitkit_wrapped = True
    return wrapper


class Metric:
    """A streaming metric: ``update(y_true, y_pred, sample_weight=None)`` per batch, ``result()`` at the end.

    ``result()`` returns a 0-dim tensor (never a Python float: reading it is the caller's choice) and is
    0.0 before any update, as in Keras. ``update_state``/``reset_state`` are Keras aliases.

    To write your own, declare additive states with :meth:`add_state` in ``__init__``; they are created
    as zeros on the device of the first batch, before your ``update`` runs, and zeroed by ``reset()``::

        class Positives(fitkit.metrics.Metric):
            def __init__(self, threshold=0.5, name="positives"):
                super().__init__(name)
                self.threshold = threshold
                self.add_state("count")

            def update(self, y_true, y_pred, sample_weight=None):
                self.count += (y_pred > self.threshold).sum()

            def result(self):
                return self.count.float()

    Overriding the Keras names (``update_state``, ``reset_state``) works as well.
    """

    def __init__(self, name=None):
        self.name = name or snake_case(type(self).__name__)
        self._state_specs = {}
        self._device = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        own = cls.__dict__
        for new, old in (("update", "update_state"), ("reset", "reset_state")):
            if new in own and old not in own:
                setattr(cls, old, own[new])
            elif old in own and new not in own:
                setattr(cls, new, own[old])
        for name in ("update", "update_state"):
            fn = cls.__dict__.get(name)
            if fn is not None and not getattr(fn, "_fitkit_wrapped", False):
                setattr(cls, name, _on_data_device(fn))
        fn = own.get("result")
        if fn is not None and not getattr(fn, "_fitkit_wrapped", False):
            cls.result = _empty_is_zero(fn)

    def add_state(self, name, shape=(), dtype=None):
        """Declare a zero-initialised accumulator ``self.<name>``, made on the data's device at first update.

        ``dtype`` defaults to float64 (float32 on MPS) so that epoch-long sums stay exact.
        """
        if not hasattr(self, "_state_specs"):
            raise RuntimeError(f"{type(self).__name__}.__init__ must call super().__init__() before add_state.")
        self._state_specs[name] = (tuple(shape), dtype)
        setattr(self, name, None)

    def _place_states(self, device):
        for name, (shape, dtype) in getattr(self, "_state_specs", {}).items():
            value = getattr(self, name, None)
            if value is None:
                setattr(self, name, torch.zeros(shape, dtype=dtype or _state_dtype(device), device=device))
            else:  # the data moved (another device between fits): carry the sums along
                dtype = value.dtype if dtype or device.type != "mps" else torch.float32
                setattr(self, name, value.to(device=device, dtype=dtype))
        self._device = device

    def states(self):
        """The accumulators by name: all are sums, so ranks can all-reduce them (SUM) before ``result()``."""
        return {name: getattr(self, name) for name in getattr(self, "_state_specs", {})
                if getattr(self, name, None) is not None}

    def update(self, y_true, y_pred, sample_weight=None):
        raise NotImplementedError(f"{type(self).__name__} must implement update(y_true, y_pred, sample_weight=None).")

    def update_state(self, y_true, y_pred, sample_weight=None):
        return self.update(y_true, y_pred, sample_weight=sample_weight)

    def result(self):
        raise NotImplementedError(f"{type(self).__name__} must implement result().")

    def reset(self):
        for value in self.states().values():
            value.zero_()

    def reset_state(self):
        for value in self.states().values():
            value.zero_()

    def __repr__(self):
        return f"<{type(self).__name__} name={self.name}>"


# --------------------------------------------------------------------------------------------------
# Means


class Mean(Metric):
    """Weighted running mean of values: ``update(values, sample_weight=None)``.

    Values of shape (N, ...) count as N samples, each the mean of its trailing axes (Keras semantics);
    a 0-dim value counts as one sample.

    >>> m = Mean()
    >>> m.update(torch.tensor([1.0, 3.0, 5.0, 7.0]), sample_weight=torch.tensor([1.0, 1.0, 0.0, 0.0]))
    >>> float(m.result())
    2.0
    """

    def __init__(self, name="mean"):
        super().__init__(name)
        self.add_state("total")
        self.add_state("count")

    def update(self, values, sample_weight=None):
        self._accumulate(values, sample_weight)

    def _accumulate(self, values, sample_weight=None, scalar_count=1):
        values = _as_float(values)
        if sample_weight is None:
            if values.dim() == 0:
                self.total += values * scalar_count
                self.count += scalar_count
                return
            if values.dim() > 1:
                values = values.flatten(1).mean(1)
            self.total += values.sum()
            self.count += values.shape[0]
            return
        w = sample_weight.to(device=values.device, dtype=values.dtype)
        if values.dim() == 0:
            w_sum = w.sum() * (scalar_count if w.dim() == 0 else 1)
            self.total += values * w_sum
            self.count += w_sum
            return
        if w.dim() == 0:
            w = w.expand(values.shape[0])
        values, w = _same_rank(values, w)
        if values.dim() > w.dim():
            values = values.flatten(w.dim()).mean(-1)
        w = _broadcast_weight(w, values)
        values = values * w
        if values.dim() > 1:
            values, w = values.flatten(1).mean(1), w.flatten(1).mean(1)
        self.total += values.sum()
        self.count += w.sum()

    def result(self):
        return _div_no_nan(self.total, self.count).float()


def _callable_name(fn):
    name = getattr(fn, "name", None)
    if isinstance(name, str) and name:
        return name
    name = getattr(fn, "__name__", None) or getattr(getattr(fn, "func", None), "__name__", None)
    return name or snake_case(type(fn).__name__)


class MeanMetricWrapper(Mean):
    """Weighted streaming mean of ``fn(y_true, y_pred, **kwargs)``.

    ``fn`` returns one value per sample (shape (N,) or (N, ...)) or a scalar. A scalar is taken as the
    mean of the batch and weighted by the batch size (or the sum of the sample weights), so the epoch
    value is the mean over samples even when the last batch is short. ``y_true`` is first reconciled with
    ``y_pred`` ((N,) vs (N, 1)) so that ``fn`` never broadcasts them into (N, N).

    >>> m = MeanMetricWrapper(lambda t, p: (t - p).abs(), name="abs_err")
    >>> m.update(torch.tensor([0.0, 1.0]), torch.tensor([[1.0], [1.0]]))
    >>> float(m.result())
    0.5
    """

    def __init__(self, fn, name=None, **kwargs):
        if not callable(fn):
            raise TypeError(f"MeanMetricWrapper expects a callable fn(y_true, y_pred); received fn={fn!r}.")
        super().__init__(name or _callable_name(fn))
        self._fn = fn
        self._fn_kwargs = kwargs

    def update(self, y_true, y_pred, sample_weight=None):
        values = self._fn(match_rank(y_true, y_pred), y_pred, **self._fn_kwargs)
        if not isinstance(values, torch.Tensor):  # a Python number: a fill on the device, not a copy
            values = torch.full((), float(values), device=y_pred.device)
        self._accumulate(values, sample_weight, scalar_count=y_pred.shape[0] if y_pred.dim() else 1)


# --------------------------------------------------------------------------------------------------
# Per-sample functions (Keras's metric functions, in torch)


def _floats(y_true, y_pred):
    y_pred = _as_float(y_pred) if y_pred.is_floating_point() else y_pred.float()
    y_true, y_pred = _same_rank(y_true, y_pred)
    return y_true.to(y_pred.dtype), y_pred


def _per_sample(x):
    # Keras averages the last axis; a 1-D prediction already has one value per sample.
    return x.mean(-1) if x.dim() > 1 else x


def accuracy(y_true, y_pred):
    """1.0 where ``y_true == y_pred`` exactly (Keras's plain ``Accuracy``: for predicted labels)."""
    y_true, y_pred = _same_rank(y_true, y_pred)
    return (y_true.to(y_pred.dtype) == y_pred).float()


def binary_accuracy(y_true, y_pred, threshold=0.5):
    """1.0 where ``y_pred > threshold`` agrees with the 0/1 target, per element."""
    y_true, y_pred = _same_rank(y_true, y_pred)
    return ((y_pred > threshold).to(y_true.dtype) == y_true).float()


def _labels(y_true, y_pred, sparse, what):
    labels = sparse_labels(y_true).long() if sparse else y_true.argmax(-1)
    if labels.shape != y_pred.shape[:-1]:
        raise ValueError(
            f"{what}: y_true of shape {tuple(y_true.shape)} does not match y_pred of shape {tuple(y_pred.shape)}; "
            "expected class indices of shape (N,) or (N, 1) (sparse) or one column per class (categorical)."
        )
    return labels


def categorical_accuracy(y_true, y_pred):
    """1.0 where ``argmax(y_pred) == argmax(y_true)`` (class indices in ``y_true`` are accepted too)."""
    labels = _labels(y_true, y_pred, _is_sparse(y_true, y_pred), "categorical_accuracy")
    return (y_pred.argmax(-1) == labels).float()


def sparse_categorical_accuracy(y_true, y_pred):
    """1.0 where ``argmax(y_pred)`` equals the integer label."""
    return (y_pred.argmax(-1) == _labels(y_true, y_pred, True, "sparse_categorical_accuracy")).float()


def _in_top_k(labels, y_pred, k):
    kth = y_pred.topk(min(k, y_pred.shape[-1]), dim=-1).values[..., -1]
    # Ties with the k-th score count as hits, as in Keras.
    return (y_pred.gather(-1, labels.unsqueeze(-1)).squeeze(-1) >= kth).float()


def top_k_categorical_accuracy(y_true, y_pred, k=5):
    """1.0 where the true class (argmax of one-hot ``y_true``) is among the k highest scores."""
    labels = _labels(y_true, y_pred, _is_sparse(y_true, y_pred), "top_k_categorical_accuracy")
    return _in_top_k(labels, y_pred, k)


def sparse_top_k_categorical_accuracy(y_true, y_pred, k=5):
    """1.0 where the integer label is among the k highest scores."""
    return _in_top_k(_labels(y_true, y_pred, True, "sparse_top_k_categorical_accuracy"), y_pred, k)


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


class Accuracy(MeanMetricWrapper):
    """How often ``y_pred`` equals ``y_true`` exactly (Keras's ``Accuracy``, for predicted labels).

    For scores or probabilities use the string ``"accuracy"``, which picks binary, sparse or categorical
    accuracy from the loss and the shapes, or one of the explicit classes.
    """

    def __init__(self, name="accuracy"):
        super().__init__(accuracy, name)


class BinaryAccuracy(MeanMetricWrapper):
    """How often ``y_pred > threshold`` matches the 0/1 target (use ``threshold=0.0`` for logits)."""

    def __init__(self, name="binary_accuracy", threshold=0.5):
        super().__init__(binary_accuracy, name, threshold=threshold)
        self.threshold = threshold


class CategoricalAccuracy(MeanMetricWrapper):
    """How often ``argmax(y_pred)`` matches ``argmax(y_true)`` for one-hot (or soft) targets."""

    def __init__(self, name="categorical_accuracy"):
        super().__init__(categorical_accuracy, name)


class SparseCategoricalAccuracy(MeanMetricWrapper):
    """How often ``argmax(y_pred)`` matches integer labels of shape (N,) or (N, 1)."""

    def __init__(self, name="sparse_categorical_accuracy"):
        super().__init__(sparse_categorical_accuracy, name)


class TopKCategoricalAccuracy(MeanMetricWrapper):
    """How often the one-hot target's class is among the ``k`` highest scores."""

    def __init__(self, k=5, name="top_k_categorical_accuracy"):
        super().__init__(top_k_categorical_accuracy, name, k=k)
        self.k = k


class SparseTopKCategoricalAccuracy(MeanMetricWrapper):
    """How often the integer label is among the ``k`` highest scores."""

    def __init__(self, k=5, name="sparse_top_k_categorical_accuracy"):
        super().__init__(sparse_top_k_categorical_accuracy, name, k=k)
        self.k = k


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


# --------------------------------------------------------------------------------------------------
# Confusion-count metrics


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


# --------------------------------------------------------------------------------------------------
# Metrics resolved at the first batch


def _loss_for(loss):
    return getattr(loss, "kind", None), getattr(loss, "from_logits", None)


def _accuracy_kind(loss, y_true, y_pred):
    """What "accuracy" means for this loss and these shapes: "binary", "sparse" or "categorical"."""
    kind, _ = _loss_for(loss)
    one_column = y_pred.dim() <= 1 or y_pred.shape[-1] == 1
    sparse = _is_sparse(y_true, y_pred)
    same_shape = y_true.shape == y_pred.shape
    if kind == "binary" and match_rank(y_true, y_pred).shape == y_pred.shape:
        return "binary"  # also multi-label (N, C) with a binary loss: element-wise accuracy
    if kind == "sparse_categorical" and sparse:
        return "sparse"
    if kind in ("sparse_categorical", "categorical") and same_shape and not one_column:
        return "categorical"  # torch's CrossEntropyLoss says sparse but also takes class probabilities
    if kind == "categorical" and sparse:
        return "sparse"
    if one_column:
        return "binary"
    if sparse:
        return "sparse"
    if same_shape:
        return "categorical"
    raise ValueError(
        f"Cannot tell which accuracy fits y_true of shape {tuple(y_true.shape)} and y_pred of shape "
        f"{tuple(y_pred.shape)}: expected one column (binary), class indices (sparse) or y_true shaped like "
        "y_pred (categorical). Name the metric explicitly, e.g. metrics=['sparse_categorical_accuracy']."
    )


class _Resolved(Metric):
    """A named metric whose concrete class is chosen from the loss and the shapes of the first batch."""

    def __init__(self, name, loss, choose):
        super().__init__(name)
        self._loss = loss
        self._choose = choose
        self.resolved = None

    def update(self, y_true, y_pred, sample_weight=None):
        if self.resolved is None:
            self.resolved = self._choose(self._loss, y_true, y_pred)
            self.resolved.name = self.name
        self.resolved.update(y_true, y_pred, sample_weight=sample_weight)

    def result(self):
        return torch.zeros(()) if self.resolved is None else self.resolved.result()

    def reset(self):
        if self.resolved is not None:
            self.resolved.reset()

    def states(self):
        return {} if self.resolved is None else self.resolved.states()


def _choose_accuracy(loss, y_true, y_pred):
    kind = _accuracy_kind(loss, y_true, y_pred)
    if kind == "binary":
        return BinaryAccuracy(threshold=0.0 if _loss_for(loss)[1] is True else 0.5)
    return SparseCategoricalAccuracy() if kind == "sparse" else CategoricalAccuracy()


def _choose_top_k(loss, y_true, y_pred):
    return SparseTopKCategoricalAccuracy() if _is_sparse(y_true, y_pred) else TopKCategoricalAccuracy()


class TorchMetricWrapper(Metric):
    """A torchmetrics-style object (``update(preds, target)``, ``compute()``, ``reset()``) as a fitkit Metric.

    It is called in torch order, ``update(y_pred, y_true)``, and moved (``.to``) to the data's device at
    the first update. It cannot take sample weights.
    """

    def __init__(self, obj, name=None):
        own_name = getattr(obj, "name", None)
        super().__init__(name or (own_name if isinstance(own_name, str) and own_name else
                                  snake_case(type(obj).__name__)))
        self.obj = obj
        self._moved_to = None

    def update(self, y_true, y_pred, sample_weight=None):
        if sample_weight is not None:
            raise ValueError(
                f"Metric {self.name!r} ({type(self.obj).__name__}) cannot take sample weights; list it in "
                "metrics=, not weighted_metrics=."
            )
        if self._moved_to != y_pred.device and callable(getattr(self.obj, "to", None)):
            moved = self.obj.to(y_pred.device)
            if moved is not None and callable(getattr(moved, "update", None)):
                self.obj = moved
            self._moved_to = y_pred.device
        self.obj.update(y_pred, match_rank(y_true, y_pred))

    def result(self):
        value = self.obj.compute()
        return value if isinstance(value, torch.Tensor) else torch.as_tensor(value)

    def reset(self):
        self.obj.reset()


def _torch_loss_metric(loss_module):
    # torch losses take (input, target); fitkit metric functions take (y_true, y_pred).
    def fn(y_true, y_pred):
        return loss_module(y_pred, y_true)

    fn.__name__ = snake_case(type(loss_module).__name__)
    return fn


# --------------------------------------------------------------------------------------------------
# Names


def _f1(name, loss):
    return F1Score(name=name, from_logits=_logits_for(loss))


def _logits_for(loss):
    """How a string metric turns this loss's outputs into probabilities: sigmoid, softmax or not at all."""
    kind, from_logits = _loss_for(loss)
    if from_logits is not True:
        return False
    return "softmax" if kind in ("categorical", "sparse_categorical") else True


_NAMES = {
    "accuracy": lambda name, loss: _Resolved(name, loss, _choose_accuracy),
    "acc": lambda name, loss: _Resolved(name, loss, _choose_accuracy),
    "binary_accuracy": lambda name, loss: BinaryAccuracy(name, threshold=0.0 if _loss_for(loss)[1] is True else 0.5),
    "categorical_accuracy": lambda name, loss: CategoricalAccuracy(name),
    "sparse_categorical_accuracy": lambda name, loss: SparseCategoricalAccuracy(name),
    "top_k_categorical_accuracy": lambda name, loss: TopKCategoricalAccuracy(name=name),
    "sparse_top_k_categorical_accuracy": lambda name, loss: SparseTopKCategoricalAccuracy(name=name),
    "top_k": lambda name, loss: _Resolved(name, loss, _choose_top_k),
    "precision": lambda name, loss: Precision(name=name, from_logits=_logits_for(loss)),
    "recall": lambda name, loss: Recall(name=name, from_logits=_logits_for(loss)),
    "f1": _f1,
    "f1_score": _f1,
    "auc": lambda name, loss: AUC(name=name, from_logits=_logits_for(loss)),
    "mae": lambda name, loss: MeanAbsoluteError(name),
    "mean_absolute_error": lambda name, loss: MeanAbsoluteError(name),
    "mse": lambda name, loss: MeanSquaredError(name),
    "mean_squared_error": lambda name, loss: MeanSquaredError(name),
    "rmse": lambda name, loss: RootMeanSquaredError(name),
    "root_mean_squared_error": lambda name, loss: RootMeanSquaredError(name),
    "mape": lambda name, loss: MeanAbsolutePercentageError(name),
    "mean_absolute_percentage_error": lambda name, loss: MeanAbsolutePercentageError(name),
    "msle": lambda name, loss: MeanSquaredLogarithmicError(name),
    "mean_squared_logarithmic_error": lambda name, loss: MeanSquaredLogarithmicError(name),
    "cosine_similarity": lambda name, loss: CosineSimilarity(name),
    "logcosh": lambda name, loss: LogCoshError(name),
    "log_cosh_error": lambda name, loss: LogCoshError(name),
}
# Keras also takes class names ("Precision", "MeanSquaredError"); one key covers every spelling.
_LOOKUP = {key.replace("_", ""): make for key, make in _NAMES.items()}


def _from_name(identifier, loss, argument):
    make = _LOOKUP.get(identifier.lower().replace("_", ""))
    if make is None:
        raise ValueError(
            f"Unknown metric name in `{argument}`: {identifier!r}. Accepted names: {', '.join(sorted(_NAMES))}; "
            "or pass a fitkit Metric, a torchmetrics-style object, or a callable fn(y_true, y_pred)."
        )
    return make(identifier, loss)


def _get(identifier, loss, argument):
    if isinstance(identifier, Metric):
        return identifier
    if isinstance(identifier, type):
        if issubclass(identifier, Metric):
            return identifier()
        raise TypeError(f"`{argument}` takes metric instances, not classes; received {identifier!r}.")
    if isinstance(identifier, str):
        return _from_name(identifier, loss, argument)
    if all(callable(getattr(identifier, a, None)) for a in ("update", "compute", "reset")):
        return TorchMetricWrapper(identifier)
    if isinstance(identifier, torch.nn.modules.loss._Loss):
        return MeanMetricWrapper(_torch_loss_metric(identifier))
    if callable(identifier):
        return MeanMetricWrapper(identifier)
    raise TypeError(
        f"Cannot use {identifier!r} in `{argument}`: expected a metric name such as 'accuracy', a fitkit "
        "Metric, an object with update/compute/reset (torchmetrics style), or a callable fn(y_true, y_pred)."
    )


def get(identifier, loss=None, argument="metrics"):
    """A :class:`Metric` from a name, a Metric (returned as is), a torchmetrics-style object or a callable.

    ``loss`` (the resolved fitkit loss, with ``kind`` and ``from_logits``) decides what "accuracy" means
    and whether precision/recall/f1/auc see logits. String metrics keep the given string as their name.
    ``argument`` is the compile argument named in errors ("metrics" or "weighted_metrics").

    >>> get("acc").name
    'acc'
    """
    return _get(identifier, loss, argument)
