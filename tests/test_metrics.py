"""Tests for fitkit.metrics: Keras parity, sklearn agreement, streaming, resolution, containers, errors."""

import types

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score

from fitkit import metrics as M
from fitkit.compiled import MetricsContainer


# ---------------------------------------------------------------------------------------------------
# Data: integer arithmetic and one division, so the same numbers come out in any NumPy (the Keras
# constants below were computed from exactly these functions).


def frac(n, a, b, m=997):
    return ((np.arange(n) * a + b) % m + 0.5) / m


def binary_data(n=300):
    y = ((np.arange(n) * 37) % 11 < 5).astype("float32")
    p = (0.3 * y + 0.7 * frac(n, 389, 17)).astype("float32")
    w = (1.0 + (np.arange(n) % 3) / 2.0).astype("float32")
    return y, p, w


def multiclass_data(n=240, c=4):
    labels = (np.arange(n) * 7) % c
    scores = np.stack([frac(n, 211 + 13 * k, 5 * k) for k in range(c)], axis=1)
    scores = scores + 0.5 * (np.arange(c)[None, :] == labels[:, None])
    scores = (scores / scores.sum(1, keepdims=True)).astype("float32")
    return labels.astype("int64"), scores


def regression_data(n=200):
    t = (frac(n, 101, 3) * 4.0 + 0.5).astype("float32")
    p = (t + (frac(n, 353, 29) - 0.5)).astype("float32")
    return t, p


def weights(n):
    return (1.0 + (np.arange(n) % 3) / 2.0).astype("float32")


def T(x):
    return torch.as_tensor(x)


def value(metric, y_true, y_pred, sample_weight=None):
    metric.update(T(y_true), T(y_pred), sample_weight=None if sample_weight is None else T(sample_weight))
    result = metric.result()
    assert isinstance(result, torch.Tensor) and result.dim() == 0
    return float(result)


def loss(kind=None, from_logits=None):
    """Stands in for a resolved fitkit loss: only `kind` and `from_logits` are read."""
    return types.SimpleNamespace(kind=kind, from_logits=from_logits)


# ---------------------------------------------------------------------------------------------------
# Keras parity. Computed once with Keras 3.15.1 (KERAS_BACKEND=torch, /work/kvenv) from the data functions
# above: keras.metrics.<Class>().update_state(y_true, y_pred, sample_weight); result(). Binary inputs
# as (N, 1); "_w" entries use weights(n); logits = log(p / (1 - p)); multi-class y_true one-hot for the
# categorical classes; cosine similarity on 3-column stacks (see _cosine_inputs).

KERAS = {
    "binary_accuracy": 0.7200000286102295,
    "binary_accuracy_w": 0.7244444489479065,
    "precision": 0.682758629322052,
    "precision_w": 0.6857798099517822,
    "recall": 0.7226277589797974,
    "recall_w": 0.7292683124542236,
    "auc": 0.8442524671554565,
    "auc_w": 0.8474913239479065,
    "auc_logits": 0.8442524671554565,
    "auc_pr": 0.8420813083648682,
    "auc_minoring": 0.842147707939148,
    "f1_binary": 0.7021275758743286,  # Keras F1Score(threshold=0.5)
    "f1_binary_w": 0.7068557143211365,
    "sparse_categorical_accuracy": 0.6458333134651184,
    "sparse_categorical_accuracy_w": 0.6430555582046509,
    "categorical_accuracy": 0.6458333134651184,
    "sparse_top_2": 0.9166666865348816,
    "top_2": 0.9166666865348816,
    "f1_macro": 0.6466448903083801,
    "f1_macro_w": 0.6436927318572998,
    "f1_micro": 0.6458332538604736,
    "f1_weighted": 0.6466448903083801,
    "precision_onehot": 0.9803921580314636,
    "auc_onehot": 0.9030758142471313,
    "auc_multilabel": 0.9003587961196899,
    "mae": 0.24987460672855377,
    "mae_w": 0.2491447478532791,
    "mse": 0.08344715088605881,
    "mse_w": 0.08297442644834518,
    "rmse": 0.28887221217155457,
    "rmse_w": 0.28805282711982727,
    "mape": 14.294703483581543,
    "mape_w": 14.257472038269043,
    "msle": 0.011729145422577858,
    "msle_w": 0.011524297297000885,
    "logcosh": 0.04072469845414162,
    "logcosh_w": 0.040497567504644394,
    "cosine_similarity": 0.4062480628490448,
}


def _cosine_inputs():
    t, p = regression_data()
    return np.stack([t, p - 1.0, t * 0.5], 1).astype("float32"), np.stack([p, t, -t], 1).astype("float32")


