"""The loops: fit -> epoch -> step, evaluate and predict, with callback dispatch and logs.

Read it top to bottom: :func:`fit` checks its arguments, adapts the data (:func:`fitkit.data.adapt`),
then runs :func:`run_epoch` per epoch: :func:`train_epoch`, then :func:`evaluate_epoch` on the
validation data. The step itself is ``model.train_step``, the one place a user overrides to change
what a step does.

Nothing here reads a device value per step: losses and metrics stay on the device and become Python
floats at an epoch end, or when a callback (the progress bar at its own rate) reads the batch logs.
"""

import math
import numbers
import time
import warnings

import torch

from . import data, preflight, threads as threads_
from .callbacks.base import CallbackList
from .callbacks.early_stopping import EarlyStopping
from .callbacks.progbar_logger import ProgbarLogger
from .compiled import require
from .history import History
from .interrupt import GracefulInterrupt
from .logs import LazyLogs, evaluate_result, materialize

_VERBOSE = (0, 1, 2, "auto")


# ----------------------------------------------------------------------------------------- checks

def _check_verbose(verbose):
    if verbose not in _VERBOSE or isinstance(verbose, bool):
        raise ValueError(f"verbose: got {verbose!r}; expected 0 (silent), 1 (progress bar), 2 (one line per "
                         "epoch) or 'auto'")
    return 1 if verbose == "auto" else verbose


def _check_positive_int(value, name, allow_none=True):
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name}: got {value!r}; expected a positive integer" + (" or None" if allow_none else ""))


def _check_fit_args(x, epochs, initial_epoch, batch_size, validation_split, validation_freq, steps_per_epoch,
                    validation_steps, validation_batch_size, callbacks, shuffle, time_budget):
    if isinstance(epochs, bool) or not isinstance(epochs, numbers.Integral) or epochs < 0:
        raise ValueError(f"epochs: got {epochs!r}; expected a non-negative integer or 'auto'")
    if isinstance(initial_epoch, bool) or not isinstance(initial_epoch, numbers.Integral) or initial_epoch < 0:
        raise ValueError(f"initial_epoch: got {initial_epoch!r}; expected a non-negative integer")
    _check_positive_int(batch_size, "batch_size")
    _check_positive_int(validation_batch_size, "validation_batch_size")
    _check_positive_int(steps_per_epoch, "steps_per_epoch")
    _check_positive_int(validation_steps, "validation_steps")
    _check_positive_int(validation_freq, "validation_freq", allow_none=False)
    if isinstance(validation_split, bool) or not isinstance(validation_split, numbers.Real) \
            or not 0.0 <= validation_split < 1.0:
        raise ValueError(f"validation_split: got {validation_split!r}; expected a fraction in [0, 1)")
    if not isinstance(shuffle, bool):
        raise ValueError(f"shuffle: got {shuffle!r}; expected True or False")
    for cb in callbacks:
        if not hasattr(cb, "set_model"):
            raise TypeError(f"callbacks: got {cb!r}; expected fitkit.callbacks.Callback instances")
    if time_budget is not None and (isinstance(time_budget, bool) or not isinstance(time_budget, numbers.Real)
                                    or time_budget <= 0):
        raise ValueError(f"time_budget: got {time_budget!r}; expected a positive number of seconds or None")
    if x is None:
        raise ValueError("x: got None; expected training data (arrays, tensors, a Dataset, a DataLoader "
                         "or an iterable of batches)")


def _as_list(callbacks):
    if callbacks is None:
        return []
    if isinstance(callbacks, (list, tuple)):
        return list(callbacks)
    if hasattr(callbacks, "set_model"):
        return [callbacks]
    raise TypeError(f"callbacks: got {type(callbacks).__name__}; expected a list of Callback instances")


def _callback_list(model, user_callbacks, verbose, params, history=None):
    """User callbacks, then History and the progress bar, as Keras orders them."""
    callbacks = list(user_callbacks)
    if history is not None and not any(isinstance(cb, History) for cb in callbacks):
        callbacks.append(history)
    if verbose and not any(isinstance(cb, ProgbarLogger) for cb in callbacks):
        callbacks.append(ProgbarLogger())
    return CallbackList(callbacks, model=model, params=params)


