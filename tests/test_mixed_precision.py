"""Dtype policies (fitkit/mixed_precision.py): autocast around the forward and the loss, float32 weights,
losses and metrics summed at full precision, the float16 loss scaler as training state, skipped overflows.

bfloat16 runs on the CPU. float16 with its GradScaler runs on CUDA, and on the CPU where torch runs
float16 autocast there (torch 2.4 and later); the same cases run on CUDA when there is one.
"""

import numpy as np
import pytest
import torch
from torch import nn

import fitkit
from conftest import regression_data, same_optimizer, same_weights
from fitkit import mixed_precision
from fitkit.callbacks import TerminateOnNaN

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device: float16 autocast and loss scaling on the GPU"))]


@pytest.fixture(autouse=True)
def _keep_global_policy(monkeypatch):
    monkeypatch.setattr(mixed_precision, "_global", mixed_precision._global)


class Recording(fitkit.Model):
    """d -> 16 -> 1, remembering the dtypes its training steps computed the outputs and the loss in."""

    def __init__(self, d=6):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d, 16), nn.Linear(16, 1)
        self.seen = set()

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        loss = super().compute_loss(x, y, y_pred, sample_weight, training)
        self.seen.add((training, y_pred.dtype, loss.dtype))
        return loss


def _model(policy, device="cpu", seed=0, **compile_kwargs):
    fitkit.set_seed(seed)
    model = Recording()
    model.compile(optimizer=fitkit.optimizers.Adam(learning_rate=0.01), loss="mse", metrics=["mae"],
                  dtype_policy=policy, device=device, **compile_kwargs)
    return model


def test_policies_by_keras_name_and_a_clear_error_for_others():
    policy = mixed_precision.DTypePolicy("mixed_bfloat16")
    assert (policy.name, policy.compute_dtype, policy.variable_dtype) == ("mixed_bfloat16", "bfloat16", "float32")
    assert repr(mixed_precision.DTypePolicy("mixed_float16")) == '<DTypePolicy "mixed_float16">'
    model = _model("float32")
    before = model._compiled
    with pytest.raises(ValueError, match=r"^dtype_policy: got 'mixed_float32'; expected 'float32', 'mixed_float16' "
                                         r"or 'mixed_bfloat16'$"):
        model.compile(optimizer="adam", loss="mse", dtype_policy="mixed_float32")
    assert model._compiled is before
    with pytest.raises(ValueError, match="dtype_policy: got 'mixed_bfloat16', which torch .* cannot run on meta"):
        mixed_precision.resolve("mixed_bfloat16", "meta")


def test_the_global_policy_is_what_compile_uses_without_one():
    assert fitkit.dtype_policy() == mixed_precision.DTypePolicy("float32")
    fitkit.set_dtype_policy("mixed_bfloat16")
    assert fitkit.mixed_precision.global_policy().name == "mixed_bfloat16"
    model = _model(None)
    assert model._compiled.step.policy.name == "mixed_bfloat16"
    assert _model("float32")._compiled.step.policy.name == "float32"  # compile's own wins
    fitkit.mixed_precision.set_global_policy(mixed_precision.DTypePolicy("float32"))
    assert _model(None)._compiled.step.policy.name == "float32"
    with pytest.raises(ValueError, match="policy: got 'half'; expected 'float32', 'mixed_float16' or"):
        fitkit.set_dtype_policy("half")


def test_bfloat16_on_the_cpu_computes_in_bfloat16_and_keeps_weights_losses_and_metrics_at_full_precision():
    x, y = regression_data()
    mixed, full = _model("mixed_bfloat16"), _model("float32")
    h_mixed = mixed.fit(x, y, batch_size=16, epochs=3, validation_split=0.2, verbose=0)
    h_full = full.fit(x, y, batch_size=16, epochs=3, validation_split=0.2, verbose=0)
    # The forward under autocast in bfloat16 (training and validation); the loss comes out in float32.
    assert mixed.seen == {(True, torch.bfloat16, torch.float32), (False, torch.bfloat16, torch.float32)}
    assert full.seen == {(True, torch.float32, torch.float32), (False, torch.float32, torch.float32)}
    assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in mixed.parameters())
    assert all(v.dtype == torch.float32 for s in mixed.optimizer.state.values() for v in s.values()
               if v.is_floating_point())
    # The running sums are never kept in bfloat16: the metric states are float64, the loss sum a float.
    assert all(v.dtype == torch.float64 for v in mixed._compiled.metrics.metrics[0].states().values())
    assert isinstance(mixed._compiled.tracker._sum, float)
    for key in ("loss", "mae", "val_loss", "val_mae"):
        assert h_mixed.history[key][-1] == pytest.approx(h_full.history[key][-1], rel=0.05), key
        assert h_mixed.history[key] != h_full.history[key]  # not the float32 run under another name
    out = mixed.predict(x[:5], verbose=0)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    assert mixed.evaluate(x, y, verbose=0, return_dict=True)["loss"] == pytest.approx(
        full.evaluate(x, y, verbose=0, return_dict=True)["loss"], rel=0.05)


