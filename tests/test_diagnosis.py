"""fitkit.diagnosis: the rules on their own (History.diagnose's worded report is in test_history.py)."""

import math

from fitkit.diagnosis import Diagnosis, argbest, diagnose, lr_reductions, overfitting_epoch, still_improving
from fitkit.history import Diagnosis as DiagnosisFromHistory
from fitkit.history import History


def test_history_re_exports_diagnosis():
    assert DiagnosisFromHistory is Diagnosis


def test_argbest_skips_non_finite_values_and_takes_the_first_tie():
    assert argbest([math.nan, 0.5, 0.3, 0.3, math.inf], "min") == 2
    assert argbest([0.1, 0.9, 0.9], "max") == 1
    assert argbest([math.nan, math.inf], "min") is None


def test_argbest_calls_values_equal_in_float32_a_tie_as_early_stopping_does():
    # 0.3 - 1e-12 is below 0.3 as a Python float but the same float32: EarlyStopping(min_delta=0) keeps
    # the first epoch's weights, and the best epoch said everywhere must be that one.
    assert argbest([0.5, 0.3, 0.3 - 1e-12], "min") == 1
    assert argbest([0.5, 0.3, 0.2999], "min") == 2
    assert argbest([0.9, 0.95, 0.95 + 1e-12], "max") == 1


def test_overfitting_needs_a_clear_rise_while_the_training_loss_falls():
    epochs = list(range(6))
    val = [1.0, 0.6, 0.5, 0.55, 0.6, 0.65]
    falling_train = dict(zip(epochs, [1.0, 0.8, 0.6, 0.5, 0.4, 0.3]))
    rising_train = dict(zip(epochs, [1.0, 0.8, 0.6, 0.7, 0.8, 0.9]))
    assert overfitting_epoch(epochs, val, falling_train) == 2
    assert overfitting_epoch(epochs, val, rising_train) is None  # both rose: not overfitting
    assert overfitting_epoch(epochs[:4], val[:4], falling_train) is None  # one worse epoch: no trend yet


def test_still_improving_reads_the_recent_epochs():
    assert still_improving([1.0, 0.8, 0.6, 0.5], "min")
    assert not still_improving([1.0, 0.5, 0.5, 0.5], "min")  # flat tail
    assert not still_improving([1.0], "min")


def test_lr_reductions_and_diagnose_read_a_history():
    h = History.from_dict({"loss": [1.0, 0.8, 0.7], "learning_rate": [0.1, 0.1, 0.01]})
    assert lr_reductions(h) == [(1, 0.1, 0.01)]  # lowered at the end of index 1, "epoch 2"
    d = diagnose(h)
    assert isinstance(d, Diagnosis) and d.monitor == "loss" and d.best_epoch == 2
    assert str(d) == str(h.diagnose())


# ----- the whole story, on real fits -----

import re  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import fitkit  # noqa: E402
from conftest import noisy_binary_data  # noqa: E402
from fitkit.callbacks import EarlyStopping, ReduceLROnPlateau  # noqa: E402
from fitkit.diagnosis import instability  # noqa: E402


def _words(report):
    return " ".join(str(report).split())


def _model(lr=0.01, seed=0):
    fitkit.set_seed(seed)
    model = fitkit.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, 1))
    model.compile(optimizer=fitkit.optimizers.Adam(lr), loss=nn.BCEWithLogitsLoss(), metrics=["accuracy"])
    return model


def _fit(model, **kwargs):
    x, y = noisy_binary_data()
    return model.fit(x, y, batch_size=32, validation_split=0.25, verbose=0, **kwargs)


