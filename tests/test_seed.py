"""fitkit.seed: one call seeds python, numpy, torch and the data order."""

import random

import numpy as np
import pytest
import torch

import fitkit
from fitkit import seed


def test_set_seed_seeds_python_numpy_torch_and_the_data_generator():
    draws = []
    for _ in range(2):
        fitkit.set_seed(123)
        draws.append((random.random(), np.random.rand(), torch.rand(1).item(),
                      torch.randperm(10, generator=seed.new_generator()).tolist()))
    assert draws[0] == draws[1]
    fitkit.set_seed(124)
    assert random.random() != draws[0][0]


def test_without_set_seed_the_generator_follows_torch_manual_seed(monkeypatch):
    monkeypatch.setattr(seed, "_seed", None)
    torch.manual_seed(5)
    a = torch.randperm(10, generator=seed.new_generator()).tolist()
    torch.manual_seed(5)
    b = torch.randperm(10, generator=seed.new_generator()).tolist()
    assert a == b


def test_bad_seed_names_the_argument():
    with pytest.raises(ValueError, match="seed: got -1"):
        fitkit.set_seed(-1)
    with pytest.raises(ValueError, match="seed: got 'a'"):
        fitkit.set_seed("a")
