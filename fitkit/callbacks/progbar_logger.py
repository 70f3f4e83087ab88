"""The progress bar fit adds for ``verbose=1`` (a tqdm bar per epoch) and ``verbose=2`` (a line per epoch)."""

import sys
import time

from .base import Callback

#: Seconds between reads of the running loss for the bar: each read is a device sync, so not per step.
REFRESH_SECONDS = 0.5
#: Seconds between moves of the bar. A step only counts itself; drawing is what costs (tens of
#: microseconds a draw), so an epoch shorter than this is drawn when it starts and when it ends.
DRAW_SECONDS = 0.1
_BAR_FORMAT = "{desc} {n_fmt}/{total_fmt} |{bar:20}| {elapsed}{postfix}"


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
    loss and metrics and the time per step; the bar moves at most every ``DRAW_SECONDS`` and the running
    values are read at most every ``REFRESH_SECONDS``, so the bar never forces a device sync per step.
    ``verbose=2`` prints one line per epoch. ``file`` defaults to ``sys.stdout`` as Keras prints there.
    """

    def __init__(self, file=None):
        super().__init__()
        self.file = file
        self._bar = None
        self._in_fit = False
        self._epoch_start = 0.0
        self._last_read = 0.0
        self._last_draw = 0.0
        self._seen = 0

    @property
    def verbose(self):
        return self.params.get("verbose", 1)

    def _out(self):
        return self.file if self.file is not None else sys.stdout

    def _open_bar(self, desc, total):
        if self.file is None:
            from tqdm.auto import tqdm  # a widget in notebooks, text in a terminal or a file
        else:
            from tqdm import tqdm  # text, to the file the user chose
        # The bar is moved by hand (``n`` and ``refresh``) at most every DRAW_SECONDS, never by tqdm per
        # step. A text bar waits DRAW_SECONDS before its first draw, so a short epoch is drawn once, as it
        # closes (_close_bar); a notebook widget is shown at once (its close does not show a hidden one).
        text = getattr(tqdm, "__module__", "") == "tqdm.std"
        self._bar = tqdm(total=total, desc=desc, file=self._out(), unit="step", leave=True,
                         mininterval=DRAW_SECONDS, delay=DRAW_SECONDS if text else 0, bar_format=_BAR_FORMAT)
        self._epoch_start = time.perf_counter()
        self._last_read = self._last_draw = self._epoch_start
        self._seen = 0

    def _step(self, logs, batch=None):
        """Steps up to ``batch`` are done (Keras's batch index: with steps_per_execution the hooks come
        once per execution); move the bar when ``DRAW_SECONDS`` have passed."""
        self._seen = self._seen + 1 if batch is None else batch + 1
        total = self.params.get("steps")
        if total and self._seen > total:  # a last partial execution ends past the epoch, as in Keras
            self._seen = total
        if self._bar is None:
            return
        now = time.perf_counter()
        if now - self._last_draw >= DRAW_SECONDS:
            self._last_draw = now
            if logs is not None and now - self._last_read >= REFRESH_SECONDS:
                self._last_read = now
                self._bar.set_postfix_str(self._postfix(logs, now), refresh=False)
            self._bar.n = self._seen
            self._bar.refresh()

    def _postfix(self, logs, now):
        timing = _per_step(now - self._epoch_start, self._seen)
        return " - ".join(part for part in (timing, _format_logs(logs) if logs else "") if part)

    def _finish_bar(self, logs):
        """The final state of the bar (all steps, the final logs), drawn once as it closes."""
        if self._bar is None:
            return
        self._bar.set_postfix_str(self._postfix(logs, time.perf_counter()), refresh=False)
        self._bar.n = self._seen
        self._close_bar()

    def _close_bar(self):
        if self._bar is not None:
            self._bar.delay = 0  # tqdm's close skips a bar that waited for its first draw: draw it now
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
        self._step(logs, batch)

    def on_epoch_end(self, epoch, logs=None):
        if self.verbose == 1 and self._bar is not None:
            self._finish_bar(logs)
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
            self._step(logs, batch)

    def on_test_end(self, logs=None):
        if self._in_fit:
            return
        if self._bar is not None:
            self._finish_bar(logs)
        elif self.verbose == 2 and logs:
            print("Evaluate - " + _format_logs(logs), file=self._out(), flush=True)

    def on_predict_begin(self, logs=None):
        if self.verbose == 1:
            self._open_bar("Predict", self.params.get("steps"))

    def on_predict_batch_end(self, batch, logs=None):
        self._step(None, batch)

    def on_predict_end(self, logs=None):
        if self._bar is not None:
            self._bar.n = self._seen
        self._close_bar()
