"""Where features meet: gradient accumulation, steps_per_execution, mixed precision, schedulers, jit,
threads, the learning-rate finder, BackupAndRestore and model files, each pair checked bit for bit on the CPU."""

import numpy as np
import pytest
import torch
from torch import nn

import fitkit
from conftest import regression_data, same_optimizer, same_weights, small_mlp
from fitkit.callbacks import BackupAndRestore, Callback


class Crash(Exception):
    pass


class CrashAt(Callback):
    """Raises at the end of the execution ending at batch ``batch`` of epoch ``epoch``."""

    def __init__(self, epoch, batch):
        super().__init__()
        self.at = (epoch, batch)

    def on_train_batch_end(self, batch, logs=None):
        if self.at == (self.model.training_state.epoch, batch):
            raise Crash()


def _model(seed=0, **compile_kwargs):
    fitkit.set_seed(seed)
    model = small_mlp()
    kwargs = dict(optimizer=fitkit.optimizers.SGD(learning_rate=0.05, momentum=0.9), loss="mse", metrics=["mae"])
    kwargs.update(compile_kwargs)
    model.compile(**kwargs)
    return model


FIT = dict(batch_size=12, validation_split=0.2, verbose=0)  # 82 training samples: 7 batches, which 3 does not divide


# ----------------------------------------------------------------------------------------- 1. backup + accumulation

@pytest.mark.parametrize("save_freq, crash", [("epoch", CrashAt(2, 3)), (2, CrashAt(1, 4)), (4, CrashAt(2, 5))],
                         ids=["epoch", "every-2-batches", "every-4-batches"])
@pytest.mark.parametrize("steps_per_execution", [1, 2])
def test_backup_and_restore_with_accumulation_resumes_bit_for_bit(tmp_path, save_freq, crash, steps_per_execution):
    x, y = regression_data()
    compile_kwargs = dict(gradient_accumulation_steps=3, steps_per_execution=steps_per_execution)
    if steps_per_execution == 2 and crash.at[1] % 2 == 0:
        crash = CrashAt(crash.at[0], crash.at[1] + 1)  # hooks end executions at odd batch indices
    whole = _model(**compile_kwargs)
    ref = whole.fit(x, y, epochs=4, callbacks=[BackupAndRestore(tmp_path / "ref", save_freq=save_freq)], **FIT)
    crashed = _model(**compile_kwargs)
    with pytest.raises(Crash):
        crashed.fit(x, y, epochs=4, callbacks=[BackupAndRestore(tmp_path / "b", save_freq=save_freq), crash], **FIT)
    torch.rand(3), np.random.rand(2)
    resumed = _model(seed=7, **compile_kwargs)
    history = resumed.fit(x, y, epochs=4, callbacks=[BackupAndRestore(tmp_path / "b", save_freq=save_freq)], **FIT)
    assert same_weights(whole, resumed) and same_optimizer(whole.optimizer, resumed.optimizer)
    assert history.history == ref.history and history.epoch == [0, 1, 2, 3]
    assert resumed._compiled.step.accumulated == whole._compiled.step.accumulated


# ----------------------------------------------------------------------------------------- 2. lr finder + step

def _per_step_scheduler(optimizer):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.97 ** step)


@pytest.mark.parametrize("compile_kwargs", [
    dict(gradient_accumulation_steps=2),
    dict(gradient_accumulation_steps=3, clipnorm=0.5),
    dict(dtype_policy="mixed_bfloat16"),
    dict(scheduler=_per_step_scheduler, scheduler_interval="step"),
    dict(gradient_accumulation_steps=2, dtype_policy="mixed_bfloat16", scheduler=_per_step_scheduler,
         scheduler_interval="step", steps_per_execution=2),
], ids=["accumulate-2", "accumulate-3-clipnorm", "mixed-bfloat16", "per-step-scheduler", "all"])
@pytest.mark.parametrize("before", ["fresh", "after-a-fit"])
def test_a_fit_after_the_lr_finder_equals_a_fit_without_it(compile_kwargs, before):
    x, y = regression_data()
    start = 1 if before == "after-a-fit" else 0

    def run(probe):
        model = _model(**compile_kwargs)  # set_seed: every RNG starts where the other run's did
        if start:  # leaves an open accumulation window (7 batches) and a moved scheduler
            model.fit(x, y, epochs=1, **FIT)
        if probe:
            model.find_learning_rate(x, y, batch_size=12, steps=9)
        return model, model.fit(x, y, epochs=start + 2, initial_epoch=start, **FIT)

    plain, a = run(False)
    probed, b = run(True)
    assert same_weights(plain, probed) and same_optimizer(plain.optimizer, probed.optimizer)
    assert a.history == b.history
    if plain.scheduler is not None:
        assert plain.scheduler.state_dict() == probed.scheduler.state_dict()


