"""CSVLogger: one CSV row per epoch with the epoch's logs, as Keras writes it."""

import collections.abc
import csv
import os

import numpy as np
import torch

from .. import distributed
from .base import Callback


def _cell(value):
    # Keras's formatting: strings as they are, 1-D iterables as "[a, b]", numbers by str().
    if isinstance(value, str):
        return value
    if isinstance(value, torch.Tensor) and value.ndim == 0:
        return value.item()
    if isinstance(value, collections.abc.Iterable) and not (
        isinstance(value, np.ndarray) and value.ndim == 0
    ):
        return f'"[{", ".join(map(str, value))}]"'
    return value


class CSVLogger(Callback):
    """Streams the epoch logs to a CSV file: a header ``epoch`` + the sorted log keys, then a row
    per epoch (``epoch`` 0-based). The file is flushed after each row, so it can be read mid-run.

    The columns come from the first epoch's logs; when they hold no ``val_`` key, ``val_`` columns
    for every key are added anyway (Keras does this so that a later validation fits the header) and
    read ``NA`` where absent. With ``append=True`` rows go to the end of an existing file and the
    header is not written again. Lines end with ``\\r\\n`` (the csv module's excel dialect, as Keras).
    Under torchrun rank 0 alone writes (the logs are the same on every rank).

    >>> logger = CSVLogger("run/log.csv", append=True)
    """

    def __init__(self, filename, separator=",", append=False):
        super().__init__()
        self.sep = separator
        self.filename = os.fspath(filename)
        self.append = append
        self.writer = None
        self.keys = None
        self.append_header = True
        self.csv_file = None

    def on_train_begin(self, logs=None):
        if not distributed.is_writer(self.model):
            return
        if self.append:
            if os.path.exists(self.filename):
                with open(self.filename, "r", newline="") as f:
                    self.append_header = not bool(len(f.readline()))
            mode = "a"
        else:
            mode = "w"
        if self.csv_file is not None and not self.csv_file.closed:
            self.csv_file.close()
        dirname = os.path.dirname(self.filename)
        if dirname:
            os.makedirs(dirname, exist_ok=True)
        # newline="" leaves the line ends to the csv module (no "\r\r\n" on Windows).
        self.csv_file = open(self.filename, mode, newline="")
        self.writer = None
        self.keys = None

    def on_epoch_end(self, epoch, logs=None):
        if not distributed.is_writer(self.model):
            return
        logs = logs or {}
        if self.keys is None:
            self.keys = sorted(logs.keys())
            if self.keys and not any(k.startswith("val_") for k in self.keys):
                self.keys.extend([f"val_{k}" for k in self.keys])
        if self.writer is None:
            dialect = type("CSVLoggerDialect", (csv.excel,), {"delimiter": self.sep})
            self.writer = csv.DictWriter(self.csv_file, fieldnames=["epoch"] + self.keys,
                                         dialect=dialect)
            if self.append_header:
                self.writer.writeheader()
        row = {"epoch": epoch}
        row.update((key, _cell(logs.get(key, "NA"))) for key in self.keys)
        self.writer.writerow(row)
        self.csv_file.flush()

    def on_train_end(self, logs=None):
        if self.csv_file is not None and not self.csv_file.closed:
            self.csv_file.close()
        self.writer = None
