"""Seeding: one call makes a run repeatable, as ``keras.utils.set_random_seed`` does."""

import random

import numpy as np
import torch

_seed = None


def set_seed(seed):
    """Seed Python's ``random``, NumPy, torch (all devices) and the data order of models trained after it.

    >>> set_seed(42)
    """
    global _seed
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed: got {seed!r}; expected a non-negative integer")
    _seed = int(seed)
    random.seed(_seed)
    np.random.seed(_seed % 2**32)
    torch.manual_seed(_seed)


def new_generator():
    """A CPU ``torch.Generator`` for a model's data order.

    Seeded from the last ``set_seed`` when there was one, else drawn once from torch's global RNG (so
    ``torch.manual_seed`` also makes it repeatable). Drawn when a model first trains, never again, so
    a second ``fit`` call sees the same global RNG as one long call would.
    """
    seed = _seed if _seed is not None else int(torch.randint(0, 2**62, (1,)).item())
    return torch.Generator().manual_seed(seed)