def _fitkit_values():
    y, p, w = binary_data()
    y2, p2 = y[:, None], p[:, None]
    logits = np.log(p2 / (1 - p2)).astype("float32")
    labels, scores = multiclass_data()
    onehot = np.eye(4, dtype="float32")[labels]
    wm = weights(len(labels))
    t, pr = regression_data()
    t2, pr2 = t[:, None], pr[:, None]
    wr = weights(len(t))
    out = {
        "binary_accuracy": value(M.BinaryAccuracy(), y2, p2),
        "binary_accuracy_w": value(M.BinaryAccuracy(), y2, p2, w),
        "precision": value(M.Precision(), y2, p2),
        "precision_w": value(M.Precision(), y2, p2, w),
        "recall": value(M.Recall(), y2, p2),
        "recall_w": value(M.Recall(), y2, p2, w),
        "auc": value(M.AUC(), y2, p2),
        "auc_w": value(M.AUC(), y2, p2, w),
        "auc_logits": value(M.AUC(from_logits=True), y2, logits),
        "auc_pr": value(M.AUC(curve="PR"), y2, p2),
        "auc_minoring": value(M.AUC(summation_method="minoring"), y2, p2),
        "f1_binary": value(M.F1Score(average="macro"), y2, p2),  # one class: Keras's vector of one
        "f1_binary_w": value(M.F1Score(average="macro"), y2, p2, w),
        "sparse_categorical_accuracy": value(M.SparseCategoricalAccuracy(), labels, scores),
        "sparse_categorical_accuracy_w": value(M.SparseCategoricalAccuracy(), labels, scores, wm),
        "categorical_accuracy": value(M.CategoricalAccuracy(), onehot, scores),
        "sparse_top_2": value(M.SparseTopKCategoricalAccuracy(k=2), labels, scores),
        "top_2": value(M.TopKCategoricalAccuracy(k=2), onehot, scores),
        "f1_macro": value(M.F1Score(average="macro"), onehot, scores),
        "f1_macro_w": value(M.F1Score(average="macro"), onehot, scores, wm),
        "f1_micro": value(M.F1Score(average="micro"), onehot, scores),
        "f1_weighted": value(M.F1Score(average="weighted"), onehot, scores),
        "precision_onehot": value(M.Precision(), onehot, scores),
        "auc_onehot": value(M.AUC(), onehot, scores),
        "auc_multilabel": value(M.AUC(multi_label=True), onehot, scores),
        "cosine_similarity": value(M.CosineSimilarity(), *_cosine_inputs()),
    }
    for name, cls in [("mae", M.MeanAbsoluteError), ("mse", M.MeanSquaredError), ("rmse", M.RootMeanSquaredError),
                      ("mape", M.MeanAbsolutePercentageError), ("msle", M.MeanSquaredLogarithmicError),
                      ("logcosh", M.LogCoshError)]:
        out[name] = value(cls(), t2, pr2)
        out[name + "_w"] = value(cls(), t2, pr2, wr)
    return out


FITKIT = _fitkit_values()


@pytest.mark.parametrize("key", sorted(KERAS))
def test_matches_keras(key):
    assert FITKIT[key] == pytest.approx(KERAS[key], rel=1e-6, abs=2e-7)


# ---------------------------------------------------------------------------------------------------
# Names against direct computations


def test_binary_names_against_numpy_and_sklearn():
    y, p, w = binary_data()
    hard = (p > 0.5).astype("float32")
    assert value(M.get("binary_accuracy"), y, p) == pytest.approx(np.mean(hard == y))
    assert value(M.get("accuracy"), y[:, None], p[:, None]) == pytest.approx(np.mean(hard == y))
    assert value(M.get("precision"), y, p) == pytest.approx(precision_score(y, hard))
    assert value(M.get("recall"), y, p) == pytest.approx(recall_score(y, hard))
    assert value(M.get("f1"), y, p) == pytest.approx(f1_score(y, hard))
    assert value(M.get("f1_score"), y, p) == pytest.approx(f1_score(y, hard))
    assert value(M.get("precision"), y, p, w) == pytest.approx(precision_score(y, hard, sample_weight=w))
    assert value(M.get("recall"), y, p, w) == pytest.approx(recall_score(y, hard, sample_weight=w))
    assert value(M.get("f1"), y, p, w) == pytest.approx(f1_score(y, hard, sample_weight=w))


