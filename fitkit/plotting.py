"""Drawing with matplotlib: the panels of ``History.plot``, and :func:`plot_histories` for several runs.

Imported by ``History.plot`` and ``fitkit.plot_histories`` when they are called and by nothing else,
so that ``import fitkit`` loads neither this module nor matplotlib (a plain fit never draws).

What every picture here does, so that a student can read them alike: epochs are numbered from 1 as
the progress bar prints them; the best epoch of the monitored value is a star (and a dashed line);
accuracy-like axes end at 1.0; a loss that spans two orders of magnitude or more is drawn on a log
scale (the panel's title says so).
"""

import math
import os
import sys

from .callbacks.monitor import resolve_mode
from .diagnosis import (epoch_number, epochs_before, is_finite, learning_rates, lr_reductions, number,
                        numbering_continues, ordinal, trained_at)

# Metrics that cannot go above 1 (Keras's accuracies, AUC, precision, recall, F-scores, IoU, R2, ...):
# their axes end at 1.0, so that 0.97 looks as close to perfect as it is.
_BOUNDED_WORDS = frozenset({"accuracy", "acc", "auc", "precision", "recall", "f1", "fbeta", "iou", "r2",
                            "similarity", "sensitivity", "specificity"})
# A loss whose largest value is this many times its smallest goes on a log scale.
_LOG_SPAN = 100.0


def plot(history, path=None, show=None):
    """The figure of ``History.plot`` (see its docstring for ``path`` and ``show``)."""
    plt = _pyplot()
    if not history.epoch:
        raise ValueError("plot: this History has no epochs yet; call fit() first")
    panels = _panels(history)
    try:
        monitor = history._default_monitor()
        best = history.best_epoch(monitor)
    except (KeyError, ValueError):
        monitor, best = None, None
    diagnosis = history.diagnose() if monitor is not None else None
    overfit = diagnosis.overfitting_epoch if diagnosis is not None else None
    restored = history.restored_epoch if history.restored_epoch in history.epoch else None

    cols = 1 if len(panels) == 1 else 2
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.4 * cols, 4.0 * rows), squeeze=False)
    axes = axes.ravel()
    for ax in axes[len(panels):]:
        fig.delaxes(ax)
    marks = _Marks(monitor, best, restored, overfit)
    for ax, (title, keys, log) in zip(axes, panels):
        _draw_panel(history, ax, title, keys, log, marks)
    if best is not None:
        title = f"Training history: best {monitor} {number(dict(zip(*history._series(monitor)))[best])} " \
                f"at epoch {epoch_number(best)}"
        if not numbering_continues(history):
            title += f" (the model's {ordinal(trained_at(history, best))})"
        if restored is not None:
            title += f"; weights of epoch {epoch_number(restored)} restored"
        if diagnosis.unstable is not None:
            title += "\nunstable: " + diagnosis.unstable.replace("the training loss ", "training loss ")
        fig.suptitle(title, fontsize=13 if diagnosis.unstable is None else 11)
    fig.tight_layout()
    return _finish(plt, fig, path, show)


class _Marks:
    """What every panel of one History marks: the best epoch, the restored one, where overfitting began."""

    def __init__(self, monitor, best, restored, overfit):
        self.monitor, self.best, self.restored, self.overfit = monitor, best, restored, overfit


def _finish(plt, fig, path, show):
    if path is not None:
        fig.savefig(path, dpi=100)
    if show:
        plt.show()
    elif show is False or "ipykernel" in sys.modules:
        # Not left open: a notebook would draw it twice (once open, once as the returned value).
        plt.close(fig)
    return fig


def _panels(history):
    """``(title, keys, log_scale)`` per panel, in the order a student reads them."""
    panels, used = [], {"learning_rate"}
    names = [k for k in history.history if not k.startswith("val_")]
    names += [k[4:] for k in history.history if k.startswith("val_") and k[4:] not in history.history]
    if "loss" in names:
        names.remove("loss")
        names.insert(0, "loss")
    for name in names:
        if name in used:
            continue
        used.add(name)
        keys = [k for k in (name, "val_" + name) if k in history.history]
        values = [v for k in keys for v in history._series(k)[1]]
        log = _spans_orders(name, values)
        panels.append((_title(name, log), keys, log))
    _, rates = learning_rates(history)
    rates = [v for v in rates + [history.last_learning_rate] if is_finite(v)]
    if len(set(rates)) > 1:
        panels.append(("Learning rate (log scale)" if min(rates) > 0 else "Learning rate", ["learning_rate"],
                       min(rates) > 0))
    return panels


def _mode(name):
    try:
        return resolve_mode(name, "auto")
    except ValueError:
        return None


