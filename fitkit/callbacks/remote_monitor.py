"""RemoteMonitor: post each epoch's logs to an HTTP server, as Keras's does (urllib, no extra dependency)."""

import json
import numbers
import urllib.error
import urllib.parse
import urllib.request
import warnings

import numpy as np
import torch

from .base import Callback


def _plain(value):
    """A log value as JSON can hold it: NumPy and 0-dim torch scalars become Python numbers."""
    if isinstance(value, (np.ndarray, np.generic)):
        return value.item() if value.size == 1 else value.tolist()
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    return value


class RemoteMonitor(Callback):
    """Posts ``{"epoch": epoch, **logs}`` to ``root + path`` at the end of every epoch (HTTP POST).

    ``send_as_json=False`` (Keras's default) sends a form, ``application/x-www-form-urlencoded``,
    whose field ``field`` holds the JSON text; ``send_as_json=True`` sends the JSON itself as
    ``application/json``. ``headers`` are added to the request. A server that cannot be reached (or
    does not answer within ``timeout`` seconds, **fitkit**) gets a warning, as in Keras, and training
    goes on; an HTTP error status is warned about too. Under torchrun only rank 0 posts.

    >>> monitor = RemoteMonitor(root="http://localhost:9000")   # doctest: +SKIP
    >>> model.fit(x, y, epochs=10, callbacks=[monitor])          # doctest: +SKIP
    """

    def __init__(self, root="http://localhost:9000", path="/publish/epoch/end/", field="data", headers=None,
                 send_as_json=False, *, timeout=10.0):
        super().__init__()
        for name, value in (("root", root), ("path", path), ("field", field)):
            if not isinstance(value, str):
                raise TypeError(f"{name}: got {value!r}; expected a str")
        if headers is not None and not isinstance(headers, dict):
            raise TypeError(f"headers: got {headers!r}; expected a dict of HTTP header names to values, or None")
        if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real) or timeout <= 0:
            raise ValueError(f"timeout: got {timeout!r}; expected a positive number of seconds")
        self.root = root
        self.path = path
        self.field = field
        self.headers = headers
        self.send_as_json = send_as_json
        self.timeout = float(timeout)

    def _request(self, send):
        text = json.dumps(send)
        if self.send_as_json:
            body, content_type = text.encode("utf-8"), "application/json"
        else:
            body = urllib.parse.urlencode({self.field: text}).encode("ascii")
            content_type = "application/x-www-form-urlencoded"
        request = urllib.request.Request(self.root + self.path, data=body, method="POST")
        request.add_header("Content-Type", content_type)
        for name, value in (self.headers or {}).items():
            request.add_header(name, value)
        return request

    def on_epoch_end(self, epoch, logs=None):
        if torch.distributed.is_available() and torch.distributed.is_initialized() \
                and torch.distributed.get_rank() != 0:
            return  # one sender: every rank holds the same logs
        send = {"epoch": epoch}
        send.update((k, _plain(v)) for k, v in (logs or {}).items())
        try:
            with urllib.request.urlopen(self._request(send), timeout=self.timeout) as response:
                response.read()
        except urllib.error.HTTPError as e:  # reached, but refused: say so, and train on
            warnings.warn(f"RemoteMonitor: the server at {self.root} answered {e.code} {e.reason} "
                          f"to the logs of epoch {epoch}", stacklevel=2)
        except (urllib.error.URLError, OSError, ValueError):
            # ValueError: a root that is not a URL ("localhost:9000"), which requests reports the same way.
            warnings.warn(f"Could not reach RemoteMonitor root server at {self.root}", stacklevel=2)
