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
    assert lr_reductions(h) == [(2, 0.1, 0.01)]
    d = diagnose(h)
    assert isinstance(d, Diagnosis) and d.monitor == "loss" and d.best_epoch == 2
    assert str(d) == str(h.diagnose())
