"""fitkit.compiled: what compile() builds: loss container, loss tracker, the compiled state's running sums."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fitkit
from fitkit.compiled import LossContainer, LossTracker, output_names

N = 6


def test_output_names_are_keras_names():
    assert output_names(torch.zeros(2)) is None
    assert output_names([torch.zeros(2)] * 3) == ["output_1", "output_2", "output_3"]
    assert output_names({"value": torch.zeros(2), "label": torch.zeros(2)}) == ["value", "label"]


# ----------------------------------------------------------------------------------- LossContainer

def _outputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    y1, p1 = torch.randn(N, 1, generator=g), torch.randn(N, 1, generator=g)
    y2, z2 = torch.randint(0, 3, (N,), generator=g), torch.randn(N, 3, generator=g)
    return (y1, p1), (y2, z2)


def test_container_single_output():
    (y, p), _ = _outputs()
    c = LossContainer("mse")
    assert c.single is c.losses and c.single.name == "mean_squared_error"
    total, parts = c(y.squeeze(1), p)
    assert parts == {} and total.item() == pytest.approx(F.mse_loss(p, y).item(), rel=1e-6)
    total, _ = LossContainer("mse", loss_weights=2.0)(y, p)
    assert total.item() == pytest.approx(2 * F.mse_loss(p, y).item(), rel=1e-6)


def test_container_list_outputs_with_weights():
    (y1, p1), (y2, z2) = _outputs(1)
    c = LossContainer(["mse", nn.CrossEntropyLoss()], loss_weights=[0.5, 2.0])
    assert c.single is None
    total, parts = c([y1, y2], [p1, z2])
    mse, ce = F.mse_loss(p1, y1), F.cross_entropy(z2, y2)
    assert set(parts) == {"output_1", "output_2"}
    assert parts["output_1"].item() == pytest.approx(mse.item(), rel=1e-6)  # unweighted, as Keras logs
    assert parts["output_2"].item() == pytest.approx(ce.item(), rel=1e-6)
    assert total.item() == pytest.approx(0.5 * mse.item() + 2.0 * ce.item(), rel=1e-6)


def test_container_one_loss_for_every_output_and_per_output_sample_weight():
    (y1, p1), _ = _outputs(2)
    (y3, p3), _ = _outputs(3)
    c = LossContainer("mae")
    sw = torch.linspace(0, 1, N)
    total, parts = c((y1, y3), (p1, p3), sample_weight=sw)
    ref1 = ((p1 - y1).abs().squeeze(1) * sw).sum() / N
    ref3 = ((p3 - y3).abs().squeeze(1) * sw).sum() / N
    assert total.item() == pytest.approx((ref1 + ref3).item(), rel=1e-6)
    total, parts = c((y1, y3), (p1, p3), sample_weight=[sw, None])
    assert parts["output_2"].item() == pytest.approx((p3 - y3).abs().mean().item(), rel=1e-6)


def test_container_dict_outputs_skip_and_weights():
    (y1, p1), (y2, z2) = _outputs(4)
    c = LossContainer({"value": "mse", "label": "sparse_categorical_crossentropy", "aux": None},
                      loss_weights={"label": 0.1})
    y_pred = {"value": p1, "label": torch.softmax(z2, -1), "aux": torch.zeros(N, 2)}
    total, parts = c({"value": y1, "label": y2[:, None]}, y_pred)
    assert set(parts) == {"value", "label"}
    ce = F.cross_entropy(z2, y2)
    assert parts["label"].item() == pytest.approx(ce.item(), rel=1e-5)
    assert total.item() == pytest.approx(F.mse_loss(p1, y1).item() + 0.1 * ce.item(), rel=1e-5)
    # a loss only for one output: parts is empty, as Keras logs no per-output loss then
    only_value = LossContainer({"value": "mse"})
    assert only_value.single is None and only_value.losses["value"].name == "mean_squared_error"
    for y in ({"value": y1}, y1):  # Keras also takes targets for just the outputs with a loss
        total, parts = only_value(y, {"value": p1, "aux": z2})
        assert parts == {} and total.item() == pytest.approx(F.mse_loss(p1, y1).item(), rel=1e-6)
    total, parts = LossContainer([None, "sparse_categorical_crossentropy", "mse"])([y2, y1], [z2, z2.softmax(-1), p1])
    assert set(parts) == {"output_2", "output_3"}
    assert parts["output_3"].item() == pytest.approx(F.mse_loss(p1, y1).item(), rel=1e-6)


def test_container_structure_errors():
    (y1, p1), (y2, z2) = _outputs(5)
    with pytest.raises(ValueError, match=r"`loss` has 3 entries.*2 output"):
        LossContainer(["mse", "mse", "mse"])([y1, y1], [p1, p1])
    with pytest.raises(ValueError, match=r"`loss` keys \['valu'\].*'value'"):
        LossContainer({"valu": "mse"})({"value": y1}, {"value": p1, "label": z2})
    with pytest.raises(ValueError, match=r"`loss_weights` has 1 entries but `loss` has 2"):
        LossContainer(["mse", "mae"], loss_weights=[1.0])
    with pytest.raises(ValueError, match=r"`loss_weights` keys \['b'\]"):
        LossContainer({"a": "mse"}, loss_weights={"b": 1.0})
    with pytest.raises(ValueError, match=r"`loss_weights` has 3 entries.*2 output"):
        LossContainer("mse", loss_weights=[1, 2, 3])([y1, y1], [p1, p1])
    with pytest.raises(ValueError, match=r"`y` .*label"):
        LossContainer({"value": "mse", "label": "mse"})({"value": y1}, {"value": p1, "label": p1})
    with pytest.raises(ValueError, match=r"`loss`.*None"):
        LossContainer([None, None])
    with pytest.raises(ValueError, match=r"`loss`.*'msee'"):
        LossContainer(["mse", "msee"])
    with pytest.raises(ValueError, match=r"`loss_weights`"):
        LossContainer("mse", loss_weights="heavy")


# ----------------------------------------------------------------------------------- running sums

def test_loss_tracker_is_the_mean_over_samples():
    tracker = LossTracker()
    for value, n in ((1.0, 32), (2.0, 32), (4.0, 8)):
        tracker.update(torch.tensor(value), n)
    assert float(tracker.result()) == pytest.approx((32 + 64 + 32) / 72)
    state = tracker.state_dict()
    again = LossTracker()
    again.load_state_dict(state)
    again.update(torch.tensor(1.0), 8)
    tracker.update(torch.tensor(1.0), 8)
    assert float(again.result()) == float(tracker.result())
    tracker.reset()
    assert float(tracker.result()) == 0.0


def _compiled_model():
    torch.manual_seed(0)
    model = fitkit.Sequential(nn.Linear(3, 2))
    model.compile(optimizer="sgd", loss=nn.CrossEntropyLoss(), metrics=["accuracy", "auc"])
    return model


def _batch(seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(8, 3, generator=g), torch.randint(0, 2, (8,), generator=g)


def _step(model, seed):
    with torch.no_grad():
        model.test_step(_batch(seed))


def test_state_dict_and_load_state_dict_carry_every_running_sum():
    model = _compiled_model()
    state = model._compiled
    assert state.log_names() == ["loss", "accuracy", "auc"]  # one output: the metrics exist from compile on
    for seed in range(3):
        _step(model, seed)
    assert state.log_names() == ["loss", "accuracy", "auc"]
    saved = state.state_dict()
    assert saved["loss"]["count"] == 24 and set(saved["metrics"]) == {"accuracy", "auc"}
    _step(model, 3)
    expected = {k: float(v) for k, v in state.results().items()}

    # A fresh model gets the sums back before its next batch (metric states only exist after a batch, so
    # they are added right after it): the same results as the run never interrupted.
    again = _compiled_model()
    again._compiled.load_state_dict(saved)
    _step(again, 3)
    assert {k: float(v) for k, v in again._compiled.results().items()} == expected


def test_reset_starts_every_sum_afresh_and_drops_sums_waiting_to_be_added():
    model = _compiled_model()
    _step(model, 0)
    saved = model._compiled.state_dict()
    model._compiled.load_state_dict(saved)
    model._compiled.reset()
    assert float(model._compiled.results()["loss"]) == 0.0
    _step(model, 1)
    fresh = _compiled_model()
    _step(fresh, 1)
    assert {k: float(v) for k, v in model._compiled.results().items()} == \
        {k: float(v) for k, v in fresh._compiled.results().items()}


def test_one_not_compiled_error_for_every_entry_point():
    model = fitkit.Sequential(nn.Linear(3, 1))
    for call in (lambda: model.fit(torch.zeros(4, 3), torch.zeros(4)), lambda: model.evaluate(torch.zeros(4, 3)),
                 lambda: model.train_on_batch(torch.zeros(4, 3), torch.zeros(4)),
                 lambda: model.test_on_batch(torch.zeros(4, 3), torch.zeros(4)), lambda: model.metrics_names):
        with pytest.raises(RuntimeError, match=r"^\w+: the model is not compiled; call model.compile"):
            call()
