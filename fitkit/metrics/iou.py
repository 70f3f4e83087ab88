"""The intersection-over-union family, for segmentation and classification: IoU, MeanIoU, BinaryIoU,
OneHotIoU, OneHotMeanIoU, as Keras's.

Each keeps a ``(num_classes, num_classes)`` confusion matrix of weighted counts (rows: true class,
columns: predicted class), added to with one ``scatter_add_`` per batch on the device, and computes the
IoU ``tp / (tp + fp + fn)`` of the target classes from it in ``result()``. Labels outside
``[0, num_classes)`` and ``ignore_class`` add nothing. Sample weights are used as given (Keras, whose
confusion matrix is integer by default, truncates float weights to integers and warns that this may be
wrong).
"""

import numbers

import torch

from fitkit.conventions import EPSILON
from fitkit.metrics.base import Metric, _as_float, _broadcast_weight

__all__ = ["IoU", "MeanIoU", "BinaryIoU", "OneHotIoU", "OneHotMeanIoU"]


def _class_ids(y, sparse, axis, what, argument):
    """Integer class ids: ``y`` itself when ``sparse`` (floats truncated, as Keras casts), else its argmax."""
    if not sparse:
        if y.dim() == 0:
            raise ValueError(f"{what}: {argument} is a scalar; with sparse_{argument}=False it needs a class axis")
        return y.argmax(axis)
    return y.long() if y.is_floating_point() or y.dtype == torch.bool else y.to(torch.long)


class IoU(Metric):
    """IoU of each of ``target_class_ids``, averaged over those present (a single id gives its IoU).

    ``y_true`` and ``y_pred`` hold class ids (``sparse_y_true``/``sparse_y_pred`` True, the default) or
    scores along ``axis`` whose argmax is taken (False). Every element is one labelled position (a pixel
    of a segmentation map, say), so shapes only need to hold the same number of ids. A class that never
    occurs in targets nor predictions is left out of the mean.

    >>> m = IoU(num_classes=2, target_class_ids=[0])
    >>> m.update(torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 0, 1]))
    >>> round(float(m.result()), 4)   # class 0: 1 hit / (2 true + 2 predicted - 1 hit)
    0.3333
    """

    def __init__(self, num_classes, target_class_ids, name=None, ignore_class=None, sparse_y_true=True,
                 sparse_y_pred=True, axis=-1):
        super().__init__(name)
        if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 1:
            raise ValueError(f"num_classes: got {num_classes!r}; expected a positive integer")
        try:
            ids = [int(i) for i in target_class_ids]
        except (TypeError, ValueError):
            raise ValueError(f"target_class_ids: got {target_class_ids!r}; expected a list or tuple of class "
                             "ids") from None
        if not ids or max(ids) >= num_classes or min(ids) < 0:
            raise ValueError(f"target_class_ids: got {target_class_ids!r}; expected class ids in "
                             f"[0, {num_classes}) (Keras: 'Target class id ... is out of range')")
        self.num_classes = int(num_classes)
        self.target_class_ids = ids
        self.ignore_class = ignore_class
        self.sparse_y_true = sparse_y_true
        self.sparse_y_pred = sparse_y_pred
        self.axis = axis
        self._ids = None  # target_class_ids as a tensor on the states' device
        self.add_state("total_cm", (self.num_classes, self.num_classes))

    def update(self, y_true, y_pred, sample_weight=None):
        true = _class_ids(y_true, self.sparse_y_true, self.axis, self.name, "y_true")
        pred = _class_ids(y_pred, self.sparse_y_pred, self.axis, self.name, "y_pred")
        if true.numel() != pred.numel():
            raise ValueError(
                f"{self.name}: y_true of shape {tuple(y_true.shape)} and y_pred of shape {tuple(y_pred.shape)} do "
                "not hold one class id each for the same positions; for scores, pass sparse_y_pred=False "
                "(the argmax is taken), or use OneHotIoU / OneHotMeanIoU for one-hot targets."
            )
        dtype = self.total_cm.dtype
        weight = None
        if sample_weight is not None:  # per sample or per position, broadcast over the positions of the ids
            weight = _broadcast_weight(_as_float(sample_weight), true.to(dtype)).reshape(-1)
        true, pred = true.reshape(-1), pred.reshape(-1)
        n = self.num_classes
        valid = (true >= 0) & (true < n) & (pred >= 0) & (pred < n)
        if self.ignore_class is not None:
            valid &= true != self.ignore_class
        weight = valid.to(dtype) if weight is None else weight * valid
        index = true.where(valid, torch.zeros_like(true)) * n + pred.where(valid, torch.zeros_like(pred))
        self.total_cm.view(-1).scatter_add_(0, index, weight)

    def result(self):
        cm = self.total_cm
        tp = cm.diagonal()
        denominator = cm.sum(0) + cm.sum(1) - tp  # predicted + true - both = tp + fp + fn
        if self._ids is None or self._ids.device != cm.device:
            self._ids = torch.tensor(self.target_class_ids, device=cm.device)
        tp, denominator = tp[self._ids], denominator[self._ids]
        present = denominator > 1e-9
        iou = torch.where(present, tp / (denominator + EPSILON), torch.zeros_like(tp))
        return (iou.sum() / (present.sum() + EPSILON)).float()


class MeanIoU(IoU):
    """The mean IoU over all ``num_classes`` classes (those that occur)."""

    def __init__(self, num_classes, name=None, ignore_class=None, sparse_y_true=True, sparse_y_pred=True, axis=-1):
        super().__init__(num_classes, list(range(num_classes)) if isinstance(num_classes, numbers.Integral) else
                         [0], name=name, ignore_class=ignore_class, sparse_y_true=sparse_y_true,
                         sparse_y_pred=sparse_y_pred, axis=axis)


class BinaryIoU(IoU):
    """IoU of class 0 and/or 1 where ``y_pred >= threshold`` is class 1 (probabilities or, with
    ``threshold=0``, logits); the mean over ``target_class_ids``.

    >>> BinaryIoU(target_class_ids=[1], threshold=0.5)   # IoU of the positive class
    <BinaryIoU name=binary_io_u>
    """

    def __init__(self, target_class_ids=(0, 1), threshold=0.5, name=None):
        super().__init__(2, target_class_ids, name=name)
        self.threshold = threshold

    def update(self, y_true, y_pred, sample_weight=None):
        predicted = (y_pred >= self.threshold).long() if y_pred.is_floating_point() else (
            y_pred.float() >= self.threshold).long()
        super().update(y_true, predicted, sample_weight)


class OneHotIoU(IoU):
    """IoU of ``target_class_ids`` for one-hot targets (their argmax is the class) and scores."""

    def __init__(self, num_classes, target_class_ids, name=None, ignore_class=None, sparse_y_pred=False, axis=-1):
        super().__init__(num_classes, target_class_ids, name=name, ignore_class=ignore_class, sparse_y_true=False,
                         sparse_y_pred=sparse_y_pred, axis=axis)


class OneHotMeanIoU(MeanIoU):
    """Mean IoU over all classes for one-hot targets (their argmax is the class) and scores."""

    def __init__(self, num_classes, name=None, ignore_class=None, sparse_y_pred=False, axis=-1):
        super().__init__(num_classes, name=name, ignore_class=ignore_class, sparse_y_true=False,
                         sparse_y_pred=sparse_y_pred, axis=axis)
