"""model.find_learning_rate: the range test's ramp, its stop on divergence, its suggestion, and that it
leaves the model exactly as it found it (a fit after it equals a fit without it, bit for bit)."""

import math
import random

import numpy as np
import pytest
import torch
from torch import nn

import fitkit
from conftest import noisy_binary_data, same_optimizer, same_weights, small_mlp
from fitkit.lr_finder import LearningRateFinderResult, suggest


def _compiled(seed=0, scheduler=False, optimizer="adam"):
    fitkit.set_seed(seed)
    model = small_mlp()
    sched = (lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)) if scheduler else None
    model.compile(optimizer=optimizer, loss=nn.BCEWithLogitsLoss(), metrics=["accuracy"], scheduler=sched)
    return model


def _fit(model, epochs=3, initial_epoch=0):
    x, y = noisy_binary_data()
    return model.fit(x, y, epochs=epochs, initial_epoch=initial_epoch, batch_size=16, validation_split=0.2,
                     verbose=0)


def test_a_fit_after_the_test_equals_a_fit_without_it_bit_for_bit():
    x, y = noisy_binary_data()
    plain = _compiled()
    h_plain = _fit(plain)
    draw_plain = torch.rand(3)

    tested = _compiled()
    result = tested.find_learning_rate(x, y, batch_size=16, steps=40)
    assert len(result.lrs) >= 10  # it trained (dropout drew random numbers, the generator shuffled)
    h_tested = _fit(tested)
    draw_tested = torch.rand(3)

    assert same_weights(plain, tested)
    assert same_optimizer(plain.optimizer, tested.optimizer)
    assert h_plain.history == h_tested.history
    assert torch.equal(draw_plain, draw_tested)  # the global RNG is where it would have been


def test_between_two_fits_with_a_scheduler_and_without_set_seed():
    x, y = noisy_binary_data()

    def model():
        torch.manual_seed(5)
        np.random.seed(5)
        random.seed(5)
        m = small_mlp()
        m.compile(optimizer="adam", loss=nn.BCEWithLogitsLoss(), metrics=["accuracy"],
                  scheduler=lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5))
        return m

    plain = model()
    _fit(plain, epochs=2)
    _fit(plain, epochs=4, initial_epoch=2)
    draws_plain = (torch.rand(2), np.random.rand(), random.random())

    tested = model()
    _fit(tested, epochs=2)
    lr_before, scheduler_before = tested.learning_rate, tested.scheduler.state_dict()
    result = tested.find_learning_rate(x, y, batch_size=16, steps=30, max_lr=1.0)
    assert tested.learning_rate == lr_before == 0.001 * 0.5 ** 2  # the rate the scheduler had set is back
    assert tested.scheduler.state_dict() == scheduler_before
    _fit(tested, epochs=4, initial_epoch=2)
    draws_tested = (torch.rand(2), np.random.rand(), random.random())

    assert len(result.lrs) > 5
    assert same_weights(plain, tested)
    assert same_optimizer(plain.optimizer, tested.optimizer)
    assert tested.scheduler.state_dict() == plain.scheduler.state_dict()
    assert torch.equal(draws_plain[0], draws_tested[0]) and draws_plain[1:] == draws_tested[1:]


def test_before_the_first_fit_without_set_seed_the_data_order_is_drawn_as_without_the_test():
    # No generator exists yet: fit draws its seed from torch's global RNG at its start. The test must
    # neither create the model's generator nor leave the global RNG moved.
    x, y = noisy_binary_data()

    def model():
        torch.manual_seed(7)
        m = small_mlp()
        m.compile(optimizer="sgd", loss=nn.BCEWithLogitsLoss())
        return m

    plain = model()
    _fit(plain)
    tested = model()
    tested.find_learning_rate(x, y, steps=20)
    assert tested.training_state.state_dict()["generator"] is None
    _fit(tested)
    assert same_weights(plain, tested)