def test_a_second_fit_from_epoch_1_says_how_many_epochs_came_before_and_counts_in_all():
    model = _model()
    first = _fit(model, epochs=6)
    second = _fit(model, epochs=6)
    assert first.epochs_before == 0 and second.epochs_before == 6
    assert second.epoch == [0, 1, 2, 3, 4, 5]  # numbered from 1 again, as Keras's progress bar does
    d = second.diagnose()
    assert d.epochs_before == 6
    best = d.best_epoch
    assert best == second.best_epoch()  # one numbering: the field, best_epoch() and the words agree
    text = _words(d)
    assert f"best val_loss: {d.best_value:.4g} at epoch {best + 1} " in text
    assert "started from a model trained for 6 epochs in earlier fit calls, but numbered its epochs from 1 " \
           "again" in text
    assert "its epoch 1 is the model's 7th" in text and "initial_epoch=6" in text
    assert f"Train for about {6 + best + 1} epochs in all (6 before this fit call and {best + 1} in it)" in d.advice
    # a third call counts both earlier ones
    assert _fit(model, epochs=2).epochs_before == 12


def test_a_second_fit_with_initial_epoch_numbers_on():
    model = _model()
    _fit(model, epochs=4)
    second = _fit(model, epochs=8, initial_epoch=4)
    assert second.epochs_before == 4 and second.epoch == [4, 5, 6, 7]
    d = second.diagnose()
    text = _words(d)
    assert "went on from a model trained for 4 epochs before it; its epochs are numbered on from there" in text
    assert "epochs run: 4 (epoch 5 to 8)" in text
    assert f"at epoch {d.best_epoch + 1} " in text
    assert "in all (4 before this fit call and" in d.advice
    # without a model.history to read, initial_epoch alone tells what came before
    fresh = _fit(_model(), epochs=8, initial_epoch=4)
    assert fresh.epochs_before == 0 and fresh.diagnose().epochs_before == 4


def test_restored_weights_are_reported_and_restore_best_weights_is_no_longer_advised():
    model = _model(lr=0.05)
    history = _fit(model, epochs=40, callbacks=[EarlyStopping(patience=4, restore_best_weights=True)])
    assert history.stop_reason == "early_stopping" and history.restored_epoch is not None
    d = history.diagnose()
    assert d.restored_epoch == history.restored_epoch
    assert f"weights: restored to those of epoch {history.restored_epoch + 1} by " \
           "EarlyStopping(restore_best_weights=True)" in _words(d)
    assert "restore_best_weights=True" not in d.advice
    # the weights the next fit starts from are those of the restored epoch
    assert _fit(model, epochs=1).epochs_before == history.restored_epoch + 1


def test_epochs_auto_is_reported_as_restored_too():
    x, y = noisy_binary_data()
    model = _model(lr=0.05)
    history = model.fit(x, y, epochs="auto", max_epochs=60, batch_size=32, validation_split=0.25, verbose=0)
    d = history.diagnose()
    assert d.restored_epoch == history.restored_epoch == history.best_epoch()
    assert "weights: restored to those of epoch" in _words(d) and "restore_best_weights=True" not in d.advice


def test_without_restoring_the_report_says_the_weights_are_the_last_epochs():
    model = _model(lr=0.05)
    history = _fit(model, epochs=40, callbacks=[EarlyStopping(patience=4)])
    d = history.diagnose()
    assert d.restored_epoch is None
    last = history.epoch[-1] + 1
    assert f"weights: those of the last epoch ({last}), not of the best ({d.best_epoch + 1})" in _words(d)
    assert "restore_best_weights=True" in d.advice


def test_learning_rate_cuts_are_numbered_and_counted_as_reduce_lr_on_plateau_announces_them(capsys):
    model = _model(lr=0.05)
    # min_delta=1 never counts an improvement after the first epoch: a cut at the end of every later
    # epoch, the last one at the last epoch (whose rate no epoch trains with).
    history = _fit(model, epochs=5, callbacks=[ReduceLROnPlateau(monitor="loss", patience=1, factor=0.5,
                                                                 min_delta=1.0, verbose=1)])
    announced = [int(n) for n in re.findall(r"Epoch (\d+): ReduceLROnPlateau reducing", capsys.readouterr().out)]
    assert announced == [2, 3, 4, 5]
    d = history.diagnose()
    assert [e + 1 for e, _, _ in d.lr_reductions] == announced  # 4 cuts, the last one included
    assert [new for _, _, new in d.lr_reductions] == pytest.approx([0.025, 0.0125, 0.00625, 0.003125])
    assert history.last_learning_rate == pytest.approx(0.003125)
    text = _words(d)
    assert "lowered 4 times, from 0.05 to 0.00313 (first at the end of epoch 2, last at the end of epoch 5)" in text