def test_auc_close_to_exact_roc_auc():
    y, p, w = binary_data()
    assert value(M.get("auc"), y, p) == pytest.approx(roc_auc_score(y, p), abs=3e-3)
    assert value(M.get("auc"), y, p, w) == pytest.approx(roc_auc_score(y, p, sample_weight=w), abs=3e-3)
    assert value(M.AUC(num_thresholds=2000), y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-3)
    assert value(M.get("auc"), np.ones(4), np.full(4, 0.7)) == 0.0  # one class only: Keras gives 0 too


def test_multiclass_names_against_numpy_and_sklearn():
    labels, scores = multiclass_data()
    onehot = np.eye(4, dtype="float32")[labels]
    predicted = scores.argmax(1)
    assert value(M.get("sparse_categorical_accuracy"), labels, scores) == pytest.approx(np.mean(predicted == labels))
    assert value(M.get("sparse_categorical_accuracy"), labels[:, None], scores) == pytest.approx(
        np.mean(predicted == labels))
    assert value(M.get("categorical_accuracy"), onehot, scores) == pytest.approx(np.mean(predicted == labels))
    top2 = np.argsort(-scores, 1)[:, :2]
    expected = np.mean((top2 == labels[:, None]).any(1))
    assert value(M.SparseTopKCategoricalAccuracy(k=2), labels, scores) == pytest.approx(expected)
    assert value(M.get("sparse_top_k_categorical_accuracy"), labels, scores) == 1.0  # k=5 >= 4 classes
    assert value(M.get("top_k_categorical_accuracy"), onehot, scores) == 1.0
    assert value(M.get("f1"), labels, scores) == pytest.approx(f1_score(labels, predicted, average="macro"))
    assert value(M.get("f1"), onehot, scores) == pytest.approx(f1_score(labels, predicted, average="macro"))
    assert value(M.F1Score(average="micro"), labels, scores) == pytest.approx(
        f1_score(labels, predicted, average="micro"))
    assert value(M.F1Score(average="weighted"), labels, scores, weights(240)) == pytest.approx(
        f1_score(labels, predicted, average="weighted", sample_weight=weights(240)))
    per_class = M.F1Score(average=None)
    per_class.update(T(labels), T(scores))
    np.testing.assert_allclose(per_class.result().numpy(), f1_score(labels, predicted, average=None), rtol=1e-6)
    # Integer labels against several columns are one-hot for precision, as in Keras with one-hot targets.
    assert value(M.get("precision"), labels, scores) == pytest.approx(KERAS["precision_onehot"], rel=1e-6)


def test_regression_names_against_numpy():
    t, p = regression_data()
    w = weights(len(t))
    err = p - t
    cases = {
        "mae": np.abs(err).mean(), "mean_absolute_error": np.abs(err).mean(),
        "mse": (err ** 2).mean(), "mean_squared_error": (err ** 2).mean(),
        "rmse": np.sqrt((err ** 2).mean()), "root_mean_squared_error": np.sqrt((err ** 2).mean()),
        "mape": 100 * np.mean(np.abs(err / t)), "msle": np.mean((np.log1p(p) - np.log1p(t)) ** 2),
        "logcosh": np.mean(np.log(np.cosh(err))),
    }
    for name, expected in cases.items():
        metric = M.get(name)
        assert metric.name == name
        assert value(metric, t, p[:, None]) == pytest.approx(expected, rel=1e-5), name  # (N,) vs (N, 1)
    assert value(M.get("mse"), t, p, w) == pytest.approx(np.sum(w * err ** 2) / w.sum(), rel=1e-6)
    assert value(M.get("rmse"), t, p, w) == pytest.approx(np.sqrt(np.sum(w * err ** 2) / w.sum()), rel=1e-6)
    a, b = _cosine_inputs()
    cos = np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert value(M.get("cosine_similarity"), a, b) == pytest.approx(cos.mean(), rel=1e-6)


def test_names_spellings_and_identity():
    assert M.get("acc").name == "acc"
    assert M.get("ACC").name == "ACC"
    assert isinstance(M.get("MeanSquaredError"), M.MeanSquaredError)
    assert M.get("MeanSquaredError").name == "MeanSquaredError"
    assert isinstance(M.get("AUC"), M.AUC)
    assert isinstance(M.get("topk"), M.Metric)
    m = M.Precision(thresholds=0.3)
    assert M.get(m) is m
    assert isinstance(M.get(M.Recall), M.Recall)
    defaults = {M.Accuracy: "accuracy", M.BinaryAccuracy: "binary_accuracy", M.AUC: "auc", M.F1Score: "f1_score",
                M.RootMeanSquaredError: "root_mean_squared_error", M.Mean: "mean", M.Precision: "precision",
                M.TopKCategoricalAccuracy: "top_k_categorical_accuracy", M.Recall: "recall"}
    for cls, name in defaults.items():
        assert cls().name == name


