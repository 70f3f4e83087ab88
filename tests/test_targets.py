"""fitkit.targets: Keras's reconciliation of targets with predictions."""

import numpy as np
import pytest
import torch

from fitkit import targets
from fitkit.targets import to_categorical


def test_match_rank_expands_and_squeezes_a_trailing_one():
    assert targets.match_rank(torch.zeros(4), torch.zeros(4, 1)).shape == (4, 1)
    assert targets.match_rank(torch.zeros(4, 1), torch.zeros(4)).shape == (4,)
    assert targets.match_rank(torch.zeros(4), torch.zeros(4, 3)).shape == (4,)  # sparse labels stay
    assert targets.match_rank(torch.zeros(4, 3), torch.zeros(4, 3)).shape == (4, 3)


def test_as_float_and_dense_targets():
    y = targets.dense_targets(torch.tensor([0, 1, 1]), torch.zeros(3, 1, dtype=torch.float64))
    assert y.dtype == torch.float64 and y.shape == (3, 1) and y.flatten().tolist() == [0.0, 1.0, 1.0]
    assert targets.as_float(torch.tensor([True]), torch.zeros(1)).dtype == torch.float32


def test_sparse_labels():
    assert targets.sparse_labels(torch.tensor([[1.0], [2.0]])).tolist() == [1, 2]
    assert targets.sparse_labels(torch.tensor([[1.0], [2.0]])).dtype == torch.int64
    assert targets.sparse_labels(torch.tensor([3, 4])).tolist() == [3, 4]


def test_the_silent_mse_broadcast_cannot_happen_after_reconciliation():
    y_pred = torch.tensor([[1.0], [2.0], [3.0]])
    y_true = torch.tensor([1, 2, 4])
    fixed = torch.nn.functional.mse_loss(y_pred, targets.dense_targets(y_true, y_pred))
    assert abs(float(fixed) - 1.0 / 3.0) < 1e-7
    with pytest.warns(UserWarning, match="broadcasting"):
        broadcast = torch.nn.functional.mse_loss(y_pred, y_true.float())
    assert float(broadcast) > 1.0  # what (N, 1) against (N,) computes in plain torch: an (N, N) mean


# ----- to_categorical (Keras's keras.utils.to_categorical; the Keras-recorded cases are in test_metrics_keras.py)

def test_to_categorical_of_arrays_is_float64_numpy_with_the_class_axis_last():
    out = to_categorical(np.array([[0, 2], [1, 0]]))
    assert out.dtype == np.float64 and out.shape == (2, 2, 3)
    assert out.argmax(-1).tolist() == [[0, 2], [1, 0]] and out.sum() == 4
    assert to_categorical(np.zeros((0,), dtype=int), num_classes=3).shape == (0, 3)


def test_to_categorical_of_a_tensor_is_a_float32_tensor():
    out = to_categorical(torch.tensor([[2], [0]]), num_classes=4)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    assert out.tolist() == [[0.0, 0.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]]
    assert to_categorical(torch.tensor([1.0, 0.0])).tolist() == [[0.0, 1.0], [1.0, 0.0]]


@pytest.mark.parametrize("x, num_classes, message", [
    ([0, 3], 3, r"x: got the class index 3; expected integers in \[0, 3\) \(num_classes=3\)"),
    ([-1, 1], None, r"x: got the class index -1; expected integers in \[0, 2\) \(num_classes inferred"),
    (torch.tensor([-1, 1]), None, r"class index -1"),
    ([0.5, 1.0], None, "fractional part"),
    ([], None, "no labels"),
    (["a"], None, "expected integer class indices"),
    ([0, 1], -2, "num_classes: got -2"),
    ([0, 1], 2.5, "num_classes: got 2.5"),
])
def test_to_categorical_refuses_what_is_not_a_class_index(x, num_classes, message):
    with pytest.raises(ValueError, match=message):
        to_categorical(x, num_classes=num_classes)
