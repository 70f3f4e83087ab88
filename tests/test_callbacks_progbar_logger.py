"""fitkit.callbacks.progbar_logger: the tqdm bar (verbose=1), one line per epoch (2), silence (0)."""

import io

from fitkit.callbacks import ProgbarLogger
from test_trainer import _data, _model


def test_verbose_1_draws_a_bar_with_loss_and_time_per_step(monkeypatch):
    import fitkit.callbacks.progbar_logger as progbar
    monkeypatch.setattr(progbar, "REFRESH_SECONDS", 0.0)
    out = io.StringIO()
    model = _model()
    model.fit(*_data(), epochs=2, validation_split=0.2, callbacks=[ProgbarLogger(file=out)], verbose=1)
    text = out.getvalue()
    assert "Epoch 1/2" in text and "Epoch 2/2" in text
    assert "3/3" in text and "/step" in text
    assert "loss: " in text and "val_loss: " in text and "accuracy: " in text


def test_verbose_2_prints_one_line_per_epoch_and_0_prints_nothing(capsys):
    model = _model()
    model.fit(*_data(), epochs=3, verbose=2)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert len(lines) == 3 and lines[0].startswith("Epoch 1/3 - ") and "loss: " in lines[2]
    model.fit(*_data(), epochs=2, verbose=0)
    model.evaluate(*_data(), verbose=0)
    model.predict(_data()[0], verbose=0)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_evaluate_and_predict_verbose_draw_their_own_bar(capsys):
    model = _model()
    model.evaluate(*_data(), verbose=1)
    model.predict(_data()[0], verbose=1)
    out = capsys.readouterr().out
    assert "Evaluate" in out and "Predict" in out


def test_a_fast_epoch_is_drawn_once_and_each_epoch_ends_its_line(monkeypatch):
    """Drawing is what costs: an epoch shorter than DRAW_SECONDS is drawn once, when it ends."""
    import fitkit.callbacks.progbar_logger as progbar
    monkeypatch.setattr(progbar, "DRAW_SECONDS", 60.0)  # every epoch here is "fast", however slow the machine
    out = io.StringIO()
    model = _model()
    model.fit(*_data(), epochs=3, callbacks=[ProgbarLogger(file=out)], verbose=1)
    lines = out.getvalue().split("\n")
    assert len(lines) == 4 and lines[-1] == ""
    for epoch, line in enumerate(lines[:3], start=1):
        assert line.count("\r") == 1 and line.startswith(f"\rEpoch {epoch}/3 4/4 |")
        assert "/step - loss: " in line


def test_a_long_epoch_is_drawn_while_it_runs(monkeypatch):
    import fitkit.callbacks.progbar_logger as progbar
    monkeypatch.setattr(progbar, "DRAW_SECONDS", 0.0)
    out = io.StringIO()
    _model().fit(*_data(), epochs=1, batch_size=10, callbacks=[ProgbarLogger(file=out)], verbose=1)
    draws = out.getvalue().split("\r")[1:]
    assert len(draws) >= 10 and draws[1].startswith("Epoch 1/1 1/10 ") and draws[-1].startswith("Epoch 1/1 10/10 ")


def test_the_bar_is_tqdm_so_notebooks_get_a_widget(monkeypatch):
    import tqdm.auto

    made = []

    class Recording(tqdm.auto.tqdm):
        def __init__(self, *args, **kwargs):
            made.append(kwargs)
            super().__init__(*args, **kwargs)
    monkeypatch.setattr(tqdm.auto, "tqdm", Recording)
    _model().fit(*_data(), epochs=2, verbose=1)
    assert [m["desc"] for m in made] == ["Epoch 1/2", "Epoch 2/2"] and made[0]["total"] == 4


def test_the_bar_falls_back_to_ascii_where_the_output_cannot_take_unicode(tmp_path):
    path = tmp_path / "log.txt"
    with open(path, "w", encoding="ascii") as f:
        model = _model()
        model.fit(*_data(), epochs=1, callbacks=[ProgbarLogger(file=f)], verbose=1)
    text = path.read_text(encoding="ascii")
    assert "#" in text and "Epoch 1/1" in text