def test_plain_accuracy_class_is_exact_equality():
    assert value(M.Accuracy(), [1, 2, 3, 4], [1, 2, 0, 4]) == 0.75


# ---------------------------------------------------------------------------------------------------
# Streaming


def _batches(*arrays, sizes=(50, 170, 80)):
    start = 0
    for size in sizes:
        yield [a[start:start + size] for a in arrays]
        start += size


def test_precision_streams_over_uneven_batches():
    y, p, _ = binary_data()
    metric = M.get("precision")
    per_batch = []
    for yb, pb in _batches(y, p):
        metric.update(T(yb), T(pb))
        per_batch.append(precision_score(yb, pb > 0.5))
    whole = precision_score(y, p > 0.5)
    assert float(metric.result()) == pytest.approx(whole, rel=1e-6)
    assert abs(np.mean(per_batch) - whole) > 1e-3  # the streaming value is not a mean of batch values


@pytest.mark.parametrize("name", ["recall", "f1", "auc", "rmse", "mae", "accuracy", "binary_accuracy"])
def test_streaming_equals_whole_epoch(name):
    y, p, w = binary_data()
    whole, streamed = M.get(name), M.get(name)
    whole.update(T(y), T(p), sample_weight=T(w))
    for yb, pb, wb in _batches(y, p, w):
        streamed.update(T(yb), T(pb), sample_weight=T(wb))
    assert float(streamed.result()) == pytest.approx(float(whole.result()), rel=1e-6)


def test_streaming_multiclass_f1_and_auc():
    labels, scores = multiclass_data()
    for name in ("f1", "auc", "accuracy", "top_k"):
        whole, streamed = M.get(name), M.get(name)
        whole.update(T(labels), T(scores))
        for lb, sb in _batches(labels, scores, sizes=(7, 200, 33)):
            streamed.update(T(lb), T(sb))
        assert float(streamed.result()) == pytest.approx(float(whole.result()), rel=1e-6), name


def test_reset_and_empty_results():
    for name in ["accuracy", "binary_accuracy", "precision", "recall", "f1", "auc", "mae", "rmse", "top_k", "mse"]:
        metric = M.get(name)
        assert float(metric.result()) == 0.0, name  # empty: 0.0 as in Keras
        metric.update(T([1.0, 0.0, 1.0]), T([0.9, 0.2, 0.4]))
        metric.reset()
        assert float(metric.result()) == 0.0, name
        metric.update(T([1.0, 0.0]), T([0.9, 0.2]))
        fresh = M.get(name)
        fresh.update(T([1.0, 0.0]), T([0.9, 0.2]))
        assert float(metric.result()) == float(fresh.result()), name
    m = M.Mean()
    assert float(m.result()) == 0.0
    m.update(T([1.0, 3.0, 5.0, 7.0]), sample_weight=T([1.0, 1.0, 0.0, 0.0]))
    assert float(m.result()) == 2.0
    m.reset_state()
    assert float(m.result()) == 0.0


def test_state_is_lazy_float64_and_additive():
    m = M.get("mae")
    assert m.states() == {}
    m.update(T([1.0]), T([2.0]))
    states = m.states()
    assert set(states) == {"total", "count"} and all(s.dtype == torch.float64 for s in states.values())
    assert states["total"].device == torch.device("cpu")
    auc = M.get("auc")
    auc.update(T([1.0, 0.0]), T([0.8, 0.3]))
    assert auc.states()["histogram"].sum() == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_state_on_device_without_sync():
    y, p, w = (T(a).cuda() for a in binary_data())
    names = ["accuracy", "precision", "recall", "f1", "auc", "rmse", "mae"]
    built = [M.get(n, loss=loss("binary", False)) for n in names]
    for m in built:  # the first update may build things; later updates must not sync
        m.update(y, p, sample_weight=w)
    torch.cuda.set_sync_debug_mode("error")
    try:
        for m in built:
            m.update(y, p, sample_weight=w)
            result = m.result()
            assert result.device.type == "cuda"
    finally:
        torch.cuda.set_sync_debug_mode("default")


# ---------------------------------------------------------------------------------------------------
# "accuracy" resolution


def _resolved(identifier, loss_obj, y_true, y_pred):
    metric = M.get(identifier, loss=loss_obj)
    metric.update(T(y_true), T(y_pred))
    return metric.resolved, float(metric.result())


