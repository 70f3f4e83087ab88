"""The step mechanics (fitkit/step.py): gradient accumulation and clipping with Keras's optimizer arguments,
checked against hand-written torch loops, and their state in the training state."""

import contextlib
import warnings

import pytest
import torch
from torch import nn

import fitkit
from conftest import regression_data, same_optimizer, same_weights, small_mlp
from fitkit.callbacks import BackupAndRestore, Callback
from fitkit.step import clip_by_global_norm_, clip_by_norm_, clip_by_value_


def _net(seed=0):
    torch.manual_seed(seed)
    return fitkit.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 1))


def _plain_copy(model):
    """The same layers and weights as a plain nn.Sequential, for the hand-written loops."""
    twin = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 1))
    twin.load_state_dict(model.state_dict())
    return twin


def _close(model, twin, atol):
    for (name, a), b in zip(model.state_dict().items(), twin.state_dict().values()):
        assert torch.allclose(a, b, atol=atol, rtol=0), (name, (a - b).abs().max().item())


# ----------------------------------------------------------------------------------------- accumulation

def test_k_batches_of_b_give_the_weights_of_one_batch_of_k_times_b_across_epoch_ends():
    # 28 samples in batches of 4: 7 batches an epoch, which 3 does not divide. As in Keras the windows
    # run on across the epochs: (b0 b1 b2) (b3 b4 b5) (b6 | b0' b1') ... 21 batches are 7 optimizer steps.
    x, y = regression_data(n=28)
    model = _net()
    model.compile(optimizer=fitkit.optimizers.Adam(learning_rate=0.05, gradient_accumulation_steps=3), loss="mse")
    twin = _plain_copy(model)
    model.fit(x, y, batch_size=4, epochs=3, shuffle=False, verbose=0)

    optimizer = torch.optim.Adam(twin.parameters(), lr=0.05, eps=1e-7)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    stream = [(xt[i:i + 4], yt[i:i + 4]) for _ in range(3) for i in range(0, 28, 4)]
    for w in range(0, 21, 3):
        xb = torch.cat([b[0] for b in stream[w:w + 3]])  # one batch of 12
        yb = torch.cat([b[1] for b in stream[w:w + 3]])
        optimizer.zero_grad()
        nn.functional.mse_loss(twin(xb), yb).backward()
        optimizer.step()
    _close(model, twin, atol=1e-6)
    assert model.optimizer.state_dict()["state"][0]["step"].item() == 7
    assert model.training_state.state_dict()["accumulation"] is None  # 21 batches: no window left open


def test_weights_move_only_on_every_kth_batch_and_the_logged_loss_is_every_batch():
    x, y = regression_data(n=40)
    model = _net()
    model.compile(optimizer="sgd", loss="mse", gradient_accumulation_steps=2)
    seen = []

    class Watch(Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append((batch, model[0].weight.detach().clone(), logs["loss"]))

    before = model[0].weight.detach().clone()
    with torch.no_grad():
        first_loss = nn.functional.mse_loss(model(torch.from_numpy(x[:8])), torch.from_numpy(y[:8])).item()
    history = model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0, callbacks=[Watch()])
    moved = [not torch.equal(w, (before if i == 0 else seen[i - 1][1])) for i, (_, w, _) in enumerate(seen)]
    assert moved == [False, True, False, True, False]  # 5 batches: steps after batches 1 and 3
    assert model.training_state.state_dict()["accumulation"]["count"] == 1
    # Each batch's loss is logged as it is (not divided by k): the running mean of batch 0 is its loss.
    assert seen[0][2] == pytest.approx(first_loss, rel=1e-6)
    assert history.history["loss"][0] == pytest.approx(seen[-1][2])


def test_train_on_batch_accumulates_too():
    x, y = regression_data(n=8)
    model = _net()
    model.compile(optimizer="sgd", loss="mse", gradient_accumulation_steps=3)
    before = [p.detach().clone() for p in model.parameters()]
    model.train_on_batch(x, y)
    model.train_on_batch(x, y)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    model.train_on_batch(x, y)
    assert not torch.equal(before[0], model[0].weight)