# ----------------------------------------------------------------------------------------- fit

def fit(model, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None,
        validation_split=0.0, validation_data=None, shuffle=True, class_weight=None, sample_weight=None,
        initial_epoch=0, steps_per_epoch=None, validation_steps=None, validation_batch_size=None,
        validation_freq=1, max_epochs=1000, time_budget=None, threads="auto"):
    """Train ``model``; see :meth:`fitkit.Model.fit` for the arguments. Returns a History."""
    compiled = require(model, "fit")
    verbose = _check_verbose(verbose)
    threads_.check(threads)
    user_callbacks = _as_list(callbacks)
    auto = isinstance(epochs, str) and epochs == "auto"
    if auto:
        _check_positive_int(max_epochs, "max_epochs", allow_none=False)
        validation_split = _auto_validation_split(x, validation_data, validation_split)
    _check_fit_args(x, initial_epoch + max_epochs if auto else epochs, initial_epoch, batch_size, validation_split,
                    validation_freq, steps_per_epoch, validation_steps, validation_batch_size, user_callbacks,
                    shuffle, time_budget)
    state = model.training_state
    train, val = data.adapt(x, y, sample_weight, batch_size=batch_size, shuffle=shuffle, class_weight=class_weight,
                            steps_per_epoch=steps_per_epoch, validation_split=validation_split,
                            validation_data=validation_data, validation_batch_size=validation_batch_size,
                            validation_steps=validation_steps, generator=state.generator, device=compiled.device)
    preflight.prepare_targets(model, train, own_train_step=model._default_train_step)
    if auto:
        epochs = initial_epoch + max_epochs
        if not any(isinstance(cb, EarlyStopping) for cb in user_callbacks):
            user_callbacks.append(EarlyStopping(monitor="val_loss", restore_best_weights=True,
                                                patience=auto_patience(train.num_steps, max_epochs)))
    # Keras uses (and returns) a History the user passed in callbacks.
    history = next((cb for cb in user_callbacks if isinstance(cb, History)), None) or History()
    cbs = _callback_list(model, user_callbacks, verbose, {"verbose": verbose, "epochs": epochs,
                                                          "steps": train.num_steps}, history)
    model.stop_training, model.stop_reason = False, None
    state.begin_fit()
    state.source = train
    logs, started = {}, time.perf_counter()
    try:
        # torch's thread count for this fit (fitkit/threads.py), put back on the way out whatever happens
        with threads_.FitThreads(model, threads, train), GracefulInterrupt() as interrupt:
            cbs.restore_training()  # BackupAndRestore loads its backup before any callback starts
            cbs.on_train_begin()
            # A restored backup may move the start, even into an epoch.
            start = initial_epoch if state.resume_epoch is None else state.resume_epoch
            state.resume_epoch = None
            try:
                for epoch in range(start, epochs):
                    logs = run_epoch(model, epoch, train, val, validation_freq, cbs, interrupt)
                    if interrupt.requested or _should_stop(model, train, started, epoch + 1 - start, time_budget):
                        break
            finally:
                _record_stop(model, history, cbs, interrupt)
                cbs.on_train_end(logs)
    finally:
        state.source = None
        model._input_example = train.example
    model.history = history
    return history


def run_epoch(model, epoch, train, val, validation_freq, cbs, interrupt=None):
    """One epoch: its training batches, validation when due, the scheduler, and the epoch's callbacks.

    Returns the epoch's logs. After Ctrl-C the epoch ends at once: no validation, no ``on_epoch_end``.
    """
    state = model.training_state
    state.epoch = epoch
    cbs.on_epoch_begin(epoch)
    logs = train_epoch(model, train, cbs, interrupt)
    if interrupt is not None and interrupt.requested:
        return logs
    if val is not None and (epoch + 1) % validation_freq == 0:
        logs.update({"val_" + k: v for k, v in evaluate_epoch(model, val, cbs).items()})
    step_scheduler(model, logs, per="epoch")
    state.epoch = epoch + 1
    cbs.on_epoch_end(epoch, logs)
    return logs


