"""Diagnosis: the rules that read a History's curves, and the words that report what they found.

:func:`diagnose` answers "how many epochs should I train?" for a :class:`~fitkit.history.History`:
why training stopped (the reason the trainer recorded, put into words), where the monitored value
was best, whether the run overfitted or was still improving, and when the learning rate was lowered.
It returns a :class:`Diagnosis`; ``print`` it for the worded report. ``History.diagnose`` calls it
and states the rules in its docstring.

The small readers here (:func:`argbest`, :func:`is_finite`, :func:`epoch_number`, :func:`number`)
are also what ``best_epoch`` and the plots use, so that all three agree on "best" and on how an
epoch is numbered in words.
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass, field

from .callbacks.monitor import is_improvement, resolve_mode

# A change smaller than this fraction of the value does not count as "meaningful" in diagnose().
_MEANINGFUL = 0.01
# Overfitting needs val_loss to end this fraction above its best (and at least 2 epochs after it).
_CLEAR_RISE = 0.02
# How many trailing epochs diagnose() looks at to decide whether training was still improving.
_RECENT = 5
# An unstable run (see instability()): the training loss ended this fraction above where it began,
_ENDED_ABOVE = 0.05
# or began this many times above its lowest and fell more than _FIRST_DROP-fold into the second epoch,
_EXPLOSIVE_START = 100.0
_FIRST_DROP = 10.0
# or jumped to this many times its lowest so far, by more than this fraction of its median.
_JUMP = 2.0
_JUMP_SIGNIFICANT = 0.25
# The report's lines are folded at this width (a notebook cell or a terminal shows them whole).
_WIDTH = 104

_STOP_WORDS = {
    "epochs": "the epochs ran out",
    "terminate_on_nan": "TerminateOnNaN stopped it: the loss became NaN",
    "interrupted": "you interrupted it",
    "time_budget": "the time budget ran out",
    "stopped": "a callback set model.stop_training = True",
    "data_exhausted": "the training data ran out (the iterable ended before the last epoch)",
}


def is_finite(x):
    """Whether ``x`` is a finite float (History stores non-numbers as they came, NaN as NaN)."""
    return isinstance(x, float) and math.isfinite(x)


def number(x):
    """A value as the report and the plot titles print it."""
    return f"{x:.4g}"


def _count(n, word="epoch"):
    return f"{n} {word}" + ("" if n == 1 else "s")


def epoch_number(index):
    """The 1-based epoch number that words and plots use for a 0-based index."""
    return index + 1


def argbest(values, mode):
    """Position of the best finite value (the first one on ties), or None when there is none.

    "Better" is EarlyStopping's test with ``min_delta=0`` (:func:`~fitkit.callbacks.monitor.is_improvement`,
    compared in float32 as Keras compares), so that the best epoch named here is the one EarlyStopping
    kept: two values equal in float32 are a tie.
    """
    best = None
    for i, v in enumerate(values):
        if not is_finite(v):
            continue
        if best is None or is_improvement(v, values[best], mode):
            best = i
    return best


def _slope(ys):
    """Least-squares slope of ``ys`` against 0, 1, 2, ... (per epoch)."""
    n = len(ys)
    if n < 2:
        return 0.0
    mx = (n - 1) / 2
    my = sum(ys) / n
    return sum((i - mx) * (y - my) for i, y in enumerate(ys)) / sum((i - mx) ** 2 for i in range(n))


def overfitting_epoch(val_epochs, val, train_at):
    """The epoch index where overfitting began, or None (the rule is in History.diagnose's docstring)."""
    pairs = [(e, v) for e, v in zip(val_epochs, val) if is_finite(v)]
    b = argbest([v for _, v in pairs], "min")
    if b is None:
        return None
    best_epoch, best = pairs[b]
    after = [v for _, v in pairs[b + 1:]]
    if len(after) < 2:
        return None  # one worse epoch is not yet a trend
    if after[-1] - best <= _CLEAR_RISE * abs(best):
        return None  # it came back down (or never clearly rose): a plateau, not overfitting
    if _slope([best] + after) <= 0:
        return None
    t_best, t_last = train_at.get(best_epoch), train_at.get(pairs[-1][0])
    if is_finite(t_best) and is_finite(t_last) and not t_last < t_best:
        return None  # both losses rose: training itself went wrong (e.g. lr too high), not overfitting
    return best_epoch


def still_improving(values, mode):
    """Whether the finite ``values`` were still improving at the end (rule in diagnose's docstring)."""
    n = len(values)
    if n < 2:
        return False
    b = argbest(values, mode)
    if b < n - 2:
        return False
    w = min(_RECENT, n - 1)
    before, recent = values[: n - w], values[n - w:]
    ref = before[argbest(before, mode)]
    gain = (ref - min(recent)) if mode == "min" else (max(recent) - ref)
    return gain > _MEANINGFUL * max(abs(ref), 1e-12)


def learning_rates(history):
    """``(epoch indices, rates)``: the learning rate each epoch trained with.

    From ``history.learning_rates`` (one rate per entry of ``history.epoch``) when fit recorded it,
    else from the logged ``learning_rate`` key, else empty lists.
    """
    rates = getattr(history, "learning_rates", None)
    # A History driven by hand (not by fit) records None for each epoch: the logged key then says more.
    if isinstance(rates, (list, tuple)) and any(r is not None for r in rates) and len(rates) == len(history.epoch):
        return list(history.epoch), [_as_float(r) for r in rates]
    if "learning_rate" in history.history:
        return history._series("learning_rate")
    return [], []


def _as_float(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def lr_reductions(history):
    """``(epoch, old_lr, new_lr)`` for each time the learning rate was lowered; ``epoch`` is the index of the
    epoch at whose end it was lowered (ReduceLROnPlateau's "Epoch 7: reducing" is index 6, "epoch 7").

    The new rate is the one the next epoch trained with, or, after the last epoch,
    ``history.last_learning_rate`` (the rate after that epoch's callbacks), so a cut at the last
    epoch counts too.
    """
    epochs, rates = learning_rates(history)
    after = getattr(history, "last_learning_rate", None)
    out = []
    for i, (epoch, old) in enumerate(zip(epochs, rates)):
        new = rates[i + 1] if i + 1 < len(rates) else after
        # A relative tolerance keeps float32 round-off from reading as a reduction.
        if is_finite(old) and is_finite(new) and new < old * (1 - 1e-6):
            out.append((epoch, old, new))
    return out


def epochs_before(history):
    """Epochs of training the weights had when this History's fit call began.

    ``history.epochs_before`` (what the model's earlier fit calls trained, read from ``model.history``)
    when it is known and not 0, else the first epoch index (``initial_epoch``), which a user resuming
    by hand gives as the epochs already trained.
    """
    known = getattr(history, "epochs_before", 0) or 0
    if known:
        return int(known)
    return history.epoch[0] if history.epoch else 0


def trained_at(history, epoch):
    """Epochs of training the weights had at the end of epoch index ``epoch`` of this History, counting
    the fit calls before it."""
    first = history.epoch[0] if history.epoch else 0
    return epochs_before(history) + epoch - first + 1


def numbering_continues(history):
    """Whether this call's epoch numbers go on from the epochs trained before it (always true for a
    first fit); False after a fit that started again from epoch 1 on a trained model."""
    return not history.epoch or epochs_before(history) == history.epoch[0]


def instability(history):
    """``(epoch index, words)`` saying why the run looks unstable (a learning rate too high), or None.

    The rules, on the training ``loss`` (the first that holds is reported):

    * it became NaN or infinite after a finite epoch;
    * it ended more than 5% above where it began (at least 3 epochs);
    * it began at least 100 times above its lowest later value and fell more than 10-fold from the
      first epoch to the second: the first steps blew up (or the targets are on a scale far from the
      model's first outputs);
    * it jumped: an epoch at least twice the lowest value before it, by more than a quarter of the
      run's median loss (so that wobbles of a loss near zero do not count). The largest jump is
      reported.
    """
    if "loss" not in history.history:
        return None
    epochs, values = history._series("loss")
    first = next((i for i, v in enumerate(values) if is_finite(v)), None)
    if first is None:
        return None  # never a number: diagnose says so on its own
    for i in range(first + 1, len(values)):
        if not is_finite(values[i]):
            name = "NaN" if math.isnan(values[i]) else "infinite"
            return epochs[i], f"the training loss became {name} in epoch {epoch_number(epochs[i])}"
    pairs = list(zip(epochs[first:], values[first:]))
    if len(pairs) < 2:
        return None
    (e0, v0), (e_end, v_end) = pairs[0], pairs[-1]
    if len(pairs) >= 3 and v_end > v0 * (1 + _ENDED_ABOVE):
        return e_end, (f"the training loss ended higher than it began ({number(v_end)} at epoch "
                       f"{epoch_number(e_end)}, {number(v0)} at epoch {epoch_number(e0)})")
    e_low, v_low = min(pairs[1:], key=lambda p: p[1])
    if v0 >= _EXPLOSIVE_START * v_low and v0 > _FIRST_DROP * pairs[1][1]:
        orders = int(math.log10(v0 / v_low)) if v_low > 0 else None
        scale = f"{orders} orders of magnitude" if orders else "far"
        return e0, (f"the training loss began at {number(v0)} in epoch {epoch_number(e0)}, {scale} above its "
                    f"lowest ({number(v_low)} at epoch {epoch_number(e_low)}): the first steps blew up (or "
                    f"the targets are on a scale far from the model's first outputs: standardise them)")
    median = sorted(v for _, v in pairs)[len(pairs) // 2]
    jump, low = None, 0
    for i in range(1, len(pairs)):
        if pairs[i - 1][1] < pairs[low][1]:
            low = i - 1
        (e, v), (el, vl) = pairs[i], pairs[low]
        if v >= _JUMP * vl and v - vl > _JUMP_SIGNIFICANT * abs(median):
            ratio = v / vl if vl > 0 else math.inf
            if jump is None or ratio > jump[0]:
                jump = (ratio, e, v, el, vl)
    if jump is not None:
        ratio, e, v, el, vl = jump
        times = f"{ratio:.3g} times" if math.isfinite(ratio) else "far above"
        return e, (f"the training loss jumped to {number(v)} at epoch {epoch_number(e)}, {times} its lowest "
                   f"before ({number(vl)} at epoch {epoch_number(el)})")
    return None


@dataclass
class Diagnosis:
    """The answer to "how many epochs should I train?"; ``print(history.diagnose())`` shows it.

    Epoch fields are 0-based indices as in ``history.epoch``; the text says "epoch N" 1-based, as the
    progress bar does. ``lr_reductions`` holds ``(epoch, old_lr, new_lr)`` where ``epoch`` is the epoch
    at whose end the rate was lowered. ``epochs_before`` counts the epochs of training the weights had
    when this fit call began; ``restored_epoch`` is the epoch whose weights EarlyStopping put back
    (None when it did not); ``unstable`` says in words why the run looks unstable (None when it does
    not).
    """

    monitor: str
    mode: str
    best_epoch: int | None
    best_value: float | None
    epochs_run: int
    stop_reason: str | None
    stop_wording: str
    overfitting_epoch: int | None
    still_improving: bool
    lr_reductions: list = field(default_factory=list)
    advice: str = ""
    has_validation: bool = False
    epochs_before: int = 0
    restored_epoch: int | None = None
    unstable: str | None = None
    report: str = field(default="", repr=False)

    def __str__(self):
        return self.report

    def _repr_pretty_(self, printer, cycle):
        # IPython/Jupyter show the student-worded report, not the dataclass fields.
        printer.text(self.report)


def diagnose(history, monitor=None, mode="auto"):
    """The :class:`Diagnosis` of ``history``; see ``History.diagnose`` for the arguments and rules."""
    monitor = history._default_monitor() if monitor is None else monitor
    if monitor not in history.history:
        raise history._missing(monitor, "diagnose")
    mode = resolve_mode(monitor, mode)
    epochs, values = history._series(monitor)
    finite = [(e, v) for e, v in zip(epochs, values) if is_finite(v)]
    b = argbest(values, mode)
    best_epoch, best_value = (epochs[b], values[b]) if b is not None else (None, None)

    overfit = None
    if "val_loss" in history.history:
        train_at = dict(zip(*history._series("loss"))) if "loss" in history.history else {}
        overfit = overfitting_epoch(*history._series("val_loss"), train_at)
    # A run whose last value is NaN/inf broke; it is not "still improving" whatever came before.
    improving = bool(values) and is_finite(values[-1]) and still_improving([v for _, v in finite], mode)
    reason = history.stop_reason
    unstable = instability(history)
    restored = history.restored_epoch if history.restored_epoch in history.epoch else None

    diag = Diagnosis(
        monitor=monitor, mode=mode, best_epoch=best_epoch, best_value=best_value,
        epochs_run=len(history.epoch), stop_reason=reason,
        stop_wording=_stop_wording(history, reason, monitor),
        overfitting_epoch=overfit, still_improving=improving, lr_reductions=lr_reductions(history),
        has_validation=any(k.startswith("val_") for k in history.history),
        epochs_before=epochs_before(history), restored_epoch=restored,
        unstable=unstable[1] if unstable is not None else None,
    )
    diag.advice = nan_loss_words(history) or _advice(history, diag, finite)
    diag.report = _report(history, diag)
    return diag


def nan_loss_words(history):
    """What diagnose() says of a run whose training loss became NaN or infinite and went on (no
    ``TerminateOnNaN`` stopped it), from ``History.nan_loss_epoch``; None for any other run."""
    epoch = getattr(history, "nan_loss_epoch", None)
    if epoch is None or history.stop_reason == "terminate_on_nan":
        return None
    return (f"The training loss became NaN (or infinite) in epoch {epoch_number(epoch)} and training went on, as "
            "no TerminateOnNaN stopped it: from that batch on the weights are NaN and later epochs learned "
            "nothing. Lower the learning rate (or clip gradients), check x and y for NaN/inf, and pass "
            "callbacks=[fitkit.callbacks.TerminateOnNaN()] to stop at the first NaN batch.")


def _stop_wording(history, reason, monitor):
    if reason is None:
        return "no stop reason was recorded"
    if reason == "epochs":
        epochs = history.params.get("epochs") if isinstance(history.params, dict) else None
        return _STOP_WORDS["epochs"] + (f" (epochs={epochs})" if epochs is not None else "")
    if reason == "early_stopping":
        watched = history.stop_monitor or monitor
        words = "EarlyStopping stopped it"
        if watched in history.history:
            epochs, values = history._series(watched)
            try:
                i = argbest(values, resolve_mode(watched, "auto"))
            except ValueError:
                i = None
            if i is not None and history.epoch:
                n = history.epoch[-1] - epochs[i]
                words += f": {watched} had not improved for {_count(n)}"
        return words
    if reason == "terminate_on_nan":
        nan_at = _first_nonfinite(history, "loss")
        return _STOP_WORDS[reason] + (f" in epoch {epoch_number(nan_at)}" if nan_at is not None else "")
    if reason in _STOP_WORDS:
        return _STOP_WORDS[reason]
    return f"a callback stopped it (stop_reason={reason!r})"


def _first_nonfinite(history, key):
    if key not in history.history:
        return None
    for e, v in zip(*history._series(key)):
        if not is_finite(v):
            return e
    return None


def _epochs_in_all(history, d, epoch):
    """"N epochs" of training up to the end of ``epoch``, counting the fit calls before this one."""
    n = trained_at(history, epoch)
    if not d.epochs_before:
        return _count(n)
    return f"{_count(n)} in all ({d.epochs_before} before this fit call and {n - d.epochs_before} in it)"


def _keep_best(d, epoch):
    """What to do so that the model keeps the weights of ``epoch`` rather than the last ones."""
    if d.restored_epoch is not None:
        return (f"EarlyStopping put back the weights of epoch {epoch_number(d.restored_epoch)}, so the model "
                "already holds the best weights")
    return (f"use EarlyStopping(monitor=\"{d.monitor}\", restore_best_weights=True) to keep epoch "
            f"{epoch_number(epoch)}'s weights")


def _advice(history, d, finite):
    m = d.monitor
    if not history.epoch:
        return "No epoch has run yet: call fit() first."
    if d.best_epoch is None:
        return (f"{m} was never a finite number (NaN or infinite in every epoch): lower the learning "
                "rate, check the inputs and targets for NaN/inf, and train again.")
    best = f"{m} was best at epoch {epoch_number(d.best_epoch)} ({number(d.best_value)})"
    if d.stop_reason == "terminate_on_nan":
        return (f"The loss became NaN, so the run broke rather than finished: lower the learning rate "
                f"(or clip gradients) and check the data for NaN/inf. Until then, {best}.")
    if d.unstable is not None:
        return (f"Make training stable first: {d.unstable}, so the learning rate is probably too high. "
                f"Train again with one 3 to 10 times lower (model.find_learning_rate(x, y) suggests one); "
                f"the number of epochs read from an unstable run is not reliable. Until then, {best}.")
    if d.overfitting_epoch is not None:
        k = d.overfitting_epoch
        more = ("To gain from more epochs, add data or regularisation (dropout, weight decay)."
                if d.restored_epoch is not None else
                "Or add data / regularisation (dropout, weight decay) to train longer.")
        return (f"Train for about {_epochs_in_all(history, d, k)}: overfitting began after epoch "
                f"{epoch_number(k)}, where val_loss was lowest; {_keep_best(d, k)}. {more}")
    if len(finite) < 2:
        return (f"Train longer: only 1 epoch ran, too few to see where {m} stops improving. Try more "
                f"epochs with EarlyStopping(monitor=\"{m}\", patience=5, restore_best_weights=True).")
    no_val = "" if d.has_validation else (
        " Without validation data overfitting cannot be seen: pass validation_split=0.2.")
    if d.still_improving:
        last_e, last_v = finite[-1]
        why = {"interrupted": "when you interrupted it", "time_budget": "when the time budget ran out"}.get(
            d.stop_reason, "at the last epoch")
        total = trained_at(history, history.epoch[-1])
        if d.epochs_before:
            more = f"try about {2 * total} epochs in all (it has had {total})"
        else:
            more = f"try epochs={2 * total}"
        stopper = ("; your EarlyStopping will stop it at the right time and keep the best weights"
                   if d.restored_epoch is not None else
                   f" with EarlyStopping(monitor=\"{m}\", patience=5, restore_best_weights=True) to stop at "
                   "the right time")
        if d.best_epoch == last_e:
            where = f"{number(last_v)} at epoch {epoch_number(last_e)}"
        else:
            where = f"best {number(d.best_value)} at epoch {epoch_number(d.best_epoch)} of {epoch_number(last_e)}"
        return (f"Train longer: {m} was still improving {why} ({where}); {more}{stopper}.{no_val}")
    last = history.epoch[-1]
    holds = ""
    if d.restored_epoch is None and d.best_epoch != last and d.has_validation:
        holds = (f" The model holds the weights of the last epoch ({epoch_number(last)}); "
                 f"{_keep_best(d, d.best_epoch)}.")
    if d.best_epoch == finite[-1][0]:
        return (f"Train for about {_epochs_in_all(history, d, d.best_epoch)}: {best}, but it has levelled off "
                f"(less than 1% better over the last epochs), so more epochs would gain little.{no_val}")
    return (f"Train for about {_epochs_in_all(history, d, d.best_epoch)}: {best} and did not improve after "
            f"it.{holds}{no_val}")


def _report(history, d):
    ep = epoch_number
    lines = ["Training diagnosis (epochs numbered from 1, as the progress bar prints them)"]
    if history.epoch and d.epochs_before:
        if numbering_continues(history):
            lines.append(f"  this fit call:    went on from a model trained for {_count(d.epochs_before)} "
                         f"before it; its epochs are numbered on from there")
        else:
            first = ep(history.epoch[0])
            how = "again" if history.epoch[0] == 0 else f"(initial_epoch={history.epoch[0]})"
            lines.append(f"  this fit call:    started from a model trained for {_count(d.epochs_before)} in "
                         f"earlier fit calls, but numbered its epochs from {first} {how}, as its progress bar "
                         f"did: its epoch {first} is the model's {ordinal(d.epochs_before + 1)}; "
                         f"fit(..., initial_epoch={d.epochs_before}) would number them on")
    if history.epoch:
        lines.append(f"  epochs run:       {d.epochs_run} (epoch {ep(history.epoch[0])} to {ep(history.epoch[-1])})")
    else:
        lines.append("  epochs run:       0")
    lines.append(f"  why it stopped:   {d.stop_wording}")
    if d.best_epoch is not None:
        better = "lower" if d.mode == "min" else "higher"
        lines.append(f"  best {d.monitor}: {' ' * max(0, 11 - len(d.monitor))}{number(d.best_value)} "
                     f"at epoch {ep(d.best_epoch)} ({better} is better)")
    if d.restored_epoch is not None:
        lines.append(f"  weights:          restored to those of epoch {ep(d.restored_epoch)} by "
                     f"EarlyStopping(restore_best_weights=True)")
    elif history.epoch and d.has_validation and d.best_epoch is not None and d.best_epoch != history.epoch[-1]:
        lines.append(f"  weights:          those of the last epoch ({ep(history.epoch[-1])}), not of the best "
                     f"({ep(d.best_epoch)})")
    if d.overfitting_epoch is not None:
        e, v = history._series("val_loss")
        pairs = [(ei, vi) for ei, vi in zip(e, v) if is_finite(vi)]
        best_v = dict(pairs)[d.overfitting_epoch]
        lines.append(f"  overfitting:      began after epoch {ep(d.overfitting_epoch)}: val_loss rose from "
                     f"{number(best_v)} to {number(pairs[-1][1])} (epoch {ep(pairs[-1][0])}) while the "
                     f"training loss kept falling")
    elif d.has_validation and "val_loss" in history.history:
        lines.append("  overfitting:      none seen")
    lines.append(f"  still improving:  {'yes' if d.still_improving else 'no'}")
    if d.unstable is not None:
        lines.append(f"  unstable:         {d.unstable}")
    lrs = d.lr_reductions
    if len(lrs) > 3:
        lines.append(f"  learning rate:    lowered {len(lrs)} times, from {lrs[0][1]:.3g} to {lrs[-1][2]:.3g} "
                     f"(first at the end of epoch {ep(lrs[0][0])}, last at the end of epoch {ep(lrs[-1][0])})")
    else:
        for i, (e, old, new) in enumerate(lrs):
            label = "learning rate:   " if i == 0 else "                 "
            lines.append(f"  {label} lowered from {old:.3g} to {new:.3g} at the end of epoch {ep(e)}")
    lines.append(f"Advice: {d.advice}")
    return "\n".join(_wrap(line) for line in lines)


def _wrap(line):
    """A report line folded at ``_WIDTH`` characters, its continuation lines under its text."""
    indent = 8 if line.startswith("Advice: ") else 20 if line.startswith("  ") else 0
    if len(line) <= _WIDTH or not indent:
        return line
    return textwrap.fill(line, _WIDTH, subsequent_indent=" " * indent, break_on_hyphens=False,
                         break_long_words=False)


def ordinal(n):
    """``1st``, ``2nd``, ``23rd``, ``11th``: how the report names the model's n-th epoch."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"
