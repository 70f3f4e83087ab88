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

One module per family, every public name importable from here:

- :mod:`fitkit.metrics.base`: :class:`Metric`, :class:`Mean`, :class:`MeanMetricWrapper`, tensor helpers
- :mod:`fitkit.metrics.accuracies`: the accuracy family and top-k, functions and classes (not named
  ``accuracy``: that name stays Keras's function ``fitkit.metrics.accuracy``)
- :mod:`fitkit.metrics.regression`: mae, mse, mape, msle, cosine similarity, log-cosh, RMSE
- :mod:`fitkit.metrics.confusion`: precision, recall, F1, AUC
- :mod:`fitkit.metrics.registry`: names -> metrics (:func:`get`), "accuracy" resolved at the first
  batch, :class:`TorchMetricWrapper`
"""

from fitkit.conventions import EPSILON  # noqa: F401  (fitkit.metrics.EPSILON, as before the split)
from fitkit.metrics import accuracies as _accuracies
from fitkit.metrics import base as _base
from fitkit.metrics import confusion as _confusion
from fitkit.metrics import regression as _regression
from fitkit.metrics import registry as _registry
from fitkit.metrics.accuracies import (
    Accuracy, BinaryAccuracy, CategoricalAccuracy, SparseCategoricalAccuracy, SparseTopKCategoricalAccuracy,
    TopKCategoricalAccuracy, accuracy, binary_accuracy, categorical_accuracy, sparse_categorical_accuracy,
    sparse_top_k_categorical_accuracy, top_k_categorical_accuracy,
)
from fitkit.metrics.base import Mean, MeanMetricWrapper, Metric
from fitkit.metrics.confusion import AUC, F1Score, Precision, Recall
from fitkit.metrics.regression import (
    CosineSimilarity, LogCoshError, MeanAbsoluteError, MeanAbsolutePercentageError, MeanSquaredError,
    MeanSquaredLogarithmicError, RootMeanSquaredError, cosine_similarity, log_cosh, mean_absolute_error,
    mean_absolute_percentage_error, mean_squared_error, mean_squared_logarithmic_error,
)
# A metric made by get("accuracy") or get("top_k") holds these, so files saved before the split name them
# by their fitkit.metrics paths; a trusted (full) unpickle looks them up here.
from fitkit.metrics.registry import TorchMetricWrapper, _choose_accuracy, _choose_top_k, _Resolved, get  # noqa: F401

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

_FAMILIES = (_base, _accuracies, _regression, _confusion, _registry)


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