# ----------------------------------------------------------------------------------------- 3. fit calls + accumulation

def test_accumulation_windows_span_epochs_and_fit_calls_as_in_one_fit():
    # Keras counts optimizer iterations, never epochs: 7 batches an epoch, windows of 3 run on across
    # the epoch ends and the fit calls (fitkit/step.py says so).
    x, y = regression_data()
    once = _model(gradient_accumulation_steps=3, steps_per_execution=2)
    h_once = once.fit(x, y, epochs=4, **FIT)
    twice = _model(gradient_accumulation_steps=3, steps_per_execution=2)
    h1 = twice.fit(x, y, epochs=2, **FIT)
    assert twice._compiled.step.accumulated == 14 % 3
    h2 = twice.fit(x, y, epochs=4, initial_epoch=2, **FIT)
    assert same_weights(once, twice) and same_optimizer(once.optimizer, twice.optimizer)
    assert {k: h1.history[k] + h2.history[k] for k in h1.history} == h_once.history
    assert once.optimizer.iterations == 28 // 3


# ----------------------------------------------------------------------------------------- 4. save / load

@pytest.mark.parametrize("policy, interval", [("mixed_bfloat16", "epoch"), ("mixed_bfloat16", "step"),
                                              ("mixed_float16", "step")])
def test_a_loaded_model_trains_on_as_the_saved_one(tmp_path, policy, interval):
    x, y = regression_data()
    compile_kwargs = dict(dtype_policy=policy, clipnorm=0.5, gradient_accumulation_steps=3,
                          scheduler=lambda opt: torch.optim.lr_scheduler.ExponentialLR(opt, 0.9),
                          scheduler_interval=interval)
    model = _model(**compile_kwargs)
    model.fit(x, y, epochs=1, **FIT)  # 7 batches: a window of 1 left open
    model.save(tmp_path / "m.pt")
    rng = torch.get_rng_state()
    h_model = model.fit(x, y, epochs=3, initial_epoch=1, **FIT)
    loaded = fitkit.load_model(tmp_path / "m.pt")
    assert loaded._compiled.step.accumulated == 1 and loaded._compiled.step.clipnorm == 0.5
    assert loaded._compiled.step.policy.name == policy
    torch.set_rng_state(rng)  # dropout draws from the global RNG, which the file does not hold
    h_loaded = loaded.fit(x, y, epochs=3, initial_epoch=1, **FIT)
    assert same_weights(model, loaded) and same_optimizer(model.optimizer, loaded.optimizer)
    assert model.scheduler.state_dict() == loaded.scheduler.state_dict()
    assert h_model.history == h_loaded.history
    if policy == "mixed_float16":
        assert model._compiled.step.scaler.state_dict() == loaded._compiled.step.scaler.state_dict()


# ----------------------------------------------------------------------------------------- 5. jit + dict outputs

class TwoHeads(fitkit.Model):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(6, 8)
        self.reg = nn.Linear(8, 1)
        self.cls = nn.Linear(8, 2)

    def forward(self, x):
        h = torch.tanh(self.body(x))
        return {"reg": self.reg(h), "cls": self.cls(h)}


def test_dict_outputs_with_two_losses_train_compiled_as_eagerly():
    # One compiled fit (compilation costs seconds on a CPU), with sample weights and accumulation on top.
    x, y = regression_data(n=48)
    targets = {"reg": y, "cls": (x[:, 1] > 0).astype(np.int64)}
    weights = np.linspace(0.5, 1.5, 48).astype(np.float32)
    runs = {}
    for jit_compile in (False, True):
        torch.manual_seed(0)
        model = TwoHeads()
        model.compile(optimizer=fitkit.optimizers.Adam(learning_rate=0.01),
                      loss={"reg": "mse", "cls": nn.CrossEntropyLoss()},
                      loss_weights={"reg": 0.5, "cls": 2.0}, metrics={"cls": ["accuracy"]},
                      jit_compile=jit_compile, gradient_accumulation_steps=2)
        history = model.fit(x, targets, sample_weight=weights, batch_size=16, epochs=2, shuffle=False, verbose=0)
        runs[jit_compile] = model, history
    (eager, h_eager), (jitted, h_jit) = runs[False], runs[True]
    assert jitted._compiled.step.jit.active  # compiled, not the eager fallback
    for a, b in zip(eager.parameters(), jitted.parameters()):
        assert torch.allclose(a, b, atol=1e-5, rtol=0)
    assert set(h_jit.history) == set(h_eager.history) >= {"loss", "reg_loss", "cls_loss"}
    for key in h_eager.history:
        assert h_jit.history[key] == pytest.approx(h_eager.history[key], abs=1e-5), key


