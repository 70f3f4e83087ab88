"""fitkit.logs: lazily read logs (no device sync until somebody reads them)."""

import torch

from fitkit.logs import LazyLogs, materialize, to_float


def test_values_are_computed_once_on_first_read():
    calls = []

    def compute():
        calls.append(1)
        return {"loss": torch.tensor(0.25), "acc": 0.5}

    logs = LazyLogs(compute)
    assert bool(logs) and calls == []  # `logs or {}` does not compute
    assert logs["loss"] == 0.25 and isinstance(logs["loss"], float)
    assert dict(logs) == {"loss": 0.25, "acc": 0.5}
    logs["learning_rate"] = 0.1
    assert "learning_rate" in logs and len(logs) == 3
    del logs["acc"]
    assert list(logs) == ["loss", "learning_rate"]
    assert calls == [1]
    assert "loss" in repr(logs)


def test_materialize_and_to_float():
    assert materialize(None) == {}
    assert materialize({"a": torch.tensor([2.0])}) == {"a": 2.0}
    assert materialize(LazyLogs(lambda: {"b": torch.tensor(1.5)})) == {"b": 1.5}
    assert to_float(torch.tensor([1.0, 3.0])) == 2.0
    assert to_float(3) == 3.0
