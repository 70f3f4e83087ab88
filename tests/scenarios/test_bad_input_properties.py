"""Property-based: whatever a careless user passes to ``fit``, it trains and returns a History consistent with
its epochs, or raises one of fitkit's clear errors with the model untouched. Never a raw internal stack,
never a silent broadcast of targets, never labels the loss cannot take.

Hypothesis draws the arguments (epochs, initial_epoch, batch_size, validation_split, shuffle, class_weight),
the data (samples, features, target shapes, dtypes and values) and the input form (NumPy, tensors, a
TensorDataset, a Dataset, a DataLoader, a generator), for a one-layer model and the common losses. An
oracle written here, independently of fitkit, says whether the targets fit the loss; ``_valid_arguments``
whether the rest is valid: both right means fit must train, either wrong that it must raise. The
examples are bounded (``max_examples``) and drawn the same way on every run (``derandomize``), so the
file runs in well under a minute and fails, when it does, on every machine alike.
"""

import re
import warnings

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import fitkit

# fitkit's style: "argument: got ...; expected ..." (several arguments: "x, y and sample_weight: ...").
CLEAR = re.compile(r"^[a-z_]+(, [a-z_]+)*( and [a-z_]+)?: \S")
FORMS = ["numpy", "torch", "tensor_dataset", "dataset", "dataloader", "generator"]
IN_MEMORY = ("numpy", "torch", "tensor_dataset")
LOSSES = {  # name -> (factory, kind): "dense" compares element-wise, "binary" too with targets in [0, 1]
    "mse": (lambda: "mse", "dense"),
    "MSELoss": (lambda: nn.MSELoss(), "dense"),
    "huber": (lambda: "huber", "dense"),
    "binary_crossentropy": (lambda: fitkit.losses.BinaryCrossentropy(from_logits=True), "binary"),
    "BCEWithLogitsLoss": (lambda: nn.BCEWithLogitsLoss(), "binary"),
    "CrossEntropyLoss": (lambda: nn.CrossEntropyLoss(), "torch_sparse"),
    "sparse_categorical_crossentropy": (lambda: fitkit.losses.SparseCategoricalCrossentropy(from_logits=True),
                                        "keras_sparse"),
}
Y_SHAPES = ["n", "n1", "n_units", "n3", "n21", "n11"]
Y_VALUES = ["labels", "labels_out_of_range", "negative_label", "fractional", "unit_floats", "normal_floats"]


def _y(rng, n, units, shape, values, dtype_int):
    dims = {"n": (n,), "n1": (n, 1), "n_units": (n, units), "n3": (n, 3), "n21": (n, 2, 1), "n11": (n, 1, 1)}[shape]
    if values == "labels":
        y = rng.integers(0, units if units > 1 else 2, size=dims)
    elif values == "labels_out_of_range":
        y = rng.integers(0, 2, size=dims)
        y.reshape(-1)[:1] = units + 2  # in the first row: the first batch of every form holds it
    elif values == "negative_label":
        y = rng.integers(0, 2, size=dims)
        y.reshape(-1)[:1] = -1
    elif values == "fractional":
        y = np.full(dims, 0.5)
    elif values == "unit_floats":
        y = rng.uniform(0.0, 1.0, size=dims)
    else:
        y = rng.normal(size=dims) * 3.0
    if values.startswith("labels") or values == "negative_label":
        return y.astype(np.int64 if dtype_int else np.float32)
    return y.astype(np.float32)