def _should_stop(model, train, started, epochs_done, time_budget):
    """Whether fit ends after this epoch: a callback asked, the data ran out, or the time budget will."""
    if getattr(train, "exhausted", False):
        model.stop_training = True
        model.stop_reason = model.stop_reason or "data_exhausted"
    if time_budget is not None and _out_of_time(started, epochs_done, time_budget):
        model.stop_training = True
        model.stop_reason = model.stop_reason or "time_budget"
    return model.stop_training


def _auto_validation_split(x, validation_data, validation_split):
    """``epochs="auto"`` watches val_loss: without validation data it holds out the last 20%, and says so."""
    if validation_data is not None or validation_split:
        return validation_split
    if not data.is_array_like(x) and not isinstance(x, torch.utils.data.TensorDataset):
        raise ValueError("epochs: 'auto' watches the validation loss; x is not an array, so pass "
                         "validation_data=... as well")
    warnings.warn("fit(epochs='auto'): no validation data given, so the last 20% of the samples are "
                  "held out (validation_split=0.2).", UserWarning, stacklevel=4)
    return 0.2


def _record_stop(model, history, cbs, interrupt):
    """Why training stopped (``history.stop_reason``), and what EarlyStopping watched and restores."""
    if interrupt.requested:
        model.stop_reason = "interrupted"
        history.interrupted = True
    if model.stop_reason is None and model.stop_training:
        model.stop_reason = "stopped"
    history.stop_reason = model.stop_reason or "epochs"
    for cb in cbs:
        if getattr(cb, "stopped_epoch", 0) and isinstance(getattr(cb, "monitor", None), str):
            history.stop_monitor = cb.monitor  # what diagnose() names when EarlyStopping stopped it
        if isinstance(cb, EarlyStopping) and cb.restore_best_weights and cb.best_weights is not None:
            history.restored_epoch = cb.best_epoch  # its on_train_end puts these weights back


def train_epoch(model, train, cbs, interrupt=None):
    """One pass of ``train_step`` over the epoch's batches; the epoch's logs as floats.

    A resumed epoch (``training_state.step`` > 0) skips the batches already done and starts from the
    running sums they left.
    """
    state, compiled = model.training_state, model._compiled
    model.train()
    model.reset_metrics()
    running = state.take_running()
    if running is not None:
        compiled.load_state_dict(running, compiled.device)
    begin = cbs.on_train_batch_begin if cbs.has("on_train_batch_begin") else None
    end = cbs.on_train_batch_end if cbs.has("on_train_batch_end") else None
    per_step = compiled.scheduler is not None and compiled.scheduler_interval == "step"
    logs = None
    skip = state.step
    for step, batch in enumerate(threads_.watch(model, train.epoch(skip=skip)), start=skip):
        if begin:
            begin(step)
        logs = model.train_step(batch)
        state.step = step + 1
        if per_step:
            step_scheduler(model, logs, per="step")
        if end:
            end(step, logs if isinstance(logs, LazyLogs) else LazyLogs(lambda d=logs: d))
        # As Keras: a batch hook (TerminateOnNaN) may stop the epoch; validation and on_epoch_end still run.
        if model.stop_training or (interrupt is not None and interrupt.requested):
            break
    if interrupt is None or not interrupt.requested:
        state.step = 0  # the epoch is over (Ctrl-C leaves it unfinished, for a backup to record)
    epoch_logs = materialize(logs)
    epoch_logs["learning_rate"] = model.learning_rate
    return epoch_logs


def step_scheduler(model, logs, per):
    """Step the scheduler given to compile when ``per`` ("epoch" or "step") is its interval; torch's
    ReduceLROnPlateau gets the monitored value from ``logs`` (the epoch's, or the batch's)."""
    compiled = model._compiled
    scheduler = compiled.scheduler
    if scheduler is None or compiled.scheduler_interval != per:
        return
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        monitor = compiled.scheduler_monitor or ("val_loss" if "val_loss" in logs else "loss")
        if monitor not in logs:
            raise KeyError(f"scheduler_monitor: {monitor!r} is not logged; the logs hold {sorted(logs)}")
        scheduler.step(logs[monitor])
    else:
        scheduler.step()


# ----------------------------------------------------------------------------------------- evaluate