def test_a_compile_scheduler_cut_at_the_last_epoch_is_seen():
    fitkit.set_seed(0)
    model = fitkit.Sequential(nn.Linear(6, 1))
    model.compile(optimizer="sgd", loss=nn.BCEWithLogitsLoss(),
                  scheduler=lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.1))
    history = _fit(model, epochs=6)
    assert [(e, round(old, 6), round(new, 6)) for e, old, new in history.diagnose().lr_reductions] == [
        (2, 0.01, 0.001), (5, 0.001, 0.0001)]


def test_learning_rates_recorded_by_fit_are_read_before_the_logged_key():
    h = History.from_dict({"loss": [1.0, 0.8, 0.7], "learning_rate": [0.1, 0.1, 0.1]})
    h.learning_rates = [0.1, 0.05, 0.05]  # what fit records on History (a list aligned with epoch)
    h.last_learning_rate = 0.01
    assert lr_reductions(h) == [(0, 0.1, 0.05), (2, 0.05, 0.01)]
    h.learning_rates = [0.1]  # not aligned with the epochs: the logged key is read instead
    assert lr_reductions(h) == [(2, 0.1, 0.01)]


def test_history_round_trip_keeps_what_came_before_and_the_last_rate():
    model = _model()
    _fit(model, epochs=2)
    second = _fit(model, epochs=2)
    again = History.from_dict(second.to_dict())
    assert again.epochs_before == 2 and again.last_learning_rate == second.last_learning_rate == 0.01
    assert str(again.diagnose()) == str(second.diagnose())


def _unstable(losses):
    return instability(History.from_dict({"loss": losses}))


def test_instability_rules():
    assert _unstable([0.7, 0.5, 0.4, 0.35, 0.3]) is None
    # noise near zero late in training is not a jump: the rise is small against the run's median loss
    assert _unstable([0.7, 0.3, 0.1, 0.01, 0.001, 0.003, 0.0008]) is None
    epoch, words = _unstable([0.7, 0.3, 0.2, 0.65, 0.25, 0.2])
    assert epoch == 3 and words == "the training loss jumped to 0.65 at epoch 4, 3.25 times its lowest before " \
                                   "(0.2 at epoch 3)"
    epoch, words = _unstable([0.7, 0.9, 1.5, 2.0])
    assert epoch == 3 and words.startswith("the training loss ended higher than it began (2 at epoch 4, 0.7 at")
    epoch, words = _unstable([1240.0, 9.0, 0.9, 0.3, 0.25])
    assert epoch == 0 and "began at 1240 in epoch 1, 3 orders of magnitude above its lowest (0.25 at epoch 5)" in words
    epoch, words = _unstable([0.7, 0.5, math.nan, math.nan])
    assert epoch == 2 and words == "the training loss became NaN in epoch 3"
    # a fast but steady fall from a large start is not unstable
    assert _unstable([2.85e4, 2.4e4, 1.1e4, 5.5e3, 3.1e3, 2.8e3]) is None


def test_an_unstable_run_is_said_to_be_one():
    x, y = noisy_binary_data()
    fitkit.set_seed(0)
    model = fitkit.Sequential(nn.Linear(6, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1))
    model.compile(optimizer=fitkit.optimizers.SGD(2.0, momentum=0.9), loss=nn.BCEWithLogitsLoss())
    history = model.fit(x, y, epochs=8, batch_size=16, validation_split=0.25, verbose=0)
    d = history.diagnose()
    assert d.unstable is not None and "unstable: " + d.unstable in _words(d)
    assert d.advice.startswith("Make training stable first: ") and "learning rate is probably too high" in d.advice
    assert "model.find_learning_rate(x, y)" in d.advice
    # a sound learning rate on the same data is not called unstable
    assert _fit(_model(lr=0.01), epochs=8).diagnose().unstable is None
