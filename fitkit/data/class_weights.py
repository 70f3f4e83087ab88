"""``class_weight``: per-class weights looked up per sample, as Keras applies them to the training loss."""

import numpy as np
import torch


class ClassWeights:
    """``class_weight`` as two sorted tensors, class indices and their weights, looked up per sample with
    ``searchsorted``: no table as long as the largest class index, no host sync; a label not listed
    (a negative one too) weighs 1.

    >>> ClassWeights({0: 1.0, 10**9: 3.0}).lookup(torch.tensor([0, 5, -1, 10**9])).tolist()
    [1.0, 1.0, 1.0, 3.0]
    """

    def __init__(self, class_weight, name="class_weight"):
        if not isinstance(class_weight, dict) or not class_weight:
            raise ValueError(f"{name}: got {class_weight!r}; expected a non-empty dict class index -> weight")
        for key, value in class_weight.items():
            if isinstance(key, bool) or not isinstance(key, (int, np.integer)) or key < 0:
                raise ValueError(f"{name}: got the key {key!r}; expected non-negative integer class indices")
            if not isinstance(value, (int, float, np.number)) or isinstance(value, bool):
                raise ValueError(f"{name}: got the weight {value!r} for class {key}; expected a number")
        keys = sorted(int(k) for k in class_weight)
        self.keys = torch.tensor(keys, dtype=torch.int64)
        self.values = torch.tensor([float(class_weight[k]) for k in keys], dtype=torch.float32)

    def lookup(self, idx):
        """The weight of each class index in ``idx`` (any shape), on ``idx``'s device."""
        if self.keys.device != idx.device:
            self.keys, self.values = self.keys.to(idx.device), self.values.to(idx.device)
        idx = idx.long()
        pos = torch.searchsorted(self.keys, idx).clamp_(max=self.keys.numel() - 1)
        return torch.where(self.keys[pos] == idx, self.values[pos], torch.ones((), device=idx.device))


def class_weight_table(class_weight, name="class_weight"):
    """``class_weight`` checked and ready to look up (:class:`ClassWeights`)."""
    return ClassWeights(class_weight, name)


def class_indices(y):
    """Class index per sample: integer labels as they are, one-hot rows by argmax, 0/1 floats rounded."""
    if y.dim() > 1 and y.shape[-1] > 1:
        return y.argmax(dim=-1)
    if y.dim() > 1:
        y = y.reshape(y.shape[0])
    return y if not y.is_floating_point() else y.round().long()


def apply_class_weight(y, sample_weight, table):
    """Per-sample weights: the class weights of ``y`` times ``sample_weight`` when there is one."""
    if isinstance(y, (list, tuple, dict)):
        raise ValueError("class_weight: got a model with several outputs; class_weight needs a single "
                         "target array (use sample_weight instead)")
    if y.dim() > 2 or y.dim() == 0:
        raise ValueError(f"class_weight: got targets of shape {tuple(y.shape)}; class weights need class labels "
                         "of shape (N,) or (N, 1), or one-hot targets (N, C), as in Keras; weight other targets "
                         "with sample_weight")
    weights = table.lookup(class_indices(y))
    return weights if sample_weight is None else weights * sample_weight
