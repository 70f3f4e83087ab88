"""fitkit reproduces Keras 3's own fit/evaluate/predict numbers, to 1e-5, from the same initial weights.

The reference numbers come from ``tests/fixtures/keras_parity.json``, written by Keras itself
(``tests/fixtures/make_keras_parity.py``); Keras is not imported here. Every case trains with SGD and
``shuffle=False`` so the batches are the same; what it checks is Keras's semantics: the epoch ``loss``
as the running mean over batches weighted by batch size, sample and class weights, the
``validation_split`` rule, the loss's clipping of probabilities, and the metric resolved for "accuracy".
"""

import functools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

FIXTURE = Path(__file__).parent.parent / "fixtures" / "keras_parity.json"
DOC = json.loads(FIXTURE.read_text())
CASES = DOC["cases"]
ATOL = 1e-5

ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "softmax": lambda: nn.Softmax(dim=-1)}


def _arrays(case):
    return {k: np.asarray(v, dtype=case["data_dtypes"][k]) for k, v in case["data"].items()}


def _keras_kernels_to_torch(weights):
    """Keras Dense (kernel (in, out), bias) pairs -> torch Linear (weight (out, in), bias)."""
    return [np.asarray(w, dtype=np.float32).T if np.ndim(w) == 2 else np.asarray(w, dtype=np.float32)
            for w in weights]


def _build(case):
    import fitkit

    weights = _keras_kernels_to_torch(case["initial_weights"])
    modules = []
    for i, layer in enumerate(case["layers"]):
        weight, bias = weights[2 * i], weights[2 * i + 1]
        linear = nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(weight))
            linear.bias.copy_(torch.from_numpy(bias))
        modules.append(linear)
        if layer["activation"] is not None:
            modules.append(ACTIVATIONS[layer["activation"]]())
    model = fitkit.Sequential(*modules)
    config = case["compile"]["optimizer"]["config"]
    model.compile(
        optimizer=fitkit.optimizers.SGD(learning_rate=config["learning_rate"], momentum=config["momentum"]),
        loss=case["compile"]["loss"],
        metrics=list(case["compile"]["metrics"]),
    )
    return model


def _validation(case, data):
    """(x_val, y_val, sw_val or None): the tail of x for validation_split, else the given arrays."""
    if case["uses_validation_data"]:
        return data["x_val"], data["y_val"], data.get("sw_val")
    split_at = case["validation_split_at"]
    return data["x"][split_at:], data["y"][split_at:], None


def _fit_kwargs(case, data):
    kwargs = dict(case["fit_kwargs"], verbose=0, shuffle=False)
    if "sample_weight" in data:
        kwargs["sample_weight"] = data["sample_weight"]
    if case["class_weight"] is not None:
        kwargs["class_weight"] = {int(k): v for k, v in case["class_weight"].items()}
    if case["uses_validation_data"]:
        x_val, y_val, sw_val = _validation(case, data)
        kwargs["validation_data"] = (x_val, y_val) if sw_val is None else (x_val, y_val, sw_val)
    return kwargs


@functools.lru_cache(maxsize=None)
def _trained(name):
    """(model, history, data) after fitting case ``name`` once; the tests below only read them."""
    case = CASES[name]
    torch.manual_seed(0)  # nothing here should draw random numbers; this keeps a failure reproducible
    data = _arrays(case)
    model = _build(case)
    history = model.fit(data["x"], data["y"], **_fit_kwargs(case, data))
    return model, history, data


def _close(actual, expected, what):
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape}, Keras has {expected.shape}"
    np.testing.assert_allclose(actual, expected, rtol=0, atol=ATOL, err_msg=what)


# --- the fixture itself (no fitkit needed) -------------------------------------------------------------


def test_fixture_is_small_and_complete():
    assert FIXTURE.stat().st_size < 300_000
    assert DOC["backend"] == "torch" and DOC["floatx"] == "float32"
    assert set(CASES) >= {"binary", "multiclass_sample_weight", "regression_momentum", "binary_class_weight"}
    for name, case in CASES.items():
        epochs = case["fit_kwargs"]["epochs"]
        assert case["history_epoch"] == list(range(epochs)), name
        assert all(len(v) == epochs for v in case["history"].values()), name
        metric_keys = {"loss", *case["compile"]["metrics"]}
        assert set(case["history"]) == metric_keys | {"val_" + k for k in metric_keys}, name
        assert set(case["evaluate"]) == metric_keys, name
        assert all(np.isfinite(v).all() for v in case["history"].values()), name


def test_fixture_validation_split_is_keras_floor_rule():
    import math

    for case in CASES.values():
        split = case["fit_kwargs"].get("validation_split")
        if split:
            n = len(case["data"]["x"])
            assert case["validation_split_at"] == int(math.floor(n * (1.0 - split)))


# --- fitkit against Keras ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CASES))
def test_history_matches_keras(name):
    case = CASES[name]
    _, history, _ = _trained(name)
    for key, expected in case["history"].items():
        assert key in history.history, f"{name}: Keras logs {key!r}; fitkit has {sorted(history.history)}"
        _close(history.history[key], expected, f"{name}: history[{key!r}]")
    assert list(history.epoch) == case["history_epoch"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_learning_rate_is_kept_on_the_history_not_in_the_logs(name):
    # Keras 3 logs learning_rate only with ReduceLROnPlateau and friends: the keys are exactly Keras's, and
    # fitkit keeps each epoch's rate as History.learning_rates.
    case = CASES[name]
    _, history, _ = _trained(name)
    lr = case["compile"]["optimizer"]["config"]["learning_rate"]
    assert set(history.history) == set(case["history"])
    np.testing.assert_allclose(history.learning_rates, [lr] * case["fit_kwargs"]["epochs"], rtol=1e-6)


@pytest.mark.parametrize("name", sorted(CASES))
def test_history_params_match_keras(name):
    case = CASES[name]
    _, history, _ = _trained(name)
    for key in ("epochs", "steps", "verbose"):
        assert history.params[key] == case["history_params"][key], f"{name}: params[{key!r}]"


@pytest.mark.parametrize("name", sorted(CASES))
def test_final_weights_match_keras(name):
    # When the history drifts, this says whether the training itself drifted or only the logging.
    case = CASES[name]
    model, _, _ = _trained(name)
    expected = _keras_kernels_to_torch(case["final_weights"])
    actual = model.get_weights()
    assert len(actual) == len(expected)
    for i, (a, e) in enumerate(zip(actual, expected)):
        _close(a, e, f"{name}: final weight {i}")


@pytest.mark.parametrize("name", sorted(CASES))
def test_evaluate_matches_keras(name):
    case = CASES[name]
    model, _, data = _trained(name)
    x_val, y_val, sw_val = _validation(case, data)
    result = model.evaluate(x_val, y_val, sample_weight=sw_val, verbose=0, return_dict=True,
                            **case["evaluate_kwargs"])
    for key, expected in case["evaluate"].items():
        assert key in result, f"{name}: Keras's evaluate has {key!r}; fitkit's has {sorted(result)}"
        _close(result[key], expected, f"{name}: evaluate[{key!r}]")


@pytest.mark.parametrize("name", sorted(CASES))
def test_predict_matches_keras(name):
    case = CASES[name]
    model, _, data = _trained(name)
    x_val, _, _ = _validation(case, data)
    predictions = model.predict(x_val[:5], verbose=0)
    assert isinstance(predictions, np.ndarray)  # NumPy in, NumPy out
    _close(predictions, case["predict_first5_val"], f"{name}: predict")
