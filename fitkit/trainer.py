"""The loops: fit -> epoch -> step, evaluate and predict, with callback dispatch and logs.

Read it top to bottom: :func:`fit` checks its arguments, adapts the data (:func:`fitkit.data.adapt`),
then runs :func:`run_epoch` per epoch: :func:`train_epoch`, then :func:`evaluate_epoch` on the
validation data. The step itself is ``model.train_step``, the one place a user overrides to change
what a step does.

Nothing here reads a device value per step: losses and metrics stay on the device and become Python
floats at an epoch end, or when a callback (the progress bar at its own rate) reads the batch logs.
"""

import math
import time
import warnings

import torch

from . import arguments, data, distributed, preflight, threads as threads_
from .callbacks.base import CallbackList
from .callbacks.early_stopping import EarlyStopping
from .callbacks.progbar_logger import ProgbarLogger
from .callbacks.terminate_on_nan import NaNLossError
from .compiled import require
from .epoch_iterator import EpochIterator
from .history import History
from .interrupt import GracefulInterrupt
from .logs import LazyLogs, evaluate_result

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
    verbose = arguments.check_verbose(verbose, model)
    threads_.check(threads)
    user_callbacks = arguments.callbacks_list(callbacks)
    auto = isinstance(epochs, str) and epochs == "auto"
    if auto:
        arguments.check_positive_int(max_epochs, "max_epochs", allow_none=False)
        validation_split = _auto_validation_split(x, validation_data, validation_split)
    arguments.check_fit_args(x, initial_epoch + max_epochs if auto else epochs, initial_epoch, batch_size, validation_split,
                    validation_freq, steps_per_epoch, validation_steps, validation_batch_size, user_callbacks,
                    shuffle, time_budget)
    state = model.training_state
    distributed.sync_generator(model, state.generator)  # every rank draws the same data order
    train, val = data.adapt(x, y, sample_weight, batch_size=batch_size, shuffle=shuffle, class_weight=class_weight,
                            steps_per_epoch=steps_per_epoch, validation_split=validation_split,
                            validation_data=validation_data, validation_batch_size=validation_batch_size,
                            validation_steps=validation_steps, generator=state.generator, device=compiled.device,
                            casts=data.InputCasts.for_model(model), shard=compiled.shard)
    try:
        preflight.run(model, train, val, own_train_step=model._default_train_step,
                      own_test_step=model._default_test_step)
    except BaseException:
        _release(train, val)
        raise
    k = compiled.steps_per_execution
    train, val = EpochIterator(train, steps_per_execution=k), val and EpochIterator(val, steps_per_execution=k)
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
        # torch's thread count for this fit (fitkit/threads.py), put back on the way out whatever happens.
        # More than one process: Ctrl-C reaches the ranks at different steps, so it keeps its usual meaning.
        with threads_.FitThreads(model, threads, train.source), \
                GracefulInterrupt(enabled=compiled.shard is None) as interrupt:
            cbs.restore_training()  # BackupAndRestore loads its backup before any callback starts
            cbs.on_train_begin()
            # A restored backup may move the start, even into an epoch.
            start = initial_epoch if state.resume_epoch is None else state.resume_epoch
            state.resume_epoch = None
            aborted = False
            try:
                for epoch in range(start, epochs):
                    logs = run_epoch(model, epoch, train, val, validation_freq, cbs, interrupt, history)
                    if interrupt.requested or _should_stop(model, train, started, epoch + 1 - start, time_budget,
                                                           last=epoch + 1 == epochs):
                        break
            except NaNLossError:  # TerminateOnNaN(raise_error=True): no on_train_end, as in Keras
                aborted = True
                raise
            finally:
                _record_stop(model, history, cbs, interrupt)
                if not aborted:
                    cbs.on_train_end(logs)
    finally:
        state.source = None
        model._input_example = train.example
        _release(train, val)
    model.history = history
    return history


def _release(*sources):
    """Drop the data the batch sources hold, so a fit that raised keeps none of it alive."""
    for source in sources:
        if source is not None:
            source.release()


