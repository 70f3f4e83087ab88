"""RemoteMonitor against a local http.server on the loopback: what is posted, in both encodings, and a
server that is down or refuses."""

import contextlib
import http.server
import json
import socket
import threading
import urllib.parse
import warnings

import numpy as np
import pytest
import torch
from conftest import labelled_data
from torch import nn

import fitkit
from fitkit.callbacks import RemoteMonitor


class _Recorder(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append({"path": self.path, "headers": dict(self.headers), "body": body})
        self.send_response(self.status)
        self.end_headers()

    def log_message(self, *args):  # keep the test output clean
        pass


@contextlib.contextmanager
def local_server(status=200):
    """An HTTP server on 127.0.0.1 at a free port, in a thread, shut down on exit; yields (root, received)."""
    handler = type("Handler", (_Recorder,), {"status": status})
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    server.received = []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", server.received
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _fit(callback, epochs=2):
    x, y = labelled_data()
    model = fitkit.Sequential(nn.Linear(4, 1))
    model.compile(optimizer="sgd", loss="binary_crossentropy", metrics=["accuracy"])
    return model.fit(x, y, epochs=epochs, batch_size=16, validation_split=0.25, verbose=0, callbacks=[callback])


def test_form_encoded_by_default_with_the_json_in_the_field():
    with local_server() as (root, received):
        history = _fit(RemoteMonitor(root=root, field="payload", headers={"X-Run": "r1"}, timeout=5))
    assert [r["path"] for r in received] == ["/publish/epoch/end/"] * 2
    for epoch, request in enumerate(received):
        assert request["headers"]["Content-Type"] == "application/x-www-form-urlencoded"
        assert request["headers"]["X-Run"] == "r1"
        form = urllib.parse.parse_qs(request["body"].decode("ascii"))
        assert list(form) == ["payload"]
        sent = json.loads(form["payload"][0])
        assert list(sent)[0] == "epoch" and sent["epoch"] == epoch
        expected = {k: v[epoch] for k, v in history.history.items()}
        assert {k: v for k, v in sent.items() if k != "epoch"} == pytest.approx(expected, rel=1e-12)
        assert "val_loss" in sent and "accuracy" in sent


def test_send_as_json_posts_the_logs_as_application_json_at_the_path_given():
    with local_server() as (root, received):
        history = _fit(RemoteMonitor(root=root, path="/runs/7", send_as_json=True, timeout=5), epochs=3)
    assert [r["path"] for r in received] == ["/runs/7"] * 3
    assert all(r["headers"]["Content-Type"] == "application/json" for r in received)
    sent = [json.loads(r["body"]) for r in received]
    assert [s["epoch"] for s in sent] == [0, 1, 2]
    assert [s["loss"] for s in sent] == pytest.approx(history.history["loss"], rel=1e-12)


def test_numpy_and_tensor_values_are_sent_as_numbers():
    with local_server() as (root, received):
        monitor = RemoteMonitor(root=root, send_as_json=True, timeout=5)
        monitor.on_epoch_end(4, {"loss": np.float32(0.5), "acc": torch.tensor(0.25), "n": np.array(3)})
    assert json.loads(received[0]["body"]) == {"epoch": 4, "loss": 0.5, "acc": 0.25, "n": 3}


def test_a_server_that_is_down_warns_as_keras_and_the_fit_goes_on():
    with socket.socket() as probe:  # a port that was free a moment ago and has nobody listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    root = f"http://127.0.0.1:{port}"
    with pytest.warns(UserWarning, match=f"Could not reach RemoteMonitor root server at {root}") as record:
        history = _fit(RemoteMonitor(root=root, timeout=2))
    assert history.epoch == [0, 1]
    assert sum("Could not reach" in str(w.message) for w in record) == 2  # one per epoch, as in Keras


def test_an_error_status_is_warned_about_and_the_fit_goes_on():
    with local_server(status=500) as (root, received):
        with pytest.warns(UserWarning, match=r"server at http://127.0.0.1:\d+ answered 500"):
            history = _fit(RemoteMonitor(root=root, timeout=5), epochs=1)
    assert len(received) == 1 and history.epoch == [0]


def test_a_root_that_is_not_a_url_warns_instead_of_crashing():
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        RemoteMonitor(root="localhost:9000").on_epoch_end(0, {"loss": 1.0})
    assert ["Could not reach RemoteMonitor root server at localhost:9000"] == [str(w.message) for w in record]


@pytest.mark.parametrize("kwargs, error", [
    ({"root": None}, TypeError), ({"headers": ["X"]}, TypeError), ({"timeout": 0}, ValueError),
])
def test_bad_arguments(kwargs, error):
    with pytest.raises(error):
        RemoteMonitor(**kwargs)
