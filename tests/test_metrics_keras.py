"""Every class and function of Keras 3's keras.metrics, against the numbers Keras itself computed.

tests/fixtures/keras_metrics.json was written once by tests/fixtures/make_keras_metrics.py in a separate
Keras environment (Keras is never a fitkit dependency): the data, each metric's arguments, and Keras's
result. Here fitkit's metric of the same name, built with the same arguments, streams the same batches.
Keras accumulates in float32 and fitkit in float64, so the results agree to float32 precision: a
relative 1e-6, or 1e-6 absolute for a result near 0.
"""

import json
import re
from pathlib import Path

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

import fitkit
import fitkit.metrics as M
from fitkit import targets

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "keras_metrics.json").read_text())
DATA = {name: np.asarray(values, dtype=np.float32 if isinstance(np.asarray(values).flat[0].item(), float) else None)
        for name, values in FIXTURE["data"].items()}
CUTS = FIXTURE["cuts"]


def tensor(name):
    return None if name is None else torch.as_tensor(DATA[name])


def batches(*names):
    arrays = [tensor(n) for n in names]
    edges = [0, *CUTS, len(arrays[0])]
    return [[None if a is None else a[i:j] for a in arrays] for i, j in zip(edges[:-1], edges[1:])]


def build(case):
    kwargs = dict(case["kwargs"])
    if "fn" in kwargs:
        kwargs["fn"] = getattr(M, kwargs["fn"])
    return getattr(M, case["class"])(**kwargs)


def close(actual, expected):
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64),
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("case", FIXTURE["classes"], ids=lambda c: c["name"])
def test_class_streams_to_the_keras_result(case):
    metric = build(case)
    if "values" in case:
        for values, weight in batches(case["values"], case["sample_weight"]):
            metric.update(values, sample_weight=weight)
    else:
        for y_true, y_pred, weight in batches(case["y_true"], case["y_pred"], case["sample_weight"]):
            metric.update_state(y_true, y_pred, sample_weight=weight)
    result = metric.result()
    assert isinstance(result, torch.Tensor)
    assert result.shape == np.shape(case["result"])
    close(result, case["result"])


@pytest.mark.parametrize("case", FIXTURE["functions"], ids=lambda c: c["name"])
def test_function_gives_the_keras_values_per_sample(case):
    values = getattr(M, case["function"])(tensor(case["y_true"]), tensor(case["y_pred"]), **case["kwargs"])
    assert values.shape == np.shape(case["result"])
    close(values, case["result"])


def test_every_keras_class_and_function_is_in_fitkit_and_has_a_case():
    covered = {c["class"] for c in FIXTURE["classes"]} | {c["function"] for c in FIXTURE["functions"]}
    assert set(FIXTURE["keras_names"]) <= covered
    assert all(name in M.__all__ for name in FIXTURE["keras_names"])


@pytest.mark.parametrize("case", FIXTURE["to_categorical"], ids=lambda c: str(c["x"]))
def test_to_categorical_as_keras(case):
    out = targets.to_categorical(case["x"], num_classes=case["num_classes"])
    assert fitkit.utils.to_categorical is targets.to_categorical  # Keras's public name
    assert isinstance(out, np.ndarray) and str(out.dtype) == case["dtype"]
    assert out.tolist() == case["result"]


# ----- states are sums: two processes' states added give the result of all the data -----

def _stream(metric, case, which):
    names = [case["values"], case["sample_weight"]] if "values" in case else \
        [case["y_true"], case["y_pred"], case["sample_weight"]]
    for i, batch in enumerate(batches(*names)):
        if i in which:
            if "values" in case:
                metric.update(batch[0], sample_weight=batch[1])
            else:
                metric.update(*batch[:2], sample_weight=batch[2])


@pytest.mark.parametrize("case", FIXTURE["classes"], ids=lambda c: c["name"])
def test_states_of_two_ranks_add_up_to_the_keras_result(case):
    # What the distributed run does: each rank updates with its own batches, the states are all-reduced
    # with SUM before result(). Batches 0 and 2 on one rank, batch 1 on the other.
    rank0, rank1 = build(case), build(case)
    _stream(rank0, case, {0, 2})
    _stream(rank1, case, {1})
    states0, states1 = rank0.states(), rank1.states()
    assert states0 and states0.keys() == states1.keys()
    for name, value in states0.items():
        assert value.dtype == torch.float64, name
        value.add_(states1[name])
    close(rank0.result(), case["result"])


