"""``fitkit.Model``: an ``nn.Module`` with Keras's compile / fit / evaluate / predict.

The model owns the training state (optimizer, scheduler, loss, metrics, the data-order generator,
the epoch counter) so that a second ``fit`` call carries on exactly where the first stopped. The
loops themselves live in :mod:`fitkit.trainer`.
"""

import os

import numpy as np
import torch
from torch import nn

from . import checkpoint, compiled, data, losses, metrics, mixed_precision, optimizers, trainer
from .logs import LazyLogs, evaluate_result
from .training_state import TrainingState


def _batch_size(y_pred, x):
    leaf = y_pred if isinstance(y_pred, torch.Tensor) else (data.flatten(y_pred) or data.flatten(x))[0]
    return leaf.shape[0] if leaf.dim() else 1


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
                dtype_policy=None, clipnorm=None, clipvalue=None, global_clipnorm=None,
                gradient_accumulation_steps=None):
        """Configure training: optimizer, loss, metrics and (fitkit) a learning-rate scheduler.

        optimizer: a name ("adam", "sgd", ...), a ``fitkit.optimizers`` spec, or a torch optimizer.
        loss: a Keras name, a loss object, a callable ``(y_true, y_pred)``, or a torch loss module or
            functional (called as torch does, ``(y_pred, y_true)``); a list or dict for several outputs.
        metrics / weighted_metrics: names, metric objects, or torchmetrics-style objects.
        scheduler: a torch LR scheduler on this optimizer, or a function ``optimizer -> scheduler``;
            stepped each epoch, or each batch with ``scheduler_interval="step"``. A torch
            ``ReduceLROnPlateau`` gets ``scheduler_monitor`` (default ``val_loss``, else ``loss``).
        device: where to train; by default a model left on the CPU trains on CUDA, then MPS, when
            present, and a model the user placed stays where it is.
        dtype_policy: Keras's "float32", "mixed_float16" or "mixed_bfloat16" (default: the global policy,
            :func:`fitkit.set_dtype_policy`): the forward and the loss run under ``torch.autocast`` in half
            precision, weights and optimizer stay float32; "mixed_float16" scales the loss with a
            ``GradScaler`` (``auto_scale_loss=True``, Keras's default) and skips steps whose gradients
            overflowed. See :mod:`fitkit.mixed_precision`.
        jit_compile: True compiles the training step's forward, loss and backward with
            ``torch.compile`` (falling back to eager, with a warning, where it cannot); "auto" (default)
            does so only on CUDA for models of a million parameters or more; False never (see
            :mod:`fitkit.jit`). ``run_eagerly=True`` turns it off, as in Keras.
        clipnorm, clipvalue, global_clipnorm, gradient_accumulation_steps: Keras's optimizer arguments,
            for a torch optimizer or a name (a ``fitkit.optimizers`` spec takes them itself): clip each
            gradient's norm, each element, or the norm of all gradients together, and step the optimizer
            every k batches on the mean of their gradients. See :mod:`fitkit.step`.
        steps_per_execution: accepted for Keras code; fitkit runs one step at a time.

        >>> model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
        >>> model.compile(optimizer=fitkit.optimizers.AdamW(global_clipnorm=1.0, gradient_accumulation_steps=4),
        ...               loss="sparse_categorical_crossentropy", dtype_policy="mixed_bfloat16")
        """
        self._compiled = compiled.build(
            self, optimizer=optimizer, loss=loss, loss_weights=loss_weights, metrics=metrics,
            weighted_metrics=weighted_metrics, steps_per_execution=steps_per_execution, scheduler=scheduler,
            scheduler_interval=scheduler_interval, scheduler_monitor=scheduler_monitor, device=device,
            run_eagerly=run_eagerly, jit_compile=jit_compile, auto_scale_loss=auto_scale_loss,
            dtype_policy=dtype_policy, clipnorm=clipnorm, clipvalue=clipvalue, global_clipnorm=global_clipnorm,
            gradient_accumulation_steps=gradient_accumulation_steps)

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
        """The loss of a batch as compile configured it; also adds it to the epoch's loss tracker."""
        state = self._compiled
        if state.loss is None:
            raise RuntimeError("loss: the model was compiled without a loss; pass compile(loss=...) or override "
                               "train_step/compute_loss")
        if y is None:
            raise ValueError("y: the data has no targets; fit and evaluate need (x, y) to compute the loss")
        total, parts = state.loss(y, y_pred, sample_weight)
        state.update_loss(total, parts, _batch_size(y_pred, x))
        return total

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        """Update the compiled metrics with a batch; returns the running logs (read lazily)."""
        self._compiled.update_metrics(y, y_pred, sample_weight)
        return self.get_metrics_result()

    def get_metrics_result(self):
        """The running loss and metrics as a :class:`~fitkit.logs.LazyLogs` (floats on first read)."""
        return LazyLogs(self._compiled.results)

    def reset_metrics(self):
        """Start the loss tracker and every metric afresh (fit does it each epoch)."""
        if self._compiled is not None:
            self._compiled.reset()

    @property
    def _default_train_step(self):
        """Whether ``train_step`` is fitkit's own (then fit may prepare the targets ahead of the steps)."""
        return type(self).train_step is Model.train_step

    def train_step(self, data):
        """One optimisation step on ``data = (x, y, sample_weight)``; returns the running logs.

        Override it to change what a step does (a GAN, a custom loss); return a dict of values. The
        ``with self._compiled.step as step:`` block is what applies compile's dtype policy, jit_compile,
        gradient accumulation and clipping (:mod:`fitkit.step`): an override that keeps it keeps them.
        """
        x, y, sample_weight = data
        with self._compiled.step as step:  # fitkit/step.py: autocast, jit, loss scaling, accumulation, clipping
            y_pred, loss = step.forward_and_loss(self, x, y, sample_weight)
            step.backward(loss)
        return self.compute_metrics(x, y, y_pred, sample_weight)

    def test_step(self, data):
        """Loss and metrics on ``data = (x, y, sample_weight)`` without training; returns the running logs."""
        x, y, sample_weight = data
        with self._compiled.step.autocast():  # the dtype policy's, as in training
            y_pred = self._forward(x)
            self.compute_loss(x, y, y_pred, sample_weight, training=False)
        return self.compute_metrics(x, y, y_pred, sample_weight)

    def predict_step(self, data):
        """The model's outputs for ``data = (x, y, sample_weight)`` (only x is used); float32 under a mixed
        dtype policy."""
        policy = mixed_precision.for_model(self)
        with mixed_precision.autocast(policy, self.device):
            return mixed_precision.outputs_float32(self._forward(data[0]), policy)

    # ------------------------------------------------------------------ fit / evaluate / predict
    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None,
            validation_split=0.0, validation_data=None, shuffle=True, class_weight=None, sample_weight=None,
            initial_epoch=0, steps_per_epoch=None, validation_steps=None, validation_batch_size=None,
            validation_freq=1, max_epochs=1000, time_budget=None, threads="auto"):
        """Train the model and return a :class:`~fitkit.history.History`, as Keras's ``fit``.

        x: arrays or tensors (a list/tuple of them for several inputs, passed to ``forward`` as
        positional arguments, or a dict, passed as keyword arguments), a ``Dataset``, a ``DataLoader``,
        or an iterable yielding ``(x, y)`` or ``(x, y, sample_weight)`` (then y is None).
        epochs: the index of the last epoch: ``initial_epoch=2, epochs=5`` runs epochs 2, 3 and 4.
        validation_split: the last fraction of the samples, taken before shuffling.
        Calling fit again goes on from the current weights, optimizer, scheduler and data order.

        ``epochs="auto"`` (fitkit) answers "how many epochs?": it trains until the validation loss
        stops improving, with an ``EarlyStopping(restore_best_weights=True)`` whose patience is scaled
        to the data (about 1000 optimizer steps' worth of epochs: ``ceil(1000 / steps_per_epoch)``,
        at least 5, at most 50 and at most ``max_epochs // 10`` when that is over 5), under a hard cap
        of ``max_epochs`` epochs. With no validation data it holds out ``validation_split=0.2`` and
        says so once. ``time_budget`` (seconds, any ``epochs``) stops before an epoch that would end
        past the budget. ``history.stop_reason`` says why training stopped.

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

    def evaluate(self, x=None, y=None, batch_size=None, verbose="auto", sample_weight=None, steps=None,
                 callbacks=None, return_dict=False):
        """The loss (and metrics) on the data: a float, a list ``[loss, metric, ...]``, or a dict.

        >>> loss, acc = model.evaluate(x_test, y_test)
        """
        return trainer.evaluate(self, x, y, batch_size=batch_size, verbose=verbose, sample_weight=sample_weight,
                                steps=steps, callbacks=callbacks, return_dict=return_dict)

    def predict(self, x, batch_size=None, verbose="auto", steps=None, callbacks=None):
        """The outputs for ``x``: NumPy when NumPy went in, CPU tensors otherwise. Works before compile.

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
        return evaluate_result(self.train_step(batch), return_dict)

    def test_on_batch(self, x, y=None, sample_weight=None, return_dict=False):
        """Loss (and metrics) of this batch without training."""
        compiled.require(self, "test_on_batch")
        batch = self._batch_on_device(x, y, sample_weight)
        self.eval()
        self.reset_metrics()
        with torch.no_grad():
            return evaluate_result(self.test_step(batch), return_dict)

    def predict_on_batch(self, x):
        """Outputs for this batch: NumPy when NumPy went in, CPU tensors otherwise."""
        numpy_out = data.is_numpy_input(x)
        batch = self._batch_on_device(x)
        self.eval()
        with torch.inference_mode():
            out = self.predict_step(batch)
        out = data.map_structure(lambda t: t.cpu(), out)
        return data.map_structure(lambda t: t.numpy(), out) if numpy_out else out

    # ------------------------------------------------------------------ weights and summary
    def get_weights(self):
        """Every weight (parameters and buffers) as NumPy arrays, in ``state_dict`` order."""
        return [v.detach().cpu().numpy().copy() for v in self.state_dict().values()]

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

        >>> model.save("model.pt")
        >>> model = fitkit.load_model("model.pt")   # compiled, ready to continue training
        """
        checkpoint.save_model(self, filepath, overwrite=overwrite, architecture=architecture, allow=_allowlist())

    def _weights_owner(self):
        # A wrap()ped module's weights are saved under its own names, so plain torch code can load them.
        return self.module if isinstance(self, Wrapped) else self

    def save_weights(self, filepath, overwrite=True):
        """Save the weights as a plain ``state_dict`` file (CPU tensors), atomically.

        Plain torch reads it: ``module.load_state_dict(torch.load(filepath))``; a ``wrap()``ped model
        saves its module's own state_dict (no ``module.`` prefix).

        >>> model.save_weights("weights.pt")
        """
        path = checkpoint.check_overwrite(filepath, overwrite)
        state = {k: v.detach().cpu() for k, v in self._weights_owner().state_dict().items()}
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
            rows.append((f"{name} ({type(module).__name__})", shapes.get(name, "?"),
                         sum(p.numel() for p in module.parameters())))
        total = sum(p.numel() for p in self.parameters())
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        width = max([30] + [len(r[0]) + 2 for r in rows])
        lines = [f'Model: "{type(self).__name__}"', "-" * (width + 36),
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
