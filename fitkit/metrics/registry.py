"""Names -> metrics: what ``compile(metrics=[...])`` accepts, turned into :class:`~fitkit.metrics.Metric`
objects by :func:`get`.

Keras names ("accuracy", "precision", "auc", "mae", ...) and class names ("MeanSquaredError"); metrics
whose class depends on the loss and the first batch ("accuracy" is binary, sparse or categorical
accuracy); and adapters for what is not a fitkit Metric: torchmetrics-style objects
(:class:`TorchMetricWrapper`), torch loss modules and plain ``fn(y_true, y_pred)`` callables.
"""

import difflib

import torch

from fitkit.conventions import snake_case
from fitkit.metrics.accuracies import (
    BinaryAccuracy, CategoricalAccuracy, SparseCategoricalAccuracy, SparseTopKCategoricalAccuracy,
    TopKCategoricalAccuracy,
)
from fitkit.metrics.base import Mean, MeanMetricWrapper, Metric, Sum, _is_sparse
from fitkit.metrics.confusion import (
    AUC, F1Score, FalseNegatives, FalsePositives, FBetaScore, Precision, Recall, TrueNegatives, TruePositives,
)
from fitkit.metrics.correlation import ConcordanceCorrelation, PearsonCorrelation
from fitkit.metrics.hinge import CategoricalHinge, Hinge, SquaredHinge
from fitkit.metrics.iou import BinaryIoU, IoU, MeanIoU, OneHotIoU, OneHotMeanIoU
from fitkit.metrics.operating_point import (
    PrecisionAtRecall, RecallAtPrecision, SensitivityAtSpecificity, SpecificityAtSensitivity,
)
from fitkit.metrics.probabilistic import (
    BinaryCrossentropy, CategoricalCrossentropy, KLDivergence, Poisson, SparseCategoricalCrossentropy,
)
from fitkit.metrics.regression import (
    CosineSimilarity, LogCoshError, MeanAbsoluteError, MeanAbsolutePercentageError, MeanSquaredError,
    MeanSquaredLogarithmicError, R2Score, RootMeanSquaredError,
)
from fitkit.targets import match_rank

__all__ = ["TorchMetricWrapper", "get"]


# --------------------------------------------------------------------------------------------------
# Metrics resolved at the first batch


def _loss_traits(loss):
    """``(kind, from_logits)`` of a resolved fitkit loss: what decides which accuracy "accuracy" is and
    whether scores are logits; ``(None, None)`` without a loss or for one that does not say."""
    return getattr(loss, "kind", None), getattr(loss, "from_logits", None)


def _accuracy_kind(loss, y_true, y_pred):
    """What "accuracy" means for this loss and these shapes: "binary", "sparse" or "categorical"."""
    kind, _ = _loss_traits(loss)
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
        return BinaryAccuracy(threshold=0.0 if _loss_traits(loss)[1] is True else 0.5)
    return SparseCategoricalAccuracy() if kind == "sparse" else CategoricalAccuracy()


def _choose_top_k(loss, y_true, y_pred):
    return SparseTopKCategoricalAccuracy() if _is_sparse(y_true, y_pred) else TopKCategoricalAccuracy()


# --------------------------------------------------------------------------------------------------
# Objects that are not fitkit Metrics


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
    return F1Score(average="macro", name=name, from_logits=_logits_for(loss))


def _fbeta(name, loss):
    return FBetaScore(average="macro", name=name, from_logits=_logits_for(loss))


def _crossentropy(cls):
    # The loss's outputs are logits or probabilities; a cross-entropy metric reads them the same way.
    return lambda name, loss: cls(name=name, from_logits=_loss_traits(loss)[1] is True)


# What a metric class needs that a name cannot give, with an example of the object to pass instead.
_NEEDS = {
    IoU: ("num_classes and target_class_ids", "num_classes=3, target_class_ids=[0]"),
    MeanIoU: ("num_classes", "num_classes=3"),
    OneHotIoU: ("num_classes and target_class_ids", "num_classes=3, target_class_ids=[0]"),
    OneHotMeanIoU: ("num_classes", "num_classes=3"),
    PrecisionAtRecall: ("the recall to reach", "recall=0.8"),
    RecallAtPrecision: ("the precision to reach", "precision=0.8"),
    SensitivityAtSpecificity: ("the specificity to reach", "specificity=0.9"),
    SpecificityAtSensitivity: ("the sensitivity to reach", "sensitivity=0.9"),
}


def _needs_arguments(cls, given):
    what, example = _NEEDS[cls]
    return TypeError(f"{given}: fitkit.metrics.{cls.__name__} needs {what}; pass fitkit.metrics.{cls.__name__}"
                     f"({example}) instead")


