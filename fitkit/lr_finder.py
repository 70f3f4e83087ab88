"""The learning-rate range test: train on an exponentially rising learning rate, read where the loss falls
fastest, then put the model back exactly as it was.

``model.find_learning_rate(x, y)`` calls :func:`find_learning_rate`. The test takes ``steps`` optimizer
steps with the learning rate rising from ``min_lr`` to ``max_lr`` by the same factor each step
(Leslie Smith's range test, as fastai's ``lr_find``), records each batch's loss, and stops early once
the loss diverges. Then weights, optimizer state, scheduler, the model's data-order generator and every
global RNG go back to what they were (through :meth:`TrainingState.state_dict`, the one owner of run
state), so a ``fit`` after the test trains exactly as a ``fit`` without it.

>>> result = model.find_learning_rate(x, y)     # doctest: +SKIP
>>> result.suggestion                            # doctest: +SKIP
0.0031622776601683794
>>> result.plot("lr_finder.png")                 # doctest: +SKIP
"""

import copy
import math
import numbers
import warnings

from . import data, preflight
from .compiled import LossTracker, require
from .logs import to_float
from .optimizers import group_lr, set_group_lr
from .seed import new_generator


class LearningRateFinderResult:
    """What :func:`find_learning_rate` measured.

    ``lrs``: the learning rate of each step taken (of the first param group; the others kept their
    ratio to it). ``losses``: each step's batch loss, as ``train_step`` logged it (under
    ``gradient_accumulation_steps=k`` a step is k batches at one rate, and its loss their mean).
    ``smoothed``: the losses smoothed with a bias-corrected exponential moving average (the curve the
    suggestion and the divergence test read). ``suggestion``: the learning rate where the smoothed loss fell fastest
    (steepest descent against log10 of the rate, before its lowest point), or None when too few steps
    ran to tell. ``diverged``: whether the test stopped because the loss diverged (``stop_reason``
    says why it stopped).
    """

    def __init__(self, lrs, losses, smoothed, suggestion, diverged, stop_reason, min_lr, max_lr):
        self.lrs = lrs
        self.losses = losses
        self.smoothed = smoothed
        self.suggestion = suggestion
        self.diverged = diverged
        self.stop_reason = stop_reason
        self.min_lr = min_lr
        self.max_lr = max_lr

    @property
    def lowest_loss_lr(self):
        """The learning rate where the smoothed loss was lowest (a suggestion is usually ~10x below it)."""
        finite = [(s, lr) for s, lr in zip(self.smoothed, self.lrs) if math.isfinite(s)]
        return min(finite)[1] if finite else None

    def __repr__(self):
        steps = f"{len(self.lrs)} steps from {self.min_lr:.3g}"
        if not self.lrs:
            return f"LearningRateFinderResult(no steps ran; {self.stop_reason})"
        steps += f" to {self.lrs[-1]:.3g}"
        if self.suggestion is None:
            return f"LearningRateFinderResult({steps}; no suggestion: {self.stop_reason})"
        return (f"LearningRateFinderResult(suggestion={self.suggestion:.3g} (steepest descent of the smoothed "
                f"loss); {steps}; {self.stop_reason})")

    def _repr_pretty_(self, printer, cycle):
        printer.text(repr(self))

    def plot(self, path=None, show=None):
        """The loss against the learning rate (log scale): each step's loss, the smoothed curve, and the
        suggestion marked. Saves to ``path`` when given and returns the matplotlib ``Figure``; ``show``
        as for :meth:`History.plot`. Needs ``pip install fitkit[plot]``.

        >>> result.plot("lr_finder.png")   # doctest: +SKIP
        """
        from .plotting import plot_lr_finder  # matplotlib loads only when plotting

        return plot_lr_finder(self, path, show)