def run_epoch(model, epoch, train, val, validation_freq, cbs, interrupt=None, history=None):
    """One epoch: its training batches, validation when due, the scheduler, and the epoch's callbacks.

    Returns the epoch's logs: Keras's keys, and ``learning_rate`` only when ``compile(scheduler=...)``
    drives it (fitkit's extension; ReduceLROnPlateau and LearningRateScheduler add it themselves, as in
    Keras). ``history`` gets the rate the epoch trained with, read before ``on_epoch_end`` can cut it.
    After Ctrl-C the epoch ends at once: no validation, no ``on_epoch_end``.
    """
    state = model.training_state
    state.epoch = epoch
    cbs.on_epoch_begin(epoch, {})
    logs = train_epoch(model, train, cbs, interrupt)
    if interrupt is not None and interrupt.requested:
        return logs
    lr = model.learning_rate  # one read per epoch (a sync only for a tensor lr)
    if val is not None and (epoch + 1) % validation_freq == 0:
        logs.update({"val_" + k: v for k, v in _validation_logs(model, val, cbs).items()})
    if model._compiled.scheduler is not None:
        logs["learning_rate"] = lr
    step_scheduler(model, logs, per="epoch")
    state.epoch = epoch + 1
    if history is not None:
        history.record_learning_rate(lr)
    cbs.on_epoch_end(epoch, logs)
    return logs


def _validation_logs(model, val, cbs):
    """The validation pass's logs. A one-shot generator runs dry after its first pass: then it warns once
    and logs NaN for each key, so every History list keeps one value per epoch."""
    logs = evaluate_epoch(model, val, cbs)
    if logs:
        return logs
    if not getattr(val, "_warned_dry", False):
        val._warned_dry = True
        warnings.warn("validation_data: the iterable yielded no batches for this epoch's validation (a generator "
                      "is used up by its first pass); val_ values are NaN from here on. Fix: pass a re-iterable "
                      "(arrays, a list of batches, a Dataset or a DataLoader), or an endless generator with "
                      "validation_steps.", UserWarning, stacklevel=preflight.stacklevel())
    return {name: math.nan for name in model._compiled.log_names()}


def _should_stop(model, train, started, epochs_done, time_budget, last=False):
    """Whether fit ends after this epoch: a callback asked, the data ran out, or the time budget will.

    More than one process: every rank ends together (rank 0's clock decides the time budget)."""
    if train.exhausted and not last:
        if not model.stop_training:
            train.warn_exhausted()  # never silently: epochs were still to come
        model.stop_training = True
        model.stop_reason = model.stop_reason or "data_exhausted"
    if time_budget is not None and distributed.is_writer(model) and _out_of_time(started, epochs_done, time_budget):
        model.stop_training = True
        model.stop_reason = model.stop_reason or "time_budget"
    return distributed.agree_to_stop(model)


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


def _lazy(logs):
    return logs if isinstance(logs, LazyLogs) else LazyLogs(lambda d=logs: d)


