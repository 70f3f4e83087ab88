"""fitkit.callbacks.monitor: mode="auto" by name, what counts as an improvement, and MonitorCallback."""

import math
import warnings

import pytest
from conftest import labelled_data
from torch import nn

import fitkit
from fitkit.callbacks import EarlyStopping, ModelCheckpoint, ReduceLROnPlateau
from fitkit.callbacks.monitor import MonitorCallback, closest_key, is_improvement, missing_key_hint, resolve_mode


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
    "io_u", "val_mean_io_u", "one_hot_mean_io_u", "binary_io_u", "r2_score", "fbeta_score",
    "pearson_correlation", "val_concordance_correlation", "sensitivity_at_specificity",
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


# ----- a monitored or templated key that is not logged names the closest one -----

LOGGED = {"loss": 0.5, "accuracy": 0.8, "val_loss": 0.6, "val_accuracy": 0.7}


@pytest.mark.parametrize("name, logs, expected", [
    ("val_acc", LOGGED, "val_accuracy"),            # Keras 2's short name: one a prefix of the other
    ("acc", LOGGED, "accuracy"),
    ("val_los", LOGGED, "val_loss"),
    ("val_acuracy", LOGGED, "val_accuracy"),        # a typo: difflib
    ("val_precison", {"loss": 1.0, "precision": 0.5}, "val_precision"),  # no validation: val_ twins count
    ("val_acc", {"loss": 1.0, "accuracy": 0.5}, "val_accuracy"),
    ("val_acc", {"loss": 1.0}, None),               # nothing alike: "val_" alone is no likeness
    ("val_loss", {"loss": 1.0}, None),              # only validation is missing
    ("mae", LOGGED, None),
    ("loss", LOGGED, None),                         # logged: nothing to suggest
])
def test_closest_key(name, logs, expected):
    assert closest_key(name, logs) == expected


def test_the_validation_hint_appears_only_without_any_val_key():
    assert missing_key_hint("val_acc", LOGGED) == "did you mean 'val_accuracy'?"
    assert missing_key_hint("val_loss", {"loss": 1.0}) == (
        "val_ keys are logged only in epochs that validate, given validation_data or validation_split")
    assert missing_key_hint("val_acc", {"loss": 1.0, "accuracy": 0.5}) == (
        "did you mean 'val_accuracy'?; val_ keys are logged only in epochs that validate, given validation_data "
        "or validation_split")
    assert missing_key_hint("lr", LOGGED) == ""


def _fit_warnings(callback, validation_split):
    x, y = labelled_data()
    model = fitkit.Sequential(nn.Linear(4, 1), nn.Sigmoid())
    model.compile(optimizer="sgd", loss="binary_crossentropy", metrics=["accuracy"])
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        model.fit(x, y, epochs=2, batch_size=16, validation_split=validation_split, verbose=0,
                  callbacks=[callback])
    return [str(w.message) for w in record if issubclass(w.category, UserWarning)]


@pytest.mark.parametrize("make", [
    lambda: EarlyStopping(monitor="val_acc"),
    lambda: ReduceLROnPlateau(monitor="val_acc"),
])
def test_a_typo_in_monitor_warns_once_with_the_closest_key_and_no_validation_hint(make):
    messages = _fit_warnings(make(), validation_split=0.25)
    assert len(messages) == 1
    assert "monitor='val_acc'" in messages[0] and "did you mean 'val_accuracy'?" in messages[0]
    assert "validation_data" not in messages[0]


def test_a_val_monitor_without_validation_data_gives_the_hint_and_the_twin(tmp_path):
    (message,) = _fit_warnings(EarlyStopping(monitor="val_acc"), validation_split=0.0)
    assert "did you mean 'val_accuracy'?" in message and "validation_data or validation_split" in message
    # ModelCheckpoint says it at each save, as Keras does: once per epoch here.
    message, again = _fit_warnings(ModelCheckpoint(str(tmp_path / "m.pt"), monitor="val_loss", save_best_only=True,
                                                   save_weights_only=True), validation_split=0.0)
    assert message == again
    assert message.startswith("Can save best model only with val_loss available (val_ keys are logged only in epochs")
    assert "did you mean" not in message


def test_model_checkpoint_monitor_typo_names_the_closest_key(tmp_path):
    message, _ = _fit_warnings(ModelCheckpoint(str(tmp_path / "m.pt"), monitor="val_acc", save_best_only=True,
                                               save_weights_only=True), validation_split=0.25)
    assert message == "Can save best model only with val_acc available (did you mean 'val_accuracy'?)."


def test_model_checkpoint_filepath_typo_is_a_key_error_naming_the_closest_key(tmp_path):
    x, y = labelled_data()
    model = fitkit.Sequential(nn.Linear(4, 1))
    model.compile(optimizer="sgd", loss="binary_crossentropy", metrics=["accuracy"])
    cb = ModelCheckpoint(str(tmp_path / "m-{epoch:02d}-{val_acc:.2f}.pt"), save_weights_only=True)
    with pytest.raises(KeyError) as err:
        model.fit(x, y, epochs=1, batch_size=16, validation_split=0.25, verbose=0, callbacks=[cb])
    assert "'val_acc' is not logged (did you mean 'val_accuracy'?). Logged keys: loss" in err.value.args[0]
    assert not list(tmp_path.iterdir())
