"""History: the Keras record, best_epoch, diagnose() on crafted curves, plot(), plain-data round trip."""

import builtins
import json
import math

import pytest

from fitkit.history import Diagnosis, History


class FakeModel:
    """What History needs of a model: attributes fit sets."""

    def __init__(self):
        self.stop_training = False
        self.stop_reason = None


def drive(columns, initial_epoch=0, epochs=None, model=None, stop_reason=None, params_steps=10):
    """Run History's hooks as fit would, one epoch per row of ``columns`` (key -> list of values)."""
    model = model or FakeModel()
    n = max(len(v) for v in columns.values())
    h = History()
    h.set_model(model)
    h.set_params({"verbose": 1, "epochs": epochs if epochs is not None else initial_epoch + n,
                  "steps": params_steps})
    h.on_train_begin()
    for i in range(n):
        logs = {k: v[i] for k, v in columns.items() if i < len(v) and v[i] is not None}
        h.on_epoch_end(initial_epoch + i, logs)
    if stop_reason is not None:
        model.stop_training = True
        model.stop_reason = stop_reason
    # fit records why it stopped before on_train_end (the trainer decides); History infers nothing.
    h.stop_reason = model.stop_reason or "epochs"
    h.on_train_end()
    return h


def words(report):
    """The report as one line: its lines are folded at about 100 characters."""
    return " ".join(str(report).split())


def falling(n, start=1.0, rate=0.85, floor=0.0):
    return [floor + (start - floor) * rate ** i for i in range(n)]


# ----- Keras basics -----

def test_records_epochs_params_and_sets_model_history():
    model = FakeModel()
    h = drive({"loss": [0.9, 0.7, 0.6], "accuracy": [0.5, 0.6, 0.7]}, model=model)
    assert h.epoch == [0, 1, 2]
    assert h.history == {"loss": [0.9, 0.7, 0.6], "accuracy": [0.5, 0.6, 0.7]}
    assert h.params == {"verbose": 1, "epochs": 3, "steps": 10}
    assert model.history is h
    assert h.stop_reason == "epochs" and h.interrupted is False


def test_initial_epoch_indices_and_best_epoch_uses_them():
    h = drive({"loss": [0.9, 0.5, 0.7]}, initial_epoch=2)
    assert h.epoch == [2, 3, 4]
    assert h.best_epoch("loss") == 3


def test_values_become_python_floats():
    import torch

    h = History()
    h.on_train_begin()
    h.on_epoch_end(0, {"loss": torch.tensor(0.5), "mae": 1})
    assert h.history == {"loss": [0.5], "mae": [1.0]}
    assert all(type(v[0]) is float for v in h.history.values())


def test_on_train_begin_resets_epoch_keeps_history_like_keras():
    h = drive({"loss": [1.0, 0.5]})
    h.on_train_begin()
    assert h.epoch == [] and h.history["loss"] == [1.0, 0.5]


# ----- best_epoch -----

def test_best_epoch_min_max_auto():
    h = drive({"loss": [0.9, 0.4, 0.5], "val_loss": [1.0, 0.8, 0.6], "val_accuracy": [0.5, 0.9, 0.8]})
    assert h.best_epoch() == 2  # val_loss by default
    assert h.best_epoch("loss") == 1
    assert h.best_epoch("val_accuracy") == 1  # auto -> max
    assert h.best_epoch("val_accuracy", mode="min") == 0
    assert h.best_epoch("loss", mode="max") == 0


def test_best_epoch_ties_go_to_first_and_nans_are_skipped():
    h = drive({"loss": [math.nan, 0.5, 0.3, 0.3, math.nan, math.inf], "acc": [0.2, 0.9, 0.9, math.nan, 0.1, 0.1]})
    assert h.best_epoch("loss") == 2
    assert h.best_epoch("acc") == 1


def test_best_epoch_missing_key_names_the_keys_that_are():
    h = drive({"loss": [1.0], "accuracy": [0.5]})
    with pytest.raises(KeyError) as err:
        h.best_epoch()
    msg = str(err.value)
    assert "'val_loss'" in msg and "'loss'" in msg and "'accuracy'" in msg


