"""History: what ``fit`` returns, as in Keras, plus answers to "how many epochs should I train?".

Keras part: ``history.history`` (key -> list of per-epoch floats), ``history.epoch`` (the epoch
indices that ran), ``history.params`` (``verbose``, ``epochs``, ``steps``) and ``model.history``.

fitkit part: :meth:`History.best_epoch`, :meth:`History.diagnose`, :meth:`History.plot`, and a plain-data
round trip (:meth:`History.to_dict` / :meth:`History.from_dict`) so a checkpoint can carry it.

Epoch *indices* (``history.epoch``, ``best_epoch()``, the ``Diagnosis`` fields) are 0-based like Keras's
``epoch`` argument; epoch numbers in *words* and on plots are 1-based, as Keras's progress bar prints
them: index 13 is "epoch 14". With ``initial_epoch=2`` the first index is 2 ("epoch 3").
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, field

from .callbacks.base import Callback
from .callbacks.monitor import resolve_mode
from .logs import to_float

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


def _finite(x):
    return isinstance(x, float) and math.isfinite(x)


def _plain_float(value):
    """A Python float for a numeric log value; anything else is kept as it is."""
    try:
        return to_float(value)
    except (TypeError, ValueError, RuntimeError):
        return value


def _num(x):
    return f"{x:.4g}"


def _count(n, word="epoch"):
    return f"{n} {word}" + ("" if n == 1 else "s")


def _ep(index):
    """The 1-based epoch number that words and plots use for a 0-based index."""
    return index + 1


def _slope(ys):
    """Least-squares slope of ``ys`` against 0, 1, 2, ... (per epoch)."""
    n = len(ys)
    if n < 2:
        return 0.0
    mx = (n - 1) / 2
    my = sum(ys) / n
    return sum((i - mx) * (y - my) for i, y in enumerate(ys)) / sum((i - mx) ** 2 for i in range(n))


def _argbest(values, mode):
    """Position of the best finite value (the first one on ties), or None when there is none."""
    best = None
    for i, v in enumerate(values):
        if not _finite(v):
            continue
        if best is None or (v < values[best] if mode == "min" else v > values[best]):
            best = i
    return best


def _overfitting_epoch(val_epochs, val, train_at):
    """The epoch index where overfitting began, or None (the rule is in History.diagnose's docstring)."""
    pairs = [(e, v) for e, v in zip(val_epochs, val) if _finite(v)]
    b = _argbest([v for _, v in pairs], "min")
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
    if _finite(t_best) and _finite(t_last) and not t_last < t_best:
        return None  # both losses rose: training itself went wrong (e.g. lr too high), not overfitting
    return best_epoch


def _still_improving(values, mode):
    """Whether the finite ``values`` were still improving at the end (rule in diagnose's docstring)."""
    n = len(values)
    if n < 2:
        return False
    b = _argbest(values, mode)
    if b < n - 2:
        return False
    w = min(_RECENT, n - 1)
    before, recent = values[: n - w], values[n - w:]
    ref = before[_argbest(before, mode)]
    gain = (ref - min(recent)) if mode == "min" else (max(recent) - ref)
    return gain > _MEANINGFUL * max(abs(ref), 1e-12)


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


class History(Callback):
    """Records every epoch's logs; ``fit`` returns it and sets ``model.history`` to it.

    >>> history = model.fit(x, y, epochs=20, validation_split=0.2)   # doctest: +SKIP
    >>> history.history["val_loss"][:2]                               # doctest: +SKIP
    [0.71, 0.64]
    >>> history.best_epoch()         # 0-based index: "epoch 15" in words  # doctest: +SKIP
    14
    >>> print(history.diagnose())                                     # doctest: +SKIP

    Beyond Keras, ``fit`` fills ``stop_reason`` (``"epochs"``, ``"early_stopping"``,
    ``"terminate_on_nan"``, ``"interrupted"``, ``"time_budget"``, ``"data_exhausted"``, ``"stopped"`` (a
    callback set ``stop_training`` without a reason) or another string a callback put in
    ``model.stop_reason``), ``interrupted`` (True after Ctrl-C) and may fill ``stop_monitor`` (the
    key the stopping callback watched) and ``restored_epoch`` (the epoch whose weights
    ``EarlyStopping(restore_best_weights=True)`` put back, as with ``fit(epochs="auto")``). When the trainer leaves ``stop_reason`` unset, ``on_train_end``
    reads ``model.stop_reason``, else works it out from ``params["epochs"]`` and ``model.stop_training``.
    """

    def __init__(self):
        super().__init__()
        self.history = {}
        self.epoch = []
        self.stop_reason = None
        self.interrupted = False
        self.stop_monitor = None
        # The epoch whose weights EarlyStopping(restore_best_weights=True) put back, when it did.
        self.restored_epoch = None
        # The epoch index of every value of every key: val_ keys skip epochs when validation_freq > 1.
        self._logged_at = {}

    # ----- Keras hooks -----

    def on_train_begin(self, logs=None):
        # Keras resets the epoch list but keeps the history dict (fit makes a new History each call).
        self.epoch = []
        self.stop_reason = None
        self.interrupted = False
        self.stop_monitor = None
        self.restored_epoch = None
        if self.model is not None:
            self.model.history = self

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(_plain_float(value))
            self._logged_at.setdefault(key, []).append(epoch)
        if self.model is not None:
            self.model.history = self

    def on_train_end(self, logs=None):
        if self.stop_reason is None:
            self.stop_reason = self._infer_stop_reason()
        if self.stop_reason == "interrupted":
            self.interrupted = True

    def _infer_stop_reason(self):
        model = self.model
        reason = getattr(model, "stop_reason", None)
        if reason:
            return str(reason)
        if self.interrupted:
            return "interrupted"
        epochs = self.params.get("epochs") if isinstance(self.params, dict) else None
        if epochs is not None and (not self.epoch or self.epoch[-1] + 1 >= epochs):
            return "epochs"
        if getattr(model, "stop_training", False):
            return "stopped"
        return None

    # ----- reading the record -----

    def _series(self, key):
        """``(epoch indices, float values)`` of ``key``; non-numbers read as NaN."""
        values = [v if isinstance(v, float) else math.nan for v in self.history[key]]
        epochs = self._logged_at.get(key)
        if epochs is None or len(epochs) != len(values):
            # Filled by hand or by Keras-era code: align with self.epoch when the lengths agree.
            if len(values) == len(self.epoch):
                epochs = list(self.epoch)
            else:
                last = self.epoch[-1] if self.epoch else len(values) - 1
                start = max(last - len(values) + 1, 0)
                epochs = list(range(start, start + len(values)))
        return list(epochs), values

    def _missing(self, monitor, where):
        keys = ", ".join(repr(k) for k in self.history) or "none (no epoch has ended yet)"
        return KeyError(f"{where}: monitor={monitor!r} is not in this History; the keys are: {keys}")

    def best_epoch(self, monitor="val_loss", mode="auto"):
        """The epoch index (as in ``self.epoch``) where ``monitor`` was best.

        ``mode`` is ``"min"``, ``"max"`` or ``"auto"`` (from the name: losses min, accuracy-like max).
        Ties go to the first epoch; NaN and infinite values are skipped. The index is 0-based: with
        ``initial_epoch=2`` the first possible answer is 2, and 13 is "epoch 14" on the progress bar.

        >>> history.best_epoch("val_accuracy")   # doctest: +SKIP
        13
        """
        if monitor not in self.history:
            raise self._missing(monitor, "best_epoch")
        mode = resolve_mode(monitor, mode)
        epochs, values = self._series(monitor)
        i = _argbest(values, mode)
        if i is None:
            raise ValueError(
                f"best_epoch: monitor={monitor!r} has no finite value "
                f"({len(values)} recorded, all NaN or infinite)")
        return epochs[i]

    def _default_monitor(self):
        for key in ("val_loss", "loss"):
            if key in self.history:
                return key
        keys = ", ".join(repr(k) for k in self.history) or "none (no epoch has ended yet)"
        raise KeyError(f"diagnose: neither 'val_loss' nor 'loss' is in this History; pass monitor= one of: {keys}")

    def _lr_reductions(self):
        if "learning_rate" not in self.history:
            return []
        epochs, lrs = self._series("learning_rate")
        out = []
        for i in range(1, len(lrs)):
            old, new = lrs[i - 1], lrs[i]
            # A relative tolerance keeps float32 round-off from reading as a reduction.
            if _finite(old) and _finite(new) and new < old * (1 - 1e-6):
                out.append((epochs[i], old, new))
        return out

    def diagnose(self, monitor=None, mode="auto"):
        """Why training stopped, where it was best, whether it overfitted or should go on.

        ``monitor`` defaults to ``"val_loss"`` when validation ran, else ``"loss"``. Returns a
        :class:`Diagnosis`; ``print`` it for the worded report. Epoch numbers in the words are 1-based
        (as the progress bar prints them); the fields are 0-based indices as in ``self.epoch``.

        The rules, so that you can check them against your own curves:

        * **overfitting_epoch**: the epoch where ``val_loss`` was lowest (first one on ties), when at
          least 2 validated epochs came after it, ``val_loss`` at the last of them is more than 2% above
          that lowest value, the least-squares trend of ``val_loss`` from the best epoch to the end is
          rising, and the training ``loss`` at the end is lower than at the best epoch (it kept falling
          while validation got worse). Otherwise None (also without validation). A rise that comes
          back to within 2% of the best is a plateau, not overfitting.
        * **still_improving**: ``monitor`` is at its best (strictly, so a flat tail does not count) in
          the last or second-to-last epoch, and the best of the last ``w = min(5, epochs - 1)`` epochs
          beats the best of all epochs before them by more than 1% of that earlier best. A single
          epoch is never "still improving" (there is no trend to read), nor is a run whose last
          value of ``monitor`` is NaN or infinite (it broke).
        * **lr_reductions**: ``(epoch, old_lr, new_lr)`` wherever the logged ``learning_rate`` went down
          from one epoch to the next; ``epoch`` is the first epoch that ran with ``new_lr``.

        >>> print(history.diagnose())   # doctest: +SKIP
        """
        monitor = self._default_monitor() if monitor is None else monitor
        if monitor not in self.history:
            raise self._missing(monitor, "diagnose")
        mode = resolve_mode(monitor, mode)
        epochs, values = self._series(monitor)
        finite = [(e, v) for e, v in zip(epochs, values) if _finite(v)]
        b = _argbest(values, mode)
        best_epoch, best_value = (epochs[b], values[b]) if b is not None else (None, None)

        overfit = None
        if "val_loss" in self.history:
            train_at = dict(zip(*self._series("loss"))) if "loss" in self.history else {}
            overfit = _overfitting_epoch(*self._series("val_loss"), train_at)
        # A run whose last value is NaN/inf broke; it is not "still improving" whatever came before.
        improving = bool(values) and _finite(values[-1]) and _still_improving([v for _, v in finite], mode)
        reason = self.stop_reason
        if reason is None and self.interrupted:
            reason = "interrupted"

        diag = Diagnosis(
            monitor=monitor, mode=mode, best_epoch=best_epoch, best_value=best_value,
            epochs_run=len(self.epoch), stop_reason=reason, stop_wording=self._stop_wording(reason, monitor),
            overfitting_epoch=overfit, still_improving=improving, lr_reductions=self._lr_reductions(),
            has_validation=any(k.startswith("val_") for k in self.history),
        )
        diag.advice = self._advice(diag, finite)
        diag.report = self._report(diag, finite)
        return diag

    def _stop_wording(self, reason, monitor):
        if reason is None:
            return "no stop reason was recorded"
        if reason == "epochs":
            epochs = self.params.get("epochs") if isinstance(self.params, dict) else None
            return _STOP_WORDS["epochs"] + (f" (epochs={epochs})" if epochs is not None else "")
        if reason == "early_stopping":
            watched = self.stop_monitor or monitor
            words = "EarlyStopping stopped it"
            if watched in self.history:
                epochs, values = self._series(watched)
                try:
                    i = _argbest(values, resolve_mode(watched, "auto"))
                except ValueError:
                    i = None
                if i is not None and self.epoch:
                    n = self.epoch[-1] - epochs[i]
                    words += f": {watched} had not improved for {_count(n)}"
            return words
        if reason == "terminate_on_nan":
            nan_at = self._first_nonfinite("loss")
            return _STOP_WORDS[reason] + (f" in epoch {_ep(nan_at)}" if nan_at is not None else "")
        if reason in _STOP_WORDS:
            return _STOP_WORDS[reason]
        return f"a callback stopped it (stop_reason={reason!r})"

    def _first_nonfinite(self, key):
        if key not in self.history:
            return None
        for e, v in zip(*self._series(key)):
            if not _finite(v):
                return e
        return None

    def _advice(self, d, finite):
        m = d.monitor
        if not self.epoch:
            return "No epoch has run yet: call fit() first."
        if d.best_epoch is None:
            return (f"{m} was never a finite number (NaN or infinite in every epoch): lower the learning "
                    "rate, check the inputs and targets for NaN/inf, and train again.")
        best = f"{m} was best at epoch {_ep(d.best_epoch)} ({_num(d.best_value)})"
        if d.stop_reason == "terminate_on_nan":
            return (f"The loss became NaN, so the run broke rather than finished: lower the learning rate "
                    f"(or clip gradients) and check the data for NaN/inf. Until then, {best}.")
        if d.overfitting_epoch is not None:
            k = _ep(d.overfitting_epoch)
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
            suggest = 2 * _ep(self.epoch[-1])
            return (f"Train longer: {m} was still improving {why} ({_num(last_v)} at epoch {_ep(last_e)}); "
                    f"try epochs={suggest} with EarlyStopping(monitor=\"{m}\", patience=5, "
                    f"restore_best_weights=True) to stop at the right time.{no_val}")
        if d.best_epoch == finite[-1][0]:
            return (f"Train for about {_count(_ep(d.best_epoch))}: {best}, but it has levelled off "
                    f"(less than 1% better over the last epochs), so more epochs would gain little.{no_val}")
        return (f"Train for about {_count(_ep(d.best_epoch))}: {best} and did not improve after it."
                f"{no_val}")

    def _report(self, d, finite):
        lines = ["Training diagnosis (epochs numbered from 1, as the progress bar prints them)"]
        if self.epoch:
            lines.append(f"  epochs run:       {d.epochs_run} (epoch {_ep(self.epoch[0])} to {_ep(self.epoch[-1])})")
        else:
            lines.append("  epochs run:       0")
        lines.append(f"  why it stopped:   {d.stop_wording}")
        if d.best_epoch is not None:
            better = "lower" if d.mode == "min" else "higher"
            lines.append(f"  best {d.monitor}: {' ' * max(0, 11 - len(d.monitor))}{_num(d.best_value)} "
                         f"at epoch {_ep(d.best_epoch)} ({better} is better)")
        if d.overfitting_epoch is not None:
            e, v = self._series("val_loss")
            pairs = [(ei, vi) for ei, vi in zip(e, v) if _finite(vi)]
            best_v = dict(pairs)[d.overfitting_epoch]
            lines.append(f"  overfitting:      began after epoch {_ep(d.overfitting_epoch)}: val_loss rose from "
                         f"{_num(best_v)} to {_num(pairs[-1][1])} (epoch {_ep(pairs[-1][0])}) while the "
                         f"training loss kept falling")
        elif d.has_validation and "val_loss" in self.history:
            lines.append("  overfitting:      none seen")
        lines.append(f"  still improving:  {'yes' if d.still_improving else 'no'}")
        lrs = d.lr_reductions
        if len(lrs) > 3:
            lines.append(f"  learning rate:    lowered {len(lrs)} times, from {lrs[0][1]:.3g} to {lrs[-1][2]:.3g} "
                         f"(first at epoch {_ep(lrs[0][0])}, last at epoch {_ep(lrs[-1][0])})")
        else:
            for i, (e, old, new) in enumerate(lrs):
                label = "learning rate:   " if i == 0 else "                 "
                lines.append(f"  {label} lowered from {old:.3g} to {new:.3g} at epoch {_ep(e)}")
        lines.append(f"Advice: {d.advice}")
        return "\n".join(lines)

    # ----- plotting -----

    def plot(self, path=None, show=None):
        """Plot the curves: loss with val_loss, each metric with its ``val_`` twin, and the learning
        rate (log scale) when it changed; the best epoch is marked on every panel.

        Saves to ``path`` when given (the format from its extension, e.g. ``"history.png"``) and returns
        the matplotlib ``Figure``. ``show=True`` opens it with ``plt.show()``; otherwise nothing pops up:
        in a notebook the returned figure shows as the cell's value. Needs ``pip install fitkit[plot]``.

        >>> fig = history.plot("history.png")   # doctest: +SKIP
        """
        plt = _pyplot()
        if not self.epoch:
            raise ValueError("plot: this History has no epochs yet; call fit() first")
        panels = self._panels()
        try:
            monitor = self._default_monitor()
            best = self.best_epoch(monitor)
        except (KeyError, ValueError):
            monitor, best = None, None
        overfit = self.diagnose().overfitting_epoch if monitor is not None else None

        cols = 1 if len(panels) == 1 else 2
        rows = math.ceil(len(panels) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(6.4 * cols, 4.0 * rows), squeeze=False)
        axes = axes.ravel()
        for ax in axes[len(panels):]:
            fig.delaxes(ax)
        for ax, (title, keys, log) in zip(axes, panels):
            self._draw_panel(ax, title, keys, log, monitor, best, overfit)
        if best is not None:
            fig.suptitle(f"Training history: best {monitor} {_num(dict(zip(*self._series(monitor)))[best])} "
                         f"at epoch {_ep(best)}", fontsize=13)
        fig.tight_layout()
        if path is not None:
            fig.savefig(path, dpi=100)
        if show:
            plt.show()
        elif show is False or "ipykernel" in sys.modules:
            # Not left open: a notebook would draw it twice (once open, once as the returned value).
            plt.close(fig)
        return fig

    def _panels(self):
        """``(title, keys, log_scale)`` per panel, in the order a student reads them."""
        panels, used = [], {"learning_rate"}
        names = [k for k in self.history if not k.startswith("val_")]
        names += [k[4:] for k in self.history if k.startswith("val_") and k[4:] not in self.history]
        if "loss" in names:
            names.remove("loss")
            names.insert(0, "loss")
        for name in names:
            if name in used:
                continue
            used.add(name)
            keys = [k for k in (name, "val_" + name) if k in self.history]
            panels.append((self._title(name), keys, False))
        if "learning_rate" in self.history:
            lrs = [v for v in self.history["learning_rate"] if _finite(v)]
            if len(set(lrs)) > 1:
                panels.append(("Learning rate (log scale)", ["learning_rate"], min(lrs) > 0))
        return panels

    @staticmethod
    def _title(name):
        try:
            better = "lower" if resolve_mode(name, "auto") == "min" else "higher"
        except ValueError:
            return name.replace("_", " ").capitalize()
        return f"{name.replace('_', ' ').capitalize()} ({better} is better)"

    def _draw_panel(self, ax, title, keys, log, monitor, best, overfit):
        from matplotlib.ticker import MaxNLocator

        styles = {0: dict(color="tab:blue", marker="o", markersize=3),
                  1: dict(color="tab:orange", marker="o", markersize=3)}
        mark_key = keys[-1]  # the validation curve when there is one: that is where "best" was judged
        broken = set()
        for i, key in enumerate(keys):
            epochs, values = self._series(key)
            xs = [_ep(e) for e in epochs]
            ys = [v if _finite(v) else math.nan for v in values]
            broken.update(x for x, v in zip(xs, values) if not _finite(v))
            if key == "learning_rate":
                # The rate is constant through an epoch: draw steps, not slopes between epochs.
                ax.plot(xs, ys, label="learning rate", drawstyle="steps-mid", **styles[0])
            else:
                ax.plot(xs, ys, label="validation" if key.startswith("val_") else "training", **styles[i % 2])
            if best is not None and key == mark_key and best in epochs:
                y = ys[epochs.index(best)]
                if _finite(y):
                    ax.plot([_ep(best)], [y], linestyle="none", marker="*", markersize=14, color="tab:red",
                            zorder=5, gid="best_epoch_point")
        if best is not None:
            ax.axvline(_ep(best), color="tab:red", linestyle="--", linewidth=1,
                       label=f"best {monitor}: epoch {_ep(best)}", gid="best_epoch")
        for j, x in enumerate(sorted(broken)):
            # NaN/inf leave gaps in a line; without a mark a student would not see those epochs at all.
            ax.axvline(x, color="dimgray", linestyle=":", linewidth=1.5, label="NaN or inf" if j == 0 else None)
        if overfit is not None and "loss" in keys:
            # Shaded with a collection rather than axvspan's patch: legend(loc="best") treats a patch
            # as occupied space, and the span would leave it no free corner.
            ax.fill_betweenx([0, 1], _ep(overfit), _ep(self.epoch[-1]), transform=ax.get_xaxis_transform(),
                             color="tab:red", alpha=0.08, linewidth=0, label="overfitting")
        if log:
            ax.set_yscale("log")
        else:
            # Headroom above the curves so the legend has a free corner instead of covering a line.
            lo, hi = ax.get_ylim()
            ax.set_ylim(lo, hi + 0.3 * (hi - lo))
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.set_ylabel(keys[0].removeprefix("val_").replace("_", " "))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlim(_ep(self.epoch[0]) - 0.5, _ep(self.epoch[-1]) + 0.5)
        ax.grid(True, alpha=0.3)
        # A learning rate only goes down in fit's schedules, so the lower left is free for the legend.
        ax.legend(fontsize=9, loc="lower left" if keys == ["learning_rate"] else "best")

    # ----- plain data -----

    def to_dict(self):
        """Plain data (lists, floats, strings) that :meth:`from_dict` turns back into a History."""
        return {
            "history": {k: list(v) for k, v in self.history.items()},
            "epoch": list(self.epoch),
            "params": dict(self.params) if isinstance(self.params, dict) else {},
            "stop_reason": self.stop_reason,
            "interrupted": bool(self.interrupted),
            "stop_monitor": self.stop_monitor,
            "restored_epoch": self.restored_epoch,
            "logged_at": {k: list(v) for k, v in self._logged_at.items()},
        }

    @classmethod
    def from_dict(cls, data):
        """A History from :meth:`to_dict`'s output (or a plain ``{key: [values]}`` Keras history dict)."""
        history = cls()
        history.load_state_dict(data)
        return history

    def state_dict(self):
        """Same as :meth:`to_dict`, under torch's name, so a checkpoint can hold it."""
        return self.to_dict()

    def load_state_dict(self, data):
        """Replace this History's record with ``data`` from :meth:`to_dict`."""
        if not isinstance(data, dict):
            raise TypeError(f"load_state_dict: data must be a dict from History.to_dict(), got {type(data).__name__}")
        if "history" not in data:
            # A bare Keras ``history.history`` dict: one value per epoch from 0.
            data = {"history": data, "epoch": list(range(max((len(v) for v in data.values()), default=0)))}
        self.history = {k: [_plain_float(x) for x in v] for k, v in data["history"].items()}
        self.epoch = [int(e) for e in data.get("epoch", [])]
        self.params = dict(data.get("params") or {})
        self.stop_reason = data.get("stop_reason")
        self.interrupted = bool(data.get("interrupted", False))
        self.stop_monitor = data.get("stop_monitor")
        self.restored_epoch = data.get("restored_epoch")
        self._logged_at = {k: [int(e) for e in v] for k, v in (data.get("logged_at") or {}).items()}

    def __repr__(self):
        if not self.epoch:
            return "History(no epochs yet)"
        parts = [f"epochs {_ep(self.epoch[0])}-{_ep(self.epoch[-1])}", "keys=[" + ", ".join(self.history) + "]"]
        try:
            monitor = self._default_monitor()
            best = self.best_epoch(monitor)
            parts.append(f"best {monitor} at epoch {_ep(best)}")
        except (KeyError, ValueError):
            pass
        if self.stop_reason is not None:
            parts.append(f"stop_reason={self.stop_reason!r}")
        return "History(" + ", ".join(parts) + ")"


def _pyplot():
    """matplotlib.pyplot, on the Agg backend when there is no display to draw on."""
    try:
        import matplotlib
    except ImportError as e:
        raise ImportError("History.plot needs matplotlib, which is not installed: pip install fitkit[plot]") from e
    no_display = sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    if "matplotlib.pyplot" not in sys.modules and no_display and not os.environ.get("MPLBACKEND"):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
