"""fitkit.metrics as a package: every old import path, model files saved before the split, one EPSILON and
one snake_case shared with the losses."""

import io
import os

import pytest
import torch
from torch import nn

import fitkit
from conftest import FIXTURES, fixture_script
from fitkit import checkpoint, conventions, losses
from fitkit import metrics as M

OLD_FILE = os.path.join(FIXTURES, "model_before_metrics_split.pt")

# fitkit/metrics.py's __all__ at fe4be41, less MetricsContainer (it moved to fitkit.compiled).
OLD_PUBLIC_NAMES = [
    "Metric", "Mean", "MeanMetricWrapper", "TorchMetricWrapper", "get",
    "Accuracy", "BinaryAccuracy", "CategoricalAccuracy", "SparseCategoricalAccuracy",
    "TopKCategoricalAccuracy", "SparseTopKCategoricalAccuracy", "Precision", "Recall", "F1Score", "AUC",
    "MeanAbsoluteError", "MeanSquaredError", "RootMeanSquaredError", "MeanAbsolutePercentageError",
    "MeanSquaredLogarithmicError", "CosineSimilarity", "LogCoshError",
    "accuracy", "binary_accuracy", "categorical_accuracy", "sparse_categorical_accuracy",
    "top_k_categorical_accuracy", "sparse_top_k_categorical_accuracy", "mean_absolute_error",
    "mean_squared_error", "mean_absolute_percentage_error", "mean_squared_logarithmic_error",
    "cosine_similarity", "log_cosh",
]
# Private objects of the old module that a pickled metric can hold (get("accuracy") and get("top_k")).
OLD_PICKLED_PRIVATE_NAMES = ["_Resolved", "_choose_accuracy", "_choose_top_k"]

# What make_model_before_metrics_split.py printed at fe4be41: evaluate(return_dict=True) on data(40, 1000).
RECORDED = {
    "loss": 0.5731689691543579,
    "accuracy": 0.699999988079071,
    "auc": 0.7393162250518799,
    "precision": 0.7272727489471436,
    "f1_score": 0.7931034564971924,
    "accuracy_above_1": 0.625,
    "acc": 0.699999988079071,
}


# ---------------------------------------------------------------------------------------------------
# Import paths


@pytest.mark.parametrize("name", OLD_PUBLIC_NAMES + ["EPSILON"])
def test_every_old_public_name_imports_from_fitkit_metrics(name):
    namespace = {}
    exec(f"from fitkit.metrics import {name}", namespace)
    assert namespace[name] is getattr(fitkit.metrics, name)


def test_all_lists_the_old_public_names():
    assert set(OLD_PUBLIC_NAMES) <= set(M.__all__)
    assert len(M.__all__) == len(set(M.__all__))
    assert all(hasattr(M, name) for name in M.__all__)


def test_per_sample_functions_are_functions_not_the_family_modules():
    # The accuracy family's module is "accuracies" so that fitkit.metrics.accuracy stays Keras's function.
    assert M.accuracy(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 3.0])).tolist() == [1.0, 0.0]
    assert callable(M.binary_accuracy) and callable(M.mean_absolute_error)


def test_classes_live_in_their_family_modules():
    assert M.AUC.__module__ == "fitkit.metrics.confusion"
    assert M.BinaryAccuracy.__module__ == "fitkit.metrics.accuracies"
    assert M.RootMeanSquaredError.__module__ == "fitkit.metrics.regression"
    assert M.Metric.__module__ == "fitkit.metrics.base"
    assert M.get.__module__ == "fitkit.metrics.registry"


def test_the_allowlist_names_every_object_by_its_module_and_its_old_package_path():
    allowed = M.pickle_allowlist()
    for name in OLD_PUBLIC_NAMES + OLD_PICKLED_PRIVATE_NAMES:
        obj = getattr(M, name)
        assert obj in allowed, name
        assert (obj, f"fitkit.metrics.{name}") in allowed, name
    assert M.AUC in fitkit.model._allowlist() and (M.AUC, "fitkit.metrics.AUC") in fitkit.model._allowlist()


# ---------------------------------------------------------------------------------------------------
# A model file saved before the split


def test_a_file_saved_before_the_split_loads_without_trust_and_evaluates_as_recorded():
    model = fitkit.load_model(OLD_FILE)
    x, y = fixture_script("make_model_before_metrics_split").data(40, 1000)
    logs = model.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)
    assert logs == pytest.approx(RECORDED, rel=1e-6, abs=1e-7)
    assert list(logs) == list(RECORDED)

    accuracy, auc, precision, f1, wrapped, acc = model.compiled_metrics.metrics
    assert isinstance(accuracy, M._Resolved) and isinstance(accuracy.resolved, M.BinaryAccuracy)
    assert accuracy.resolved.threshold == 0.0  # "accuracy" with a from_logits loss
    assert type(auc) is M.AUC
    assert (auc.num_thresholds, auc.curve, auc.summation_method, auc._logits) == (50, "ROC", "interpolation", "sigmoid")
    assert type(precision) is M.Precision
    assert (precision.thresholds, precision.top_k, precision.class_id, precision._logits) == ([0.3], None, None,
                                                                                            "sigmoid")
    assert type(f1) is M.F1Score and (f1.threshold, f1.average, f1._logits) == (0.4, "macro", "sigmoid")
    assert type(wrapped) is M.MeanMetricWrapper and wrapped.name == "accuracy_above_1"
    assert wrapped._fn is M.binary_accuracy and wrapped._fn_kwargs == {"threshold": 1.0}
    assert type(acc) is M._Resolved and acc.name == "acc" and acc._choose is M._choose_accuracy
    assert type(acc._loss) is losses.BinaryCrossentropy and acc._loss.from_logits is True


