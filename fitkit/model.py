"""``fitkit.Model``: an ``nn.Module`` with Keras's compile / fit / evaluate / predict.

The model owns the training state (optimizer, scheduler, loss, metrics, the data-order generator,
the epoch counter) so that a second ``fit`` call carries on exactly where the first stopped. The
loops themselves live in :mod:`fitkit.trainer`.
"""

import inspect
import os
import warnings

import numpy as np
import torch
from torch import nn

from . import (checkpoint, compiled, data, distributed, losses, metrics, mixed_precision, model_file, optimizers,
               trainer)
from .data import unpack_x_y_sample_weight
from .logs import LazyLogs, evaluate_result
from .training_state import TrainingState


def _batch_size(y_pred, x):
    leaf = y_pred if isinstance(y_pred, torch.Tensor) else (data.flatten(y_pred) or data.flatten(x))[0]
    return leaf.shape[0] if leaf.dim() else 1


_TAKES_TRAINING = {}  # function -> whether it has a `training` parameter (Keras checks the signature too)


def _takes_training(fn):
    fn = getattr(fn, "__func__", fn)
    takes = _TAKES_TRAINING.get(fn)
    if takes is None:
        try:
            takes = _TAKES_TRAINING[fn] = "training" in inspect.signature(fn).parameters
        except (TypeError, ValueError):
            takes = False
    return takes


def _is_metric(value):
    return isinstance(value, (metrics.Metric, compiled.LossTracker))


def _attribute_metrics(model):
    """The Metric objects stored as attributes of ``model`` (also in a list, tuple or dict attribute), in
    the order they were set: Keras tracks them the same way and lists them in ``model.metrics``."""
    found = []
    for value in vars(model).values():
        if _is_metric(value):
            found.append(value)
        elif isinstance(value, (list, tuple)):
            found.extend(v for v in value if _is_metric(v))
        elif isinstance(value, dict) and value and all(_is_metric(v) for v in value.values()):
            found.extend(value.values())
    return found


def _nothing_to_train(model, loss):
    """A step whose loss has no gradient: fine (and said once) when no parameter is trainable, as in Keras;
    otherwise torch's own error about the loss, as a hand-written loop would get it."""
    if any(p.requires_grad for p in model.parameters()):
        loss.backward()
    if not model.__dict__.get("_fitkit_warned_untrainable"):
        model.__dict__["_fitkit_warned_untrainable"] = True
        warnings.warn("The model does not have any trainable weights: fit computes and logs the loss, and no "
                      "weight changes (every parameter is frozen, or there are none).", UserWarning, stacklevel=4)


