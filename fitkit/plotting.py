"""Drawing a History with matplotlib: the panels of ``History.plot``.

Imported by ``History.plot`` when it is called and by nothing else, so that ``import fitkit`` loads
neither this module nor matplotlib (a plain fit never draws).
"""

import math
import os
import sys

from .callbacks.monitor import resolve_mode
from .diagnosis import epoch_number, is_finite, number


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
    overfit = history.diagnose().overfitting_epoch if monitor is not None else None

    cols = 1 if len(panels) == 1 else 2
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.4 * cols, 4.0 * rows), squeeze=False)
    axes = axes.ravel()
    for ax in axes[len(panels):]:
        fig.delaxes(ax)
    for ax, (title, keys, log) in zip(axes, panels):
        _draw_panel(history, ax, title, keys, log, monitor, best, overfit)
    if best is not None:
        fig.suptitle(f"Training history: best {monitor} {number(dict(zip(*history._series(monitor)))[best])} "
                     f"at epoch {epoch_number(best)}", fontsize=13)
    fig.tight_layout()
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
        panels.append((_title(name), keys, False))
    if "learning_rate" in history.history:
        lrs = [v for v in history.history["learning_rate"] if is_finite(v)]
        if len(set(lrs)) > 1:
            panels.append(("Learning rate (log scale)", ["learning_rate"], min(lrs) > 0))
    return panels


def _title(name):
    try:
        better = "lower" if resolve_mode(name, "auto") == "min" else "higher"
    except ValueError:
        return name.replace("_", " ").capitalize()
    return f"{name.replace('_', ' ').capitalize()} ({better} is better)"


def _draw_panel(history, ax, title, keys, log, monitor, best, overfit):
    from matplotlib.ticker import MaxNLocator

    styles = {0: dict(color="tab:blue", marker="o", markersize=3),
              1: dict(color="tab:orange", marker="o", markersize=3)}
    mark_key = keys[-1]  # the validation curve when there is one: that is where "best" was judged
    broken = set()
    for i, key in enumerate(keys):
        epochs, values = history._series(key)
        xs = [epoch_number(e) for e in epochs]
        ys = [v if is_finite(v) else math.nan for v in values]
        broken.update(x for x, v in zip(xs, values) if not is_finite(v))
        if key == "learning_rate":
            # The rate is constant through an epoch: draw steps, not slopes between epochs.
            ax.plot(xs, ys, label="learning rate", drawstyle="steps-mid", **styles[0])
        else:
            ax.plot(xs, ys, label="validation" if key.startswith("val_") else "training", **styles[i % 2])
        if best is not None and key == mark_key and best in epochs:
            y = ys[epochs.index(best)]
            if is_finite(y):
                ax.plot([epoch_number(best)], [y], linestyle="none", marker="*", markersize=14, color="tab:red",
                        zorder=5, gid="best_epoch_point")
    if best is not None:
        ax.axvline(epoch_number(best), color="tab:red", linestyle="--", linewidth=1,
                   label=f"best {monitor}: epoch {epoch_number(best)}", gid="best_epoch")
    for j, x in enumerate(sorted(broken)):
        # NaN/inf leave gaps in a line; without a mark a student would not see those epochs at all.
        ax.axvline(x, color="dimgray", linestyle=":", linewidth=1.5, label="NaN or inf" if j == 0 else None)
    if overfit is not None and "loss" in keys:
        # Shaded with a collection rather than axvspan's patch: legend(loc="best") treats a patch
        # as occupied space, and the span would leave it no free corner.
        ax.fill_betweenx([0, 1], epoch_number(overfit), epoch_number(history.epoch[-1]),
                         transform=ax.get_xaxis_transform(), color="tab:red", alpha=0.08, linewidth=0,
                         label="overfitting")
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
    ax.set_xlim(epoch_number(history.epoch[0]) - 0.5, epoch_number(history.epoch[-1]) + 0.5)
    ax.grid(True, alpha=0.3)
    # A learning rate only goes down in fit's schedules, so the lower left is free for the legend.
    ax.legend(fontsize=9, loc="lower left" if keys == ["learning_rate"] else "best")


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