def _bounded(name):
    """Whether ``name`` is a metric that cannot go above 1 (its axis ends at 1.0)."""
    words = name.lower().removeprefix("val_").split("_")
    return _mode(name) == "max" and any(w in _BOUNDED_WORDS for w in words)


def _spans_orders(name, values):
    """Whether a loss-like curve spans two orders of magnitude or more (then a log scale shows it)."""
    finite = [v for v in values if is_finite(v)]
    return _mode(name) == "min" and bool(finite) and min(finite) > 0 and max(finite) >= _LOG_SPAN * min(finite)


def _title(name, log=False):
    mode = _mode(name)
    words = [] if mode is None else ["lower is better" if mode == "min" else "higher is better"]
    if log:
        words.append("log scale")
    text = name.replace("_", " ").capitalize()
    return f"{text} ({', '.join(words)})" if words else text


def _xlabel(history):
    before = epochs_before(history)
    if history.epoch and before and before != history.epoch[0]:
        return f"epoch of this fit call (the model had trained {before} epochs before it)"
    return "epoch"


def _draw_panel(history, ax, title, keys, log, marks):
    from matplotlib.ticker import MaxNLocator

    if keys == ["learning_rate"]:
        _draw_learning_rate(history, ax, log, marks)
    else:
        _draw_curves(history, ax, keys, marks)
    if log:
        ax.set_yscale("log")
    ax.set_title(title)
    ax.set_xlabel(_xlabel(history))
    ax.set_ylabel(keys[0].removeprefix("val_").replace("_", " "))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlim(epoch_number(history.epoch[0]) - 0.5, epoch_number(history.epoch[-1]) + 0.5)
    ax.grid(True, alpha=0.3)
    bounded = _bounded(keys[0])
    if bounded:
        lo = min(ax.get_ylim()[0], 1.0 - 1e-3)
        # The top is 1.0; room below the curves for the legend, which sits in the lower right.
        ax.set_ylim(max(0.0, lo - 0.45 * (1.0 - lo)) if lo >= 0 else lo - 0.45 * (1.0 - lo), 1.0)
    elif not log and keys != ["learning_rate"]:
        # Headroom above the curves so the legend has a free corner instead of covering a line.
        lo, hi = ax.get_ylim()
        ax.set_ylim(lo, hi + 0.3 * (hi - lo))
    # A learning rate only goes down in fit's schedules, so the lower left is free for the legend.
    loc = "lower left" if keys == ["learning_rate"] else "lower right" if bounded else "best"
    ax.legend(fontsize=9, loc=loc)


_STYLES = ({"color": "tab:blue", "marker": "o", "markersize": 3},
           {"color": "tab:orange", "marker": "o", "markersize": 3})


def _draw_curves(history, ax, keys, marks):
    mark_key = keys[-1]  # the validation curve when there is one: that is where "best" was judged
    broken = set()
    points = {}
    for i, key in enumerate(keys):
        epochs, values = history._series(key)
        xs = [epoch_number(e) for e in epochs]
        ys = [v if is_finite(v) else math.nan for v in values]
        broken.update(x for x, v in zip(xs, values) if not is_finite(v))
        # Not clipped: a training accuracy of 1.0 lies on the top edge of its axis and would be hidden.
        ax.plot(xs, ys, label="validation" if key.startswith("val_") else "training", clip_on=False,
                **_STYLES[i % 2])
        if key == mark_key:
            points = dict(zip(epochs, ys))
    best, restored = marks.best, marks.restored
    if best is not None:
        y = points.get(best)
        if y is not None and is_finite(y):
            ax.plot([epoch_number(best)], [y], linestyle="none", marker="*", markersize=14, color="tab:red",
                    zorder=5, gid="best_epoch_point", clip_on=False)
        label = f"best {marks.monitor}: epoch {epoch_number(best)}"
        if restored == best:
            label += " (weights restored)"
        ax.axvline(epoch_number(best), color="tab:red", linestyle="--", linewidth=1, label=label, gid="best_epoch")
    if restored is not None and restored != best:
        y = points.get(restored)
        if y is not None and is_finite(y):
            ax.plot([epoch_number(restored)], [y], linestyle="none", marker="D", markersize=8, color="tab:green",
                    zorder=5, gid="restored_epoch_point", clip_on=False)
        ax.axvline(epoch_number(restored), color="tab:green", linestyle="-.", linewidth=1,
                   label=f"weights restored: epoch {epoch_number(restored)}", gid="restored_epoch")
    for j, x in enumerate(sorted(broken)):
        # NaN/inf leave gaps in a line; without a mark a student would not see those epochs at all.
        ax.axvline(x, color="dimgray", linestyle=":", linewidth=1.5, label="NaN or inf" if j == 0 else None)
    if marks.overfit is not None and "loss" in keys:
        # Shaded with a collection rather than axvspan's patch: legend(loc="best") treats a patch
        # as occupied space, and the span would leave it no free corner.
        ax.fill_betweenx([0, 1], epoch_number(marks.overfit), epoch_number(history.epoch[-1]),
                         transform=ax.get_xaxis_transform(), color="tab:red", alpha=0.08, linewidth=0,
                         label="overfitting")


