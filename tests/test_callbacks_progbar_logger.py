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