def test_a_file_saved_before_the_split_names_the_old_paths():
    blob = torch.load(OLD_FILE, weights_only=True)["compile"]["objects"]
    names = torch.serialization.get_unsafe_globals_in_checkpoint(io.BytesIO(blob))
    assert {"fitkit.metrics.AUC", "fitkit.metrics.binary_accuracy", "fitkit.metrics._Resolved"} <= set(names)


def test_a_trusted_full_unpickle_finds_the_old_paths_too():
    model = fitkit.load_model(OLD_FILE, trusted=True)
    x, y = fixture_script("make_model_before_metrics_split").data(40, 1000)
    assert model.evaluate(x, y, batch_size=16, verbose=0, return_dict=True) == pytest.approx(RECORDED, rel=1e-6,
                                                                                              abs=1e-7)


def test_a_torch_without_renamed_globals_asks_for_trust_naming_the_old_path(monkeypatch):
    monkeypatch.setattr(checkpoint, "takes_renamed_globals", lambda: False)
    # The first old path the file names: the training state's (fitkit.model then), or a metric's.
    with pytest.raises(checkpoint.UntrustedCheckpointError, match=r"fitkit\.(model\.TrainingState|metrics\.AUC)"):
        fitkit.load_model(OLD_FILE)


def test_a_file_saved_now_names_the_family_modules_and_loads_without_trust(tmp_path):
    model = fitkit.Sequential(nn.Linear(3, 2))
    metrics = [M.AUC(), M.BinaryAccuracy(), M.RootMeanSquaredError(), M.get("accuracy"),
               M.TopKCategoricalAccuracy(k=1)]
    model.compile(optimizer="sgd", loss=losses.BinaryCrossentropy(), metrics=metrics)
    path = tmp_path / "model.pt"
    model.save(path)
    blob = torch.load(path, weights_only=True)["compile"]["objects"]
    names = set(torch.serialization.get_unsafe_globals_in_checkpoint(io.BytesIO(blob)))
    assert {"fitkit.metrics.confusion.AUC", "fitkit.metrics.accuracies.binary_accuracy",
            "fitkit.metrics.regression.RootMeanSquaredError", "fitkit.metrics.registry._Resolved"} <= names
    allow = fitkit.model._allowlist()
    assert checkpoint.unsafe_globals(blob, allow) == []
    assert [type(m) for m in checkpoint.unpack(blob, "compile", allow)["metrics"]] == [type(m) for m in metrics]
    assert fitkit.load_model(path).compiled


# ---------------------------------------------------------------------------------------------------
# Conventions shared with the losses


def test_one_epsilon():
    assert M.EPSILON is losses.EPSILON is conventions.EPSILON
    assert conventions.EPSILON == 1e-7


# The names each old helper gave (fitkit/metrics.py's _snake_case, fitkit/losses.py's _snake at fe4be41),
# for every fitkit metric and loss class and the torch losses a metric or loss can be named after.
METRIC_NAMES = {
    "Metric": "metric", "Mean": "mean", "MeanMetricWrapper": "mean_metric_wrapper", "AUC": "auc",
    "F1Score": "f1_score", "Precision": "precision", "MeanSquaredError": "mean_squared_error",
    "RootMeanSquaredError": "root_mean_squared_error", "TopKCategoricalAccuracy": "top_k_categorical_accuracy",
    "SparseTopKCategoricalAccuracy": "sparse_top_k_categorical_accuracy", "TorchMetricWrapper": "torch_metric_wrapper",
    "MSELoss": "mse_loss", "BCEWithLogitsLoss": "bce_with_logits_loss", "KLDivLoss": "kl_div_loss",
    "NLLLoss": "nll_loss", "CrossEntropyLoss": "cross_entropy_loss",
}
LOSS_NAMES = {
    "Loss": "loss", "MeanSquaredError": "mean_squared_error", "BinaryCrossentropy": "binary_crossentropy",
    "SparseCategoricalCrossentropy": "sparse_categorical_crossentropy", "KLDivergence": "kldivergence",
    "LossFunction": "loss_function", "TorchLoss": "torch_loss", "F1Score": "f1_score", "AUC": "auc",
    "MSELoss": "mseloss", "BCEWithLogitsLoss": "bcewith_logits_loss", "KLDivLoss": "kldiv_loss",
    "NLLLoss": "nllloss", "CrossEntropyLoss": "cross_entropy_loss",
}


@pytest.mark.parametrize("name, expected", sorted(METRIC_NAMES.items()))
def test_snake_case_keeps_the_names_metrics_had(name, expected):
    assert conventions.snake_case(name) == expected


@pytest.mark.parametrize("name, expected", sorted(LOSS_NAMES.items()))
def test_snake_case_keeps_the_names_losses_had(name, expected):
    assert conventions.snake_case(name, acronyms_as_words=False) == expected


def test_default_names_of_unnamed_metrics_and_losses_are_unchanged():
    class HingeMSELoss(losses.Loss):
        def call(self, y_true, y_pred):
            return (y_pred - y_true).square().mean(-1)

    class TopKHits(M.Metric):
        def update(self, y_true, y_pred, sample_weight=None):
            pass

        def result(self):
            return torch.zeros(())

    assert HingeMSELoss().name == "hinge_mseloss"
    assert TopKHits().name == "top_k_hits"
    assert M.get(nn.MSELoss()).name == "mse_loss"
    assert M.get(nn.BCEWithLogitsLoss()).name == "bce_with_logits_loss"
