"""fitkit's EarlyStopping and ReduceLROnPlateau against Keras 3's own classes.

(a) Keras's answers on 1000 generated sequences are recorded in fixtures/keras_callbacks.json (made
by fixtures/make_keras_callbacks.py); fitkit must give the same answers on every case.
(b) When Keras is installed, a few fresh cases are run through Keras live and compared too.
"""

import importlib.util
import json
import os
import warnings

import pytest
import torch
from torch import nn

from fitkit.callbacks import CallbackList, EarlyStopping, ReduceLROnPlateau

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # tests/
FIXTURE = os.path.join(HERE, "fixtures", "keras_callbacks.json")
GENERATOR = os.path.join(HERE, "fixtures", "make_keras_callbacks.py")


class EpochModel(nn.Module):
    """One parameter, set to the epoch index each epoch, so restored weights name their epoch."""

    def __init__(self, lr):
        super().__init__()
        self.w = nn.Parameter(torch.full((1,), -1.0))
        self.optimizer = torch.optim.SGD(self.parameters(), lr=lr)
        self.stop_training = False
        self.stop_reason = None


def run_fitkit(case):
    """Drive fitkit's callback over the case's sequence as fit does; answers shaped like Keras's."""
    model = EpochModel(case.get("lr", 0.01))
    cls = EarlyStopping if case["kind"] == "early_stopping" else ReduceLROnPlateau
    cb = cls(**case["args"])
    callbacks = CallbackList([cb], model=model,
                             params={"epochs": len(case["values"]), "steps": 1, "verbose": 0})
    lr_logged, lr_after = [], []
    epochs_run = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        callbacks.on_train_begin({})
        for epoch, value in enumerate(case["values"]):
            epochs_run += 1
            with torch.no_grad():
                model.w.fill_(float(epoch))
            logs = {"other": 0.0}
            if value is not None:
                logs[case["args"]["monitor"]] = value
            callbacks.on_epoch_end(epoch, logs)
            if case["kind"] == "reduce_lr":
                lr_logged.append(logs["learning_rate"])
                lr_after.append(model.optimizer.param_groups[0]["lr"])
            if model.stop_training:
                assert model.stop_reason == "early_stopping"
                break
        callbacks.on_train_end({})
    if case["kind"] == "early_stopping":
        return {
            "epochs_run": epochs_run,
            "stopped_epoch": cb.stopped_epoch,
            "best_epoch": cb.best_epoch,
            "restored_epoch": int(model.w.item()),
            "wait": cb.wait,
            "best": cb.best,
        }
    return {"epochs_run": epochs_run, "lr_logged": lr_logged, "lr_after": lr_after,
            "wait": cb.wait, "cooldown_counter": cb.cooldown_counter, "best": cb.best}


def _reductions(lr_logged, lr_after):
    """The epochs at which the learning rate went down."""
    return [i for i, (before, after) in enumerate(zip(lr_logged, lr_after)) if after < before]


def _same_lr_chain(ours, keras):
    # Keras stores the lr in float32 and rounds after each reduction; torch keeps a double. Each
    # reduction may add half a float32 ulp of drift, so allow one float32 epsilon per reduction.
    reductions = 0
    for i, (a, b) in enumerate(zip(ours, keras)):
        if i and b < keras[i - 1]:
            reductions += 1
        if abs(a - b) > (reductions + 1) * 2.0**-23 * abs(b):
            return False
    return len(ours) == len(keras)


def differences(case, ours, keras):
    """The answers on which fitkit and Keras disagree (empty when they agree)."""
    diffs = []
    if "lr_after" in keras:
        got, expected = (_reductions(d["lr_logged"], d["lr_after"]) for d in (ours, keras))
        if got != expected:
            diffs.append(f"lr reduced at epochs: fitkit {got} != keras {expected}")
    for key, expected in keras.items():
        got = ours[key]
        if key in ("lr_logged", "lr_after"):
            same = _same_lr_chain(got, expected)
        elif key == "best" and expected is not None and got is not None:
            same = float(got) == float(expected)
        else:
            same = got == expected
        if not same:
            diffs.append(f"{key}: fitkit {got!r} != keras {expected!r}")
    return diffs


def _load_fixture():
    with open(FIXTURE) as f:
        return json.load(f)


def test_fixture_covers_the_edge_cases():
    cases = _load_fixture()["cases"]
    es = [c for c in cases if c["kind"] == "early_stopping"]
    rlr = [c for c in cases if c["kind"] == "reduce_lr"]
    assert len(es) >= 400 and len(rlr) >= 400
    assert sum(c["keras"]["stopped_epoch"] > 0 for c in es) > 100
    assert sum(c["keras"]["restored_epoch"] != c["keras"]["epochs_run"] - 1 for c in es) > 50
    assert any(c["args"]["baseline"] is not None for c in es)
    assert any(c["args"]["start_from_epoch"] > 0 for c in es)
    assert any(None in c["values"] for c in cases)
    assert sum(c["keras"]["lr_after"][-1] < c["keras"]["lr_logged"][0] for c in rlr) > 100
    assert any(c["args"]["cooldown"] > 0 and c["args"]["min_lr"] > 0 for c in rlr)


def test_recorded_keras_answers_match_on_every_case():
    cases = _load_fixture()["cases"]
    failures = []
    for case in cases:
        diffs = differences(case, run_fitkit(case), case["keras"])
        if diffs:
            failures.append(f"{case['id']} args={case['args']} values={case['values']}: {diffs}")
    assert not failures, f"{len(failures)} of {len(cases)} cases differ:\n" + "\n".join(failures[:10])


def test_live_keras_parity():
    os.environ.setdefault("KERAS_BACKEND", "torch")
    pytest.importorskip("keras", reason="Keras 3 is not installed; the recorded fixture still checks parity")
    spec = importlib.util.spec_from_file_location("make_keras_callbacks", GENERATOR)
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    # A different seed than the fixture's, so these are cases Keras has not been asked before.
    cases = gen.generate_cases(seed=7, n_early_stopping=40, n_reduce_lr=40)
    failures = []
    for case in cases:
        diffs = differences(case, run_fitkit(case), gen.run_keras(case))
        if diffs:
            failures.append(f"{case['id']} args={case['args']} values={case['values']}: {diffs}")
    assert not failures, "\n".join(failures[:10])
