"""fitkit.callbacks.monitor: mode="auto" by name, what counts as an improvement, and MonitorCallback."""

import math
import warnings

import pytest

import fitkit
from fitkit.callbacks import EarlyStopping, ModelCheckpoint, ReduceLROnPlateau
from fitkit.callbacks.monitor import MonitorCallback, is_improvement, resolve_mode


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


# ----- MonitorCallback: the base of the callbacks that watch a quantity -----

class StopAtTarget(MonitorCallback):
    """A user's callback on the base: stop once the monitor beats a target."""

    def __init__(self, target, monitor="val_accuracy", mode="auto"):
        super().__init__(monitor, mode)
        self.target = target

    def on_epoch_end(self, epoch, logs=None):
        current = self._monitor_value(logs)
        if current is not None and self._is_improvement(current, self.target):
            self.model.stop_training = True


class Holder:
    stop_training = False


def test_the_three_monitoring_callbacks_share_the_base():
    assert fitkit.callbacks.MonitorCallback is MonitorCallback
    for cls in (EarlyStopping, ReduceLROnPlateau, ModelCheckpoint):
        assert issubclass(cls, MonitorCallback)


def test_monitor_callback_holds_monitor_mode_min_delta_and_best():
    cb = MonitorCallback("val_auc", min_delta=-0.01)
    assert (cb.monitor, cb.mode, cb.min_delta, cb.best, cb._direction) == ("val_auc", "auto", 0.01, None, "max")
    assert cb._is_improvement(0.5, None)
    assert cb._is_improvement(0.52, 0.5) and not cb._is_improvement(0.51, 0.5)
    with pytest.raises(ValueError, match="mode='auto' cannot tell"):
        MonitorCallback("val_dice_thing")
    assert MonitorCallback("val_dice_thing", compares=False)._direction is None


def test_unknown_mode_warns_with_the_subclass_name_and_falls_back_to_auto():
    with pytest.warns(UserWarning, match="StopAtTarget mode 'lowest' is unknown, fallback to auto mode"):
        cb = StopAtTarget(0.9, mode="lowest")
    assert cb._direction == "max"


def test_missing_monitor_warns_once_per_fit_and_naming_the_logged_keys():
    cb = StopAtTarget(0.9)
    cb.set_model(Holder())
    cb._begin_fit()
    with pytest.warns(UserWarning, match=r"StopAtTarget is conditioned on monitor='val_accuracy'.*Logged keys: loss"):
        cb.on_epoch_end(0, {"loss": 1.0})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cb.on_epoch_end(1, {"loss": 1.0})  # already said in this fit
    cb.on_epoch_end(2, {"val_accuracy": 0.95})
    assert cb.model.stop_training


def test_begin_fit_resets_unless_a_state_was_just_loaded():
    cb = MonitorCallback("loss")
    cb.best, cb._seen_monitor = 0.5, True
    cb._begin_fit()
    assert cb.best is None and not cb._seen_monitor
    cb.best = 0.4
    cb._mark_resumed()
    cb._begin_fit()  # the resumed run keeps its best
    assert cb.best == 0.4 and cb._seen_monitor
    cb._begin_fit()  # the next fit starts afresh
    assert cb.best is None
