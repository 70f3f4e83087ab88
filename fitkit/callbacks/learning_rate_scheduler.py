"""LearningRateScheduler: set the learning rate from a function of the epoch at each epoch start."""

import inspect
import numbers

import numpy as np
import torch

from ..optimizers import current_lr, group_lr, optimizer_of, set_group_lr
from .base import Callback


def _takes_lr(schedule):
    """Whether ``schedule`` accepts ``(epoch, lr)``; None when its signature cannot be read."""
    try:
        sig = inspect.signature(schedule)
    except (TypeError, ValueError):
        return None
    try:
        sig.bind(0, 0.1)
        return True
    except TypeError:
        return False


def _as_lr(value, schedule):
    # Keras accepts only floats; fitkit also takes ints and 0-d tensors, which mean the same thing.
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
        raise ValueError(
            f"The output of the `schedule` function should be a float; {schedule!r} returned "
            f"{value!r} ({type(value).__name__})."
        )
    return float(value)


def refuse_compiled_scheduler(model, who):
    """TypeError when ``compile(scheduler=...)`` already drives the learning rate that ``who`` would set.

    Keras refuses to set the learning rate of an optimizer built with a schedule (a TypeError); two
    writers of one learning rate would silently undo each other, so fitkit refuses at train begin,
    before any step.
    """
    scheduler = getattr(model, "scheduler", None)
    if scheduler is not None:
        raise TypeError(
            f"{who}: got a model compiled with scheduler={type(scheduler).__name__}, which already sets the "
            f"learning rate; expected one of the two. Remove {who} from callbacks, or compile without "
            "scheduler= (as Keras refuses to set the learning rate of an optimizer built with a schedule)."
        )


class LearningRateScheduler(Callback):
    """Sets the learning rate of every param group to ``schedule(epoch, lr)`` at each epoch start.

    ``schedule(epoch)`` (one argument) is accepted too, as in Keras. ``epoch`` is 0-based and ``lr`` is
    the group's current learning rate, so each param group follows its own chain. The learning rate of
    the epoch is written to the epoch logs as ``learning_rate``. A model compiled with ``scheduler=``
    is refused with a TypeError at train begin: one learning rate cannot follow two schedules.

    >>> def schedule(epoch, lr):
    ...     return lr if epoch < 10 else lr * 0.9
    >>> callback = LearningRateScheduler(schedule)
    """

    def __init__(self, schedule, verbose=0):
        super().__init__()
        if not callable(schedule):
            raise TypeError(f"schedule must be a callable (epoch, lr) -> lr; got {schedule!r}.")
        self.schedule = schedule
        self.verbose = verbose
        self._takes_lr = _takes_lr(schedule)

    def _next_lr(self, epoch, lr):
        if self._takes_lr is None:
            # Signature unknown (a builtin, say): try Keras's way, two arguments then one.
            try:
                return self.schedule(epoch, lr)
            except TypeError:
                return self.schedule(epoch)
        return self.schedule(epoch, lr) if self._takes_lr else self.schedule(epoch)

    def on_train_begin(self, logs=None):
        refuse_compiled_scheduler(self.model, "LearningRateScheduler")

    def on_epoch_begin(self, epoch, logs=None):
        optimizer = optimizer_of(self.model, "LearningRateScheduler")
        for group in optimizer.param_groups:
            lr = _as_lr(self._next_lr(epoch, group_lr(group)), self.schedule)
            set_group_lr(group, lr)
        if self.verbose > 0:
            print(f"\nEpoch {epoch + 1}: LearningRateScheduler setting learning rate to "
                  f"{current_lr(optimizer)}.")

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = current_lr(optimizer_of(self.model, "LearningRateScheduler"))
