"""fitkit.checkpoint: atomic writes, weights-only reading, RNG states, pickles behind an allowlist."""

import os
import random
import stat

import numpy as np
import pytest
import torch
from torch import nn

import fitkit
from fitkit import checkpoint, model_file
from fitkit import seed as seed_module


class Custom(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(2, 2)


def test_atomic_write_replaces_the_file_only_when_complete(tmp_path):
    path = tmp_path / "f.bin"
    with checkpoint.atomic_write(path) as f:
        f.write(b"old")
    with pytest.raises(RuntimeError, match="boom"):
        with checkpoint.atomic_write(path) as f:
            f.write(b"new, but not finished")
            raise RuntimeError("boom")
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["f.bin"]
    with checkpoint.atomic_write(path) as f:
        f.write(b"new")
    assert path.read_bytes() == b"new" and os.listdir(tmp_path) == ["f.bin"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~umask  # not mkstemp's private 0600


def test_a_killed_write_leaves_only_a_temporary_file_which_is_cleared(tmp_path):
    path = tmp_path / "latest.pt"
    checkpoint.save({"a": 1}, path)
    (tmp_path / ".latest.pt.x1y2.tmp").write_bytes(b"half")  # what SIGKILL mid-write leaves
    (tmp_path / ".other.pt.x1y2.tmp").write_bytes(b"not ours")
    checkpoint.remove_stale_temporaries(path)
    assert sorted(os.listdir(tmp_path)) == [".other.pt.x1y2.tmp", "latest.pt"]
    assert checkpoint.read(path) == {"a": 1}


def test_rng_state_round_trips_through_a_weights_only_file(tmp_path):
    state = checkpoint.get_rng_state()
    expected = (random.random(), np.random.rand(), torch.rand(2))
    checkpoint.save(state, tmp_path / "rng.pt")
    random.random(), np.random.rand(3), torch.rand(5)
    checkpoint.set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert (random.random(), np.random.rand()) == expected[:2] and torch.equal(torch.rand(2), expected[2])
    with checkpoint.preserved_rng():
        torch.rand(10)
        random.random()
    after = torch.rand(1)
    checkpoint.set_rng_state(state)
    random.random(), np.random.rand()
    torch.rand(2)
    assert torch.equal(after, torch.rand(1))


def test_is_plain():
    assert checkpoint.is_plain({"a": [1, 2.0, "x", None, True, (1, 2)], "t": torch.zeros(2), "b": b"\x00"})
    assert not checkpoint.is_plain(np.float64(1.0)) and not checkpoint.is_plain([np.zeros(2)])
    assert not checkpoint.is_plain(nn.Linear(1, 1)) and not checkpoint.is_plain({1.5: 2})


def test_read_names_pickled_objects_and_cut_files(tmp_path):
    torch.save(Custom(), tmp_path / "module.pt")
    with pytest.raises(checkpoint.UntrustedCheckpointError, match=r"filepath: .*holds pickled Python objects .*Custom"):
        checkpoint.read(tmp_path / "module.pt")
    torch.save({"w": torch.ones(100)}, tmp_path / "w.pt")
    (tmp_path / "cut.pt").write_bytes((tmp_path / "w.pt").read_bytes()[:300])
    with pytest.raises(checkpoint.CorruptCheckpointError, match="not a whole torch checkpoint"):
        checkpoint.read(tmp_path / "cut.pt")
    with pytest.raises(FileNotFoundError, match="filepath: no file at"):
        checkpoint.read(tmp_path / "none.pt")


def test_unpack_allows_torch_classes_and_asks_trust_for_others():
    layers = checkpoint.pack(nn.Sequential(nn.Linear(2, 3), nn.GELU(), nn.TransformerEncoderLayer(4, 2)))
    assert isinstance(checkpoint.unpack(layers, "architecture"), nn.Sequential)
    scheduler = torch.optim.lr_scheduler.StepLR(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0), 2)
    assert checkpoint.unpack(model_file.describe_scheduler(scheduler)["blob"], "scheduler").step_size == 2
    blob = checkpoint.pack(Custom())
    with pytest.raises(checkpoint.UntrustedCheckpointError, match=r"architecture: .*test_checkpoint.Custom.*trusted"):
        checkpoint.unpack(blob, "architecture")
    assert isinstance(checkpoint.unpack(blob, "architecture", allow=[Custom]), Custom)
    assert isinstance(checkpoint.unpack(blob, "architecture", trusted=True), Custom)


def test_structure_copy_holds_no_weights_but_keeps_non_persistent_buffers():
    module = nn.Linear(3, 2)
    module.register_buffer("table", torch.arange(3.0), persistent=False)
    copy = checkpoint.structure_copy(module)
    assert copy.weight.device.type == "meta" and copy.weight.requires_grad
    assert torch.equal(copy.table, torch.arange(3.0))
    assert module.weight.device.type == "cpu"


def test_resolve_class_finds_imported_classes_and_refuses_others():
    path = checkpoint.class_path(Custom)
    assert path == f"{__name__}:Custom"
    assert checkpoint.resolve_class(path, nn.Module, "architecture") is Custom
    with pytest.raises(ValueError, match=r"architecture: .*'no_such_module'.*not imported.*custom_objects.*trusted"):
        checkpoint.resolve_class("no_such_module:Net", nn.Module, "architecture")
    assert checkpoint.resolve_class("no_such_module:Net", nn.Module, "architecture", {"Net": Custom}) is Custom
    with pytest.raises(TypeError, match="expected a subclass of torch.optim.optimizer.Optimizer"):
        checkpoint.resolve_class("os:system", torch.optim.Optimizer, "optimizer")
    with pytest.raises(TypeError, match="custom_objects: got"):
        checkpoint.resolve_class(path, nn.Module, "architecture", [Custom])


class Lion(torch.optim.Optimizer):
    """A user optimizer whose constructor takes other names than its defaults."""

    def __init__(self, params, learning_rate=1e-3):
        super().__init__(params, {"lr": learning_rate})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state[p]
                state["m"] = state.get("m", torch.zeros_like(p)) * 0.9 + p.grad
                p.add_(state["m"].sign(), alpha=-group["lr"])


def test_describe_and_build_optimizer_round_trip_for_a_user_optimizer():
    model = nn.Linear(3, 1)
    opt = Lion(model.parameters(), learning_rate=0.1)
    model(torch.ones(2, 3)).sum().backward()
    opt.step()
    description = model_file.describe_optimizer(opt, model.named_parameters())
    assert description["class"] == f"{__name__}:Lion" and description["param_names"] == [["weight", "bias"]]
    fresh = nn.Linear(3, 1)
    rebuilt = model_file.build_optimizer(description, fresh.named_parameters())
    rebuilt.load_state_dict(description["state"])
    assert type(rebuilt) is Lion and rebuilt.param_groups[0]["lr"] == 0.1
    assert torch.equal(rebuilt.state[fresh.weight]["m"], opt.state[model.weight]["m"])
    with pytest.raises(ValueError, match="optimizer: param group 0 holds tensors of shapes"):
        model_file.describe_optimizer(torch.optim.SGD([torch.zeros(2, requires_grad=True)], lr=1), [])


def test_training_state_round_trips_through_a_file_and_training_goes_on_identically(tmp_path, monkeypatch):
    monkeypatch.setattr(seed_module, "_seed", seed_module._seed)

    def build():
        fitkit.set_seed(0)
        model = fitkit.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 1))
        model.compile(optimizer="adam", loss="mse", scheduler=lambda o: torch.optim.lr_scheduler.StepLR(o, 1, 0.5))
        return model

    x, y = np.random.default_rng(0).normal(size=(2, 64, 4)).astype(np.float32)
    y = y[:, :1]
    model = build()
    model.fit(x, y, epochs=1, verbose=0)
    checkpoint.save(model.training_state.state_dict(), tmp_path / "state.pt")
    model.fit(x, y, epochs=2, initial_epoch=1, verbose=0)
    other = build()
    other.fit(x, y, epochs=1, verbose=0)  # builds the generator; then everything is overwritten
    other.training_state.load_state_dict(checkpoint.read(tmp_path / "state.pt"))
    assert other.training_state.epoch == 1
    other.fit(x, y, epochs=2, initial_epoch=1, verbose=0)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values()))
    plain = fitkit.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 1))
    plain.compile(optimizer="adam", loss="mse")
    with pytest.raises(ValueError, match="state: the saved optimizer/scheduler do not match"):
        plain.training_state.load_state_dict(checkpoint.read(tmp_path / "state.pt"))


