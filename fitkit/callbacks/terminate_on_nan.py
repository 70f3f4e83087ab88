"""TerminateOnNaN: stop (or raise) as soon as a training batch's loss is NaN or infinite."""

import math

from .base import Callback


class TerminateOnNaN(Callback):
    """Checks ``logs["loss"]`` after every training batch; on NaN or inf it stops training
    (``model.stop_training = True``, ``model.stop_reason = "terminate_on_nan"``) or, with
    ``raise_error=True``, raises RuntimeError at once (other callbacks' ``on_train_end`` then do not
    run, which keeps e.g. a backup from being cleaned up).

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
                raise RuntimeError(
                    f"NaN or Inf loss encountered at batch {batch}. Loss value: {loss}. "
                    "Terminating training immediately."
                )
            print(f"Batch {batch}: Invalid loss, terminating training")
            self.model.stop_training = True
            self.model.stop_reason = "terminate_on_nan"