def _targets_fit(kind, units, y, values=True):
    """The oracle: whether ``y`` (all of it) fits a loss of ``kind`` against outputs of shape (n, units);
    ``values=False`` asks about the shapes alone."""
    n = y.shape[0]
    out = (n, units)
    if kind in ("torch_sparse", "keras_sparse"):
        if units == 1 and values:
            return False  # a multi-class loss needs more than one unit
        if kind == "torch_sparse" and y.shape == out:  # class probabilities
            return not values or bool(((y >= 0) & (y <= 1)).all())
        if y.shape not in ((n,), (n, 1)):
            return False
        return not values or bool((y == np.trunc(y)).all() and (y >= 0).all() and (y < units).all())
    shape = y.shape
    if len(shape) == len(out) - 1 and out[-1] == 1:
        shape = shape + (1,)
    elif len(shape) == len(out) + 1 and shape[-1] == 1:
        shape = shape[:-1]
    if shape != out:
        return False
    return kind == "dense" or not values or bool(((y >= 0) & (y <= 1)).all())


def _data_in(form, x, y, batch_size):
    tx, ty = torch.as_tensor(x), torch.as_tensor(y)
    bs = batch_size if isinstance(batch_size, int) and batch_size > 0 else 4
    if form == "numpy":
        return (x, y)
    if form == "torch":
        return (tx, ty)
    if form == "tensor_dataset":
        return (torch.utils.data.TensorDataset(tx, ty),)

    class Plain(torch.utils.data.Dataset):
        def __len__(self):
            return len(tx)

        def __getitem__(self, i):
            return tx[i], ty[i]

    if form == "dataset":
        return (Plain(),)
    if form == "dataloader":
        return (torch.utils.data.DataLoader(Plain(), batch_size=bs),)
    return ((tx[i:i + bs], ty[i:i + bs]) for i in range(0, len(tx), bs)),


def _valid_arguments(form, n, kw, y):
    """Whether fit's other arguments are valid for this form and number of samples (the oracle's other half)."""
    if n == 0 or kw["epochs"] < 0 or kw["initial_epoch"] < 0 or not isinstance(kw["shuffle"], bool):
        return False
    bs = kw["batch_size"]
    if bs is not None and (bs < 1 or form == "dataloader"):
        return False
    split = kw["validation_split"]
    if not 0.0 <= split < 1.0:
        return False
    weights = kw["class_weight"]
    if weights is not None and (not weights or min(weights) < 0 or y.ndim > 2):
        return False  # class weights need labels (N,), (N, 1) or one-hot (N, C), as in Keras
    if split:
        if form not in IN_MEMORY:
            return False
        at = int(np.floor(n * (1.0 - split)))
        if at == 0 or at == n:
            return False
    return True


@st.composite
def fit_cases(draw):
    n = draw(st.integers(0, 12))
    units = draw(st.sampled_from([1, 2, 3]))
    loss = draw(st.sampled_from(sorted(LOSSES)))
    return {
        "n": n, "d": draw(st.integers(1, 3)), "units": units, "loss": loss,
        "y_shape": draw(st.sampled_from(Y_SHAPES)), "y_values": draw(st.sampled_from(Y_VALUES)),
        "y_int": draw(st.booleans()), "x_dtype": draw(st.sampled_from(["float32", "float64"])),
        "form": draw(st.sampled_from(FORMS)), "seed": draw(st.integers(0, 2**16)),
        "fit": {
            "epochs": draw(st.integers(-1, 3)), "initial_epoch": draw(st.integers(-1, 2)),
            "batch_size": draw(st.one_of(st.none(), st.integers(-1, 5))),
            "validation_split": draw(st.sampled_from([0.0, 0.0, 0.25, 0.5, 1.0, -0.1])),
            "shuffle": draw(st.sampled_from([True, True, False, "yes"])),
            "class_weight": draw(st.one_of(st.none(), st.none(), st.dictionaries(
                st.integers(-1, 3), st.floats(0.0, 3.0), max_size=3))),
        },
    }


def _snapshot(model):
    return ({k: v.clone() for k, v in model.state_dict().items()}, model.optimizer.state_dict(),
            model.training_state.epoch)


def _untouched(model, snapshot):
    weights, optimizer, epoch = snapshot
    return all(torch.equal(v, model.state_dict()[k]) for k, v in weights.items()) and \
        model.optimizer.state_dict() == optimizer and model.training_state.epoch == epoch