def train_epoch(model, train, cbs, interrupt=None):
    """``train_step`` over the epoch's batches (``train``: an :class:`EpochIterator`); the logs as floats.

    With ``compile(steps_per_execution=k)`` the batch hooks run once per k steps, as in Keras. A resumed
    epoch (``training_state.step`` > 0) skips the batches already done and starts from the running sums
    they left.
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
    # More than one process: every rank runs every batch (DDP's all-reduce waits for all); a stop asked
    # by a batch hook takes effect at the epoch's end, where the ranks agree on it.
    alone = compiled.shard is None
    train_step = distributed.routed(model, model.train_step)  # under DDP, self(x) goes through the wrapper
    logs = None
    for first, last, batches in threads_.watch(model, train.epoch(skip=state.step)):
        if begin:
            begin(first)
        for batch in batches:
            logs = train_step(batch)
            state.step += 1
            if per_step:
                step_scheduler(model, logs, per="step")
        if end:
            end(last, _lazy(logs))
        # As Keras: a batch hook (TerminateOnNaN) may stop the epoch; validation and on_epoch_end still run.
        if (model.stop_training and alone) or (interrupt is not None and interrupt.requested):
            break
    if interrupt is None or not interrupt.requested:
        state.step = 0  # the epoch is over (Ctrl-C leaves it unfinished, for a backup to record)
    return distributed.reduce_logs(model, logs)  # summed over the ranks first, when there are several


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
    elif getattr(scheduler, "_step_count", None) == 1 and getattr(compiled.step, "accumulation_steps", 1) > 1:
        # Per batch under accumulation, the first step precedes the window's first optimizer step on
        # purpose (the schedule counts batches, as Keras's does); torch's order warning would mislead.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before")
            scheduler.step()
    else:
        scheduler.step()


# ----------------------------------------------------------------------------------------- evaluate

def evaluate_epoch(model, source, cbs):
    """Run ``test_step`` over ``source`` (an :class:`EpochIterator`, from a new pass) with metrics reset
    first; the logs as floats. ``model.stop_evaluating = True`` ends it after the current execution."""
    model.eval()
    model.reset_metrics()
    source.reset()
    begin = cbs.on_test_batch_begin if cbs.has("on_test_batch_begin") else None
    end = cbs.on_test_batch_end if cbs.has("on_test_batch_end") else None
    model.stop_evaluating = False
    cbs.on_test_begin()
    test_step = distributed.routed(model, model.test_step)
    logs = None
    with torch.no_grad():
        for first, last, batches in source.epoch():
            if begin:
                begin(first)
            for batch in batches:
                logs = test_step(batch)
            if end:
                end(last, _lazy(logs))
            if model.stop_evaluating:
                break
    logs = distributed.reduce_logs(model, logs)
    cbs.on_test_end(logs)
    return logs


def evaluate(model, x=None, y=None, batch_size=None, verbose="auto", sample_weight=None, steps=None,
             callbacks=None, return_dict=False):
    """Loss and metrics of ``model`` on the data; see :meth:`fitkit.Model.evaluate`."""
    compiled = require(model, "evaluate")
    verbose = arguments.check_verbose(verbose, model)
    arguments.check_positive_int(batch_size, "batch_size")
    arguments.check_positive_int(steps, "steps")
    if x is None:
        raise ValueError("x: got None; expected data to evaluate on")
    source = EpochIterator(data.source(x, y, sample_weight, batch_size=batch_size, device=compiled.device,
                                       steps=steps, casts=data.InputCasts.for_model(model), shard=compiled.shard),
                           steps_per_execution=compiled.steps_per_execution)
    cbs = _callback_list(model, arguments.callbacks_list(callbacks), verbose, {"verbose": verbose, "epochs": 1,
                                                                "steps": source.num_steps})
    logs = evaluate_epoch(model, source, cbs)
    model._input_example = source.example
    if not logs:
        raise ValueError("x: evaluate got no batches from the data; expected at least one batch of samples")
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
    verbose = arguments.check_verbose(verbose, model)
    arguments.check_positive_int(batch_size, "batch_size")
    arguments.check_positive_int(steps, "steps")
    if x is None:
        raise ValueError("x: got None; expected inputs to predict on")
    numpy_out = data.is_numpy_input(x)
    k = model._compiled.steps_per_execution if model._compiled is not None else 1
    source = EpochIterator(data.source(x, batch_size=batch_size, device=model.device, steps=steps,
                                       casts=data.InputCasts.for_model(model), shard=distributed.shard_of(model)),
                           steps_per_execution=k)
    cbs = _callback_list(model, arguments.callbacks_list(callbacks), verbose, {"verbose": verbose, "epochs": 1,
                                                                "steps": source.num_steps})
    begin = cbs.on_predict_batch_begin if cbs.has("on_predict_batch_begin") else None
    end = cbs.on_predict_batch_end if cbs.has("on_predict_batch_end") else None
    model.eval()
    model.stop_predicting = False
    cbs.on_predict_begin()
    outputs = []
    predict_step = distributed.routed(model, model.predict_step)
    with torch.inference_mode():
        for first, last, batches in source.epoch():
            if begin:
                begin(first)
            done = len(outputs)
            outputs.extend(predict_step(batch) for batch in batches)
            if end:
                end(last, {"outputs": outputs[done] if len(outputs) == done + 1 else _concat(outputs[done:])})
            if model.stop_predicting:
                break
    cbs.on_predict_end()
    model._input_example = source.example
    if not outputs:
        raise ValueError("x: predict got no batches from the data; expected at least one sample")
    result = distributed.gather_predictions(model, source.source, _concat(outputs), len(outputs))  # every rank's, in order
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

