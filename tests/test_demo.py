"""The demo the README's first command runs: it trains, stops early or runs out, and explains why."""

from fitkit import demo


def test_demo_learns_and_prints_a_diagnosis(capsys, tmp_path):
    history = demo.main(["--epochs", "6", "--verbose", "2", "--plot", str(tmp_path / "curves.png")])
    out = capsys.readouterr().out
    assert "Epoch 1/6" in out and "val_loss" in out
    assert "Training diagnosis" in out
    assert history.history["val_accuracy"][-1] > 0.85
    assert (tmp_path / "curves.png").stat().st_size > 10_000


def test_demo_data_is_reproducible():
    x1, y1 = demo.make_data(n=50)
    x2, y2 = demo.make_data(n=50)
    assert (x1 == x2).all() and (y1 == y2).all() and 0 < int(y1.sum()) < 50
