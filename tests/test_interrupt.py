"""fitkit.interrupt: the first Ctrl-C ends fit cleanly after the current step; a second one raises."""

import os
import signal
import threading

import pytest

from fitkit.callbacks import Callback
from test_trainer import _data, _model


def test_first_ctrl_c_finishes_the_step_and_returns_the_history_marked_interrupted():
    x, y = _data(n=200)
    model = _model()
    ended = []

    class InterruptAt(Callback):
        def on_train_batch_end(self, batch, logs=None):
            if self.params and batch == 2 and not ended:
                os.kill(os.getpid(), signal.SIGINT)

        def on_train_end(self, logs=None):
            ended.append(True)

    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals need the main thread")
    history = model.fit(x, y, batch_size=10, epochs=5, verbose=0, callbacks=[InterruptAt()])
    assert ended == [True]
    assert history.interrupted and history.stop_reason == "interrupted"
    assert history.epoch == []  # the first epoch did not finish
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_second_ctrl_c_raises_keyboard_interrupt():
    class DoubleInterrupt(Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 1:
                os.kill(os.getpid(), signal.SIGINT)
                os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        _model().fit(*_data(), batch_size=10, epochs=2, verbose=0, callbacks=[DoubleInterrupt()])
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