def _check(min_lr, max_lr, steps, smoothing, diverge_factor):
    for name, value in (("min_lr", min_lr), ("max_lr", max_lr)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"{name}: got {value!r}; expected a positive learning rate such as 1e-7")
    if max_lr <= min_lr:
        raise ValueError(f"max_lr: got {max_lr!r} with min_lr={min_lr!r}; expected max_lr above min_lr")
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 2:
        raise ValueError(f"steps: got {steps!r}; expected an integer of at least 2 (100 is usual)")
    if isinstance(smoothing, bool) or not isinstance(smoothing, numbers.Real) or not 0 <= smoothing < 1:
        raise ValueError(f"smoothing: got {smoothing!r}; expected a number in [0, 1), e.g. 0.9")
    if isinstance(diverge_factor, bool) or not isinstance(diverge_factor, numbers.Real) or diverge_factor <= 1:
        raise ValueError(f"diverge_factor: got {diverge_factor!r}; expected a number above 1, e.g. 4")


def find_learning_rate(model, x, y=None, *, batch_size=None, sample_weight=None, class_weight=None,
                       min_lr=1e-7, max_lr=10.0, steps=100, smoothing=0.9, diverge_factor=4.0):
    """Run the range test on ``model`` (see :meth:`fitkit.Model.find_learning_rate`)."""
    compiled = require(model, "find_learning_rate")
    _check(min_lr, max_lr, steps, smoothing, diverge_factor)
    state = model.training_state
    if state.source is not None:
        raise RuntimeError("find_learning_rate: called while fit is running (from a callback?); call it "
                           "before or after fit")
    snapshot = copy.deepcopy(state.state_dict())
    was_training, stop = model.training, (model.stop_training, model.stop_reason)
    sums = _own_sums(compiled)
    try:
        # A model that has not trained yet has no data-order generator: a fit draws it at its start, so
        # the test shuffles with one of its own (drawn from the global RNG, which is put back after).
        generator = state.generator if snapshot["generator"] is not None else new_generator()
        train = data.source(x, y, sample_weight, batch_size=batch_size, shuffle=True, generator=generator,
                            device=compiled.device, class_weight=class_weight)
        preflight.prepare_targets(model, train, own_train_step=model._default_train_step)
        window = 1
        if compiled.step is not None:
            # Under gradient accumulation a test step is one optimizer step: a whole window of batches at
            # one rate. A window a fit left open is set aside (the snapshot puts it back).
            window, compiled.step.accumulated = compiled.step.accumulation_steps, 0
        lrs, losses, smoothed, diverged, stop_reason = _ramp(model, compiled.optimizer, train, min_lr, max_lr,
                                                             steps, smoothing, diverge_factor, window)
    finally:
        state.load_state_dict(snapshot)
        _put_back_sums(compiled, sums)
        model.train(was_training)
        model.stop_training, model.stop_reason = stop
    return LearningRateFinderResult(lrs, losses, smoothed, suggest(lrs, smoothed), diverged, stop_reason,
                                    float(min_lr), float(max_lr))


