"""ReduceLROnPlateau: multiply the learning rate by ``factor`` when a quantity stops improving."""

import warnings

import numpy as np

from ..optimizers import current_lr, group_lr, optimizer_of, set_group_lr
from .learning_rate_scheduler import refuse_compiled_scheduler
from .monitor import MonitorCallback


class ReduceLROnPlateau(MonitorCallback):
    """After ``patience`` epochs without improvement, multiply every param group's lr by ``factor``.

    The lr never goes below ``min_lr``; after a reduction the callback waits ``cooldown`` epochs before
    counting again. An improvement is a value better than ``best`` by more than ``min_delta``. The lr
    used during the epoch (before any reduction) is written to the logs as ``learning_rate``. A model
    compiled with ``scheduler=`` is refused with a TypeError at train begin, before any step.

    >>> reduce = ReduceLROnPlateau(monitor="val_loss", factor=0.2, patience=5, min_lr=1e-4)
    """

    def __init__(self, monitor="val_loss", factor=0.1, patience=10, verbose=0, mode="auto",
                 min_delta=1e-4, cooldown=0, min_lr=0.0, **kwargs):
        if factor >= 1.0:
            raise ValueError(
                f"ReduceLROnPlateau does not support a factor >= 1.0 (it would not reduce the "
                f"learning rate); got factor={factor}. Pass a factor in (0, 1), e.g. 0.1."
            )
        if kwargs:
            # Keras 3 takes and ignores extra arguments (Keras 2's epsilon=, say); so does fitkit,
            # but it says so.
            warnings.warn(f"ReduceLROnPlateau ignores the arguments {sorted(kwargs)}, as Keras 3 does.",
                          stacklevel=2)
        super().__init__(monitor, mode, min_delta)
        self.factor = factor
        self.patience = patience
        self.verbose = verbose
        self.cooldown = cooldown
        self.min_lr = min_lr
        self._reset()

    def _reset(self):
        super()._reset()
        self.wait = 0
        self.cooldown_counter = 0

    def in_cooldown(self):
        return self.cooldown_counter > 0

    def on_train_begin(self, logs=None):
        refuse_compiled_scheduler(self.model, "ReduceLROnPlateau")
        self._begin_fit()

    def on_epoch_end(self, epoch, logs=None):
        optimizer = optimizer_of(self.model, "ReduceLROnPlateau")
        if logs is not None:
            logs["learning_rate"] = current_lr(optimizer)
        current = self._monitor_value(logs)
        if current is None:
            return

        if self.in_cooldown():
            self.cooldown_counter -= 1
            self.wait = 0
        if self._is_improvement(current, self.best):
            self.best = current
            self.wait = 0
        elif not self.in_cooldown():
            self.wait += 1
            if self.wait >= self.patience and self._reduce(optimizer, epoch):
                self.cooldown_counter = self.cooldown
                self.wait = 0

    def _reduce(self, optimizer, epoch):
        """Reduce each group's lr that is above min_lr; whether any was reduced."""
        reduced = False
        for group in optimizer.param_groups:
            old_lr = group_lr(group)
            # Keras holds the lr in float32: an lr equal to min_lr at that precision is at the floor,
            # which keeps a double-rounding residue (1e-3 * (1 + 2e-16)) from counting as "above".
            if np.float32(old_lr) > np.float32(self.min_lr):
                new_lr = max(old_lr * self.factor, self.min_lr)
                set_group_lr(group, new_lr)
                reduced = True
                if self.verbose > 0:
                    print(f"\nEpoch {epoch + 1}: ReduceLROnPlateau reducing learning rate to {new_lr}.")
        return reduced

    def state_dict(self):
        return {"best": self.best, "wait": self.wait, "cooldown_counter": self.cooldown_counter}

    def load_state_dict(self, state):
        """Restore ``state_dict()``'s output; the next ``on_train_begin`` keeps it instead of resetting."""
        self.best = state["best"]
        self.wait = state["wait"]
        self.cooldown_counter = state["cooldown_counter"]
        self._mark_resumed()