class Model(nn.Module):
    """Base class for models: subclass it like ``nn.Module`` and get Keras's training API.

    >>> class Net(Model):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.fc = nn.Linear(10, 1)
    ...     def forward(self, x):
    ...         return self.fc(x)
    >>> model = Net()
    >>> model.compile(optimizer="adam", loss="mse")
    """

    def __new__(cls, *args, **kwargs):
        # Keras 3 does the same: remember the constructor's arguments, so save() can rebuild the model by
        # import path and arguments (architecture="import"). Unpickling calls __new__ without arguments,
        # and the pickled __dict__ then puts the original ones back.
        self = super().__new__(cls)
        object.__setattr__(self, "_fitkit_init_args", (args, kwargs))
        return self

    def __getstate__(self):
        # Arguments that are not plain data (a module, an array) are not needed to rebuild a pickled or
        # copied model, and may not pickle at all: leave them out.
        state = self.__dict__.copy()
        args = state.get("_fitkit_init_args")
        if args is not None and not checkpoint.is_plain([list(args[0]), args[1]]):
            state["_fitkit_init_args"] = None
        return state

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._compiled = None
        self.training_state = TrainingState(self)
        self.stop_training = False
        self.stop_evaluating = False  # Keras: set True (in a callback) to end evaluate after the current batch
        self.stop_predicting = False  # the same for predict
        self.stop_reason = None
        self.history = None
        self._input_example = None  # a batch of one input of the last data seen, for summary()

    def __setstate__(self, state):
        super().__setstate__(state)
        # Files written before the input example was renamed hold "_example" (always None in a file).
        self.__dict__.pop("_example", None)
        self.__dict__.setdefault("_input_example", None)
        # An unpickled model (architecture="pickle") gets the fresh training state save() put in its place.
        if isinstance(self.__dict__.get("training_state"), TrainingState):
            self.training_state.model = self

    def __call__(self, *args, **kwargs):
        # Keras code calls `model(x, training=True)`: a forward that takes `training` gets it; otherwise
        # it is torch's train/eval mode, set for this call only when it differs from the model's mode.
        if "training" in kwargs and not _takes_training(self._forward_fn()):
            training = kwargs.pop("training")
            if training is not None and bool(training) != self.training:
                was = self.training
                self.train(bool(training))
                try:
                    return self._routed_call(*args, **kwargs)
                finally:
                    self.train(was)
        return self._routed_call(*args, **kwargs)

    def _routed_call(self, *args, **kwargs):
        # Under DDP, inside fit's (and evaluate's, predict's) steps, `self(x)` (fitkit's steps or a user's
        # train_step) goes through the DistributedDataParallel wrapper, whose forward calls this model back:
        # that inner call, and every call outside the steps, is the plain nn.Module call.
        state = self.__dict__.get("_compiled")
        if state is None or not state.routing:
            return super().__call__(*args, **kwargs)
        state.routing = False
        try:
            return state.wrapper(*args, **kwargs)
        finally:
            state.routing = True

    def _forward_fn(self):
        return self.forward

    # ------------------------------------------------------------------ placement
    def to(self, *args, **kwargs):
        self._fitkit_placed = True
        return super().to(*args, **kwargs)

    def cuda(self, device=None):
        self._fitkit_placed = True
        return super().cuda(device)

    def cpu(self):
        self._fitkit_placed = True
        return super().cpu()

    @property
    def device(self):
        """Where batches go: the compiled device, else where the parameters are."""
        if self._compiled is not None:
            return self._compiled.device
        for t in self.parameters():
            return t.device
        return torch.device("cpu")

    # ------------------------------------------------------------------ compile
    def compile(self, optimizer="rmsprop", loss=None, loss_weights=None, metrics=None, weighted_metrics=None,
                run_eagerly=None, steps_per_execution=1, jit_compile="auto", auto_scale_loss=True,
                scheduler=None, scheduler_interval="epoch", scheduler_monitor=None, device=None,
                distribute="auto", fsdp_policy=None, dtype_policy=None, clipnorm=None, clipvalue=None,
                global_clipnorm=None, gradient_accumulation_steps=None):
        """Configure training, as Keras's ``compile``: optimizer, loss, metrics, and (fitkit) a scheduler.

        optimizer="rmsprop": a Keras name ("adam", "adamw", "sgd", "rmsprop", "adagrad", "adadelta",
            "adamax", "nadam"; Keras's defaults), a ``fitkit.optimizers`` spec such as ``Adam(learning_rate=
            1e-3)``, or (fitkit) any ``torch.optim.Optimizer``, used as it is. ``model.optimizer`` is the
            torch optimizer, with Keras's ``learning_rate`` (read and assign), ``iterations`` and ``apply``.
        loss=None: a Keras name ("mse", "binary_crossentropy", ...), a loss object, a callable
            ``(y_true, y_pred)``, or (fitkit) a torch loss module or functional, called in torch's order
            ``(y_pred, y_true)``; a list or dict for several outputs (None skips an output).
        loss_weights=None: a number, or a list / dict (per output) weighting each output's loss.
        metrics=None: a list of names ("accuracy", "mae", ...), metric objects or (fitkit) torchmetrics-
            style objects, computed without sample weights; for several outputs a dict output -> metrics
            or a list with one entry per output, as Keras 3. "accuracy" is resolved from the loss and shapes.
        weighted_metrics=None: the same, computed with ``sample_weight`` / ``class_weight``.
        run_eagerly=None: True turns jit_compile off (with Keras's warning); fitkit runs eagerly otherwise.
        jit_compile="auto": True compiles the training step's forward, loss and backward with
            ``torch.compile`` (falling back to eager, with a warning, where it cannot); "auto" does so only
            on CUDA for models of a million parameters or more; False never (see :mod:`fitkit.jit`).
        auto_scale_loss=True: with "mixed_float16", scale the loss with a ``GradScaler``, as Keras's.
        steps_per_execution=1: train (and test, predict) steps per execution: the batch hooks run once
            per execution, ``on_train_batch_begin(first step)`` and ``on_train_batch_end(first + k - 1,
            logs)``, as in Keras (also for a last, partial execution; an epoch of S steps runs
            ``ceil(S / k)`` executions of up to k steps).
        scheduler=None (fitkit): a torch LR scheduler on this optimizer, or a function
            ``optimizer -> scheduler``; stepped each epoch, or each batch with ``scheduler_interval="step"``;
            its rate is then logged as ``learning_rate``. A torch ``ReduceLROnPlateau`` gets
            ``scheduler_monitor`` (default ``val_loss``, else ``loss``).
        device=None (fitkit): where to train; by default a model left on the CPU trains on CUDA, then MPS,
            when present, and a model the user placed stays where it is. Under torchrun a process's CUDA
            device is ``cuda:LOCAL_RANK``.
        distribute="auto" (fitkit): more than one process, see README "More than one device". ``"auto"``
            trains data-parallel with ``DistributedDataParallel`` when the script runs under torchrun with
            more than one process, and alone otherwise; ``"ddp"``; ``"fsdp"`` shards the model with FSDP2's
            ``fully_shard`` (for a model too big for one device); ``None``: each process trains on its own.
        fsdp_policy=None (fitkit, with ``distribute="fsdp"``): which submodules get their own
            ``fully_shard``: a function ``module -> bool`` or a set of module classes
            (``{TransformerBlock}``); by default each direct child that has parameters. The model itself is
            always sharded last.
        dtype_policy=None: Keras's "float32", "mixed_float16" or "mixed_bfloat16" (default: the global
            policy, :func:`fitkit.set_dtype_policy`): the forward and the loss run under ``torch.autocast`` in
            half precision, weights and optimizer stay float32; "mixed_float16" scales the loss with a
            ``GradScaler`` and skips steps whose gradients overflowed. See :mod:`fitkit.mixed_precision`.
        clipnorm=None, clipvalue=None, global_clipnorm=None, gradient_accumulation_steps=None: Keras's
            optimizer arguments, for a torch optimizer or a name (a ``fitkit.optimizers`` spec takes them
            itself): clip each gradient's norm, each element, or the norm of all gradients together, and
            step the optimizer every k batches on the mean of their gradients. See :mod:`fitkit.step`.

        Returns None. A model without trainable parameters compiles (its optimizer holds an empty group).

        >>> model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
        >>> model.compile(optimizer=fitkit.optimizers.AdamW(global_clipnorm=1.0, gradient_accumulation_steps=4),
        ...               loss="sparse_categorical_crossentropy", dtype_policy="mixed_bfloat16")
        """
        self._compiled = compiled.build(
            self, optimizer=optimizer, loss=loss, loss_weights=loss_weights, metrics=metrics,
            weighted_metrics=weighted_metrics, steps_per_execution=steps_per_execution, scheduler=scheduler,
            scheduler_interval=scheduler_interval, scheduler_monitor=scheduler_monitor, device=device,
            distribute=distribute, fsdp_policy=fsdp_policy, run_eagerly=run_eagerly, jit_compile=jit_compile,
            auto_scale_loss=auto_scale_loss, dtype_policy=dtype_policy, clipnorm=clipnorm, clipvalue=clipvalue,
            global_clipnorm=global_clipnorm, gradient_accumulation_steps=gradient_accumulation_steps)

    @property
    def compiled(self):
        return self._compiled is not None

    @property
    def optimizer(self):
        """The torch optimizer built by compile (None before)."""
        return self._compiled.optimizer if self._compiled is not None else None

    @property
    def scheduler(self):
        return self._compiled.scheduler if self._compiled is not None else None

    @property
    def scheduler_interval(self):
        return self._compiled.scheduler_interval if self._compiled is not None else "epoch"

    @property
    def scheduler_monitor(self):
        return self._compiled.scheduler_monitor if self._compiled is not None else None

    @property
    def compiled_loss(self):
        return self._compiled.loss if self._compiled is not None else None

    @property
    def compiled_metrics(self):
        return self._compiled.metrics if self._compiled is not None else None

    @property
    def learning_rate(self):
        """The first param group's learning rate, as a float (what History logs each epoch)."""
        return optimizers.current_lr(self.optimizer)

    @property
    def metrics_names(self):
        """The log keys of the compiled loss and metrics (the metrics once a batch has been seen)."""
        return compiled.require(self, "metrics_names").log_names()

    # ------------------------------------------------------------------ steps
    def _forward(self, x):
        if isinstance(x, dict):
            return self(**x)
        if isinstance(x, (list, tuple)):
            return self(*x)
        return self(x)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The total loss of a batch as ``compile(loss=..., loss_weights=...)`` configured it, as Keras's.

        x: the inputs (unused here; an override may use them). y: the targets. y_pred: the model's
        outputs (``self(x)``). sample_weight: per-sample weights or None. training: whether this is a
        training step (True) or evaluation (False); an override may leave the argument out, as in Keras
        (fit then calls it without). Returns a 0-dim tensor. As in Keras, it records the unweighted loss
        of each output (several outputs) but not the total: ``train_step`` / ``test_step`` add the total
        to the loss tracker (``self.metrics[0]``), weighted by the batch size.

        >>> loss = self.compute_loss(y=y, y_pred=y_pred)   # in a custom train_step
        """
        state = compiled.require(self, "compute_loss")
        if state.loss is None:
            raise ValueError("loss: the model was compiled without a loss; pass compile(loss=...) or override "
                             "compute_loss (or train_step)")
        if y is None:
            raise ValueError("y: the data has no targets; fit and evaluate need (x, y) to compute the loss")
        total, parts = state.loss(y, y_pred, sample_weight)
        if parts:
            state.update_parts(parts, _batch_size(y_pred, x))
        return total

    def _compute_loss(self, x, y, y_pred, sample_weight, training):
        """``compute_loss``, also when an override leaves out ``training`` (Keras checks the same way)."""
        fn = type(self).compute_loss
        if fn is Model.compute_loss or _takes_training(fn):
            return self.compute_loss(x, y, y_pred, sample_weight, training=training)
        return self.compute_loss(x, y, y_pred, sample_weight)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        """Update the compiled metrics with a batch and return the results of ``self.metrics``, as Keras's.

        Returns a mapping log key -> value, read lazily (no device sync until somebody reads it).
        """
        compiled.require(self, "compute_metrics").update_metrics(y, y_pred, sample_weight)
        return self.get_metrics_result()

    @property
    def metrics(self):
        """Keras's ``model.metrics``: the loss tracker (``"loss"``), the loss of each output (several
        outputs), the compile-metrics object (named ``"compile_metrics"``; its ``result()`` is a dict of
        every compiled metric) and every :class:`fitkit.metrics.Metric` stored as an attribute of the
        model. Each has ``reset_state()``, ``update_state(...)`` and ``result()``; fit resets them all at
        each epoch and evaluate at its start. (Keras lists the per-output losses after the compiled metrics;
        fitkit lists them before, the order of the logs.)

        >>> for metric in self.metrics:                     # a Keras custom train_step
        ...     if metric.name == "loss":
        ...         metric.update_state(loss)
        ...     else:
        ...         metric.update_state(y, y_pred)
        """
        found = []
        state = self._compiled
        if state is not None:
            found.append(state.tracker)
            found.extend(state.part_trackers.values())
            if state.metrics is not None:
                found.append(state.metrics)
        for metric in _attribute_metrics(self):
            if not any(metric is m for m in found):
                found.append(metric)
        return found

    def get_metrics_result(self):
        """The results of ``self.metrics`` by log key (a dict result, the compiled metrics', is merged in), as
        a :class:`~fitkit.logs.LazyLogs`: device values become floats only when read."""
        return LazyLogs(self._metrics_result)

    def _metrics_result(self):
        values = {}
        for metric in self.metrics:
            result = metric.result()
            if isinstance(result, dict):
                values.update(result)
            else:
                values[metric.name] = result
        return values

    def reset_metrics(self):
        """Start the loss tracker and every metric of ``self.metrics`` afresh (fit does it each epoch)."""
        state = self._compiled
        own = ()
        if state is not None:
            state.reset()
            own = (state.tracker, state.metrics, *state.part_trackers.values())
        for metric in self.metrics:
            if not any(metric is m for m in own):
                (getattr(metric, "reset_state", None) or metric.reset)()

    @property
    def trainable_weights(self):
        """Keras's name for the parameters that train (``requires_grad``): torch Parameters, so a Keras step's
        ``v.value.grad`` is ``v.grad`` here."""
        return [p for p in self.parameters() if p.requires_grad]

    @property
    def _default_train_step(self):
        """Whether ``train_step`` is fitkit's own (then fit may prepare the targets ahead of the steps)."""
        return type(self).train_step is Model.train_step

    @property
    def _default_test_step(self):
        """Whether ``test_step`` is fitkit's own (then fit checks the validation targets against the loss)."""
        return type(self).test_step is Model.test_step

    def train_step(self, data):
        """One optimisation step on a batch; returns the logs (loss and metrics so far this epoch).

        data: what Keras passes: ``(x, y)``, or ``(x, y, sample_weight)`` when there are sample or class
        weights, or ``x`` alone when there are no targets (``(x,)`` when x is a tuple or list of inputs);
        ``fitkit.utils.unpack_x_y_sample_weight(data)`` splits any of them. The step: forward, ``compute_loss``,
        the loss tracker updated with the batch loss weighted by the batch size (so the logged ``loss``
        is the mean over samples), backward, ``optimizer.step()``, ``compute_metrics``. With no trainable
        parameter it skips backward and step (one warning), as Keras does.

        Override it to change what a step does (a GAN, a custom loss), Keras's way: call
        ``self(x, training=True)``, ``self.compute_loss(...)``, ``self.optimizer`` and return a dict of
        values (tensors or floats; a nested dict is merged in), or ``self.compute_metrics(...)``. The
        ``with self._compiled.step as step:`` block below is what applies compile's dtype policy,
        jit_compile, gradient accumulation and clipping (:mod:`fitkit.step`): an override that keeps it keeps
        them.

        >>> def train_step(self, data):
        ...     x, y, sample_weight = fitkit.utils.unpack_x_y_sample_weight(data)
        ...     y_pred = self(x, training=True)
        ...     loss = self.compute_loss(x, y, y_pred, sample_weight)
        ...     self.zero_grad()
        ...     loss.backward()
        ...     self.optimizer.step()
        ...     self.metrics[0].update_state(loss, sample_weight=len(y))
        ...     return self.compute_metrics(x, y, y_pred, sample_weight)
        """
        x, y, sample_weight = unpack_x_y_sample_weight(data)
        with self._compiled.step as step:  # fitkit/step.py: autocast, jit, loss scaling, accumulation, clipping
            y_pred, loss = step.forward_and_loss(self, x, y, sample_weight)
            self._compiled.update_total(loss, _batch_size(y_pred, x))
            if loss.requires_grad:
                step.backward(distributed.loss_for_backward(self, loss))  # the global batch's gradient, every rank
            else:
                _nothing_to_train(self, loss)
        return self.compute_metrics(x, y, y_pred, sample_weight)

    def test_step(self, data):
        """Loss and metrics on a batch without training (``data`` as in :meth:`train_step`); returns the logs
        so far this evaluation. Override it like ``train_step``."""
        x, y, sample_weight = unpack_x_y_sample_weight(data)
        with self._compiled.step.autocast():  # the dtype policy's, as in training
            y_pred = self._forward(x)
            loss = self._compute_loss(x, y, y_pred, sample_weight, training=False)
        self._compiled.update_total(loss, _batch_size(y_pred, x))
        return self.compute_metrics(x, y, y_pred, sample_weight)

    def predict_step(self, data):
        """The model's outputs for a batch (``data`` as in :meth:`train_step`; only x is used); float32 under a
        mixed dtype policy."""
        x, _, _ = unpack_x_y_sample_weight(data)
        policy = mixed_precision.for_model(self)
        with mixed_precision.autocast(policy, self.device):
            return mixed_precision.outputs_float32(self._forward(x), policy)

    # ------------------------------------------------------------------ fit / evaluate / predict
    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None,
            validation_split=0.0, validation_data=None, shuffle=True, class_weight=None, sample_weight=None,
            initial_epoch=0, steps_per_epoch=None, validation_steps=None, validation_batch_size=None,
            validation_freq=1, max_epochs=1000, time_budget=None, threads="auto"):
        """Train the model for ``epochs`` epochs, as Keras's ``fit``; returns a new :class:`~fitkit.History`.

        x=None: arrays or tensors (a list/tuple of them for several inputs, passed to ``forward`` as
            positional arguments, or a dict, passed as keyword arguments), a torch ``Dataset`` or
            ``DataLoader``, a ``fitkit.utils.PyDataset`` (Keras's Sequence), or a generator / iterable
            yielding ``(x, y)`` or ``(x, y, sample_weight)``. float64 data becomes the model's float dtype;
            integer x for a float model is cast (one warning), as Keras's float Input does.
        y=None: the targets, like x; None when x yields its own targets.
        batch_size=None: samples per step (32 when None); not with a DataLoader, PyDataset or generator.
        epochs=1: the index of the last epoch: ``initial_epoch=2, epochs=5`` runs epochs 2, 3 and 4.
            ``"auto"`` (fitkit): train until val_loss stops improving (see below).
        verbose="auto": 0 silent, 1 a progress bar per epoch, 2 one line per epoch; "auto" is 1.
        callbacks=None: a list of ``fitkit.callbacks.Callback``; a History and a ProgbarLogger are added.
        validation_split=0.0: the last fraction of the samples (before shuffling) held out for validation;
            arrays and tensors only.
        validation_data=None: ``(x_val, y_val)``, ``(x_val, y_val, sample_weight_val)``, or any x form
            above; it overrides validation_split.
        shuffle=True: draw a new order each epoch (from the model's own generator); a PyDataset's batch
            order too, as Keras 3; ignored for DataLoaders and generators.
        class_weight=None: dict class index -> weight, applied to the training loss.
        sample_weight=None: per-sample weights (N,) or per-timestep (N, T), for arrays.
        initial_epoch=0: the epoch to start at (resuming a run).
        steps_per_epoch=None: steps per epoch; None is one pass over the data. Below one pass the next
            epoch goes on where this one stopped; an epoch in which the data runs out ends there with
            Keras's "Your input ran out of data" warning, and the next starts a new pass (see
            :mod:`fitkit.epoch_iterator`). A one-shot generator that runs dry ends training, with that warning.
        validation_steps=None: steps per validation pass (None: the whole validation data).
        validation_batch_size=None: the validation batch size (default ``batch_size``).
        validation_freq=1: validate after every n-th epoch.
        max_epochs=1000, time_budget=None (fitkit): the cap for ``epochs="auto"``; seconds after which no
            epoch starts that would end past the budget.

        Returns the History: ``history.history`` holds each logged key per epoch (Keras's keys: ``loss``,
        each metric, their ``val_`` twins; ``learning_rate`` only from ReduceLROnPlateau,
        LearningRateScheduler or ``compile(scheduler=...)``), ``history.epoch``, ``history.params``,
        ``history.learning_rates`` and ``history.stop_reason`` (why training stopped). Calling fit again
        goes on from the current weights, optimizer, scheduler and data order.

        ``epochs="auto"`` (fitkit) answers "how many epochs?": it trains until the validation loss
        stops improving, with an ``EarlyStopping(restore_best_weights=True)`` whose patience is scaled
        to the data (about 1000 optimizer steps' worth of epochs: ``ceil(1000 / steps_per_epoch)``,
        at least 5, at most 50 and at most ``max_epochs // 10`` when that is over 5), under a hard cap
        of ``max_epochs`` epochs. With no validation data it holds out ``validation_split=0.2`` and
        says so once.

        ``threads`` (fitkit): torch's CPU thread count during the fit. "auto" (default) picks one thread
        for a small model's step, where threads cost more than they save, and up to torch's own count for
        a big one, by a fixed rule of the step's size (so runs stay reproducible); ``threads=k`` uses k;
        None leaves torch alone. torch's count is restored when fit returns (see :mod:`fitkit.threads`).

        >>> history = model.fit(x, y, epochs=10, validation_split=0.2)
        >>> history.history["val_loss"]
        >>> history = model.fit(x, y, epochs="auto")   # then print(history.diagnose())
        """
        return trainer.fit(self, x, y, batch_size=batch_size, epochs=epochs, verbose=verbose,
                           callbacks=callbacks, validation_split=validation_split,
                           validation_data=validation_data, shuffle=shuffle, class_weight=class_weight,
                           sample_weight=sample_weight, initial_epoch=initial_epoch,
                           steps_per_epoch=steps_per_epoch, validation_steps=validation_steps,
                           validation_batch_size=validation_batch_size, validation_freq=validation_freq,
                           max_epochs=max_epochs, time_budget=time_budget, threads=threads)

    def find_learning_rate(self, x, y=None, *, batch_size=None, sample_weight=None, class_weight=None,
                           min_lr=1e-7, max_lr=10.0, steps=100, smoothing=0.9, diverge_factor=4.0):
        """The learning-rate range test: which learning rate to compile with, read from the loss.

        Takes ``steps`` training steps on batches of ``x, y`` (shuffled, ``batch_size`` as in fit) with
        the learning rate rising exponentially from ``min_lr`` to ``max_lr``, and stops early when the
        loss diverges: NaN or infinite, or the smoothed loss (an exponential moving average with factor
        ``smoothing``, bias-corrected) above ``diverge_factor`` times its lowest. Then it puts back the
        weights, optimizer state, scheduler, data order and every RNG exactly (a fit after it equals a
        fit without it, bit for bit). A one-shot generator given as ``x`` is consumed, though.

        Returns a result with ``.lrs``, ``.losses`` (each step's batch loss), ``.smoothed``,
        ``.suggestion`` (the rate where the smoothed loss falls fastest) and ``.plot()``.

        >>> result = model.find_learning_rate(x, y)
        >>> model.compile(optimizer=fitkit.optimizers.Adam(result.suggestion), loss="binary_crossentropy")
        """
        from .lr_finder import find_learning_rate

        return find_learning_rate(self, x, y, batch_size=batch_size, sample_weight=sample_weight,
                                  class_weight=class_weight, min_lr=min_lr, max_lr=max_lr, steps=steps,
                                  smoothing=smoothing, diverge_factor=diverge_factor)

    def show_training_loop(self, callbacks=None, *, validation=True, epochs=None, verbose="auto", print_fn=None):
        """Print the order of events in ``fit`` and which of ``callbacks`` act at each: a map of fit.

        Every hook in the order fit calls it, what ``train_step`` does, where the scheduler given to
        compile steps, and under each hook the callbacks that act there (read from the hooks they
        override), in words: where EarlyStopping decides, where the learning rate changes, where a
        checkpoint is written. fit's own History and progress bar are listed too (``verbose=0``
        leaves the bar out); ``validation=False`` shows a fit without validation data and
        ``epochs="auto"`` the EarlyStopping that it adds. Returns the text; ``print_fn`` (default
        ``print``) receives it, as with :meth:`summary`.

        >>> model.show_training_loop(callbacks=[EarlyStopping(patience=3), ModelCheckpoint("best.pt")])
        """
        from .training_loop import training_loop

        text = training_loop(self, callbacks, validation=validation, epochs=epochs, verbose=verbose,
                             custom_train_step=not self._default_train_step)
        (print_fn or print)(text)
        return text

    def evaluate(self, x=None, y=None, batch_size=None, verbose="auto", sample_weight=None, steps=None,
                 callbacks=None, return_dict=False):
        """The loss and metrics on the data in test mode, as Keras's ``evaluate``.

        x=None, y=None, batch_size=None, sample_weight=None: as in :meth:`fit` (batch_size 32 when None).
        verbose="auto": 0 silent, 1 a progress bar, 2 one line. steps=None: steps to run (None: all the
        data). callbacks=None: callbacks whose ``on_test_*`` hooks run. return_dict=False: return a dict.
        ``model.stop_evaluating = True`` (from a callback) ends the evaluation after the current step.

        Returns the loss alone (a float) when nothing else is logged, else the list
        ``[loss, metric1, ...]`` in log order, or with ``return_dict`` the dict key -> float.

        >>> loss, acc = model.evaluate(x_test, y_test)
        """
        return trainer.evaluate(self, x, y, batch_size=batch_size, verbose=verbose, sample_weight=sample_weight,
                                steps=steps, callbacks=callbacks, return_dict=return_dict)

    def predict(self, x, batch_size=None, verbose="auto", steps=None, callbacks=None):
        """The model's outputs for every batch of ``x``, joined, as Keras's ``predict``; works before compile.

        x: as in :meth:`fit` (targets, if the data holds any, are ignored). batch_size=None: 32 when None.
        verbose="auto": 0 silent, 1 a progress bar. steps=None: steps to run (None: all the data).
        callbacks=None: callbacks whose ``on_predict_*`` hooks run (``logs["outputs"]`` per batch).
        ``model.stop_predicting = True`` (from a callback) ends it after the current step, with the outputs
        so far.

        Returns the outputs in the model's structure (a tensor, or a list, tuple or dict of them, as the
        model returns; Keras returns a list for a list of outputs and a dict for named ones): NumPy arrays
        when NumPy went in, CPU tensors otherwise (fitkit).

        >>> probabilities = model.predict(x_test)
        """
        return trainer.predict(self, x, batch_size=batch_size, verbose=verbose, steps=steps, callbacks=callbacks)

    def _batch_on_device(self, x, y=None, sample_weight=None, class_weight=None):
        """``(x, y, sample_weight)`` of one batch given to a ``*_on_batch`` call, as tensors on the device."""
        x, y, sw = data.tensors(x, "x"), data.tensors(y, "y"), data.tensors(sample_weight, "sample_weight")
        data.num_samples((x, y, sw), "x, y and sample_weight")
        if class_weight is not None:
            if y is None:
                raise ValueError("class_weight: given without y; class weights are looked up from the targets")
            sw = data.apply_class_weight(y, sw, data.class_weight_table(class_weight))
        device = self.device
        return data.move(x, device), data.move(y, device), data.move(sw, device)

    def train_on_batch(self, x, y=None, sample_weight=None, class_weight=None, return_dict=False):
        """One training step on exactly this batch; returns its loss (and metrics)."""
        compiled.require(self, "train_on_batch")
        batch = self._batch_on_device(x, y, sample_weight, class_weight)
        self.train()
        self.reset_metrics()
        return evaluate_result(distributed.one_batch(self, self.train_step)(batch), return_dict)

    def test_on_batch(self, x, y=None, sample_weight=None, return_dict=False):
        """Loss (and metrics) of this batch without training."""
        compiled.require(self, "test_on_batch")
        batch = self._batch_on_device(x, y, sample_weight)
        self.eval()
        self.reset_metrics()
        with torch.no_grad():
            return evaluate_result(distributed.one_batch(self, self.test_step)(batch), return_dict)

    def predict_on_batch(self, x):
        """Outputs for this batch: NumPy when NumPy went in, CPU tensors otherwise."""
        numpy_out = data.is_numpy_input(x)
        batch = self._batch_on_device(x)
        self.eval()
        with torch.inference_mode():
            out = distributed.one_batch(self, self.predict_step)(batch)
        out = data.map_structure(lambda t: t.cpu(), out)
        return data.map_structure(lambda t: t.numpy(), out) if numpy_out else out

    # ------------------------------------------------------------------ weights and summary
    def get_weights(self):
        """Every weight (parameters and buffers) as NumPy arrays, in ``state_dict`` order (whole arrays on every
        rank for a sharded model: then every rank calls it)."""
        return [v.detach().cpu().numpy().copy() for v in distributed.full_state_dict(self, everywhere=True).values()]

    def set_weights(self, weights):
        """Load weights from a list as returned by :meth:`get_weights` (shapes are checked first)."""
        state = self.state_dict()
        if not isinstance(weights, (list, tuple)) or len(weights) != len(state):
            got = len(weights) if isinstance(weights, (list, tuple)) else type(weights).__name__
            raise ValueError(f"weights: got {got} arrays; expected a list of {len(state)} arrays as returned by "
                             "get_weights()")
        for (name, current), new in zip(state.items(), weights):
            shape = tuple(np.shape(new))
            if shape != tuple(current.shape):
                raise ValueError(f"weights: {name} has shape {tuple(current.shape)}; got an array of shape {shape}")
        if distributed.is_sharded(self):
            distributed.load_full_state_dict(self, {name: torch.as_tensor(np.asarray(new), dtype=current.dtype)
                                                    for (name, current), new in zip(state.items(), weights)})
            return
        with torch.no_grad():
            for current, new in zip(state.values(), weights):
                current.copy_(torch.as_tensor(np.asarray(new), dtype=current.dtype))

    # ------------------------------------------------------------------ saving and loading
    def save(self, filepath, overwrite=True, architecture="auto"):
        """Save what it takes to go on training: architecture, weights, optimizer, scheduler, compile
        settings, the data-order generator, the epoch counter and the History. The write is atomic.

        architecture: ``"import"`` stores the class's import path and its constructor arguments (recorded
        when the model was created; they must be plain data: numbers, strings, lists, dicts, tensors),
        or what a ``get_config()`` method returns; ``"pickle"`` pickles the module object itself, without
        its weights (Sequential and wrap() models: their layers are objects); ``"auto"`` (default)
        imports when it can and pickles otherwise. A pickle of torch.nn layers and fitkit classes loads
        safely; one naming other classes needs ``custom_objects`` or ``trusted=True`` in load_model.

        Under torchrun every process calls it, as the unchanged script does (as Keras asks of its workers):
        the state is gathered from all (whole tensors of an FSDP2-sharded model), rank 0 writes, and the
        others wait until the file exists. ``if rank == 0: model.save(...)`` would leave rank 0 waiting.

        >>> model.save("model.pt")
        >>> model = fitkit.load_model("model.pt")   # compiled, ready to continue training
        """
        if distributed.shard_of(self) is None and not distributed.is_sharded(self):
            model_file.save_model(self, filepath, overwrite=overwrite, architecture=architecture, allow=_allowlist())
            return
        # More than one process: every rank takes part in gathering the state (whole tensors of a sharded
        # model, the epoch's sums over the ranks), rank 0 writes, and the others wait until the file exists.
        checkpoint.check_overwrite(filepath, overwrite)
        gathered = {"weights": distributed.full_state_dict(self),
                    "optimizer_state": distributed.full_optimizer_state(self, self.optimizer)
                    if self._compiled is not None else None,
                    "training": self.training_state.state_dict(model_state=False),
                    "structure": self._compiled.unsharded if self._compiled is not None else None}
        with distributed.one_writer(self) as writing:
            if writing:
                model_file.save_model(self, filepath, overwrite=True, architecture=architecture, allow=_allowlist(),
                                      gathered=gathered)

    def _weights_owner(self):
        # A wrap()ped module's weights are saved under its own names, so plain torch code can load them.
        return self.module if isinstance(self, Wrapped) else self

    def save_weights(self, filepath, overwrite=True):
        """Save the weights as a plain ``state_dict`` file (CPU tensors), atomically.

        Plain torch reads it: ``module.load_state_dict(torch.load(filepath))``; a ``wrap()``ped model
        saves its module's own state_dict (no ``module.`` prefix). Under torchrun every process calls it
        (whole tensors, also of a sharded model); rank 0 writes, the others wait for the file.

        >>> model.save_weights("weights.pt")
        """
        path = checkpoint.check_overwrite(filepath, overwrite)
        owner = self._weights_owner()
        if not distributed.is_sharded(self):
            state = {k: v.detach().cpu() for k, v in owner.state_dict().items()}
        else:  # whole tensors gathered from every rank's shard (rank 0 gets them)
            prefix = "module." if owner is not self else ""
            state = {k[len(prefix):]: v for k, v in distributed.full_state_dict(self).items() if k.startswith(prefix)}
        with distributed.one_writer(self) as writing:  # rank 0 writes; the others wait for the file
            if writing:
                checkpoint.save(state, path)

    def load_weights(self, filepath, skip_mismatch=False):
        """Load weights from a ``save_weights`` / ``torch.save(state_dict)`` file, or from a ``save`` file.

        Names and shapes are checked before anything changes; a mismatch is an error naming every
        entry, unless ``skip_mismatch=True`` (load those that fit, warn about the rest). The file is
        read with ``torch.load(weights_only=True)``.

        >>> model.load_weights("weights.pt")
        """
        hint = (" load_weights reads state_dict files (torch.save(model.state_dict(), path)); for a pickled "
                "module use torch.load(path, weights_only=False), only on a file you trust.")
        content = checkpoint.read(filepath, hint=hint)
        path = os.fspath(filepath)
        target = self
        if isinstance(content, dict) and content.get("format") == checkpoint.MODEL_FORMAT:
            weights = content["weights"]
        elif isinstance(content, dict) and content.get("format") == checkpoint.BACKUP_FORMAT:
            weights = (content["state"] if "state" in content else content)["weights"]
        else:
            weights = content
            owner = self._weights_owner()
            if owner is not self and isinstance(weights, dict) and set(weights) == set(owner.state_dict()):
                target = owner
        weights = checkpoint.check_weights(target, weights, path, skip_mismatch)
        if distributed.is_sharded(self):  # whole tensors into each rank's shards
            prefix = "module." if target is not self else ""
            distributed.load_full_state_dict(self, {prefix + k: v for k, v in weights.items()}, strict=not skip_mismatch)
        else:
            target.load_state_dict(weights, strict=not skip_mismatch)

    def summary(self, print_fn=None, input_example=None):
        """Print the layers, their output shapes (once the model has seen data) and parameter counts.

        ``input_example`` (a batch of inputs) shows output shapes before any fit.
        """
        example = input_example if input_example is not None else self._input_example
        shapes = self._output_shapes(example) if example is not None else {}
        rows = []
        for name, module in self.named_modules():
            own = list(module.parameters(recurse=False))
            if module is self or (next(module.children(), None) is not None and not own):
                continue
            rows.append((f"{name} ({distributed.original_class(module).__name__})", shapes.get(name, "?"),
                         sum(p.numel() for p in module.parameters())))
        total = sum(p.numel() for p in self.parameters())
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        width = max([30] + [len(r[0]) + 2 for r in rows])
        lines = [f'Model: "{distributed.original_class(self).__name__}"', "-" * (width + 36),
                 f"{'Layer (type)':<{width}}{'Output Shape':<24}{'Param #':>12}", "=" * (width + 36)]
        lines += [f"{a:<{width}}{b:<24}{c:>12,}" for a, b, c in rows]
        lines += ["=" * (width + 36), f"Total params: {total:,}", f"Trainable params: {trainable:,}",
                  f"Non-trainable params: {total - trainable:,}", "-" * (width + 36)]
        text = "\n".join(lines)
        (print_fn or print)(text)
        return text

    def _output_shapes(self, example):
        shapes, handles = {}, []

        def describe(out):
            if isinstance(out, torch.Tensor):
                return str((None,) + tuple(out.shape[1:]))
            if isinstance(out, (list, tuple)):
                return ", ".join(describe(o) for o in out)
            return type(out).__name__

        for name, module in self.named_modules():
            if module is not self:
                handles.append(module.register_forward_hook(
                    lambda m, i, o, name=name: shapes.__setitem__(name, describe(o))))
        was_training = self.training
        try:
            self.eval()
            with torch.no_grad():
                self._forward(data.move(example, self.device))
        finally:
            for h in handles:
                h.remove()
            self.train(was_training)
        return shapes