# ------------------------------------------------------------------------------------------ bad input

class _Interrupting:
    """A file that raises KeyboardInterrupt at its ``after``-th write, as Ctrl-C inside torch.save would."""

    def __init__(self, f, after):
        self.f, self.after, self.writes = f, after, 0

    def write(self, b):
        self.writes += 1
        if self.writes > self.after:
            raise KeyboardInterrupt
        return self.f.write(b)

    def __getattr__(self, name):
        return getattr(self.f, name)


@pytest.mark.parametrize("where", ["write first", "write second", "write middle", "write last", "flush", "fsync",
                                   "chmod", "replace"])
def test_ctrl_c_at_any_instant_of_a_write_leaves_the_old_file_and_no_temporary(where, tmp_path, monkeypatch):
    path = tmp_path / "model.pt"
    checkpoint.save({"old": torch.zeros(3)}, path)
    real_save = torch.save

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    if where.startswith("write"):
        counter = _Interrupting(open(os.devnull, "wb"), float("inf"))
        real_save({"new": torch.ones(1000)}, counter)  # how many writes torch.save makes of it
        after = {"first": 0, "second": 1, "middle": counter.writes // 2, "last": counter.writes - 1}[where.split()[1]]
        monkeypatch.setattr(torch, "save", lambda obj, f: real_save(obj, _Interrupting(f, after)))
    elif where == "flush":
        monkeypatch.setattr(torch, "save", lambda obj, f: (real_save(obj, f), monkeypatch.setattr(f, "flush",
                                                                                                   interrupted)))
    else:
        monkeypatch.setattr(checkpoint.os, {"fsync": "fsync", "chmod": "chmod", "replace": "replace"}[where],
                            interrupted)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save({"new": torch.ones(1000)}, path)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["model.pt"] and torch.equal(checkpoint.read(path)["old"], torch.zeros(3))


def test_ctrl_c_right_after_the_temporary_file_is_created_is_held_back_until_it_can_be_removed(tmp_path,
                                                                                                 monkeypatch):
    import signal
    import tempfile

    real = tempfile.mkstemp

    def mkstemp_then_ctrl_c(*args, **kwargs):
        made = real(*args, **kwargs)
        signal.raise_signal(signal.SIGINT)  # arrives before atomic_write knows the file's name
        return made

    monkeypatch.setattr(checkpoint.tempfile, "mkstemp", mkstemp_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save({"a": 1}, tmp_path / "m.pt")
    assert os.listdir(tmp_path) == []


def test_the_next_write_removes_what_a_killed_write_left_and_keeps_a_running_writers_file(tmp_path):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(done.stdout)  # a writer that is gone (killed mid-write)
    path = tmp_path / "m.pt"
    (tmp_path / f".m.pt.{dead}.k1lled.tmp").write_bytes(b"half")
    (tmp_path / f".m.pt.{os.getppid()}.runn1ng.tmp").write_bytes(b"in progress")  # a live process's
    (tmp_path / f".other.pt.{dead}.k1lled.tmp").write_bytes(b"another file's")
    checkpoint.save({"a": 1}, path)
    assert sorted(os.listdir(tmp_path)) == [f".m.pt.{os.getppid()}.runn1ng.tmp", f".other.pt.{dead}.k1lled.tmp",
                                            "m.pt"]


def test_a_save_into_a_missing_or_read_only_folder_names_the_users_path(tmp_path, monkeypatch):
    target = tmp_path / "missing" / "model.pt"
    model = fitkit.Sequential(nn.Linear(2, 1))
    with pytest.raises(FileNotFoundError, match=r"^filepath: cannot write '.*missing/model\.pt': its folder .* does "
                                                r"not exist; create it first") as info:
        model.save(target)
    assert ".tmp" not in str(info.value)

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", os.path.join(kwargs["dir"], ".model.pt.1.x.tmp"))

    monkeypatch.setattr(checkpoint.tempfile, "mkstemp", denied)
    with pytest.raises(PermissionError, match=r"^filepath: cannot write '.*model\.pt': no permission to write in its "
                                              r"folder") as info:
        model.save_weights(tmp_path / "model.pt")
    assert ".tmp" not in str(info.value) and os.listdir(tmp_path) == []


def test_random_bytes_are_not_a_fitkit_file(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(np.random.default_rng(0).bytes(2000))
    for head in (b"", b"\x80\x02"):
        path.write_bytes(head + np.random.default_rng(1).bytes(500))
        with pytest.raises(checkpoint.CorruptCheckpointError, match=r"^filepath: '.*model\.pt' is not a fitkit or "
                                                                    r"torch checkpoint file") as info:
            fitkit.load_model(path)
        assert "trusted" not in str(info.value)
    with pytest.raises(checkpoint.CorruptCheckpointError, match="is not a fitkit or torch checkpoint"):
        fitkit.Sequential(nn.Linear(2, 1)).load_weights(path)