def test_best_epoch_all_nan_and_unknown_auto_mode():
    h = drive({"loss": [math.nan, math.nan], "widgets": [1.0, 2.0]})
    with pytest.raises(ValueError, match="no finite value"):
        h.best_epoch("loss")
    with pytest.raises(ValueError, match="mode"):
        h.best_epoch("widgets")
    assert h.best_epoch("widgets", mode="max") == 1


def test_best_epoch_with_validation_every_other_epoch():
    # validation_freq=2: val_loss is logged at epochs 1 and 3 only; the index must still be right.
    h = drive({"loss": [1.0, 0.8, 0.7, 0.6], "val_loss": [None, 0.9, None, 0.95]})
    assert h.history["val_loss"] == [0.9, 0.95]
    assert h.best_epoch() == 1


# ----- diagnose -----

def test_epochs_ran_out_while_still_improving_says_train_longer():
    val = falling(10, 1.0, 0.85, floor=0.2)
    h = drive({"loss": falling(10, 1.0, 0.8, 0.1), "val_loss": val})
    d = h.diagnose()
    assert isinstance(d, Diagnosis)
    assert d.monitor == "val_loss" and d.epochs_run == 10
    assert d.stop_reason == "epochs" and "the epochs ran out" in d.stop_wording and "epochs=10" in d.stop_wording
    assert d.still_improving is True and d.overfitting_epoch is None
    assert d.best_epoch == 9 and d.best_value == pytest.approx(val[-1])
    assert d.advice.startswith("Train longer")
    assert "epoch 10" in d.advice and f"{val[-1]:.4g}" in d.advice
    text = str(d)
    assert "still improving:  yes" in text and "Advice: Train longer" in text


def test_early_stopping_after_overfitting_names_the_epoch():
    # val_loss best at index 5 ("epoch 6"), then rises for 3 epochs while the training loss falls.
    val = [1.0, 0.8, 0.65, 0.55, 0.5, 0.48, 0.5, 0.53, 0.57]
    h = drive({"loss": falling(9, 1.0, 0.8), "val_loss": val}, epochs=50, stop_reason="early_stopping")
    d = h.diagnose()
    assert d.stop_reason == "early_stopping"
    assert d.stop_wording == "EarlyStopping stopped it: val_loss had not improved for 3 epochs"
    assert d.overfitting_epoch == 5 and d.best_epoch == 5
    assert d.still_improving is False
    assert "overfitting began after epoch 6" in d.advice
    assert d.advice.startswith("Train for about 6 epochs")
    assert "restore_best_weights=True" in d.advice
    text = str(d)
    assert "0.48" in text and "0.57" in text and "epoch 9" in text


def test_plateau_with_noise_is_not_overfitting():
    val = [1.0, 0.7, 0.55, 0.5, 0.49, 0.495, 0.492, 0.494]  # within 2% of the best: a plateau
    h = drive({"loss": falling(8), "val_loss": val})
    d = h.diagnose()
    assert d.overfitting_epoch is None and d.still_improving is False
    assert d.best_epoch == 4
    assert d.advice.startswith("Train for about 5 epochs") and "did not improve after it" in d.advice


def test_both_losses_rising_is_not_called_overfitting():
    h = drive({"loss": [1.0, 0.6, 0.5, 0.7, 0.9], "val_loss": [1.0, 0.6, 0.5, 0.7, 0.9]})
    assert h.diagnose().overfitting_epoch is None


def test_one_bad_epoch_is_not_yet_overfitting():
    h = drive({"loss": falling(5), "val_loss": [1.0, 0.7, 0.5, 0.45, 0.6]})
    assert h.diagnose().overfitting_epoch is None


def test_terminate_on_nan():
    h = drive({"loss": [1.0, 0.8, math.nan], "val_loss": [1.1, 0.9, math.nan]}, epochs=20,
              stop_reason="terminate_on_nan")
    d = h.diagnose()
    assert d.stop_reason == "terminate_on_nan"
    assert d.stop_wording == "TerminateOnNaN stopped it: the loss became NaN in epoch 3"
    assert d.best_epoch == 1 and d.best_value == 0.9
    assert d.still_improving is False  # it broke; improving before the NaN does not count
    assert "NaN" in d.advice and "lower the learning rate" in d.advice and "epoch 2" in d.advice


