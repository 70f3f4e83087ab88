"""Logs that read device values only when somebody looks at them.

Keras hands every batch hook a ``logs`` dict of Python floats. Building it each step would force a
device sync per step; a :class:`LazyLogs` holds the function that computes the values and runs it on
first access, so callbacks that never read batch logs cost nothing.
"""

from collections.abc import MutableMapping

import torch


def to_float(value):
    """A Python float from a tensor, NumPy scalar or number (a sync for device tensors, so call it rarely)."""
    if isinstance(value, torch.Tensor):
        return float(value.detach().float().mean().item()) if value.numel() != 1 else float(value.item())
    return float(value)


def _floats(values):
    """Floats by key; a dict value (a compile-metrics object's ``result()``) is merged in, as Keras's
    ``pythonify_logs`` flattens it. Values that are not numbers stay as they are."""
    out = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(_floats(value))
        else:
            try:
                out[key] = to_float(value)
            except (TypeError, ValueError, RuntimeError):
                out[key] = value
    return out


class LazyLogs(MutableMapping):
    """A dict of floats whose values are computed from ``compute()`` on first read.

    >>> logs = LazyLogs(lambda: {"loss": torch.tensor(0.5)})
    >>> logs["loss"]
    0.5
    """

    __slots__ = ("_compute", "_values")

    def __init__(self, compute):
        self._compute = compute
        self._values = None

    def _materialize(self):
        if self._values is None:
            self._values = _floats(self._compute())
            self._compute = None
        return self._values

    def __getitem__(self, key):
        return self._materialize()[key]

    def __setitem__(self, key, value):
        self._materialize()[key] = value

    def __delitem__(self, key):
        del self._materialize()[key]

    def __iter__(self):
        return iter(self._materialize())

    def __len__(self):
        return len(self._materialize())

    def __bool__(self):
        # `logs = logs or {}` is common in callbacks; answering it must not sync.
        return True

    def __repr__(self):
        return f"LazyLogs({self._materialize()!r})"


def materialize(logs):
    """A plain dict of floats from any logs mapping (the one sync at an epoch end)."""
    if logs is None:
        return {}
    if isinstance(logs, LazyLogs):
        return dict(logs._materialize())
    return _floats(logs)


def evaluate_result(logs, return_dict=False):
    """What Keras's ``evaluate`` and ``*_on_batch`` return: the dict of floats with ``return_dict``, else
    the loss alone when it is the only value, else the list ``[loss, metric, ...]``."""
    logs = materialize(logs)
    if return_dict:
        return logs
    values = list(logs.values())
    return values[0] if len(values) == 1 else values