Y01 = np.array([1.0, 0.0, 1.0, 0.0], dtype="float32")
PROBS = np.array([0.7, 0.6, 0.4, 0.1], dtype="float32")  # > 0.5: 1 1 0 0 -> accuracy 0.5
LOGITS = np.array([0.2, -0.1, -0.3, -2.0], dtype="float32")  # > 0: 1 0 0 0 -> accuracy 0.75
LABELS = np.array([0, 2, 1, 2])
SCORES = np.array([[3.0, 1, 0], [0, 1, 2], [0, 1, 2], [1, 0, 2]], dtype="float32")  # argmax 0 2 2 2 -> 0.75


@pytest.mark.parametrize("kind,from_logits,y_true,y_pred,cls,threshold,expected", [
    ("binary", False, Y01, PROBS, M.BinaryAccuracy, 0.5, 0.5),
    ("binary", False, Y01[:, None], PROBS[:, None], M.BinaryAccuracy, 0.5, 0.5),
    ("binary", False, Y01, PROBS[:, None], M.BinaryAccuracy, 0.5, 0.5),
    ("binary", True, Y01, LOGITS, M.BinaryAccuracy, 0.0, 0.75),
    ("binary", True, Y01[:, None], LOGITS[:, None], M.BinaryAccuracy, 0.0, 0.75),
    ("binary", False, np.eye(3)[LABELS].astype("float32"), SCORES / 3, M.BinaryAccuracy, 0.5, 10 / 12),
    ("sparse_categorical", False, LABELS, SCORES, M.SparseCategoricalAccuracy, None, 0.75),
    ("sparse_categorical", True, LABELS[:, None], SCORES, M.SparseCategoricalAccuracy, None, 0.75),
    ("sparse_categorical", True, np.eye(3)[LABELS].astype("float32"), SCORES, M.CategoricalAccuracy, None, 0.75),
    ("categorical", False, np.eye(3)[LABELS].astype("float32"), SCORES, M.CategoricalAccuracy, None, 0.75),
    ("categorical", True, np.eye(3)[LABELS].astype("float32"), SCORES, M.CategoricalAccuracy, None, 0.75),
    ("categorical", False, LABELS, SCORES, M.SparseCategoricalAccuracy, None, 0.75),
    ("regression", None, Y01[:, None], PROBS[:, None], M.BinaryAccuracy, 0.5, 0.5),
    (None, None, Y01, PROBS, M.BinaryAccuracy, 0.5, 0.5),
    (None, None, Y01.astype("int64"), PROBS[:, None], M.BinaryAccuracy, 0.5, 0.5),
    (None, None, LABELS, SCORES, M.SparseCategoricalAccuracy, None, 0.75),
    (None, None, LABELS[:, None], SCORES, M.SparseCategoricalAccuracy, None, 0.75),
    (None, None, np.eye(3)[LABELS].astype("float32"), SCORES, M.CategoricalAccuracy, None, 0.75),
])
def test_accuracy_resolution(kind, from_logits, y_true, y_pred, cls, threshold, expected):
    for identifier in ("accuracy", "acc"):
        resolved, result = _resolved(identifier, loss(kind, from_logits), y_true, y_pred)
        assert type(resolved) is cls
        assert resolved.name == identifier
        if threshold is not None:
            assert resolved.threshold == threshold
        assert result == pytest.approx(expected)
    resolved, _ = _resolved("accuracy", None, y_true, y_pred)  # no loss at all: shapes decide
    assert resolved is not None


def test_accuracy_resolution_error_names_shapes():
    with pytest.raises(ValueError, match=r"\(4, 2\).*\(4, 3\)"):
        _resolved("accuracy", None, np.zeros((4, 2), "float32"), SCORES)


def test_top_k_resolves_from_shapes():
    resolved, _ = _resolved("top_k", None, LABELS, SCORES)
    assert type(resolved) is M.SparseTopKCategoricalAccuracy
    resolved, _ = _resolved("top_k", None, np.eye(3)[LABELS].astype("float32"), SCORES)
    assert type(resolved) is M.TopKCategoricalAccuracy


def test_logits_losses_reach_threshold_metrics():
    y, p, _ = binary_data()
    logits = np.log(p / (1 - p)).astype("float32")
    logit_loss = loss("binary", True)
    for name in ("precision", "recall", "f1", "auc", "binary_accuracy"):
        on_probs = value(M.get(name), y, p)
        on_logits = value(M.get(name, loss=logit_loss), y, logits)
        assert on_logits == pytest.approx(on_probs, abs=1e-6), name
    # Categorical logits go through a softmax, not a sigmoid.
    labels, probs = multiclass_data()
    scores = np.log(probs) + 3.0
    assert value(M.get("precision", loss=loss("sparse_categorical", True)), labels, scores) == pytest.approx(
        value(M.get("precision"), labels, probs), abs=1e-6)
    assert value(M.get("auc", loss=loss("categorical", True)), labels, scores) == pytest.approx(
        value(M.get("auc"), labels, probs), abs=1e-6)