@pytest.mark.parametrize("case", FIXTURE["classes"], ids=lambda c: c["name"])
def test_reset_forgets_and_an_empty_metric_gives_zero(case):
    metric = build(case)
    assert np.all(np.asarray(metric.result()) == 0.0)
    _stream(metric, case, {1})
    metric.reset_state()
    _stream(metric, case, {0, 1, 2})
    close(metric.result(), case["result"])


# ----- on a GPU: the same numbers, states on the device, no host sync in an update -----

@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device: metric states on the GPU")
def test_on_cuda_the_same_results_without_a_sync_per_update():
    for case in FIXTURE["classes"]:
        _same_on_cuda_without_sync(case)


def _same_on_cuda_without_sync(case):
    metric = build(case)
    names = [case["values"], case["sample_weight"]] if "values" in case else \
        [case["y_true"], case["y_pred"], case["sample_weight"]]
    on_gpu = [[None if a is None else a.cuda() for a in batch] for batch in batches(*names)]

    def update(batch):
        if "values" in case:
            metric.update(batch[0], sample_weight=batch[1])
        else:
            metric.update(*batch[:2], sample_weight=batch[2])

    update(on_gpu[0])  # the first update makes the states (and caches) on the device
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for batch in on_gpu[1:]:
            update(batch)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert all(state.device.type == "cuda" for state in metric.states().values())
    close(metric.result().cpu(), case["result"])


# ----- by name in compile, as Keras's metrics.get resolves them -----

# Every key of Keras's keras.metrics ALL_OBJECTS_DICT: class names, their snake_case and the short names.
KERAS_NAMES = {
    "BinaryCrossentropy": M.BinaryCrossentropy, "binary_crossentropy": M.BinaryCrossentropy,
    "bce": M.BinaryCrossentropy, "BCE": M.BinaryCrossentropy,
    "CategoricalCrossentropy": M.CategoricalCrossentropy, "categorical_crossentropy": M.CategoricalCrossentropy,
    "SparseCategoricalCrossentropy": M.SparseCategoricalCrossentropy,
    "sparse_categorical_crossentropy": M.SparseCategoricalCrossentropy,
    "KLDivergence": M.KLDivergence, "kl_divergence": M.KLDivergence, "Poisson": M.Poisson, "poisson": M.Poisson,
    "Hinge": M.Hinge, "hinge": M.Hinge, "SquaredHinge": M.SquaredHinge, "squared_hinge": M.SquaredHinge,
    "CategoricalHinge": M.CategoricalHinge, "categorical_hinge": M.CategoricalHinge,
    "TruePositives": M.TruePositives, "true_positives": M.TruePositives,
    "FalsePositives": M.FalsePositives, "false_positives": M.FalsePositives,
    "TrueNegatives": M.TrueNegatives, "true_negatives": M.TrueNegatives,
    "FalseNegatives": M.FalseNegatives, "false_negatives": M.FalseNegatives,
    "R2Score": M.R2Score, "r2_score": M.R2Score, "FBetaScore": M.FBetaScore, "f_beta_score": M.FBetaScore,
    "F1Score": M.F1Score, "f1_score": M.F1Score, "BinaryIoU": M.BinaryIoU, "binary_io_u": M.BinaryIoU,
    "PearsonCorrelation": M.PearsonCorrelation, "pearson_correlation": M.PearsonCorrelation,
    "ConcordanceCorrelation": M.ConcordanceCorrelation, "concordance_correlation": M.ConcordanceCorrelation,
    "LogCoshError": M.LogCoshError, "log_cosh_error": M.LogCoshError, "AUC": M.AUC, "auc": M.AUC,
    "MSE": M.MeanSquaredError, "MAE": M.MeanAbsoluteError, "MAPE": M.MeanAbsolutePercentageError,
    "MSLE": M.MeanSquaredLogarithmicError, "RootMeanSquaredError": M.RootMeanSquaredError,
    "Precision": M.Precision, "Recall": M.Recall, "CosineSimilarity": M.CosineSimilarity,
    "TopKCategoricalAccuracy": M.TopKCategoricalAccuracy,
}


@pytest.mark.parametrize("name", sorted(KERAS_NAMES))
def test_keras_metric_names_resolve_to_their_class_named_as_given(name):
    metric = M.get(name)
    assert type(metric) is KERAS_NAMES[name] and metric.name == name