def _accumulating_model(seed=0):
    fitkit.set_seed(seed)
    model = small_mlp()
    model.compile(optimizer=fitkit.optimizers.SGD(learning_rate=0.05, momentum=0.9, gradient_accumulation_steps=3),
                  loss="mse", metrics=["mae"])
    return model


FIT = dict(batch_size=12, validation_split=0.2, verbose=0)  # 82 training samples: 7 batches, which 3 does not divide


def _fit_in_calls(splits, x, y, between=None):
    model = _accumulating_model()
    start = 0
    for end in splits:
        if start and between is not None:
            model = between(model)
        model.fit(x, y, epochs=end, initial_epoch=start, **FIT)
        start = end
    return model


def test_windows_run_on_across_fit_calls_as_in_one_call():
    x, y = regression_data()
    one = _fit_in_calls([5], x, y)
    counts = []
    two = _fit_in_calls([2, 5], x, y, between=lambda m: counts.append(m._compiled.step.accumulated) or m)
    five = _fit_in_calls([1, 2, 3, 4, 5], x, y)
    assert counts == [14 % 3]
    for other in (two, five):
        assert same_weights(one, other) and same_optimizer(one.optimizer, other.optimizer)
    assert one._compiled.step.accumulated == 35 % 3


def test_save_and_load_in_the_middle_of_a_window_resume_exactly(tmp_path):
    x, y = regression_data()
    one = _fit_in_calls([3], x, y)

    def save_and_load(model):
        assert model.training_state.state_dict()["accumulation"]["count"] == 1
        model.save(tmp_path / "m.pt")
        return fitkit.load_model(tmp_path / "m.pt")

    resumed = _fit_in_calls([1, 3], x, y, between=save_and_load)
    assert same_weights(one, resumed) and same_optimizer(one.optimizer, resumed.optimizer)


def test_backup_and_restore_mid_window_resumes_bit_for_bit(tmp_path):
    x, y = regression_data()

    class Crash(Exception):
        pass

    class CrashAt(Callback):
        def on_train_batch_end(self, batch, logs=None):
            if self.model.training_state.epoch == 1 and batch == 1:  # batch 7 overall: 1 of a window done
                raise Crash()

    whole = _accumulating_model()
    whole.fit(x, y, epochs=3, **FIT)
    crashed = _accumulating_model()
    with pytest.raises(Crash):
        crashed.fit(x, y, epochs=3, callbacks=[BackupAndRestore(tmp_path, save_freq=1), CrashAt()], **FIT)
    resumed = _accumulating_model()
    resumed.fit(x, y, epochs=3, callbacks=[BackupAndRestore(tmp_path, save_freq=1)], **FIT)
    assert same_weights(whole, resumed) and same_optimizer(whole.optimizer, resumed.optimizer)


def test_a_saved_window_does_not_load_into_another_accumulation_and_nothing_changes():
    x, y = regression_data(n=40)
    model = _net()
    model.compile(optimizer="sgd", loss="mse", gradient_accumulation_steps=3)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)  # 5 batches: 2 of a window of 3
    state = model.training_state.state_dict()
    assert state["accumulation"]["count"] == 2 and len(state["accumulation"]["gradients"]) == 4
    other = _net(1)
    other.compile(optimizer="sgd", loss="mse", gradient_accumulation_steps=2)
    weights = [p.detach().clone() for p in other.parameters()]
    with pytest.raises(ValueError, match=r"state: the saved run had accumulated 2 batches' gradients, but this "
                                         r"model is compiled with gradient_accumulation_steps=2"):
        other.training_state.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(weights, other.parameters()))
    assert other.training_state.epoch == 0 and other._compiled.step.accumulated == 0
    same = _net(1)
    same.compile(optimizer="sgd", loss="mse", gradient_accumulation_steps=3)
    same.training_state.load_state_dict(state)
    assert same._compiled.step.accumulated == 2
    assert all(torch.equal(p.grad, g) for p, g in zip(same.parameters(), state["accumulation"]["gradients"]))


def test_the_no_sync_seam_is_entered_around_every_batch_but_the_last_of_a_window():
    x, y = regression_data(n=48)
    model = _net()
    model.compile(optimizer="sgd", loss="mse", gradient_accumulation_steps=3)
    entered = []

    @contextlib.contextmanager
    def no_sync():
        entered.append(model._compiled.step.accumulated)
        yield

    model._compiled.step.no_sync = no_sync
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)  # 6 batches: two windows
    assert entered == [0, 1, 0, 1]


