"""Ctrl-C during fit: the first one finishes the current step and ends training cleanly.

The loop checks :attr:`GracefulInterrupt.requested` after each step (a bool read, no cost), runs
``on_train_end`` and returns the History so far, marked as interrupted. A second Ctrl-C raises
``KeyboardInterrupt`` at once, as usual.
"""

import signal
import sys
import threading


class GracefulInterrupt:
    """A context manager that turns the first SIGINT into a request to stop."""

    def __init__(self, enabled=True):
        self.enabled = enabled  # False: Ctrl-C keeps its usual meaning (a run of several processes)
        self.requested = False
        self._previous = None
        self._installed = False

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nInterrupted: finishing this step and stopping (press Ctrl-C again to abort).",
              file=sys.stderr, flush=True)

    def __enter__(self):
        # Signal handlers can only be set from the main thread; elsewhere Ctrl-C keeps its usual meaning.
        if self.enabled and threading.current_thread() is threading.main_thread() and \
                signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def __exit__(self, *exc):
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)
            self._installed = False
        return False
