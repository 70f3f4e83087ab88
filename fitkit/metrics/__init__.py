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

One module per family, every public name importable from here (every class and function of Keras 3's
``keras.metrics``):

- :mod:`fitkit.metrics.base`: :class:`Metric`, :class:`Mean`, :class:`Sum`, :class:`MeanMetricWrapper`,
  tensor helpers
- :mod:`fitkit.metrics.accuracies`: the accuracy family and top-k, functions and classes (not named
  ``accuracy``: that name stays Keras's function ``fitkit.metrics.accuracy``)
- :mod:`fitkit.metrics.regression`: mae, mse, mape, msle, cosine similarity, log-cosh, huber, RMSE, R2
- :mod:`fitkit.metrics.confusion`: true/false positive/negative counts, precision, recall, F-beta and
  F1, AUC
- :mod:`fitkit.metrics.operating_point`: sensitivity at specificity, specificity at sensitivity,
  precision at recall, recall at precision
- :mod:`fitkit.metrics.probabilistic`: binary, categorical and sparse categorical cross-entropy, the
  focal cross-entropies, KL divergence, Poisson
- :mod:`fitkit.metrics.hinge`: hinge, squared hinge, categorical hinge
- :mod:`fitkit.metrics.iou`: IoU, MeanIoU, BinaryIoU, OneHotIoU, OneHotMeanIoU
- :mod:`fitkit.metrics.correlation`: Pearson and concordance correlation
- :mod:`fitkit.metrics.registry`: names -> metrics (:func:`get`), "accuracy" resolved at the first
  batch, :class:`TorchMetricWrapper`

Every metric keeps additive states (:meth:`Metric.states`, all sums), so the states of several
processes add up to the states of their data together.
"""

from fitkit.conventions import EPSILON  # noqa: F401  (fitkit.metrics.EPSILON, as before the split)
from fitkit.metrics import accuracies as _accuracies
from fitkit.metrics import base as _base
from fitkit.metrics import confusion as _confusion
from fitkit.metrics import correlation as _correlation
from fitkit.metrics import hinge as _hinge
from fitkit.metrics import iou as _iou
from fitkit.metrics import operating_point as _operating_point
from fitkit.metrics import probabilistic as _probabilistic
from fitkit.metrics import regression as _regression
from fitkit.metrics import registry as _registry
from fitkit.metrics.accuracies import (
    Accuracy, BinaryAccuracy, CategoricalAccuracy, SparseCategoricalAccuracy, SparseTopKCategoricalAccuracy,
    TopKCategoricalAccuracy, accuracy, binary_accuracy, categorical_accuracy, sparse_categorical_accuracy,
    sparse_top_k_categorical_accuracy, top_k_categorical_accuracy,
)
from fitkit.metrics.base import Mean, MeanMetricWrapper, Metric, Sum
from fitkit.metrics.confusion import (
    AUC, F1Score, FalseNegatives, FalsePositives, FBetaScore, Precision, Recall, TrueNegatives, TruePositives,
)
from fitkit.metrics.correlation import (
    ConcordanceCorrelation, PearsonCorrelation, concordance_correlation, pearson_correlation,
)
from fitkit.metrics.hinge import CategoricalHinge, Hinge, SquaredHinge, categorical_hinge, hinge, squared_hinge
from fitkit.metrics.iou import BinaryIoU, IoU, MeanIoU, OneHotIoU, OneHotMeanIoU
from fitkit.metrics.operating_point import (
    PrecisionAtRecall, RecallAtPrecision, SensitivityAtSpecificity, SpecificityAtSensitivity,
)
from fitkit.metrics.probabilistic import (
    BinaryCrossentropy, CategoricalCrossentropy, KLDivergence, Poisson, SparseCategoricalCrossentropy,
    binary_crossentropy, binary_focal_crossentropy, categorical_crossentropy, categorical_focal_crossentropy,
    kl_divergence, poisson, sparse_categorical_crossentropy,
)
from fitkit.metrics.regression import (
    CosineSimilarity, LogCoshError, MeanAbsoluteError, MeanAbsolutePercentageError, MeanSquaredError,
    MeanSquaredLogarithmicError, R2Score, RootMeanSquaredError, cosine_similarity, huber, log_cosh,
    mean_absolute_error, mean_absolute_percentage_error, mean_squared_error, mean_squared_logarithmic_error,
)
# A metric made by get("accuracy") or get("top_k") holds these, so files saved before the split name them
# by their fitkit.metrics paths; a trusted (full) unpickle looks them up here.
from fitkit.metrics.registry import TorchMetricWrapper, _choose_accuracy, _choose_top_k, _Resolved, get  # noqa: F401

__all__ = [
    "Metric", "Mean", "Sum", "MeanMetricWrapper", "TorchMetricWrapper", "get",
    "Accuracy", "BinaryAccuracy", "CategoricalAccuracy", "SparseCategoricalAccuracy",
    "TopKCategoricalAccuracy", "SparseTopKCategoricalAccuracy",
    "TruePositives", "FalsePositives", "TrueNegatives", "FalseNegatives", "Precision", "Recall", "FBetaScore",
    "F1Score", "AUC", "PrecisionAtRecall", "RecallAtPrecision", "SensitivityAtSpecificity",
    "SpecificityAtSensitivity",
    "MeanAbsoluteError", "MeanSquaredError", "RootMeanSquaredError", "MeanAbsolutePercentageError",
    "MeanSquaredLogarithmicError", "CosineSimilarity", "LogCoshError", "R2Score",
    "BinaryCrossentropy", "CategoricalCrossentropy", "SparseCategoricalCrossentropy", "KLDivergence", "Poisson",
    "Hinge", "SquaredHinge", "CategoricalHinge",
    "IoU", "MeanIoU", "BinaryIoU", "OneHotIoU", "OneHotMeanIoU",
    "PearsonCorrelation", "ConcordanceCorrelation",
    "accuracy", "binary_accuracy", "categorical_accuracy", "sparse_categorical_accuracy",
    "top_k_categorical_accuracy", "sparse_top_k_categorical_accuracy", "mean_absolute_error",
    "mean_squared_error", "mean_absolute_percentage_error", "mean_squared_logarithmic_error",
    "cosine_similarity", "log_cosh", "huber", "binary_crossentropy", "categorical_crossentropy",
    "sparse_categorical_crossentropy", "binary_focal_crossentropy", "categorical_focal_crossentropy",
    "kl_divergence", "poisson", "hinge", "squared_hinge", "categorical_hinge", "pearson_correlation",
    "concordance_correlation",
]

_FAMILIES = (_base, _accuracies, _regression, _confusion, _operating_point, _probabilistic, _hinge, _iou,
             _correlation, _registry)


def pickle_allowlist():
    """The classes and functions of this package that a model file's pickles may name.

    :meth:`fitkit.Model.save` and :func:`fitkit.load_model` hand them to torch's weights-only unpickler,
    which matches a pickled global by the string "module.QualName" it was saved under. Files saved now
    name the family modules ("fitkit.metrics.confusion.AUC"): every callable those modules define is
    listed as itself. Files saved while the metrics were one module name "fitkit.metrics.AUC": each
    object bound here under its own name is listed again as the pair ``(obj, "fitkit.metrics.<name>")``,
    which torch's ``safe_globals`` accepts, so an old path loads exactly when it still resolves.
    """
    found = [obj for module in _FAMILIES for obj in vars(module).values()
             if callable(obj) and getattr(obj, "__module__", None) == module.__name__]
    defined = {id(obj) for obj in found}
    found += [(obj, f"{__name__}.{name}") for name, obj in globals().items()
              if id(obj) in defined and getattr(obj, "__qualname__", None) == name]
    return found