# ---------------------------------------------------------------------------------------------------
# Sample weights


def test_sample_weights_weigh_mean_metrics():
    y = np.array([1.0, 0.0, 1.0, 1.0], "float32")
    p = np.array([0.9, 0.8, 0.2, 0.7], "float32")  # correct: 1 0 0 1
    w = np.array([3.0, 1.0, 1.0, 0.0], "float32")
    assert value(M.get("accuracy"), y, p, w) == pytest.approx(3 / 5)
    assert value(M.get("accuracy"), y[:, None], p[:, None], w[:, None]) == pytest.approx(3 / 5)
    assert value(M.get("precision"), y, p, w) == pytest.approx(3 / 4)  # tp 3, fp 1 (the 0-weight tp is gone)
    zero = M.get("mae")
    zero.update(T(y), T(p), sample_weight=T(np.zeros(4, "float32")))
    assert float(zero.result()) == 0.0
    # Per-element weights (N, C) on a (N, C) per-element metric.
    yy = np.array([[1.0, 0.0], [0.0, 0.0]], "float32")
    pp = np.array([[0.9, 0.9], [0.1, 0.1]], "float32")  # correct: [1, 0], [1, 1]
    ww = np.array([[1.0, 3.0], [1.0, 1.0]], "float32")
    assert value(M.BinaryAccuracy(), yy, pp, ww) == pytest.approx(3 / 6)


def test_bad_sample_weight_shape():
    with pytest.raises(ValueError, match="sample_weight"):
        value(M.get("precision"), np.ones(4), np.ones(4) / 2, np.ones(3))


# ---------------------------------------------------------------------------------------------------
# Foreign metric objects and callables


class FakeTorchMetric:
    """Duck-typed like torchmetrics: update(preds, target), compute(), reset(), to(device)."""

    def __init__(self):
        self.calls, self.moved_to, self.hits, self.count = [], None, 0.0, 0

    def to(self, device):
        self.moved_to = device
        return self

    def update(self, preds, target):
        self.calls.append((preds, target))
        self.hits += float(((preds > 0.5).float() == target).float().sum())
        self.count += target.numel()

    def compute(self):
        return torch.tensor(self.hits / max(self.count, 1))

    def reset(self):
        self.hits, self.count = 0.0, 0


class NamedMetric(FakeTorchMetric):
    name = "my_acc"


def test_torchmetrics_style_object():
    fake = FakeTorchMetric()
    metric = M.get(fake)
    assert isinstance(metric, M.TorchMetricWrapper) and metric.name == "fake_torch_metric"
    y_true, y_pred = T(Y01), T(PROBS[:, None])
    metric.update(y_true, y_pred)
    preds, target = fake.calls[0]
    assert preds is y_pred and target.shape == (4, 1)  # torch order, target reconciled with preds
    assert fake.moved_to == torch.device("cpu")
    assert float(metric.result()) == 0.5
    metric.reset()
    assert fake.count == 0
    assert M.get(NamedMetric()).name == "my_acc"
    with pytest.raises(ValueError, match="weighted_metrics"):
        metric.update(y_true, y_pred, sample_weight=T(np.ones(4)))


def test_plain_callables():
    def abs_error(y_true, y_pred):
        return (y_true - y_pred).abs()

    metric = M.get(abs_error)
    assert isinstance(metric, M.MeanMetricWrapper) and metric.name == "abs_error"
    t, p = regression_data()
    assert value(metric, t, p[:, None]) == pytest.approx(np.abs(t - p).mean(), rel=1e-6)

    def batch_mean_error(y_true, y_pred):  # a scalar: weighted by the batch size
        return (y_true - y_pred).abs().mean()

    metric = M.get(batch_mean_error)
    for tb, pb in _batches(t, p, sizes=(10, 150, 40)):
        metric.update(T(tb), T(pb))
    assert float(metric.result()) == pytest.approx(np.abs(t - p).mean(), rel=1e-6)

    metric = M.get(torch.nn.L1Loss())  # a torch loss module: called (input, target)
    assert metric.name == "l1_loss"
    for tb, pb in _batches(t, p, sizes=(10, 150, 40)):
        metric.update(T(tb), T(pb)[:, None])
    assert float(metric.result()) == pytest.approx(np.abs(t - p).mean(), rel=1e-6)