@settings(max_examples=200, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(fit_cases())
def test_fit_trains_consistently_or_raises_a_clear_error_with_the_model_untouched(case):
    rng = np.random.default_rng(case["seed"])
    n, units = case["n"], case["units"]
    x = rng.normal(size=(n, case["d"])).astype(case["x_dtype"])
    y = _y(rng, n, units, case["y_shape"], case["y_values"], case["y_int"])
    make_loss, kind = LOSSES[case["loss"]]
    torch.manual_seed(case["seed"])
    model = fitkit.Sequential(nn.Linear(case["d"], units))
    model.compile(optimizer="sgd", loss=make_loss())
    kw = dict(case["fit"])
    form = case["form"]
    args = _data_in(form, x, y, kw["batch_size"])
    fits = n > 0 and _targets_fit(kind, units, y)
    valid = _valid_arguments(form, n, kw, y)
    if kw["validation_split"] and valid and fits and form in IN_MEMORY:
        at = int(np.floor(n * (1.0 - kw["validation_split"])))
        fits = _targets_fit(kind, units, y[:at]) and _targets_fit(kind, units, y[at:])
    snapshot = _snapshot(model)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # probabilities-vs-logits and NaN advice are warnings, not errors
            history = model.fit(*args, verbose=0, **kw)
    except (ValueError, TypeError) as exc:
        assert CLEAR.match(str(exc)), f"not a clear error: {type(exc).__name__}: {exc}"
        assert _untouched(model, snapshot), f"the model changed before: {exc}"
        assert not (valid and fits), f"refused valid input: {exc}"
        return
    except RuntimeError as exc:
        # float64 tensors reach the float32 model as they are (NumPy float64 is cast, as in Keras): torch's
        # error, its type kept, with fitkit's note naming what fit passed, before anything changed.
        notes = "\n".join(getattr(exc, "__notes__", []))
        assert "fit passed forward(x) with x = a float64 tensor" in notes, f"raw error: {exc}"
        assert form != "numpy" and case["x_dtype"] == "float64" and _untouched(model, snapshot)
        return
    # Trained: the arguments and the targets were valid, and the History says what ran.
    assert valid and fits, f"trained on {case}: a silent broadcast or bad labels"
    ran = list(range(kw["initial_epoch"], kw["epochs"]))
    assert history.epoch == ran and model.training_state.epoch == (ran[-1] + 1 if ran else 0)
    assert all(len(values) == len(ran) for values in history.history.values())
    assert all(np.isfinite(history.history.get("loss", [])))


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(st.sampled_from(FORMS), st.sampled_from(sorted(LOSSES)), st.sampled_from(Y_SHAPES),
       st.sampled_from(Y_VALUES), st.integers(1, 3), st.integers(0, 2**16))
def test_evaluate_scores_fitting_targets_and_refuses_the_others(form, loss, y_shape, y_values, units, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(9, 2)).astype(np.float32)
    y = _y(rng, 9, units, y_shape, y_values, True)
    make_loss, kind = LOSSES[loss]
    model = fitkit.Sequential(nn.Linear(2, units))
    model.compile(optimizer="sgd", loss=make_loss())
    shape_ok = _targets_fit(kind, units, y, values=False)
    try:
        # evaluate makes no preflight: only the shape check every loss call makes (labels are the step's).
        result = model.evaluate(*_data_in(form, x, y, None), verbose=0)
    except (ValueError, TypeError) as exc:
        assert CLEAR.match(str(exc)) and not shape_ok, f"{type(exc).__name__}: {exc}"
        return
    except (IndexError, RuntimeError):
        # torch's own refusal of labels out of range in an evaluation: only for labels, never shapes
        assert shape_ok and not _targets_fit(kind, units, y)
        return
    assert shape_ok and isinstance(result, float)