def test_interrupted_while_improving():
    model = FakeModel()
    h = History()
    h.set_model(model)
    h.set_params({"verbose": 1, "epochs": 100, "steps": 5})
    h.on_train_begin()
    for i, (lo, vl) in enumerate(zip(falling(6, 1, 0.8), falling(6, 1.2, 0.8))):
        h.on_epoch_end(i, {"loss": lo, "val_loss": vl})
    h.interrupted = True  # what fit does on KeyboardInterrupt, before on_train_end
    h.stop_reason = "interrupted"
    h.on_train_end()
    assert h.stop_reason == "interrupted"
    d = h.diagnose()
    assert d.stop_wording == "you interrupted it" and d.still_improving
    assert "when you interrupted it" in d.advice


def test_stop_reason_set_by_trainer_wins_and_custom_reasons_are_worded():
    model = FakeModel()
    model.stop_reason = "early_stopping"
    h = History()
    h.set_model(model)
    h.on_train_begin()
    h.on_epoch_end(0, {"loss": 1.0})
    h.stop_reason = "time_budget"
    h.on_train_end()
    assert h.stop_reason == "time_budget"
    assert h.diagnose().stop_wording == "the time budget ran out"
    h2 = drive({"loss": [1.0, 0.9]}, epochs=10, stop_reason="target_reached")
    assert h2.diagnose().stop_wording == "a callback stopped it (stop_reason='target_reached')"


def test_history_driven_by_hand_keeps_the_reason_it_is_given():
    # Why training stopped is the trainer's decision; History's own hooks do not work one out.
    model = FakeModel()
    model.stop_training, model.stop_reason = True, "early_stopping"
    h = History()
    h.set_model(model)
    h.set_params({"verbose": 1, "epochs": 1, "steps": 1})
    h.on_train_begin()
    h.on_epoch_end(0, {"loss": 1.0})
    h.on_train_end()
    assert h.stop_reason is None and h.interrupted is False
    assert h.diagnose().stop_wording == "no stop reason was recorded"


def test_lr_reductions_listed_with_old_and_new_values():
    lr = [1e-3] * 4 + [1e-4] * 3 + [1e-5] * 2
    val = [1.0, 0.8, 0.7, 0.69, 0.6, 0.58, 0.575, 0.55, 0.549]
    h = drive({"loss": falling(9), "val_loss": val, "learning_rate": lr})
    d = h.diagnose()
    # Epochs 1-4 ran at 1e-3: the rate was lowered at the end of epoch 4 (index 3), as ReduceLROnPlateau
    # prints "Epoch 4: ReduceLROnPlateau reducing learning rate".
    assert d.lr_reductions == [(3, pytest.approx(1e-3), pytest.approx(1e-4)),
                               (6, pytest.approx(1e-4), pytest.approx(1e-5))]
    text = words(d)
    assert "lowered from 0.001 to 0.0001 at the end of epoch 4" in text
    assert "lowered from 0.0001 to 1e-05 at the end of epoch 7" in text


def test_many_lr_reductions_are_summarised():
    lr = [0.1 * 0.5 ** i for i in range(10)]
    h = drive({"loss": falling(10), "learning_rate": lr})
    d = h.diagnose()
    assert len(d.lr_reductions) == 9
    assert "lowered 9 times, from 0.1 to 0.000195 (first at the end of epoch 1, last at the end of epoch 9)" in words(d)


def test_no_validation_uses_loss_and_says_so():
    h = drive({"loss": falling(8), "accuracy": [0.5, 0.6, 0.7, 0.75, 0.8, 0.82, 0.84, 0.85]})
    d = h.diagnose()
    assert d.monitor == "loss" and d.has_validation is False and d.overfitting_epoch is None
    assert d.still_improving and "validation_split=0.2" in d.advice
    assert "best loss:" in str(d)


def test_levelled_off_at_the_end():
    h = drive({"loss": [1.0, 0.5, 0.4, 0.399, 0.3989, 0.3988, 0.3987, 0.3986]})
    d = h.diagnose()
    assert d.best_epoch == 7 and not d.still_improving
    assert "levelled off" in d.advice and "Train for about 8 epochs" in d.advice


