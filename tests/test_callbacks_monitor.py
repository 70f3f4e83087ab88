"""fitkit.callbacks.monitor: mode="auto" by name, and what counts as an improvement."""

import math

import pytest

from fitkit.callbacks.monitor import is_improvement, resolve_mode


@pytest.mark.parametrize("monitor", [
    "loss", "val_loss", "mae", "val_mse", "rmse", "mean_squared_error", "val_mean_absolute_error",
    "binary_crossentropy", "val_sparse_categorical_crossentropy", "hinge", "squared_hinge",
    "output_a_loss", "VAL_LOSS",
])
def test_auto_mode_minimises_losses_and_errors(monitor):
    assert resolve_mode(monitor, "auto") == "min"


@pytest.mark.parametrize("monitor", [
    "accuracy", "val_accuracy", "acc", "val_acc", "auc", "val_auc", "precision", "recall",
    "f1", "f1_score", "val_sparse_categorical_accuracy", "binary_accuracy", "precision_at_recall",
])
def test_auto_mode_maximises_scores(monitor):
    assert resolve_mode(monitor, "auto") == "max"


def test_explicit_mode_wins_over_the_name():
    assert resolve_mode("val_accuracy", "min") == "min"
    assert resolve_mode("val_loss", "max") == "max"
    assert resolve_mode("anything", "max") == "max"


def test_auto_mode_that_cannot_tell_asks_for_min_or_max():
    with pytest.raises(ValueError) as err:
        resolve_mode("val_dice_thing", "auto")
    msg = str(err.value)
    assert "val_dice_thing" in msg and "mode='min'" in msg and "mode='max'" in msg


def test_unknown_mode_is_an_error_in_resolve_mode():
    with pytest.raises(ValueError, match="mode must be one of"):
        resolve_mode("val_loss", "lowest")


def test_improvement_needs_more_than_min_delta():
    assert is_improvement(0.5, None, "min")  # nothing seen yet
    assert is_improvement(0.4, 0.5, "min")
    assert not is_improvement(0.5, 0.5, "min")  # a tie is not an improvement
    assert not is_improvement(0.45, 0.5, "min", min_delta=0.05)  # exactly min_delta: not more
    assert is_improvement(0.44, 0.5, "min", min_delta=0.05)
    assert is_improvement(0.44, 0.5, "min", min_delta=-0.05)  # the sign of min_delta is ignored
    assert is_improvement(0.6, 0.5, "max")
    assert not is_improvement(0.55, 0.5, "max", min_delta=0.05)
    assert is_improvement(0.56, 0.5, "max", min_delta=0.05)


def test_nan_never_improves_and_comparison_is_float32_like_keras():
    assert not is_improvement(math.nan, 0.5, "min")
    assert not is_improvement(math.nan, 0.5, "max")
    # Differences below float32 precision are ties, as in Keras (which compares float32 tensors).
    assert not is_improvement(0.3, 0.30000000000000004, "min")
    assert not is_improvement(1.0 - 1e-9, 1.0, "min")