@pytest.mark.parametrize("name, cls, example", [
    ("IoU", "IoU", "num_classes=3, target_class_ids=[0]"), ("io_u", "IoU", "target_class_ids"),
    ("mean_io_u", "MeanIoU", "num_classes=3"), ("OneHotIoU", "OneHotIoU", "target_class_ids"),
    ("one_hot_mean_io_u", "OneHotMeanIoU", "num_classes"), ("precision_at_recall", "PrecisionAtRecall", "recall=0.8"),
    ("RecallAtPrecision", "RecallAtPrecision", "precision=0.8"),
    ("sensitivity_at_specificity", "SensitivityAtSpecificity", "specificity=0.9"),
    ("SpecificityAtSensitivity", "SpecificityAtSensitivity", "sensitivity=0.9"),
])
def test_names_of_metrics_that_need_arguments_say_which(name, cls, example):
    # Keras's metrics.get would call the class without its required arguments (a bare TypeError).
    with pytest.raises(TypeError, match=rf"{name!r}: fitkit.metrics.{cls} needs .*{re.escape(example)}"):
        M.get(name)
    with pytest.raises(TypeError, match=rf"`metrics` got the class {cls}: fitkit.metrics.{cls} needs"):
        M.get(getattr(M, cls))


@pytest.mark.parametrize("name", ["mean", "Sum"])
def test_mean_and_sum_by_name_explain_that_they_take_values(name):
    with pytest.raises(TypeError, match="sums or averages values, not \\(y_true, y_pred\\)"):
        M.get(name)


def test_string_crossentropies_and_f_scores_follow_the_loss():
    logits_loss = SimpleNamespace(kind="binary", from_logits=True)
    assert M.get("binary_crossentropy", loss=logits_loss).from_logits is True
    assert M.get("binary_crossentropy").from_logits is False
    fbeta = M.get("fbeta_score")
    assert type(fbeta) is M.FBetaScore and fbeta.average == "macro" and fbeta.beta == 1.0
    assert M.get("f1_score").average == "macro" and M.F1Score().average is None  # the class keeps Keras's default


def test_new_metrics_in_fit_log_what_they_compute_on_the_predictions():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 5)).astype(np.float32)
    y = (x[:, 0] + 0.5 * rng.normal(size=96) > 0).astype(np.float32)
    fitkit.set_seed(0)
    model = fitkit.Sequential(nn.Linear(5, 1), nn.Sigmoid())
    metrics = ["hinge", "binary_crossentropy", "kl_divergence", "poisson", "true_positives", "r2_score",
               M.PrecisionAtRecall(0.5), M.BinaryIoU(target_class_ids=[1]), M.FBetaScore(beta=2.0, threshold=0.5)]
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=metrics)
    history = model.fit(x, y, epochs=2, batch_size=16, validation_split=0.25, verbose=0)
    for key in ("hinge", "binary_crossentropy", "kl_divergence", "poisson", "true_positives", "r2_score",
                "precision_at_recall", "binary_io_u", "fbeta_score"):
        assert len(history.history[key]) == 2 and len(history.history["val_" + key]) == 2, key
    logs = model.evaluate(x[72:], y[72:], batch_size=8, verbose=0, return_dict=True)
    p = torch.as_tensor(model.predict(x[72:], verbose=0))
    t = torch.as_tensor(y[72:])[:, None]
    for key, metric in (("hinge", M.Hinge()), ("binary_crossentropy", M.BinaryCrossentropy()),
                        ("true_positives", M.TruePositives()), ("r2_score", M.R2Score()),
                        ("precision_at_recall", M.PrecisionAtRecall(0.5)),
                        ("binary_io_u", M.BinaryIoU(target_class_ids=[1])),
                        ("fbeta_score", M.FBetaScore(beta=2.0, threshold=0.5))):
        metric.update(t, p)
        assert logs[key] == pytest.approx(float(metric.result().mean()), rel=1e-5), key
    # evaluate on the validation samples after fit: the last epoch's val_ values
    assert logs["true_positives"] == pytest.approx(history.history["val_true_positives"][-1], rel=1e-6)
    assert logs["r2_score"] == pytest.approx(history.history["val_r2_score"][-1], rel=1e-6)