def test_numpy_inputs_and_user_subclasses():
    class Positives(M.Metric):
        def __init__(self, name="positives"):
            super().__init__(name)
            self.add_state("count")

        def update(self, y_true, y_pred, sample_weight=None):
            self.count += (y_pred > 0.5).sum()

        def result(self):
            return self.count.float()

    class KerasStyle(M.Metric):  # Keras method names
        def __init__(self):
            super().__init__()
            self.add_state("total")

        def update_state(self, y_true, y_pred, sample_weight=None):
            self.total += y_true.sum()

        def reset_state(self):
            super().reset_state()

        def result(self):
            return self.total * 2

    positives = Positives()
    assert float(positives.result()) == 0.0
    positives.update(Y01, PROBS)  # NumPy arrays are accepted on direct calls
    positives.update_state(Y01, PROBS)
    assert float(positives.result()) == 4.0
    positives.reset_state()
    assert float(positives.result()) == 0.0

    keras_style = KerasStyle()
    assert keras_style.name == "keras_style"
    keras_style.update(Y01, PROBS)
    assert float(keras_style.result()) == 4.0
    keras_style.reset()
    assert float(keras_style.result()) == 0.0
    container = MetricsContainer([Positives()])
    container.update(T(Y01), T(PROBS))
    assert float(container.results()["positives"]) == 2.0


# ---------------------------------------------------------------------------------------------------
# MetricsContainer


def test_container_single_output():
    c = MetricsContainer(["accuracy", "mae", "mae"], weighted_metrics=["accuracy", "auc"],
                           loss=loss("binary", False))
    assert c.names == ["accuracy", "mae", "mae_1", "weighted_accuracy", "auc"]
    y, p, w = binary_data()
    c.update(T(y), T(p[:, None]), sample_weight=T(w))
    results = c.results()
    assert list(results) == c.names
    assert all(isinstance(v, torch.Tensor) and v.dim() == 0 for v in results.values())
    hard = (p > 0.5).astype("float32")
    assert float(results["accuracy"]) == pytest.approx(np.mean(hard == y))
    assert float(results["weighted_accuracy"]) == pytest.approx(np.sum(w * (hard == y)) / w.sum())
    assert float(results["auc"]) == pytest.approx(KERAS["auc_w"], rel=1e-6)
    c.reset()
    assert all(float(v) == 0.0 for v in c.results().values())
    assert MetricsContainer(None).names == [] and MetricsContainer("mse").names == ["mse"]


def test_container_weighted_only_keeps_plain_name():
    c = MetricsContainer(None, weighted_metrics=["accuracy"])
    assert c.names == ["accuracy"]
    c.update(T(Y01), T(PROBS), sample_weight=T([1.0, 0.0, 1.0, 0.0]))
    assert float(c.results()["accuracy"]) == 0.5


def test_container_multi_output_dict_and_losses():
    c = MetricsContainer({"cls": ["accuracy"], "reg": "mae"}, weighted_metrics={"cls": ["accuracy"]},
                           loss={"cls": loss("binary", True), "reg": loss("regression", False)},
                           output_names=["cls", "reg"])
    assert c.names == ["cls_accuracy", "reg_mae", "cls_weighted_accuracy"]
    t, p = regression_data(4)
    y_true = {"cls": T(Y01), "reg": T(t)}
    c.update(y_true, {"cls": T(LOGITS), "reg": T(p)}, sample_weight=T([0.0, 1.0, 1.0, 0.0]))
    r = c.results()
    assert float(r["cls_accuracy"]) == 0.75  # logits: threshold 0 from the loss of that output
    assert float(r["cls_weighted_accuracy"]) == 0.5
    assert float(r["reg_mae"]) == pytest.approx(np.abs(t - p).mean())
    c.update([T(Y01), T(t)], [T(LOGITS), T(p)])  # lists in output order work too


def test_container_list_on_several_outputs_gives_one_entry_per_output_as_keras():
    # Keras 3's CompileMetrics: a list as long as the outputs is one entry (a metric or a list) per output.
    c = MetricsContainer(["mae", M.MeanSquaredError(name="mse")], output_names=["a", "b"])
    assert c.names == ["a_mae", "b_mse"]
    c.update([T([1.0, 2.0]), T([0.0, 0.0])], [T([1.0, 0.0]), T([1.0, 1.0])])
    r = c.results()
    assert [float(r[k]) for k in c.names] == [1.0, 1.0]
    both = M.MeanSquaredError(name="mse")
    c = MetricsContainer([["mae", both], [both]], output_names=["a", "b"])
    assert c.names == ["a_mae", "a_mse", "b_mse"]
    assert c.metrics[1] is not c.metrics[2]  # one object on two outputs: separate states
    with pytest.raises(ValueError, match=r"^metrics: got a list of 1 entries for a model with 2 outputs"):
        MetricsContainer(["mae"], output_names=["a", "b"])


