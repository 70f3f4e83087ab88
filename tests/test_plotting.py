"""fitkit.plotting: History.plot draws through it, and nothing loads it (or matplotlib) before a plot."""

import subprocess
import sys

import pytest

from fitkit.history import History


def test_import_fitkit_loads_neither_plotting_nor_matplotlib():
    code = ("import sys, fitkit, fitkit.history; "
            "print([m for m in ('fitkit.plotting', 'matplotlib') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_history_plot_is_plotting_plot():
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    from fitkit import plotting

    h = History.from_dict({"loss": [1.0, 0.6, 0.5], "val_loss": [1.1, 0.8, 0.9], "learning_rate": [0.1, 0.1, 0.01]})
    try:
        a, b = h.plot(show=False), plotting.plot(h, show=False)
        assert [ax.get_title() for ax in a.axes] == [ax.get_title() for ax in b.axes] == [
            "Loss (lower is better)", "Learning rate (log scale)"]
        assert a._suptitle.get_text() == "Training history: best val_loss 0.8 at epoch 2"
    finally:
        plt.close("all")