# ----------------------------------------------------------------------------------------- 6. threads

@pytest.mark.parametrize("hook", [None, "on_train_begin", "on_test_batch_end", "on_epoch_end", "on_train_end"])
def test_torchs_thread_count_comes_back_after_fit_evaluate_and_predict(hook):
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        seen = []

        class Raise(Callback):
            def on_train_batch_end(self, batch, logs=None):
                seen.append(torch.get_num_threads())

        if hook is not None:
            def boom(self, *args, **kwargs):
                raise Crash()
            setattr(Raise, hook, boom)
        x, y = regression_data()
        model = _model()
        if hook is None:
            model.fit(x, y, epochs=1, threads="auto", callbacks=[Raise()], **FIT)
        else:
            with pytest.raises(Crash):
                model.fit(x, y, epochs=1, threads="auto", callbacks=[Raise()], **FIT)
        assert torch.get_num_threads() == 2
        if hook in (None, "on_test_batch_end", "on_epoch_end", "on_train_end"):
            assert set(seen) == {1}  # a tiny model trains on one thread
        model.evaluate(x, y, verbose=0)
        model.predict(x, verbose=0)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


# ----------------------------------------------------------------------------------------- 7. state

def test_a_multi_output_model_resumed_mid_epoch_logs_each_outputs_loss_under_its_name(tmp_path):
    # A mid-epoch resume puts back each output's running loss before the first batch has made its
    # tracker; the tracker it makes must carry the output's name ("reg_loss"), which model.metrics and
    # the logs read, not the total's ("loss").
    x, y = regression_data(n=60)
    targets = {"reg": y, "cls": (x[:, 1] > 0).astype(np.int64)}

    def model():
        torch.manual_seed(0)
        m = TwoHeads()
        m.compile(optimizer="sgd", loss={"reg": "mse", "cls": nn.CrossEntropyLoss()}, gradient_accumulation_steps=2)
        return m

    fit = dict(batch_size=12, epochs=2, verbose=0)  # 5 batches an epoch
    whole = model()
    ref = whole.fit(x, targets, callbacks=[BackupAndRestore(tmp_path / "ref", save_freq=2)], **fit)
    with pytest.raises(Crash):
        model().fit(x, targets, callbacks=[BackupAndRestore(tmp_path / "b", save_freq=2), CrashAt(1, 2)], **fit)
    resumed = model()
    history = resumed.fit(x, targets, callbacks=[BackupAndRestore(tmp_path / "b", save_freq=2)], **fit)
    assert history.history == ref.history
    assert [m.name for m in resumed.metrics] == [m.name for m in whole.metrics] == ["loss", "reg_loss", "cls_loss"]
    assert same_weights(whole, resumed)


def test_compile_again_with_the_same_optimizer_keeps_an_open_accumulation_window():
    # load_model's advice when compile's loss could not be saved (a lambda): compile again with
    # model.optimizer, "that keeps the optimizer's state". The open window (7 batches, k=3) is part of it,
    # as Keras's accumulators are optimizer variables.
    x, y = regression_data()
    once = _model(gradient_accumulation_steps=3)
    once.fit(x, y, epochs=2, **FIT)
    again = _model(gradient_accumulation_steps=3)
    again.fit(x, y, epochs=1, **FIT)
    assert again._compiled.step.accumulated == 1
    again.compile(optimizer=again.optimizer, loss="mse", metrics=["mae"], gradient_accumulation_steps=3)
    assert again._compiled.step.accumulated == 1
    again.fit(x, y, epochs=2, initial_epoch=1, **FIT)
    assert same_weights(once, again) and same_optimizer(once.optimizer, again.optimizer)


def test_compile_again_with_the_same_optimizer_keeps_the_loss_scale():
    # Keras's LossScaleOptimizer is model.optimizer: compiled again with it, the scale it reached goes on.
    x, y = regression_data()
    model = _model(dtype_policy="mixed_float16")
    model.fit(x, y, epochs=1, **FIT)
    model._compiled.step.scaler.update(new_scale=1024.0)  # as if steps had overflowed
    model.compile(optimizer=model.optimizer, loss="mse", dtype_policy="mixed_float16")
    assert model._compiled.step.scaler.get_scale() == 1024.0
    model.compile(optimizer="sgd", loss="mse", dtype_policy="mixed_float16")  # a new optimizer starts afresh
    assert model._compiled.step.scaler.get_scale() == 2.0 ** 15
