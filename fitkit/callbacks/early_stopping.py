"""EarlyStopping: stop training when a monitored quantity has stopped improving (Keras 3 semantics)."""

import copy

import torch

from .. import distributed
from .monitor import MonitorCallback


def snapshot_state(model):
    """A copy of ``model.state_dict()``: tensors cloned on their own device (no host round trip)."""
    return {
        k: v.detach().clone() if isinstance(v, torch.Tensor) else copy.deepcopy(v)
        for k, v in model.state_dict().items()
    }


class EarlyStopping(MonitorCallback):
    """Stops training when ``monitor`` has not improved for ``patience`` epochs.

    After each epoch from ``start_from_epoch`` on, a count of epochs without improvement (``wait``)
    grows; an improvement is a value better than ``best`` by more than ``min_delta`` and resets the
    count only when it also beats ``baseline`` (if given). Training stops when the count reaches
    ``patience``, never at epoch 0; the callback then sets ``model.stop_training = True`` and
    ``model.stop_reason = "early_stopping"``. With ``restore_best_weights`` the weights of the best
    epoch are put back at the end of training, whether it stopped early or not.

    Attributes: ``best``, ``best_epoch``, ``wait``, ``stopped_epoch`` (0 when it did not stop).

    >>> stop = EarlyStopping(monitor="val_loss", patience=3, restore_best_weights=True)
    >>> # model.fit(x, y, validation_split=0.2, epochs=100, callbacks=[stop])
    """

    def __init__(self, monitor="val_loss", min_delta=0, patience=0, verbose=0, mode="auto",
                 baseline=None, restore_best_weights=False, start_from_epoch=0):
        super().__init__(monitor, mode, min_delta)
        self.patience = patience
        self.verbose = verbose
        self.baseline = baseline
        self.restore_best_weights = restore_best_weights
        self.start_from_epoch = start_from_epoch
        self._reset()

    def _reset(self):
        super()._reset()
        self.wait = 0
        self.stopped_epoch = 0
        self.best_epoch = 0
        self.best_weights = None

    def on_train_begin(self, logs=None):
        self._begin_fit()

    def on_epoch_end(self, epoch, logs=None):
        current = self._monitor_value(logs)
        if current is None:
            return
        if epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and self.best_weights is None:
            # The first monitored epoch is the best so far, even if it will not beat the baseline.
            self.best_weights = snapshot_state(self.model)
            self.best_epoch = epoch

        self.wait += 1
        if self._is_improvement(current, self.best):
            self.best = current
            self.best_epoch = epoch
            if self.restore_best_weights:
                self.best_weights = snapshot_state(self.model)
            if self.baseline is None or self._is_improvement(current, self.baseline):
                self.wait = 0
            return

        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True
            self.model.stop_reason = "early_stopping"

    def on_train_end(self, logs=None):
        if self.stopped_epoch > 0 and self.verbose > 0:
            print(f"Epoch {self.stopped_epoch + 1}: early stopping")
        if self.restore_best_weights and self.best_weights is not None:
            if self.verbose > 0:
                print(f"Restoring model weights from the end of the best epoch: {self.best_epoch + 1}.")
            distributed.load_full_state_dict(self.model, self.best_weights)  # also into a sharded model

    def state_dict(self):
        """What a resumed run needs: counters, best value and epoch, and the best weights (not copied)."""
        return {
            "wait": self.wait, "best": self.best, "best_epoch": self.best_epoch,
            "stopped_epoch": self.stopped_epoch, "best_weights": self.best_weights,
        }

    def load_state_dict(self, state):
        """Restore ``state_dict()``'s output; the next ``on_train_begin`` keeps it instead of resetting."""
        self.wait = state["wait"]
        self.best = state["best"]
        self.best_epoch = state["best_epoch"]
        self.stopped_epoch = state["stopped_epoch"]
        self.best_weights = state["best_weights"]
        self._mark_resumed()