@pytest.mark.parametrize("device", DEVICES)
def test_float16_scales_the_loss_and_the_scaler_is_saved_and_resumed_exactly(device, tmp_path):
    x, y = regression_data()
    model = _model("mixed_float16", device)
    scaler = model._compiled.step.scaler
    assert scaler is not None and scaler.get_scale() == 2.0 ** 15  # Keras's LossScaleOptimizer default
    assert _model("mixed_float16", device, auto_scale_loss=False)._compiled.step.scaler is None
    whole = _model("mixed_float16", device)
    whole.fit(x, y, batch_size=16, epochs=3, verbose=0)
    assert (True, torch.float16, torch.float32) in whole.seen

    # A scale that has moved (halved on overflow) must come back: set one before the first fit.
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    saved = model.training_state.state_dict()["grad_scaler"]
    assert saved["scale"] == scaler.get_scale() and saved["_growth_tracker"] == 7  # 7 finite steps
    model.save(tmp_path / "m.pt")
    resumed = fitkit.load_model(tmp_path / "m.pt")
    assert resumed._compiled.step.scaler.state_dict() == saved
    resumed.fit(x, y, batch_size=16, epochs=3, initial_epoch=1, verbose=0)
    assert same_weights(whole, resumed) and same_optimizer(whole.optimizer, resumed.optimizer)


@pytest.mark.parametrize("device", DEVICES)
def test_steps_whose_gradients_overflow_are_skipped_and_are_no_nan_for_terminate_on_nan(device):
    x, y = regression_data(n=64)
    model = _model("mixed_float16", device)
    scaler = model._compiled.step.scaler
    scaler.load_state_dict({**scaler.state_dict(), "scale": 2.0 ** 100})  # every float16 gradient overflows
    weights = [p.detach().clone() for p in model.parameters()]
    history = model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[TerminateOnNaN()])
    assert all(torch.equal(a, b) for a, b in zip(weights, model.parameters()))  # all 8 steps skipped
    assert scaler.get_scale() == 2.0 ** 92  # halved at each
    assert history.epoch == [0, 1] and model.stop_reason is None
    assert all(np.isfinite(history.history["loss"]))  # the loss logged is the unscaled, finite one
    # With a scale that fits (Keras's initial one), the same model trains.
    scaler.load_state_dict({**scaler.state_dict(), "scale": 2.0 ** 15})
    model.fit(x, y, batch_size=16, epochs=3, initial_epoch=2, verbose=0)
    assert not torch.equal(weights[0], model.fc1.weight)


def test_a_saved_loss_scale_does_not_load_into_a_model_without_one():
    x, y = regression_data(n=32)
    model = _model("mixed_float16")
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    other = _model("mixed_bfloat16", seed=1)
    with pytest.raises(ValueError, match="state: the saved run scaled its loss .*'mixed_float16'.* compiled with "
                                         "dtype_policy 'mixed_bfloat16'"):
        other.training_state.load_state_dict(model.training_state.state_dict())
    assert other.training_state.epoch == 0


@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="needs a CUDA device: the fused optimizer skips overflowed steps without a host sync")
def test_float16_with_a_named_optimizer_does_not_sync_per_step_on_cuda():
    from test_cuda import SyncsAreErrors

    x, y = regression_data(n=256)
    model = _model("mixed_float16", "cuda")
    guard = SyncsAreErrors()
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[guard])
    assert guard.guarded_steps > 0


@pytest.mark.parametrize("device", DEVICES)
def test_clipping_under_float16_acts_on_the_unscaled_gradients_as_in_a_hand_loop(device):
    x, y = regression_data(n=48)
    y = y * 10
    model = _model("mixed_float16", device, clipvalue=0.05)
    twin = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 1)).to(device)
    twin.load_state_dict({k.replace("fc1", "0").replace("fc2", "2"): v for k, v in model.state_dict().items()})
    optimizer = torch.optim.Adam(twin.parameters(), lr=0.01, eps=1e-7, fused=True)
    scaler = torch.amp.GradScaler(device, init_scale=2.0 ** 15)
    xt, yt = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
    for i in range(0, 48, 16):
        optimizer.zero_grad()
        with torch.autocast(device, dtype=torch.float16):
            loss = nn.functional.mse_loss(twin(xt[i:i + 16]), yt[i:i + 16])
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_value_(twin.parameters(), 0.05)
        scaler.step(optimizer)
        scaler.update()
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.allclose(a, b, atol=1e-6, rtol=0)
    assert not torch.allclose(model.fc1.weight, _model("float32", device).fc1.weight, atol=1e-3)