# ----------------------------------------------------------------------------------------- arguments

@pytest.mark.parametrize("kwargs, message", [
    (dict(optimizer="sgd", clipnorm=1.0, clipvalue=0.5),
     "clipnorm, clipvalue: got clipnorm=1.0, clipvalue=0.5; expected only one of clipnorm, clipvalue and "
     "global_clipnorm"),
    (dict(optimizer=fitkit.optimizers.SGD(clipnorm=1.0), global_clipnorm=1.0),
     "clipnorm, global_clipnorm: got clipnorm=1.0, global_clipnorm=1.0; expected only one of"),
    (dict(optimizer=fitkit.optimizers.SGD(clipnorm=1.0), clipnorm=2.0),
     "clipnorm: given both to compile and on the optimizer SGD"),
    (dict(optimizer="sgd", gradient_accumulation_steps=1),
     "gradient_accumulation_steps: got 1; expected an integer >= 2 or None"),
    (dict(optimizer="sgd", gradient_accumulation_steps=2.0),
     "gradient_accumulation_steps: got 2.0; expected an integer >= 2 or None"),
    (dict(optimizer="sgd", clipvalue=-1), "clipvalue: got -1; expected a number >= 0 or None"),
    (dict(optimizer="sgd", global_clipnorm="1"), "global_clipnorm: got '1'; expected a number >= 0"),
])
def test_bad_gradient_options_are_refused_before_compile_changes_anything(kwargs, message):
    model = _net()
    model.compile(optimizer="adam", loss="mse")
    before = model._compiled
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        model.compile(loss="mse", **kwargs)
    assert model._compiled is before


def test_optimizer_specs_take_keras_gradient_arguments_and_check_them_as_keras_does():
    spec = fitkit.optimizers.AdamW(global_clipnorm=1.0, gradient_accumulation_steps=4)
    assert spec.global_clipnorm == 1.0 and spec.clipnorm is None and spec.gradient_accumulation_steps == 4
    assert fitkit.optimizers.AdamW.from_config(spec.get_config()) == spec
    with pytest.raises(ValueError, match="Adam: clipnorm, global_clipnorm got clipnorm=1.0, global_clipnorm=2.0; "
                                         "expected only one of"):
        fitkit.optimizers.Adam(clipnorm=1.0, global_clipnorm=2.0)
    with pytest.raises(ValueError, match="SGD: gradient_accumulation_steps got 1; expected an integer >= 2"):
        fitkit.optimizers.SGD(gradient_accumulation_steps=1)
    with pytest.raises(TypeError, match="Adam: got the argument\\(s\\) use_ema; expected"):
        fitkit.optimizers.Adam(use_ema=True)
    model = _net()
    model.compile(optimizer=spec, loss="mse")
    step = model._compiled.step
    assert (step.global_clipnorm, step.accumulation_steps) == (1.0, 4)
    assert model._compiled.config["global_clipnorm"] == 1.0  # what load_model gives compile back


# ----------------------------------------------------------------------------------------- clipping

def test_clip_functions_are_keras_formulas():
    g = [torch.tensor([3.0, 4.0]), torch.tensor([0.0, 0.0]), torch.tensor([0.3, 0.4])]
    clip_by_norm_(g, 1.0)  # each on its own: g * 1 / max(||g||, 1)
    assert torch.allclose(g[0], torch.tensor([0.6, 0.8])) and torch.equal(g[1], torch.zeros(2))
    assert torch.allclose(g[2], torch.tensor([0.3, 0.4]))
    g = [torch.tensor([3.0, 0.0]), torch.tensor([0.0, 4.0])]
    clip_by_global_norm_(g, 1.0)  # together: joint norm 5
    assert torch.allclose(torch.cat(g), torch.tensor([0.6, 0.0, 0.0, 0.8]))
    g = [torch.tensor([float("inf"), 1.0])]
    clip_by_global_norm_(g, 1.0)  # Keras turns a non-finite joint norm into NaN gradients
    assert torch.isnan(g[0]).all()
    g = [torch.tensor([-2.0, 0.1, 3.0])]
    clip_by_value_(g, 0.5)
    assert torch.equal(g[0], torch.tensor([-0.5, 0.1, 0.5]))