class Sequential(nn.Sequential, Model):
    """A stack of modules, like ``nn.Sequential``, with the training API of :class:`Model`.

    >>> model = Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    """

    def add(self, module):
        """Append a module (Keras's name for ``append``)."""
        if not isinstance(module, nn.Module):
            raise TypeError(f"module: got {type(module).__name__}; expected a torch.nn.Module")
        self.append(module)
        return self


class Wrapped(Model):
    """An existing ``nn.Module`` trained with fitkit; ``state_dict`` keys gain a ``module.`` prefix."""

    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    def _forward_fn(self):
        return self.module.forward


def _allowlist():
    """fitkit's classes and functions that a model file's pickles may name (see checkpoint.unpack)."""
    # TrainingState lived in fitkit.model until the training state got a room of its own; files written
    # then name it there.
    found = [Model, Sequential, Wrapped, TrainingState, (TrainingState, "fitkit.model.TrainingState")]
    found += [obj for obj in vars(losses).values()
              if callable(obj) and getattr(obj, "__module__", None) == losses.__name__]
    # A package of family modules, and files saved before it was one name its objects by older paths.
    return found + metrics.pickle_allowlist()


def wrap(module):
    """Give an existing ``nn.Module`` (a torchvision network, say) compile/fit/evaluate/predict.

    >>> model = wrap(torchvision.models.resnet18(num_classes=10))
    >>> model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    """
    if isinstance(module, Model):
        return module
    if not isinstance(module, nn.Module):
        raise TypeError(f"module: got {type(module).__name__}; expected a torch.nn.Module")
    return Wrapped(module)