def test_container_list_of_lists_and_inferred_outputs():
    c = MetricsContainer([["mae"], ["mse", "rmse"]])
    assert c.names == []  # outputs only known from the first batch
    c.update([T([1.0]), T([2.0])], [T([0.0]), T([0.0])], sample_weight=[T([1.0])])
    assert c.names == ["output_1_mae", "output_2_mse", "output_2_rmse"]
    assert float(c.results()["output_2_mse"]) == 4.0
    d = MetricsContainer(["mse", "mae"])
    # dict outputs take a list's entries in sorted key order, as Keras flattens a dict
    d.update({"y": T([3.0]), "x": T([1.0])}, {"y": T([0.0]), "x": T([0.0])})
    assert d.names == ["y_mae", "x_mse"]
    assert float(d.results()["y_mae"]) == 3.0 and float(d.results()["x_mse"]) == 1.0
    e = MetricsContainer(["mae"])
    with pytest.raises(ValueError, match=r"^metrics: got a list of 1 entries for a model with 2 outputs"):
        e.update({"x": T([1.0]), "y": T([3.0])}, {"x": T([0.0]), "y": T([0.0])})


def test_container_per_output_sample_weights():
    c = MetricsContainer(None, weighted_metrics=["mae", "mae"], output_names=["a", "b"])
    y = [T([1.0, 1.0]), T([1.0, 1.0])]
    p = [T([0.0, 1.0]), T([0.0, 1.0])]
    c.update(y, p, sample_weight={"a": T([1.0, 0.0]), "b": T([0.0, 1.0])})
    assert [float(v) for v in c.results().values()] == [1.0, 0.0]


# ---------------------------------------------------------------------------------------------------
# Errors


def test_unknown_name_errors():
    with pytest.raises(ValueError, match=r"`metrics`.*'nope'.*accuracy"):
        M.get("nope")
    with pytest.raises(ValueError, match=r"`weighted_metrics`.*'bogus'"):
        MetricsContainer(["mae"], weighted_metrics=["bogus"])
    with pytest.raises(TypeError, match=r"42 in `metrics`"):
        M.get(42)
    with pytest.raises(TypeError, match="metrics"):
        M.get(dict)


def test_argument_errors():
    with pytest.raises(ValueError, match=r"thresholds.*1\.5"):
        M.Precision(thresholds=1.5)
    with pytest.raises(ValueError, match=r"num_thresholds.*1"):
        M.AUC(num_thresholds=1)
    with pytest.raises(ValueError, match=r"average.*'mean'"):
        M.F1Score(average="mean")
    with pytest.raises(ValueError, match=r"curve.*'XY'"):
        M.AUC(curve="XY")
    with pytest.raises(ValueError, match=r"`metrics`.*\['c'\]"):
        MetricsContainer({"c": ["mae"]}, output_names=["a", "b"])
    with pytest.raises(ValueError, match=r"metrics: got a list of 3 entries for a model with 2 outputs"):
        MetricsContainer([["mae"], ["mae"], ["mse"]], output_names=["a", "b"])
    with pytest.raises(ValueError, match=r"y_true.*\(4, 3\).*\(4, 2\)"):
        value(M.SparseCategoricalAccuracy(), np.zeros((4, 3)), np.zeros((4, 2), "float32"))
    with pytest.raises(ValueError, match=r"precision.*\(4, 3\).*\(4, 2\)"):
        value(M.Precision(), np.zeros((4, 3)), np.zeros((4, 2), "float32"))
    c = MetricsContainer(["mae", "mae"], output_names=["a", "b"])
    with pytest.raises(ValueError, match=r"y_pred.*\['b'\]"):
        c.update({"a": T([1.0]), "b": T([1.0])}, {"a": T([1.0])})


def test_outputs_with_a_graph_do_not_leak_into_states():
    p = torch.tensor([0.2, 0.9], requires_grad=True) * 1.0
    for name in ("mae", "precision", "auc", "f1", "accuracy"):
        metric = M.get(name)
        metric.update(T([0.0, 1.0]), p)
        assert not metric.result().requires_grad, name
        assert not any(s.requires_grad for s in metric.states().values()), name


def test_an_unknown_metric_name_suggests_the_closest_one():
    from fitkit.metrics import get as get_metric

    for typo, known in (("accuray", "accuracy"), ("precison", "precision"), ("mean_absolute_eror",
                                                                             "mean_absolute_error")):
        with pytest.raises(ValueError, match=rf"`metrics`: '{typo}' \(did you mean '{known}'\?\)"):
            get_metric(typo)
    with pytest.raises(ValueError, match=r"'qqqq'\. Accepted names"):
        get_metric("qqqq")
