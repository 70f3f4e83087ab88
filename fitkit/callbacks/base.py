"""The callback protocol of Keras: :class:`Callback` and the :class:`CallbackList` that fit drives."""


class Callback:
    """Base class for callbacks; override the hooks you need.

    ``self.model`` is the model being trained and ``self.params`` holds ``verbose``, ``epochs`` and
    ``steps``. Set ``self.model.stop_training = True`` to end training after the current epoch.

    >>> class PrintLoss(Callback):
    ...     def on_epoch_end(self, epoch, logs=None):
    ...         print(epoch, logs["loss"])
    """

    def __init__(self):
        self.model = None
        self.params = {}

    def set_model(self, model):
        self.model = model

    def set_params(self, params):
        self.params = params

    def on_train_begin(self, logs=None):
        """Called once at the start of fit."""

    def on_train_end(self, logs=None):
        """Called once at the end of fit, also when training stopped early, was interrupted or raised,
        and when a callback after this one failed in its ``on_train_begin`` (so that what this one's
        ``on_train_begin`` opened gets closed; Keras calls nothing then)."""

    def on_epoch_begin(self, epoch, logs=None):
        """Called at the start of each epoch (0-based ``epoch``)."""

    def on_epoch_end(self, epoch, logs=None):
        """Called after each epoch with the epoch's logs, ``val_`` keys included."""

    def on_train_batch_begin(self, batch, logs=None):
        """Called before each training batch (``batch`` restarts at 0 each epoch)."""

    def on_train_batch_end(self, batch, logs=None):
        """Called after each training batch with the running means of loss and metrics."""

    def on_test_begin(self, logs=None):
        """Called at the start of evaluate and of each validation pass."""

    def on_test_end(self, logs=None):
        """Called at the end of evaluate and of each validation pass."""

    def on_test_batch_begin(self, batch, logs=None):
        """Called before each evaluation batch."""

    def on_test_batch_end(self, batch, logs=None):
        """Called after each evaluation batch."""

    def on_predict_begin(self, logs=None):
        """Called at the start of predict."""

    def on_predict_end(self, logs=None):
        """Called at the end of predict."""

    def on_predict_batch_begin(self, batch, logs=None):
        """Called before each prediction batch."""

    def on_predict_batch_end(self, batch, logs=None):
        """Called after each prediction batch; ``logs["outputs"]`` holds the batch's outputs."""

    def restore_training(self, callbacks):
        """Called by fit before any ``on_train_begin``, with fit's :class:`CallbackList`.

        BackupAndRestore loads its backup here, so that every other callback starts from the restored
        state; a callback may reorder ``callbacks`` in it. Not a Keras hook.
        """

    # Keras 2 names, still used in older callback code.
    def on_batch_begin(self, batch, logs=None):
        """Alias kept for Keras 2 code; called with on_train_batch_begin."""

    def on_batch_end(self, batch, logs=None):
        """Alias kept for Keras 2 code; called with on_train_batch_end."""


HOOKS = (
    "on_train_begin", "on_train_end", "on_epoch_begin", "on_epoch_end",
    "on_train_batch_begin", "on_train_batch_end", "on_test_begin", "on_test_end",
    "on_test_batch_begin", "on_test_batch_end", "on_predict_begin", "on_predict_end",
    "on_predict_batch_begin", "on_predict_batch_end",
)
_ALIASES = {"on_train_batch_begin": "on_batch_begin", "on_train_batch_end": "on_batch_end"}


def _overrides(callback, hook):
    """Whether ``callback`` does something in ``hook`` (a method that is not the base's no-op)."""
    if hook in getattr(callback, "__dict__", ()):
        # A function set on the instance (LambdaCallback, or `cb.on_epoch_end = fn`) is a hook.
        return callable(callback.__dict__[hook])
    method = getattr(type(callback), hook, None)
    if method is None:
        # Duck-typed callbacks (not Callback subclasses) may set hooks as instance attributes.
        return callable(getattr(callback, hook, None))
    return method is not getattr(Callback, hook, None)