def test_a_model_compiled_with_the_new_metrics_saves_and_loads_without_trust(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(48, 4)).astype(np.float32)
    labels = rng.integers(0, 3, size=48)
    fitkit.set_seed(0)
    model = fitkit.Sequential(nn.Linear(4, 3))
    metrics = [M.OneHotMeanIoU(num_classes=3), M.R2Score(class_aggregation=None), M.F1Score(average="weighted"),
               M.AUC(thresholds=[0.2, 0.5, 0.7], curve="PRGAIN", label_weights=[1.0, 2.0, 0.5]),
               M.SpecificityAtSensitivity(0.5, num_thresholds=50, class_id=1), M.FalseNegatives(thresholds=[0.3, 0.6]),
               M.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1), M.CategoricalHinge(),
               "pearson_correlation"]
    model.compile(optimizer="adam", loss=fitkit.losses.CategoricalCrossentropy(from_logits=True), metrics=metrics)
    onehot = targets.to_categorical(labels, 3).astype(np.float32)
    model.fit(x, onehot, epochs=1, batch_size=16, verbose=0)
    before = model.evaluate(x, onehot, batch_size=16, verbose=0, return_dict=True)
    path = tmp_path / "model.pt"
    model.save(path)
    loaded = fitkit.load_model(path)  # torch's weights-only unpickler: every metric class is allowlisted
    assert loaded.evaluate(x, onehot, batch_size=16, verbose=0, return_dict=True) == pytest.approx(before, rel=1e-6)


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"target_class_ids: got \[3\]; expected class ids in \[0, 3\)"):
        M.IoU(num_classes=3, target_class_ids=[3])
    with pytest.raises(ValueError, match="num_classes: got 0"):
        M.MeanIoU(num_classes=0)
    with pytest.raises(ValueError, match="pass sparse_y_pred=False"):
        M.IoU(num_classes=3, target_class_ids=[0]).update(torch.tensor([0, 1]), torch.rand(2, 3))
    with pytest.raises(ValueError, match="recall: got 1.5; expected a number in"):
        M.PrecisionAtRecall(1.5)
    with pytest.raises(ValueError, match="num_thresholds: got 0"):
        M.SensitivityAtSpecificity(0.5, num_thresholds=0)
    with pytest.raises(ValueError, match="class_aggregation: got 'mean'"):
        M.R2Score(class_aggregation="mean")
    with pytest.raises(ValueError, match="num_regressors: got -1"):
        M.R2Score(num_regressors=-1)
    with pytest.raises(ValueError, match=r"r2_score: expected y_true and y_pred of one shape"):
        M.R2Score().update(torch.zeros(4, 2), torch.zeros(4, 3))
    with pytest.raises(ValueError, match="beta: got 0"):
        M.FBetaScore(beta=0)
    with pytest.raises(ValueError, match="num_labels: got 3 without multi_label=True"):
        M.AUC(num_labels=3)
    with pytest.raises(ValueError, match="y_pred has 2 labels"):
        M.AUC(multi_label=True, num_labels=3).update(torch.ones(4, 2), torch.rand(4, 2))
    with pytest.raises(ValueError, match=r"thresholds must be .* in \[0, 1\]"):
        M.TruePositives(thresholds=[0.5, 2.0])
    with pytest.raises(ValueError, match="categorical_crossentropy: y_true of shape"):
        M.categorical_crossentropy(torch.tensor([0, 1]), torch.rand(2, 3))
    with pytest.raises(ValueError, match=r"sparse_categorical_crossentropy: .* expected integer class labels of shape"):
        M.sparse_categorical_crossentropy(torch.zeros(2, 3), torch.rand(2, 4))


def test_ignore_class_is_left_out_of_the_mean_with_or_without_weights():
    labels = torch.tensor([0, 2, -1, 1, -1])
    probs = torch.softmax(torch.arange(15.0).reshape(5, 3).sin(), -1)
    plain, weighted = M.SparseCategoricalCrossentropy(ignore_class=-1), M.SparseCategoricalCrossentropy(ignore_class=-1)
    plain.update(labels, probs)
    weighted.update(labels, probs, sample_weight=torch.ones(5))
    kept = torch.tensor([0, 1, 3])
    expected = -torch.log(probs[kept, labels[kept]]).mean()
    assert float(plain.result()) == pytest.approx(float(expected), rel=1e-6)
    assert float(weighted.result()) == pytest.approx(float(expected), rel=1e-6)


def test_f1_on_one_column_thresholds_at_one_half_where_keras_would_call_everything_positive():
    y, p = torch.tensor([[1.0], [0.0], [1.0], [0.0]]), torch.tensor([[0.9], [0.2], [0.4], [0.6]])
    metric = M.F1Score()
    metric.update(y, p)
    assert metric.result().tolist() == pytest.approx([0.5])  # tp 1, fp 1, fn 1
