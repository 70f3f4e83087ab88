"""What several test modules share: seeded data, the small model they train, and exact comparisons.

Import the helpers by name (``from conftest import regression_data``); pytest puts this folder on
``sys.path`` when it loads this file. Every generator is seeded, so each call returns the same arrays.
"""

import importlib.util
import os

import numpy as np
import pytest
import torch
from torch import nn

import fitkit
from fitkit import seed as seed_module


FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")


def fixture_script(name):
    """The module ``tests/fixtures/<name>.py`` (the script that wrote a fixture), imported to reuse its
    data and model definitions."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(FIXTURES, name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _keep_seed(monkeypatch):
    """``fitkit.set_seed`` remembers its seed for the models made after it: no test leaks it into the next."""
    monkeypatch.setattr(seed_module, "_seed", seed_module._seed)


def regression_data(n=103, d=6):
    """``x`` (n, d) and a noisy linear target ``y`` (n, 1), float32."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = (x[:, :1] + 0.3 * rng.normal(size=(n, 1))).astype(np.float32)
    return x, y


def noisy_binary_data(n=163, d=6):
    """``x`` (n, d) and 0/1 float32 labels ``y`` (n,) that the first feature predicts, with label noise."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = (x[:, 0] + rng.normal(size=n) > 0).astype(np.float32)
    return x, y


def labelled_data(n=64, d=4, seed=0):
    """``x`` (n, d) float32 and integer labels ``y`` (n,): 1 where the first feature is positive."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    return x, y


class Net(fitkit.Model):
    """A two-layer ``fitkit.Model`` subclass: ``d_in`` -> 8 -> ``d_out``."""

    def __init__(self, d_in=4, d_out=1):
        super().__init__()
        self.fc1 = nn.Linear(d_in, 8)
        self.fc2 = nn.Linear(8, d_out)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def small_mlp(d=6):
    """The small network the resume and invariance tests train: dropout makes the RNG state matter."""
    return fitkit.Sequential(nn.Linear(d, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 1))


def same_weights(a, b):
    """Whether two models hold the same entries with bit-for-bit equal tensors."""
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def same_optimizer(a, b):
    """Whether two torch optimizers hold the same hyperparameters and bit-for-bit equal state."""
    sa, sb = a.state_dict(), b.state_dict()
    if sa["param_groups"] != sb["param_groups"] or sa["state"].keys() != sb["state"].keys():
        return False
    return all(torch.equal(sa["state"][i][k], sb["state"][i][k]) if isinstance(sa["state"][i][k], torch.Tensor)
               else sa["state"][i][k] == sb["state"][i][k] for i in sa["state"] for k in sa["state"][i])