class CallbackList:
    """Calls a hook on every callback that implements it, in order.

    Only callbacks that override a hook are called for it, so an empty batch hook costs nothing in
    the step loop; ``has(hook)`` lets the loop skip building logs nobody reads.
    """

    def __init__(self, callbacks=(), model=None, params=None):
        self.callbacks = list(callbacks)
        self.model = None
        self.params = {}
        if model is not None:
            self.set_model(model)
        if params is not None:
            self.set_params(params)
        self._index()

    def _index(self):
        self._by_hook = {}
        for hook in HOOKS:
            bound = [getattr(cb, hook) for cb in self.callbacks if _overrides(cb, hook)]
            alias = _ALIASES.get(hook)
            if alias:
                bound += [getattr(cb, alias) for cb in self.callbacks if _overrides(cb, alias)]
            self._by_hook[hook] = bound

    def append(self, callback):
        self.callbacks.append(callback)
        if self.model is not None:
            callback.set_model(self.model)
        callback.set_params(self.params)
        self._index()

    def set_model(self, model):
        self.model = model
        for cb in self.callbacks:
            cb.set_model(model)

    def set_params(self, params):
        self.params = params
        for cb in self.callbacks:
            cb.set_params(params)

    def has(self, hook):
        return bool(self._by_hook[hook])

    def restore_training(self):
        """Call ``restore_training(self)`` on each callback that overrides it, before ``on_train_begin``."""
        # A copy: BackupAndRestore moves itself to the end of the list inside its hook.
        for cb in list(self.callbacks):
            if _overrides(cb, "restore_training"):
                cb.restore_training(self)
        self._index()  # the order of the hooks follows the list, which may have changed

    def __iter__(self):
        return iter(self.callbacks)

    def _call(self, hook, logs, *args):
        # As Keras 3: a hook always gets a dict, {} when there are no logs (never None); one dict per call,
        # shared by the callbacks of that call, and made only when somebody listens.
        fns = self._by_hook[hook]
        if fns:
            if logs is None:
                logs = {}
            for fn in fns:
                fn(*args, logs)

    def on_train_begin(self, logs=None):
        """Call ``on_train_begin`` on each callback in order. When one raises, the callbacks before it
        (those that began) get their ``on_train_end``, in order, so that what they opened is closed (a
        CSVLogger's file); then the exception goes on. The one that raised and those after it get nothing.
        """
        logs = {} if logs is None else logs  # as every hook: a dict, never None
        begun = 0
        try:
            for cb in self.callbacks:
                if _overrides(cb, "on_train_begin"):
                    getattr(cb, "on_train_begin")(logs)
                begun += 1
        except BaseException:
            for cb in self.callbacks[:begun]:
                if _overrides(cb, "on_train_end"):
                    try:
                        getattr(cb, "on_train_end")(logs)
                    except Exception:  # the first error is the one to report; the others still clean up
                        pass
            raise

    def on_train_end(self, logs=None):
        self._call("on_train_end", logs)

    def on_epoch_begin(self, epoch, logs=None):
        self._call("on_epoch_begin", logs, epoch)

    def on_epoch_end(self, epoch, logs=None):
        self._call("on_epoch_end", logs, epoch)

    def on_train_batch_begin(self, batch, logs=None):
        self._call("on_train_batch_begin", logs, batch)

    def on_train_batch_end(self, batch, logs=None):
        self._call("on_train_batch_end", logs, batch)

    def on_test_begin(self, logs=None):
        self._call("on_test_begin", logs)

    def on_test_end(self, logs=None):
        self._call("on_test_end", logs)

    def on_test_batch_begin(self, batch, logs=None):
        self._call("on_test_batch_begin", logs, batch)

    def on_test_batch_end(self, batch, logs=None):
        self._call("on_test_batch_end", logs, batch)

    def on_predict_begin(self, logs=None):
        self._call("on_predict_begin", logs)

    def on_predict_end(self, logs=None):
        self._call("on_predict_end", logs)

    def on_predict_batch_begin(self, batch, logs=None):
        self._call("on_predict_batch_begin", logs, batch)

    def on_predict_batch_end(self, batch, logs=None):
        self._call("on_predict_batch_end", logs, batch)