def evaluate_epoch(model, source, cbs):
    """Run ``test_step`` over ``source`` with metrics reset first; the logs as floats."""
    model.eval()
    model.reset_metrics()
    begin = cbs.on_test_batch_begin if cbs.has("on_test_batch_begin") else None
    end = cbs.on_test_batch_end if cbs.has("on_test_batch_end") else None
    cbs.on_test_begin()
    logs = None
    with torch.no_grad():
        for step, batch in enumerate(source.epoch()):
            if begin:
                begin(step)
            logs = model.test_step(batch)
            if end:
                end(step, logs if isinstance(logs, LazyLogs) else LazyLogs(lambda d=logs: d))
    logs = materialize(logs)
    cbs.on_test_end(logs)
    return logs


def evaluate(model, x=None, y=None, batch_size=None, verbose="auto", sample_weight=None, steps=None,
             callbacks=None, return_dict=False):
    """Loss and metrics of ``model`` on the data; see :meth:`fitkit.Model.evaluate`."""
    compiled = require(model, "evaluate")
    verbose = _check_verbose(verbose)
    _check_positive_int(batch_size, "batch_size")
    _check_positive_int(steps, "steps")
    if x is None:
        raise ValueError("x: got None; expected data to evaluate on")
    source = data.source(x, y, sample_weight, batch_size=batch_size, device=compiled.device, steps=steps)
    cbs = _callback_list(model, _as_list(callbacks), verbose, {"verbose": verbose, "epochs": 1,
                                                                "steps": source.num_steps})
    logs = evaluate_epoch(model, source, cbs)
    model._input_example = source.example
    return evaluate_result(logs, return_dict)


# ----------------------------------------------------------------------------------------- predict

def _concat(outputs):
    """Batch outputs (tensors, or tuples/dicts of them) joined along the first axis, on the CPU."""
    first = outputs[0]
    if isinstance(first, dict):
        return {k: _concat([o[k] for o in outputs]) for k in first}
    if isinstance(first, (list, tuple)):
        return type(first)(_concat([o[i] for o in outputs]) for i in range(len(first)))
    return torch.cat(outputs).cpu()


def predict(model, x, batch_size=None, verbose="auto", steps=None, callbacks=None):
    """Outputs of ``model`` for every batch of ``x``; see :meth:`fitkit.Model.predict`."""
    verbose = _check_verbose(verbose)
    _check_positive_int(batch_size, "batch_size")
    _check_positive_int(steps, "steps")
    if x is None:
        raise ValueError("x: got None; expected inputs to predict on")
    numpy_out = data.is_numpy_input(x)
    source = data.source(x, batch_size=batch_size, device=model.device, steps=steps)
    cbs = _callback_list(model, _as_list(callbacks), verbose, {"verbose": verbose, "epochs": 1,
                                                                "steps": source.num_steps})
    begin = cbs.on_predict_batch_begin if cbs.has("on_predict_batch_begin") else None
    end = cbs.on_predict_batch_end if cbs.has("on_predict_batch_end") else None
    model.eval()
    cbs.on_predict_begin()
    outputs = []
    with torch.inference_mode():
        for step, batch in enumerate(source.epoch()):
            if begin:
                begin(step)
            out = model.predict_step(batch)
            outputs.append(out)
            if end:
                end(step, {"outputs": out})
    cbs.on_predict_end()
    model._input_example = source.example
    if not outputs:
        raise ValueError("x: predict got no batches from the data; expected at least one sample")
    result = _concat(outputs)
    if numpy_out:
        result = data.map_structure(lambda t: t.numpy(), result)
    return result


def _out_of_time(started, epochs_done, time_budget):
    """Whether another epoch, as long as the mean so far, would end past the budget."""
    elapsed = time.perf_counter() - started
    return elapsed + elapsed / max(1, epochs_done) > time_budget


def auto_patience(steps_per_epoch, max_epochs):
    """Epochs without improvement that ``fit(epochs="auto")`` waits for.

    About 1000 optimizer steps' worth of epochs, between 5 and 50 and at most a tenth of
    ``max_epochs`` (but never under 5): few steps per epoch means each epoch moves the weights little
    and its validation loss is noisy, so more epochs are needed before calling a plateau.
    """
    steps = max(1, steps_per_epoch or 1)
    patience = math.ceil(1000 / steps)
    return int(max(5, min(patience, 50, max(5, max_epochs // 10))))

