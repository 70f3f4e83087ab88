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


# ----- what a student reads off the pictures -----

@pytest.fixture
def plt():
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as pyplot

    yield pyplot
    pyplot.close("all")


def _history(**extra):
    h = History.from_dict({"history": {
        "loss": [0.9, 0.5, 0.3, 0.2, 0.15, 0.1], "val_loss": [1.0, 0.6, 0.45, 0.4, 0.42, 0.5],
        "accuracy": [0.6, 0.8, 0.9, 0.95, 0.98, 1.0], "val_accuracy": [0.55, 0.75, 0.85, 0.88, 0.87, 0.86]},
        "epoch": list(range(6)), "stop_reason": "epochs", **extra})
    return h


def test_accuracy_axes_end_at_one_and_the_legend_sits_below_the_curves(plt):
    fig = _history().plot(show=False)
    acc = fig.axes[1]
    assert acc.get_title() == "Accuracy (higher is better)"
    assert acc.get_ylim()[1] == 1.0
    assert acc.get_legend()._loc == 4  # lower right
    assert fig.axes[0].get_ylim()[1] > 1.0  # a loss axis is not capped


def test_the_restored_epoch_is_marked(plt):
    same = _history(restored_epoch=3).plot(show=False)
    assert "best val_loss: epoch 4 (weights restored)" in [ln.get_label() for ln in same.axes[0].lines]
    assert same._suptitle.get_text().endswith("; weights of epoch 4 restored")
    other = _history(restored_epoch=4).plot(show=False)  # EarlyStopping watched another key
    for ax in other.axes:
        marks = [ln for ln in ax.lines if ln.get_gid() == "restored_epoch"]
        assert len(marks) == 1 and list(marks[0].get_xdata()) == [5, 5]
        assert marks[0].get_label() == "weights restored: epoch 5"
    assert [ln for ln in other.axes[0].lines if ln.get_gid() == "restored_epoch_point"][0].get_ydata()[0] == 0.42


def test_a_loss_spanning_orders_of_magnitude_goes_on_a_log_scale(plt):
    steep = History.from_dict({"loss": [1240.0, 30.0, 2.0, 0.3, 0.05]})
    fig = steep.plot(show=False)
    assert fig.axes[0].get_yscale() == "log" and fig.axes[0].get_title() == "Loss (lower is better, log scale)"
    assert "unstable: training loss began at 1240" in fig._suptitle.get_text()
    gentle = History.from_dict({"loss": [0.9, 0.5, 0.3, 0.2]})
    assert gentle.plot(show=False).axes[0].get_yscale() == "linear"


def test_a_cut_at_the_last_epoch_is_drawn(plt):
    h = History.from_dict({"history": {"loss": [1.0, 0.8, 0.7], "learning_rate": [0.1, 0.1, 0.1]},
                           "epoch": [0, 1, 2], "last_learning_rate": 0.01})
    fig = h.plot(show=False)
    lr = fig.axes[1]
    assert lr.get_title() == "Learning rate (log scale)"
    cuts = [ln for ln in lr.lines if ln.get_gid() == "lr_cuts"]
    assert len(cuts) == 1 and list(cuts[0].get_xdata()) == [3.5] and list(cuts[0].get_ydata()) == [0.01]
    assert cuts[0].get_label() == "lowered at the end of epoch 3"


def test_a_second_fit_from_epoch_1_says_so_on_the_axis(plt):
    h = _history(epochs_before=50)
    fig = h.plot(show=False)
    assert fig.axes[0].get_xlabel() == "epoch of this fit call (the model had trained 50 epochs before it)"
    assert fig._suptitle.get_text() == "Training history: best val_loss 0.4 at epoch 4 (the model's 54th)"
    assert _history().plot(show=False).axes[0].get_xlabel() == "epoch"


def test_plot_histories_draws_runs_on_shared_axes_with_each_best_epoch(plt, tmp_path):
    import fitkit

    a = _history()
    b = History.from_dict({"history": {"loss": [0.8, 0.4, 0.3], "val_loss": [0.7, 0.5, 0.55],
                                       "accuracy": [0.7, 0.85, 0.9], "val_accuracy": [0.7, 0.8, 0.79]},
                           "epoch": [0, 1, 2]})
    fig = fitkit.plot_histories({"fixed 6": a, "short": b}, tmp_path / "runs.png")
    assert (tmp_path / "runs.png").read_bytes()[:4] == b"\x89PNG"
    loss, acc = fig.axes
    assert loss.get_shared_x_axes().joined(loss, acc)
    stars = [ln for ln in loss.lines if ln.get_gid() == "best_epoch_point"]
    assert [(list(s.get_xdata()), list(s.get_ydata())) for s in stars] == [([4], [0.4]), ([2], [0.5])]
    assert len([ln for ln in acc.lines if ln.get_gid() == "best_epoch_point"]) == 2
    assert acc.get_ylim()[1] == 1.0
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["fixed 6: best val_loss 0.4 at epoch 4", "short: best val_loss 0.5 at epoch 2",
                      "validation", "training"]
    # each run has its own color: validation solid, training dashed
    lines = [ln for ln in loss.lines if ln.get_gid() is None]
    assert [ln.get_linestyle() for ln in lines] == ["--", "-", "--", "-"]
    assert lines[0].get_color() == lines[1].get_color() != lines[2].get_color()
    listed = fitkit.plot_histories([a, b], monitor="loss")
    assert [t.get_text() for t in listed.legends[0].get_texts()][0] == "run 1: best loss 0.1 at epoch 6"


def test_plot_histories_refuses_what_it_cannot_draw(plt):
    import fitkit

    with pytest.raises(TypeError, match=r"histories: got History; expected a dict \{label: History\}"):
        fitkit.plot_histories(_history())
    with pytest.raises(TypeError, match="histories: 'a' is a dict; expected a History"):
        fitkit.plot_histories({"a": {"loss": [1.0]}})
    with pytest.raises(ValueError, match="histories: got an empty collection"):
        fitkit.plot_histories({})
    with pytest.raises(KeyError, match="monitor='val_auc' is not in the History 'a'"):
        fitkit.plot_histories({"a": _history()}, monitor="val_auc")


def test_plot_histories_does_not_load_matplotlib_at_import():
    code = "import sys, fitkit; fitkit.plot_histories; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