def _refuse(cls):
    def make(name, loss):
        raise _needs_arguments(cls, repr(name))

    return make


def _not_for_compile(cls):
    def make(name, loss):
        raise TypeError(f"{name!r}: fitkit.metrics.{cls.__name__} sums or averages values, not (y_true, y_pred); "
                        "update it yourself (in train_step or compute_loss), or pass a function of (y_true, "
                        "y_pred) to compile(metrics=...)")

    return make


def _logits_for(loss):
    """How a string metric turns this loss's outputs into probabilities: sigmoid, softmax or not at all."""
    kind, from_logits = _loss_traits(loss)
    if from_logits is not True:
        return False
    return "softmax" if kind in ("categorical", "sparse_categorical") else True


_NAMES = {
    "accuracy": lambda name, loss: _Resolved(name, loss, _choose_accuracy),
    "acc": lambda name, loss: _Resolved(name, loss, _choose_accuracy),
    "binary_accuracy": lambda name, loss: BinaryAccuracy(name, threshold=0.0 if _loss_traits(loss)[1] is True else 0.5),
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
    "r2_score": lambda name, loss: R2Score(name=name),
    "pearson_correlation": lambda name, loss: PearsonCorrelation(name),
    "concordance_correlation": lambda name, loss: ConcordanceCorrelation(name),
    "true_positives": lambda name, loss: TruePositives(name=name),
    "false_positives": lambda name, loss: FalsePositives(name=name),
    "true_negatives": lambda name, loss: TrueNegatives(name=name),
    "false_negatives": lambda name, loss: FalseNegatives(name=name),
    "fbeta_score": _fbeta,
    "f_beta_score": _fbeta,
    "hinge": lambda name, loss: Hinge(name),
    "squared_hinge": lambda name, loss: SquaredHinge(name),
    "categorical_hinge": lambda name, loss: CategoricalHinge(name),
    "kl_divergence": lambda name, loss: KLDivergence(name),
    "kld": lambda name, loss: KLDivergence(name),
    "kullback_leibler_divergence": lambda name, loss: KLDivergence(name),
    "poisson": lambda name, loss: Poisson(name),
    "binary_crossentropy": _crossentropy(BinaryCrossentropy),
    "bce": _crossentropy(BinaryCrossentropy),
    "categorical_crossentropy": _crossentropy(CategoricalCrossentropy),
    "sparse_categorical_crossentropy": _crossentropy(SparseCategoricalCrossentropy),
    "binary_io_u": lambda name, loss: BinaryIoU(name=name),
    "io_u": _refuse(IoU),
    "mean_io_u": _refuse(MeanIoU),
    "one_hot_io_u": _refuse(OneHotIoU),
    "one_hot_mean_io_u": _refuse(OneHotMeanIoU),
    "precision_at_recall": _refuse(PrecisionAtRecall),
    "recall_at_precision": _refuse(RecallAtPrecision),
    "sensitivity_at_specificity": _refuse(SensitivityAtSpecificity),
    "specificity_at_sensitivity": _refuse(SpecificityAtSensitivity),
    "sum": _not_for_compile(Sum),
    "mean": _not_for_compile(Mean),
}


# Keras also takes class names ("Precision", "MeanSquaredError"); one key covers every spelling.
_LOOKUP = {key.replace("_", ""): make for key, make in _NAMES.items()}


def _closest_name(identifier):
    """" (did you mean ...?)" with the known metric name closest to ``identifier``, or ""."""
    by_key = {key.replace("_", ""): key for key in sorted(_NAMES, reverse=True)}  # the shortest spelling wins
    close = difflib.get_close_matches(identifier.lower().replace("_", ""), by_key, n=1, cutoff=0.6)
    return f" (did you mean {by_key[close[0]]!r}?)" if close else ""


def _from_name(identifier, loss, argument):
    make = _LOOKUP.get(identifier.lower().replace("_", ""))
    if make is None:
        raise ValueError(
            f"Unknown metric name in `{argument}`: {identifier!r}{_closest_name(identifier)}. Accepted names: "
            f"{', '.join(sorted(_NAMES))}; or pass a fitkit Metric, a torchmetrics-style object, or a callable "
            "fn(y_true, y_pred)."
        )
    return make(identifier, loss)


def _get(identifier, loss, argument):
    if isinstance(identifier, Metric):
        return identifier
    if isinstance(identifier, type):
        if identifier in _NEEDS:
            raise _needs_arguments(identifier, f"`{argument}` got the class {identifier.__name__}")
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
