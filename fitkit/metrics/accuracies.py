"""The accuracy family: how often a prediction is right, counted as Keras counts it.

The per-sample functions (Keras's metric functions, in torch: 1.0 for a hit, 0.0 for a miss) and the
streaming means of them. The string "accuracy", which picks binary, sparse or categorical accuracy from
the loss and the shapes of the first batch, is resolved in :mod:`fitkit.metrics.registry`.
"""

from fitkit.metrics.base import MeanMetricWrapper, _is_sparse, _same_rank
from fitkit.targets import sparse_labels

__all__ = [
    "Accuracy", "BinaryAccuracy", "CategoricalAccuracy", "SparseCategoricalAccuracy", "TopKCategoricalAccuracy",
    "SparseTopKCategoricalAccuracy", "accuracy", "binary_accuracy", "categorical_accuracy",
    "sparse_categorical_accuracy", "top_k_categorical_accuracy", "sparse_top_k_categorical_accuracy",
]


# --------------------------------------------------------------------------------------------------
# Per-sample functions


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
