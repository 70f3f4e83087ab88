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
from dataclasses import dataclass, field

from .callbacks.monitor import resolve_mode

# A change smaller than this fraction of the value does not count as "meaningful" in diagnose().
_MEANINGFUL = 0.01
# Overfitting needs val_loss to end this fraction above its best (and at least 2 epochs after it).
_CLEAR_RISE = 0.02
# How many trailing epochs diagnose() looks at to decide whether training was still improving.
_RECENT = 5

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
    """Position of the best finite value (the first one on ties), or None when there is none."""
    best = None
    for i, v in enumerate(values):
        if not is_finite(v):
            continue
        if best is None or (v < values[best] if mode == "min" else v > values[best]):
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


def lr_reductions(history):
    """``(epoch, old_lr, new_lr)`` wherever the logged ``learning_rate`` went down."""
    if "learning_rate" not in history.history:
        return []
    epochs, lrs = history._series("learning_rate")
    out = []
    for i in range(1, len(lrs)):
        old, new = lrs[i - 1], lrs[i]
        # A relative tolerance keeps float32 round-off from reading as a reduction.
        if is_finite(old) and is_finite(new) and new < old * (1 - 1e-6):
            out.append((epochs[i], old, new))
    return out


@dataclass
class Diagnosis:
    """The answer to "how many epochs should I train?"; ``print(history.diagnose())`` shows it.

    Epoch fields are 0-based indices as in ``history.epoch``; the text says "epoch N" 1-based, as the
    progress bar does. ``lr_reductions`` holds ``(epoch, old_lr, new_lr)`` where ``epoch`` is the first
    epoch that ran with ``new_lr``.
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

    diag = Diagnosis(
        monitor=monitor, mode=mode, best_epoch=best_epoch, best_value=best_value,
        epochs_run=len(history.epoch), stop_reason=reason,
        stop_wording=_stop_wording(history, reason, monitor),
        overfitting_epoch=overfit, still_improving=improving, lr_reductions=lr_reductions(history),
        has_validation=any(k.startswith("val_") for k in history.history),
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
    if d.overfitting_epoch is not None:
        k = epoch_number(d.overfitting_epoch)
        return (f"Train for about {_count(k)}: overfitting began after epoch {k}, where val_loss was "
                f"lowest. Use EarlyStopping(monitor=\"val_loss\", restore_best_weights=True) to keep that "
                f"epoch's weights, or more data / regularisation (dropout, weight decay) to train longer.")
    if len(finite) < 2:
        return (f"Train longer: only 1 epoch ran, too few to see where {m} stops improving. Try more "
                f"epochs with EarlyStopping(monitor=\"{m}\", patience=5, restore_best_weights=True).")
    no_val = "" if d.has_validation else (
        " Without validation data overfitting cannot be seen: pass validation_split=0.2.")
    if d.still_improving:
        last_e, last_v = finite[-1]
        why = {"interrupted": "when you interrupted it", "time_budget": "when the time budget ran out"}.get(
            d.stop_reason, "at the last epoch")
        suggest = 2 * epoch_number(history.epoch[-1])
        return (f"Train longer: {m} was still improving {why} ({number(last_v)} at epoch "
                f"{epoch_number(last_e)}); try epochs={suggest} with EarlyStopping(monitor=\"{m}\", "
                f"patience=5, restore_best_weights=True) to stop at the right time.{no_val}")
    if d.best_epoch == finite[-1][0]:
        return (f"Train for about {_count(epoch_number(d.best_epoch))}: {best}, but it has levelled off "
                f"(less than 1% better over the last epochs), so more epochs would gain little.{no_val}")
    return (f"Train for about {_count(epoch_number(d.best_epoch))}: {best} and did not improve after it."
            f"{no_val}")


def _report(history, d):
    ep = epoch_number
    lines = ["Training diagnosis (epochs numbered from 1, as the progress bar prints them)"]
    if history.epoch:
        lines.append(f"  epochs run:       {d.epochs_run} (epoch {ep(history.epoch[0])} to {ep(history.epoch[-1])})")
    else:
        lines.append("  epochs run:       0")
    lines.append(f"  why it stopped:   {d.stop_wording}")
    if d.best_epoch is not None:
        better = "lower" if d.mode == "min" else "higher"
        lines.append(f"  best {d.monitor}: {' ' * max(0, 11 - len(d.monitor))}{number(d.best_value)} "
                     f"at epoch {ep(d.best_epoch)} ({better} is better)")
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
    lrs = d.lr_reductions
    if len(lrs) > 3:
        lines.append(f"  learning rate:    lowered {len(lrs)} times, from {lrs[0][1]:.3g} to {lrs[-1][2]:.3g} "
                     f"(first at epoch {ep(lrs[0][0])}, last at epoch {ep(lrs[-1][0])})")
    else:
        for i, (e, old, new) in enumerate(lrs):
            label = "learning rate:   " if i == 0 else "                 "
            lines.append(f"  {label} lowered from {old:.3g} to {new:.3g} at epoch {ep(e)}")
    lines.append(f"Advice: {d.advice}")
    return "\n".join(lines)