def _ramp(model, optimizer, train, min_lr, max_lr, steps, smoothing, diverge_factor, window=1):
    """The steps of the test, each of ``window`` batches (an accumulation window); returns ``(lrs,
    losses, smoothed, diverged, why it stopped)``."""
    groups = optimizer.param_groups
    first = group_lr(groups[0])
    # Groups with their own rates keep their ratio to the first one (discriminative rates stay so).
    ratios = [group_lr(g) / first if first > 0 else 1.0 for g in groups]
    factor = (max_lr / min_lr) ** (1 / (steps - 1))
    lrs, losses, smoothed = [], [], []
    average, best = 0.0, math.inf
    model.train()
    batches = _batches(train, steps * window)
    for step in range(steps):
        lr = min_lr * factor ** step
        for group, ratio in zip(groups, ratios):
            set_group_lr(group, lr * ratio)
        total = 0.0
        for taken, batch in enumerate(batches, start=1):
            model.reset_metrics()  # so that the logged loss is this batch's alone
            logs = model.train_step(batch)
            if "loss" not in logs:
                raise KeyError(f"find_learning_rate: train_step returned no 'loss' (it returned {sorted(logs)}); "
                               "return the batch loss under 'loss', as Keras's train_step does")
            # One read per batch: the test must look at every loss to stop when it diverges.
            total += to_float(logs["loss"])
            if taken == window:
                break
        else:
            break  # the data ran out inside this step's window: not a step
        loss = total / window
        lrs.append(lr)
        losses.append(loss)
        if not math.isfinite(loss):
            smoothed.append(math.nan)
            return lrs, losses, smoothed, True, f"the loss diverged: it was {loss} at learning rate {lr:.3g}"
        average = smoothing * average + (1 - smoothing) * loss
        value = average / (1 - smoothing ** (step + 1))
        smoothed.append(value)
        best = min(best, value)
        if value > diverge_factor * best:
            return lrs, losses, smoothed, True, (f"the loss diverged: the smoothed loss reached {value:.3g}, "
                                                 f"over {diverge_factor:g} times its lowest ({best:.3g}), at "
                                                 f"learning rate {lr:.3g}")
    if len(lrs) < steps:
        warnings.warn(f"find_learning_rate: the input ran out of data after {len(lrs)} of {steps} steps (it cannot "
                      "start again: a one-shot generator or iterator); the result covers those steps only. Pass "
                      "arrays, a Dataset or a DataLoader, or fewer steps.", UserWarning, stacklevel=4)
        return lrs, losses, smoothed, False, f"the data ran out after {len(lrs)} of {steps} steps"
    return lrs, losses, smoothed, False, f"it reached max_lr={max_lr:g} without diverging"


def _batches(train, steps):
    """Up to ``steps`` batches, pass after pass (one pass may hold fewer); a source that cannot start
    again (a one-shot generator) ends sooner."""
    taken = 0
    while taken < steps:
        before = taken
        for batch in train.new_pass():
            yield batch
            taken += 1
            if taken == steps:
                return
        if taken == before or getattr(train, "exhausted", False):
            return


def suggest(lrs, smoothed):
    """The learning rate where ``smoothed`` falls fastest against log10(lr), before its lowest point.

    The first and last tenth of that stretch are left out: the moving average is still settling at
    the start, and at the lowest point the slope turns. None when fewer than 5 steps lead down to it.
    """
    finite = [i for i, s in enumerate(smoothed) if math.isfinite(s)]
    if not finite:
        return None
    low = min(finite, key=lambda i: smoothed[i])
    if low < 4:
        return None
    logs = [math.log10(lr) for lr in lrs[:low + 1]]
    values = smoothed[:low + 1]
    # Central differences inside, one-sided at the ends (numpy.gradient's rule), on log10(lr).
    slopes = []
    for i in range(len(values)):
        a, b = max(i - 1, 0), min(i + 1, len(values) - 1)
        slopes.append((values[b] - values[a]) / (logs[b] - logs[a]))
    skip = len(values) // 10
    window = range(skip, len(values) - skip) if len(values) - 2 * skip >= 3 else range(len(values))
    i = min(window, key=lambda k: slopes[k])
    return lrs[i]


def _own_sums(compiled):
    """Give the compiled state fresh loss trackers and metrics for the test; returns what to put back.

    The running sums a fit left (the last epoch's loss and metrics) stay as they were: the test adds to
    copies. Metrics not built yet stay unbuilt (the next fit builds them at its first batch).
    """
    saved = (compiled.tracker, compiled.part_trackers, compiled.metrics)
    compiled.tracker, compiled.part_trackers = LossTracker(), {}
    compiled.metrics = copy.deepcopy(compiled.metrics)
    return saved


def _put_back_sums(compiled, saved):
    compiled.tracker, compiled.part_trackers, compiled.metrics = saved
