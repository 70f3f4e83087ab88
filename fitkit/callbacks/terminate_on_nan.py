"""TerminateOnNaN: stop (or raise) as soon as a training batch's loss is NaN or infinite."""

import math

from .base import Callback


class NaNLossError(RuntimeError):
    """Raised by ``TerminateOnNaN(raise_error=True)``. A RuntimeError, as Keras raises; ``fit`` lets it
    through without calling any callback's ``on_train_end``, as Keras's fit does."""


class TerminateOnNaN(Callback):
    """Checks ``logs["loss"]`` after every training batch; on NaN or inf it stops training
    (``model.stop_training = True``, ``model.stop_reason = "terminate_on_nan"``; validation and
    ``on_epoch_end`` of that epoch and every ``on_train_end`` still run) or, with ``raise_error=True``,
    raises :class:`NaNLossError` (a RuntimeError) at once: no callback's ``on_train_end`` runs then,
    which keeps e.g. a BackupAndRestore backup from being deleted, as in Keras.

    Reading the batch loss makes the host wait for the device after every batch: that sync is the
    price of this callback, and fit does not pay it when the callback is not used.

    >>> guard = TerminateOnNaN()
    """

    def __init__(self, raise_error=False):
        super().__init__()
        self.raise_error = raise_error

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None:
            return
        loss = float(loss)
        if math.isnan(loss) or math.isinf(loss):
            if self.raise_error:
                raise NaNLossError(
                    f"NaN or Inf loss encountered at batch {batch}. Loss value: {loss}. "
                    "Terminating training immediately."
                )
            print(f"Batch {batch}: Invalid loss, terminating training")
            self.model.stop_training = True
            self.model.stop_reason = "terminate_on_nan"
