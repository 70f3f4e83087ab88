"""The progress bar fit adds for ``verbose=1`` (a tqdm bar per epoch) and ``verbose=2`` (a line per epoch)."""

import sys
import time

from .base import Callback

#: Seconds between reads of the running loss for the bar: each read is a device sync, so not per step.
REFRESH_SECONDS = 0.5


def _format_logs(logs):
    return " - ".join(f"{key}: {value:.4g}" for key, value in logs.items())


def _per_step(seconds, steps):
    if not steps:
        return ""
    per = seconds / steps
    return f"{per * 1e3:.0f}ms/step" if per >= 1e-3 else f"{per * 1e6:.0f}us/step"


class ProgbarLogger(Callback):
    """Prints training progress; fit adds one when ``verbose`` is 1 or 2.

    ``verbose=1`` draws a tqdm bar per epoch (``tqdm.auto``: a widget in notebooks) with the running
    loss and metrics and the time per step; the running values are read at most every
    ``REFRESH_SECONDS``, so the bar never forces a device sync per step. ``verbose=2`` prints one line
    per epoch. ``file`` defaults to ``sys.stdout`` as Keras prints there.
    """

    def __init__(self, file=None):
        super().__init__()
        self.file = file
        self._bar = None
        self._in_fit = False
        self._epoch_start = 0.0
        self._last_read = 0.0
        self._seen = 0

    @property
    def verbose(self):
        return self.params.get("verbose", 1)

    def _out(self):
        return self.file if self.file is not None else sys.stdout

    def _open_bar(self, desc, total):
        from tqdm.auto import tqdm

        self._bar = tqdm(total=total, desc=desc, file=self._out(), unit="step", leave=True, dynamic_ncols=True,
                         bar_format="{desc} {n_fmt}/{total_fmt} |{bar:20}| {elapsed}{postfix}")
        self._epoch_start = time.perf_counter()
        self._last_read = self._epoch_start
        self._seen = 0

    def _show(self, logs, force=False):
        now = time.perf_counter()
        if not force and now - self._last_read < REFRESH_SECONDS:
            return
        self._last_read = now
        timing = _per_step(now - self._epoch_start, self._seen)
        text = " - ".join(part for part in (timing, _format_logs(logs) if logs else "") if part)
        self._bar.set_postfix_str(text, refresh=force)

    def _close_bar(self):
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    # fit
    def on_train_begin(self, logs=None):
        self._in_fit = True

    def on_train_end(self, logs=None):
        self._close_bar()
        self._in_fit = False

    def on_epoch_begin(self, epoch, logs=None):
        epochs = self.params.get("epochs")
        desc = f"Epoch {epoch + 1}/{epochs}"
        if self.verbose == 1:
            self._open_bar(desc, self.params.get("steps"))
        else:
            self._desc = desc
            self._epoch_start = time.perf_counter()
            self._seen = 0

    def on_train_batch_end(self, batch, logs=None):
        self._seen += 1
        if self._bar is not None:
            self._bar.update(1)
            self._show(logs)

    def on_epoch_end(self, epoch, logs=None):
        if self.verbose == 1 and self._bar is not None:
            self._show(logs, force=True)
            self._close_bar()
        elif self.verbose == 2:
            seconds = time.perf_counter() - self._epoch_start
            line = f"{self._desc} - {seconds:.0f}s - {_per_step(seconds, self._seen)}"
            if logs:
                line += " - " + _format_logs(logs)
            print(line, file=self._out(), flush=True)

    # evaluate and predict on their own (validation inside fit draws nothing)
    def on_test_begin(self, logs=None):
        if not self._in_fit and self.verbose == 1:
            self._open_bar("Evaluate", self.params.get("steps"))

    def on_test_batch_end(self, batch, logs=None):
        if not self._in_fit:
            self.on_train_batch_end(batch, logs)

    def on_test_end(self, logs=None):
        if self._in_fit:
            return
        if self._bar is not None:
            self._show(logs, force=True)
            self._close_bar()
        elif self.verbose == 2 and logs:
            print("Evaluate - " + _format_logs(logs), file=self._out(), flush=True)

    def on_predict_begin(self, logs=None):
        if self.verbose == 1:
            self._open_bar("Predict", self.params.get("steps"))

    def on_predict_batch_end(self, batch, logs=None):
        self._seen += 1
        if self._bar is not None:
            self._bar.update(1)

    def on_predict_end(self, logs=None):
        self._close_bar()