def test_single_epoch_and_empty_history():
    d = drive({"loss": [0.7], "val_loss": [0.8]}).diagnose()
    assert d.still_improving is False and "only 1 epoch ran" in d.advice
    h = History()
    with pytest.raises(KeyError):
        h.diagnose()


def test_diagnose_monitor_argument_and_notebook_repr():
    h = drive({"loss": falling(5), "val_loss": [0.9, 0.8, 0.7, 0.75, 0.8], "val_accuracy": [0.5, 0.7, 0.8, 0.78, 0.9]})
    d = h.diagnose("val_accuracy")
    assert d.monitor == "val_accuracy" and d.mode == "max" and d.best_epoch == 4
    assert "higher is better" in str(d)

    class Printer:
        def __init__(self):
            self.out = ""

        def text(self, s):
            self.out += s

    p = Printer()
    d._repr_pretty_(p, False)
    assert p.out == str(d)
    assert "Diagnosis(" in repr(d)


# ----- plain data -----

def test_round_trip_through_plain_data():
    h = drive({"loss": [1.0, 0.8, 0.7, 0.6], "val_loss": [None, 0.9, None, 0.95]}, initial_epoch=3,
              stop_reason="early_stopping")
    h.stop_monitor = "val_loss"
    data = json.loads(json.dumps(h.to_dict()))  # plain JSON-able data
    h2 = History.from_dict(data)
    assert h2.to_dict() == h.to_dict()
    assert h2.best_epoch() == h.best_epoch() == 4
    assert str(h2.diagnose()) == str(h.diagnose())
    h3 = History()
    h3.load_state_dict(h.state_dict())
    assert h3.history == h.history and h3.epoch == h.epoch and h3.stop_reason == "early_stopping"


def test_learning_rates_are_aligned_with_epochs_and_survive_the_round_trip():
    h = History()
    h.on_train_begin()
    for epoch, lr in enumerate([0.1, 0.1, 0.05]):
        h.record_learning_rate(lr)
        h.on_epoch_end(epoch, {"loss": 1.0 / (epoch + 1)})
    h.on_epoch_end(3, {"loss": 0.2})  # an epoch recorded by hand, without a rate
    assert h.learning_rates == [0.1, 0.1, 0.05, None] and "learning_rate" not in h.history
    again = History.from_dict(json.loads(json.dumps(h.to_dict())))
    assert again.learning_rates == h.learning_rates
    # A dict saved before learning_rates existed logged the rate as a key every epoch.
    old = h.to_dict()
    del old["learning_rates"]
    old["history"]["learning_rate"] = [0.1, 0.1, 0.05, 0.05]
    assert History.from_dict(old).learning_rates == [0.1, 0.1, 0.05, 0.05]
    assert History.from_dict({"loss": [1.0, 0.5]}).learning_rates == [None, None]
    h.on_train_begin()
    assert h.learning_rates == [] and h.epoch == []


def test_from_a_bare_keras_history_dict():
    h = History.from_dict({"loss": [1.0, 0.5], "val_loss": [1.2, 0.7]})
    assert h.epoch == [0, 1] and h.best_epoch() == 1
    with pytest.raises(TypeError, match="data must be a dict"):
        h.load_state_dict([1, 2])


def test_repr():
    assert repr(History()) == "History(no epochs yet)"
    h = drive({"loss": [1.0, 0.5], "val_loss": [1.2, 0.7]})
    assert repr(h) == "History(epochs 1-2, keys=[loss, val_loss], best val_loss at epoch 2, stop_reason='epochs')"


# ----- plot -----

@pytest.fixture
def close_figures():
    yield
    plt = __import__("matplotlib.pyplot").pyplot
    plt.close("all")