def _draw_learning_rate(history, ax, log, marks):
    epochs, rates = learning_rates(history)
    xs = [epoch_number(e) for e in epochs]
    ys = [v if is_finite(v) else math.nan for v in rates]
    after = history.last_learning_rate
    # The rate holds for a whole epoch: steps from one epoch's start to its end, and the rate after
    # the last epoch's callbacks drawn on to the right edge, so that a cut at the last epoch shows.
    edges = [x - 0.5 for x in xs] + [xs[-1] + 0.5] if xs else []
    heights = ys + [after if is_finite(after) else ys[-1]] if ys else []
    ax.plot(edges, heights, drawstyle="steps-post", color=_STYLES[0]["color"], label="learning rate")
    ax.plot(xs, ys, linestyle="none", **_STYLES[0])
    cuts = lr_reductions(history)
    if cuts:
        ax.plot([epoch_number(e) + 0.5 for e, _, _ in cuts], [new for _, _, new in cuts], linestyle="none",
                marker="v", markersize=7, color="tab:red", gid="lr_cuts", clip_on=False,
                label="lowered at an epoch's end" if len(cuts) > 1 else
                f"lowered at the end of epoch {epoch_number(cuts[0][0])}")
    if marks.best is not None and marks.best in epochs:
        # The rate the best epoch trained with, marked as on the other panels.
        x = epoch_number(marks.best)
        ax.plot([x], [ys[epochs.index(marks.best)]], linestyle="none", marker="*", markersize=14, color="tab:red",
                zorder=5, gid="best_epoch_point", clip_on=False)
        ax.axvline(x, color="tab:red", linestyle="--", linewidth=1, label=f"best {marks.monitor}: epoch {x}",
                   gid="best_epoch")


def plot_histories(histories, path=None, show=None, monitor=None):
    """Several runs on shared axes, each run's best epoch marked; see ``fitkit.plot_histories``."""
    runs = _runs(histories)
    plt = _pyplot()
    if monitor is None:
        monitor = "val_loss" if all("val_loss" in h.history for _, h in runs) else "loss"
    elif not isinstance(monitor, str):
        raise ValueError(f"monitor: got {monitor!r}; expected a logged key such as 'val_loss'")
    for label, h in runs:
        if monitor not in h.history:
            keys = ", ".join(repr(k) for k in h.history)
            raise KeyError(f"plot_histories: monitor={monitor!r} is not in the History {label!r}; its keys are: {keys}")
    names = []
    for _, h in runs:
        for key in h.history:
            name = key.removeprefix("val_")
            if name != "learning_rate" and name not in names:
                names.append(name)
    if "loss" in names:
        names.remove("loss")
        names.insert(0, "loss")
    cols = 1 if len(names) == 1 else 2
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.4 * cols, 4.2 * rows), squeeze=False, sharex=True)
    axes = axes.ravel()
    for ax in axes[len(names):]:
        fig.delaxes(ax)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    bests = {label: h.best_epoch(monitor) for label, h in runs}
    # Longer runs first: a run that is the start of a longer one (same seed, stopped early) stays visible.
    order = sorted(range(len(runs)), key=lambda i: -len(runs[i][1].epoch))
    for ax, name in zip(axes, names):
        values = []
        for i in order:
            label, h = runs[i]
            color = colors[i % len(colors)]
            for key in (name, "val_" + name):
                if key not in h.history:
                    continue
                epochs, ys = h._series(key)
                values += ys
                validation = key.startswith("val_") or ("val_" + name) not in h.history
                ax.plot([epoch_number(e) for e in epochs], [v if is_finite(v) else math.nan for v in ys],
                        color=color, linestyle="-" if key.startswith("val_") else "--",
                        linewidth=1.8 if validation else 1.1, alpha=1.0 if validation else 0.7, clip_on=False)
                if validation and bests[label] in epochs:
                    y = ys[epochs.index(bests[label])]
                    if is_finite(y):
                        ax.plot([epoch_number(bests[label])], [y], linestyle="none", marker="*", markersize=15,
                                color=color, markeredgecolor="black", markeredgewidth=0.6, zorder=5,
                                gid="best_epoch_point", clip_on=False)
        log = _spans_orders(name, values)
        if log:
            ax.set_yscale("log")
        ax.set_title(_title(name, log))
        ax.set_ylabel(name.replace("_", " "))
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
        if _bounded(name):
            lo = min(ax.get_ylim()[0], 1.0 - 1e-3)
            ax.set_ylim(max(0.0, lo - 0.45 * (1.0 - lo)) if lo >= 0 else lo, 1.0)
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    axes[0].xaxis.set_major_locator(MaxNLocator(integer=True))
    handles = [Line2D([], [], color=colors[i % len(colors)], linewidth=1.8, marker="*", markersize=10,
                      markeredgecolor="black", markeredgewidth=0.6,
                      label=f"{label}: best {monitor} {number(_value_at(h, monitor, bests[label]))} "
                            f"at epoch {epoch_number(bests[label])}")
               for i, (label, h) in enumerate(runs)]
    has_val = any(k.startswith("val_") for _, h in runs for k in h.history)
    if has_val:
        handles += [Line2D([], [], color="gray", linestyle="-", linewidth=1.8, label="validation"),
                    Line2D([], [], color="gray", linestyle="--", linewidth=1.1, label="training")]
    ncol = min(len(handles), 2 if cols == 1 else 3)
    legend_rows = math.ceil(len(handles) / ncol)
    # The legend goes under the panels; the figure grows by its height so the panels keep theirs.
    legend_height = 0.28 * legend_rows + 0.1
    fig.set_size_inches(fig.get_figwidth(), fig.get_figheight() + legend_height)
    fig.legend(handles=handles, loc="lower center", ncol=ncol, fontsize=9, frameon=False)
    fig.suptitle(f"{len(runs)} runs compared: the star is each run's best {monitor}", fontsize=13)
    fig.tight_layout(rect=(0, legend_height / fig.get_figheight(), 1, 1))
    return _finish(plt, fig, path, show)