def _separable(n=512):
    """Labels a line separates: the loss falls clearly once the learning rate is large enough."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    return x, (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.float32)


def test_the_ramp_is_exponential_and_stops_when_the_loss_diverges():
    x, y = _separable()
    model = _compiled(optimizer="sgd")
    result = model.find_learning_rate(x, y, batch_size=32, min_lr=1e-4, max_lr=1e3, steps=60)
    assert isinstance(result, LearningRateFinderResult)
    n = len(result.lrs)
    assert 5 < n < 60 and result.diverged
    assert result.stop_reason.startswith("the loss diverged")
    factor = (1e3 / 1e-4) ** (1 / 59)
    assert result.lrs[0] == pytest.approx(1e-4)
    assert all(b / a == pytest.approx(factor) for a, b in zip(result.lrs, result.lrs[1:]))
    assert len(result.losses) == len(result.smoothed) == n
    last = result.smoothed[-1]
    finite = [s for s in result.smoothed if math.isfinite(s)]
    assert not math.isfinite(result.losses[-1]) or last > 4 * min(finite)
    assert result.suggestion in result.lrs
    assert result.suggestion < result.lowest_loss_lr
    assert "suggestion=" in repr(result)


def test_reaching_max_lr_without_diverging_and_each_loss_is_its_batch_alone():
    x, y = noisy_binary_data()
    model = _compiled(optimizer="sgd")
    result = model.find_learning_rate(x, y, batch_size=16, min_lr=1e-6, max_lr=1e-5, steps=8)
    assert len(result.lrs) == 8 and not result.diverged
    assert result.lrs[-1] == pytest.approx(1e-5)
    assert result.stop_reason == "it reached max_lr=1e-05 without diverging"
    # With rates this small nothing moves: every loss is the loss of its own batch of 16 (not a mean
    # over the steps so far), so they differ from batch to batch.
    assert len(set(round(v, 6) for v in result.losses)) > 4


def test_the_smoothing_and_the_suggestion():
    # bias-corrected EMA: the first smoothed value is the first loss
    x, y = noisy_binary_data()
    result = _compiled().find_learning_rate(x, y, steps=20, max_lr=1e-2, smoothing=0.5)
    assert result.smoothed[0] == pytest.approx(result.losses[0])
    s1 = (0.5 * 0.5 * result.losses[0] + 0.5 * result.losses[1]) / (1 - 0.5 ** 2)
    assert result.smoothed[1] == pytest.approx(s1)
    # steepest descent against log10(lr), before the lowest point
    lrs = [10.0 ** k for k in range(-6, 2)]
    smoothed = [1.0, 0.99, 0.95, 0.6, 0.3, 0.25, 0.24, 2.0]
    assert suggest(lrs, smoothed) == 1e-3  # the drop 0.95 -> 0.6 -> 0.3 is steepest around 1e-3
    assert suggest(lrs[:3], smoothed[:3]) is None  # too few steps before the lowest point


def test_each_param_group_keeps_its_ratio_to_the_first():
    seen = []

    class Net(fitkit.Model):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(6, 4), nn.Linear(4, 1)

        def forward(self, x):
            return self.b(torch.relu(self.a(x)))

        def train_step(self, data):
            seen.append([g["lr"] for g in self.optimizer.param_groups])
            return super().train_step(data)

    fitkit.set_seed(0)
    model = Net()
    opt = torch.optim.SGD([{"params": model.a.parameters(), "lr": 0.1},
                           {"params": model.b.parameters(), "lr": 0.01}])
    model.compile(optimizer=opt, loss=nn.BCEWithLogitsLoss())
    x, y = noisy_binary_data()
    model.find_learning_rate(x, y, min_lr=1e-5, max_lr=1e-3, steps=5)
    assert len(seen) == 5
    assert all(b == pytest.approx(a / 10) for a, b in seen)
    assert seen[0][0] == pytest.approx(1e-5) and seen[-1][0] == pytest.approx(1e-3)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.01]


def test_the_running_sums_a_fit_left_are_kept():
    x, y = noisy_binary_data()
    model = _compiled()
    _fit(model, epochs=1)
    before, mode = dict(model.get_metrics_result()), model.training
    model.find_learning_rate(x, y, steps=10)
    assert dict(model.get_metrics_result()) == before  # the last validation pass's loss and accuracy
    assert model.training == mode


def test_a_nan_loss_stops_the_test():
    x, y = noisy_binary_data()
    x = x.copy()
    x[40:, 0] = np.nan  # from some batch on, the loss is NaN
    model = _compiled(optimizer="sgd")
    result = model.find_learning_rate(x, y, batch_size=200, steps=5)  # one batch holding every sample
    assert result.diverged and math.isnan(result.losses[-1]) and len(result.lrs) == 1
    assert "the loss diverged: it was nan" in result.stop_reason
    assert result.suggestion is None


@pytest.mark.parametrize("kwargs, message", [
    ({"min_lr": 0}, "min_lr: got 0; expected a positive learning rate"),
    ({"max_lr": 1e-8}, "max_lr: got 1e-08 with min_lr=1e-07; expected max_lr above min_lr"),
    ({"steps": 1}, "steps: got 1; expected an integer of at least 2"),
    ({"smoothing": 1.0}, "smoothing: got 1.0; expected a number in [0, 1)"),
    ({"diverge_factor": 1}, "diverge_factor: got 1; expected a number above 1"),
])
def test_bad_arguments_are_refused_before_anything_changes(kwargs, message):
    x, y = noisy_binary_data()
    model = _compiled()
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    with pytest.raises(ValueError) as err:
        model.find_learning_rate(x, y, **kwargs)
    assert message in str(err.value)
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    assert torch.equal(rng, torch.get_rng_state())


def test_bad_data_and_an_uncompiled_model():
    model = _compiled()
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    with pytest.raises(ValueError, match="y: got a value together with x"):
        model.find_learning_rate(torch.utils.data.TensorDataset(torch.zeros(4, 6)), np.zeros(4))
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    assert torch.equal(rng, torch.get_rng_state())
    with pytest.raises(RuntimeError, match="find_learning_rate: the model is not compiled"):
        small_mlp().find_learning_rate(*noisy_binary_data())


def test_plot_marks_the_suggestion(tmp_path):
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    x, y = _separable()
    result = _compiled(optimizer="sgd").find_learning_rate(x, y, batch_size=32, min_lr=1e-4, max_lr=1e3, steps=60)
    try:
        fig = result.plot(tmp_path / "lr.png")
        assert (tmp_path / "lr.png").read_bytes()[:4] == b"\x89PNG"
        ax = fig.axes[0]
        assert ax.get_xscale() == "log"
        marks = [ln for ln in ax.lines if ln.get_gid() == "suggestion"]
        assert len(marks) == 1 and list(marks[0].get_xdata()) == [result.suggestion]
        assert f"suggestion: {result.suggestion:.2g} (steepest descent)" in [ln.get_label() for ln in ax.lines]
    finally:
        plt.close("all")


def test_a_generator_that_runs_out_ends_the_test():
    x, y = noisy_binary_data()
    batches = ((torch.from_numpy(x[i:i + 32]), torch.from_numpy(y[i:i + 32])) for i in range(0, 96, 32))
    with pytest.warns(UserWarning, match="ran out of data after 3 of 10 steps"):
        result = _compiled().find_learning_rate(batches, steps=10, max_lr=1e-3)
    assert len(result.lrs) == 3 and not result.diverged
    assert result.stop_reason == "the data ran out after 3 of 10 steps"


def test_under_gradient_accumulation_a_step_is_a_window_and_an_open_window_is_put_back():
    x, y = noisy_binary_data()  # 163 samples: 10 batches of 16 and one of 3 per pass

    def accumulating(k):
        fitkit.set_seed(0)
        model = small_mlp()
        optimizer = fitkit.optimizers.SGD(learning_rate=0.1, gradient_accumulation_steps=k if k > 1 else None)
        model.compile(optimizer=optimizer, loss=nn.BCEWithLogitsLoss())
        return model

    # Two batches of 8 at one rate are one optimizer step on their mean gradient: the step of a batch
    # of 16 holding the same samples, as a window of fit is.
    two = accumulating(2).find_learning_rate(x[:160], y[:160], batch_size=8, min_lr=1e-3, max_lr=1.0, steps=12)
    one = accumulating(1).find_learning_rate(x[:160], y[:160], batch_size=16, min_lr=1e-3, max_lr=1.0, steps=12)
    assert len(two.lrs) == 12 and two.lrs == one.lrs
    assert two.losses == pytest.approx(one.losses, abs=1e-6)

    # A window a fit left open (7 batches with k=3 leave 1) is still open, with its gradients, afterwards.
    model, twin = accumulating(3), accumulating(3)
    for m in (model, twin):
        fitkit.set_seed(1)  # the same dropout masks for both
        m.fit(x[:112], y[:112], epochs=1, batch_size=16, shuffle=False, verbose=0)
    assert model._compiled.step.accumulated == 1
    model.find_learning_rate(x, y, batch_size=16, steps=10)
    assert model._compiled.step.accumulated == 1
    for m in (model, twin):
        fitkit.set_seed(2)
        m.fit(x[:112], y[:112], epochs=2, initial_epoch=1, batch_size=16, shuffle=False, verbose=0)
    assert same_weights(model, twin) and same_optimizer(model.optimizer, twin.optimizer)
