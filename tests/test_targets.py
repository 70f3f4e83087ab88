"""fitkit.targets: Keras's reconciliation of targets with predictions."""

import pytest
import torch

from fitkit import targets


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