def plot_lr_finder(result, path=None, show=None):
    """The figure of ``LearningRateFinderResult.plot``: loss against learning rate, the suggestion marked."""
    plt = _pyplot()
    if not result.lrs:
        raise ValueError("plot: the learning-rate test took no steps; nothing to draw")
    fig, ax = plt.subplots(figsize=(7.0, 4.4))
    ax.plot(result.lrs, [v if is_finite(v) else math.nan for v in result.losses], color="tab:blue", alpha=0.35,
            linewidth=1, label="loss of each batch")
    ax.plot(result.lrs, [v if is_finite(v) else math.nan for v in result.smoothed], color="tab:blue", linewidth=2,
            label="smoothed loss")
    ax.set_xscale("log")
    finite = [v for v in result.smoothed if is_finite(v)]
    if finite:
        # The diverging tail would squash the part worth reading: the axis stops a little above the
        # smoothed loss at the start.
        lo, first = min(finite), finite[0]
        raw = [v for v in result.losses if is_finite(v)]
        top = max(first, lo) + 0.25 * abs(max(first, lo) - lo) + 1e-12
        ax.set_ylim(min(min(raw), lo) - 0.05 * (top - lo), top)
    if result.suggestion is not None:
        i = result.lrs.index(result.suggestion)
        ax.axvline(result.suggestion, color="tab:red", linestyle="--", linewidth=1)
        ax.plot([result.suggestion], [result.smoothed[i]], linestyle="none", marker="o", markersize=9,
                color="tab:red", zorder=5, gid="suggestion",
                label=f"suggestion: {result.suggestion:.2g} (steepest descent)")
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("training loss")
    ax.set_title("Learning-rate range test: " + ("stopped where the loss diverged" if result.diverged
                                                 else result.stop_reason))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=9, loc="lower left")
    fig.tight_layout()
    return _finish(plt, fig, path, show)


def _value_at(history, key, epoch):
    epochs, values = history._series(key)
    return values[epochs.index(epoch)]


def _runs(histories):
    """``[(label, History)]`` from a dict ``{label: History}`` (or a list of Histories: "run 1", ...)."""
    from .history import History

    if isinstance(histories, dict):
        runs = [(str(label), h) for label, h in histories.items()]
    elif isinstance(histories, (list, tuple)):
        runs = [(f"run {i + 1}", h) for i, h in enumerate(histories)]
    else:
        raise TypeError(f"histories: got {type(histories).__name__}; expected a dict {{label: History}} such as "
                        "{'fixed 50': h1, 'early stopping': h2}")
    if not runs:
        raise ValueError("histories: got an empty collection; expected at least one History")
    for label, h in runs:
        if not isinstance(h, History):
            raise TypeError(f"histories: {label!r} is a {type(h).__name__}; expected a History (what fit returns)")
        if not h.epoch:
            raise ValueError(f"histories: {label!r} has no epochs yet; call fit() first")
    return runs


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