def test_plot_writes_png_and_marks_best_epoch(tmp_path, close_figures):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    n = 12
    val = [1.0, 0.8, 0.65, 0.55, 0.5, 0.47, 0.46, 0.47, 0.5, 0.53, 0.56, 0.6]
    lr = [1e-3] * 8 + [1e-4] * 4
    h = drive({"loss": falling(n, 1.0, 0.8), "accuracy": [0.5 + 0.04 * i for i in range(n)],
               "learning_rate": lr, "val_loss": val, "val_accuracy": [0.5 + 0.03 * min(i, 6) for i in range(n)]})
    path = tmp_path / "history.png"
    fig = h.plot(path)
    assert isinstance(fig, Figure)
    assert path.exists() and path.stat().st_size > 20_000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == [
        "Loss (lower is better)", "Accuracy (higher is better)", "Learning rate (log scale)"]
    assert axes[2].get_yscale() == "log"
    for ax in axes:
        vline = [ln for ln in ax.lines if ln.get_gid() == "best_epoch"]
        point = [ln for ln in ax.lines if ln.get_gid() == "best_epoch_point"]
        assert len(vline) == 1 and list(vline[0].get_xdata()) == [7, 7]  # index 6 -> epoch 7
        assert len(point) == 1 and list(point[0].get_xdata()) == [7]
    assert list(axes[0].lines[0].get_xdata()) == list(range(1, n + 1))  # 1-based epochs


def test_plot_single_panel_no_lr_change(close_figures):
    pytest.importorskip("matplotlib")
    h = drive({"loss": falling(4), "learning_rate": [0.01] * 4})
    fig = h.plot()
    assert len(fig.axes) == 1 and [ln.get_label() for ln in fig.axes[0].lines][0] == "training"
    with pytest.raises(ValueError, match="no epochs"):
        History().plot()


def test_plot_shows_nan_epochs(tmp_path, close_figures):
    pytest.importorskip("matplotlib")
    h = drive({"loss": [1.0, 0.8, math.nan], "val_loss": [1.1, 0.9, math.nan]}, stop_reason="terminate_on_nan")
    fig = h.plot(tmp_path / "nan.png")
    ax = fig.axes[0]
    assert ax.get_xlim() == (0.5, 3.5)  # the NaN epoch stays on the axis
    nan_marks = [ln for ln in ax.lines if ln.get_label() == "NaN or inf"]
    assert len(nan_marks) == 1 and list(nan_marks[0].get_xdata()) == [3, 3]
    assert "best val_loss: epoch 2" in [ln.get_label() for ln in ax.lines]


def test_plot_without_matplotlib_says_which_extra(monkeypatch):
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    h = drive({"loss": [1.0, 0.5]})
    with pytest.raises(ImportError, match=r"pip install fitkit\[plot\]"):
        h.plot()


def test_history_module_does_not_import_matplotlib():
    import subprocess
    import sys

    code = "import fitkit.history, sys; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_nan_loss_without_terminate_on_nan_is_marked_on_the_history_and_said_by_diagnose():
    import numpy as np
    import torch

    import fitkit

    x = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)
    y = x[:, :1].copy()
    y[40] = np.nan  # the third batch of the second epoch's pass makes the loss NaN (shuffle off)
    model = fitkit.Sequential(torch.nn.Linear(3, 1))
    model.compile(optimizer="sgd", loss="mse")
    with pytest.warns(UserWarning, match="NaN or infinite"):
        history = model.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0)
    assert history.nan_loss_epoch == 0 and history.stop_reason == "epochs"
    assert History.from_dict(json.loads(json.dumps(history.to_dict()))).nan_loss_epoch == 0
    advice = history.diagnose().advice
    assert advice.startswith("The training loss became NaN (or infinite) in epoch 1 and training went on")
    assert "TerminateOnNaN()" in advice and "TerminateOnNaN()" in str(history.diagnose())

    stopped = fitkit.Sequential(torch.nn.Linear(3, 1))
    stopped.compile(optimizer="sgd", loss="mse")
    with pytest.warns(UserWarning, match="NaN or infinite"):
        history = stopped.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0,
                              callbacks=[fitkit.callbacks.TerminateOnNaN()])
    assert history.stop_reason == "terminate_on_nan"
    assert "went on" not in history.diagnose().advice  # TerminateOnNaN's own words

    clean = History()
    clean.on_epoch_end(0, {"loss": 0.5})
    assert clean.nan_loss_epoch is None and "NaN" not in clean.diagnose().advice