def _hand_clipped(model, x, y, clip, epochs=2, batch=8):
    """SGD with momentum over the batches in order, clipping as torch.nn.utils does."""
    twin = _plain_copy(model)
    optimizer = torch.optim.SGD(twin.parameters(), lr=0.1, momentum=0.9)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(epochs):
        for i in range(0, len(x), batch):
            optimizer.zero_grad()
            nn.functional.mse_loss(twin(xt[i:i + batch]), yt[i:i + batch]).backward()
            clip(list(twin.parameters()))
            optimizer.step()
    return twin


@pytest.mark.parametrize("option, value, clip", [
    # Keras's clipnorm is per variable: torch's clip_grad_norm_ over one parameter at a time
    ("clipnorm", 0.05, lambda ps: [torch.nn.utils.clip_grad_norm_([p], 0.05) for p in ps]),
    ("global_clipnorm", 0.05, lambda ps: torch.nn.utils.clip_grad_norm_(ps, 0.05)),
    ("clipvalue", 0.01, lambda ps: torch.nn.utils.clip_grad_value_(ps, 0.01)),
])
def test_clipping_matches_a_hand_loop_with_torch_nn_utils(option, value, clip):
    x, y = regression_data(n=40)
    y = y * 20  # large errors, so every step is clipped
    model = _net()
    model.compile(optimizer=fitkit.optimizers.SGD(learning_rate=0.1, momentum=0.9, **{option: value}), loss="mse")
    twin = _hand_clipped(model, x, y, clip)
    unclipped = _net()
    unclipped.compile(optimizer=fitkit.optimizers.SGD(learning_rate=0.1, momentum=0.9), loss="mse")
    model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    unclipped.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    # torch's norm clipping divides by norm + 1e-6 where Keras divides by the norm: equal to 1e-6.
    _close(model, twin, atol=2e-6)
    assert not torch.allclose(model[0].weight, unclipped[0].weight, atol=1e-3)


def test_clipping_applies_to_the_mean_gradient_of_an_accumulation_window():
    x, y = regression_data(n=32)
    y = y * 20
    model = _net()
    model.compile(optimizer="sgd", loss="mse", global_clipnorm=0.05, gradient_accumulation_steps=2)
    twin = _plain_copy(model)
    optimizer = torch.optim.SGD(twin.parameters(), lr=0.01)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for i in range(0, 32, 16):  # one window = one batch of 16
        optimizer.zero_grad()
        nn.functional.mse_loss(twin(xt[i:i + 16]), yt[i:i + 16]).backward()
        torch.nn.utils.clip_grad_norm_(list(twin.parameters()), 0.05)
        optimizer.step()
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    _close(model, twin, atol=1e-6)


def test_a_per_step_scheduler_under_accumulation_moves_every_batch_without_torch_order_warning():
    # The schedule advances per batch (Keras's schedules read the batch counter), so the scheduler's
    # first step precedes the window's first optimizer step: torch's order warning would be wrong here.
    x, y = regression_data()
    torch.manual_seed(0)
    model = small_mlp()
    optimizer = fitkit.optimizers.SGD(learning_rate=0.1, gradient_accumulation_steps=3)
    model.compile(optimizer=optimizer, loss="mse", scheduler_interval="step",
                  scheduler=lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.9))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.fit(x, y, epochs=1, **FIT)
    assert model.optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * 0.9 ** 7)


def test_a_custom_step_that_never_steps_the_optimizer_still_gets_torch_order_warning():
    class NoStep(fitkit.Model):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(6, 1)

        def forward(self, x):
            return self.linear(x)

        def train_step(self, data):
            x, y = data
            return {"loss": float(((self(x) - y) ** 2).mean().detach())}

    x, y = regression_data()
    model = NoStep()
    model.compile(optimizer="sgd", loss="mse", scheduler_interval="step",
                  scheduler=lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.9))
    with pytest.warns(UserWarning, match="before `optimizer.step"):
        model.fit(x, y, epochs=1, **FIT)
