"""model.save / fitkit.load_model / save_weights / load_weights: exact continuation, safe loading, atomic writes."""

import copy
import os
import pickle
import warnings

import pytest
import torch
from torch import nn

import fitkit
from conftest import regression_data, same_weights, small_mlp
from fitkit import checkpoint


class Net(fitkit.Model):
    """Constructor arguments are plain data: saved by import path and arguments."""

    def __init__(self, d, hidden=16, dropout=0.3):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, 1))

    def forward(self, x):
        return self.body(x)


class Head(fitkit.Model):
    """Takes a module: its constructor arguments are not plain data, so it is pickled."""

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone
        self.out = nn.Linear(4, 1)

    def forward(self, x):
        return self.out(self.backbone(x))


class Block(nn.Module):
    """A plain torch module of the user's: a pickle naming it needs custom_objects or trust."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 4)

    def forward(self, x):
        return torch.tanh(self.fc(x))


class Configured(fitkit.Model):
    """Keras's get_config / from_config are used when a class has them."""

    def __init__(self, width):
        super().__init__()
        self.fc = nn.Linear(6, width)
        self.out = nn.Linear(width, 1)

    def forward(self, x):
        return self.out(self.fc(x))

    def get_config(self):
        return {"width": self.fc.out_features}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def my_loss(y_true, y_pred):
    return ((y_true - y_pred) ** 2).mean()


FIT = dict(batch_size=16, validation_split=0.2, verbose=0)


def _compiled(build, **compile_kwargs):
    fitkit.set_seed(0)
    model = build()
    kwargs = dict(optimizer=fitkit.optimizers.SGD(learning_rate=0.05, momentum=0.9), loss="mse", metrics=["mae"],
                  scheduler=lambda opt: torch.optim.lr_scheduler.StepLR(opt, 2, 0.5))
    kwargs.update(compile_kwargs)
    model.compile(**kwargs)
    return model


@pytest.mark.parametrize("build, kind", [(small_mlp, "pickle"), (lambda: Net(6), "import"),
                                         (lambda: Configured(12), "config")], ids=["sequential", "subclass", "config"])
def test_save_after_two_epochs_load_and_three_more_equals_five_in_one_go(tmp_path, build, kind):
    x, y = regression_data()
    ref = _compiled(build)
    ref_history = ref.fit(x, y, epochs=5, **FIT)
    model = _compiled(build)
    model.fit(x, y, epochs=2, **FIT)
    model.save(tmp_path / "model.pt")
    del model
    loaded = fitkit.load_model(tmp_path / "model.pt")
    assert torch.load(tmp_path / "model.pt", weights_only=True)["architecture"]["kind"] == kind
    assert loaded.compiled and loaded.training_state.epoch == 2 and len(loaded.history.history["loss"]) == 2
    assert isinstance(loaded.scheduler, torch.optim.lr_scheduler.StepLR) and loaded.scheduler.optimizer is \
        loaded.optimizer
    history = loaded.fit(x, y, epochs=5, initial_epoch=loaded.training_state.epoch, **FIT)
    assert same_weights(ref, loaded)
    assert history.history["loss"] == ref_history.history["loss"][2:]
    assert history.history["val_mae"] == ref_history.history["val_mae"][2:]


def test_a_torch_optimizer_with_param_groups_is_rebuilt_with_its_state(tmp_path):
    x, y = regression_data()

    def build():
        fitkit.set_seed(0)
        model = Net(6)
        opt = torch.optim.AdamW([{"params": model.body[0].parameters(), "lr": 1e-2},
                                 {"params": model.body[3].parameters()}], lr=3e-3, weight_decay=0.01)
        model.compile(optimizer=opt, loss=nn.MSELoss())
        return model

    ref = build()
    ref.fit(x, y, epochs=4, **FIT)
    model = build()
    model.fit(x, y, epochs=2, **FIT)
    model.save(tmp_path / "m.pt")
    loaded = fitkit.load_model(tmp_path / "m.pt")
    assert type(loaded.optimizer) is torch.optim.AdamW
    assert [g["lr"] for g in loaded.optimizer.param_groups] == [1e-2, 3e-3]
    assert isinstance(loaded.compiled_loss, object) and loaded.scheduler is None
    loaded.fit(x, y, epochs=4, initial_epoch=2, **FIT)
    assert same_weights(ref, loaded)


def test_the_file_loads_with_weights_only_and_holds_what_training_needs(tmp_path):
    model = _compiled(lambda: Net(6, hidden=8))
    model.fit(*regression_data(), epochs=1, **FIT)
    model.save(tmp_path / "m.pt")
    data = torch.load(tmp_path / "m.pt", weights_only=True)
    assert data["format"] == "fitkit.model"
    assert data["architecture"] == {"kind": "import", "class": f"{__name__}:Net", "args": [6],
                                    "kwargs": {"hidden": 8}}
    assert set(data["compile"]) >= {"config", "optimizer", "scheduler"}
    assert data["compile"]["config"]["loss"] == "mse" and data["compile"]["config"]["metrics"] == ["mae"]
    assert data["compile"]["optimizer"]["class"] == "torch.optim.sgd:SGD"
    assert data["training"]["epoch"] == 1 and data["training"]["generator"] is not None
    assert data["history"]["history"]["loss"] == model.history.history["loss"]


def test_a_pickled_model_of_torch_layers_loads_safely(tmp_path):
    fitkit.set_seed(0)
    model = Head(nn.Sequential(nn.Linear(6, 4), nn.Tanh()))  # a module argument: pickled, no warning
    model.compile(optimizer="adam", loss="mse")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.save(tmp_path / "m.pt")
    loaded = fitkit.load_model(tmp_path / "m.pt")
    assert isinstance(loaded, Head) and same_weights(model, loaded)
    assert loaded.backbone[0].weight.device.type == "cpu" and loaded.backbone[0].weight.requires_grad


def test_a_pickle_naming_a_class_outside_the_allowlist_needs_trusted_or_custom_objects(tmp_path):
    fitkit.set_seed(0)
    model = Head(Block())
    model.compile(optimizer="adam", loss="mse")
    with pytest.warns(UserWarning, match=r"names .*Block: load_model will need custom_objects"):
        model.save(tmp_path / "m.pt")
    with pytest.raises(checkpoint.UntrustedCheckpointError, match=r"architecture: .*names .*Block.*trusted=True"):
        fitkit.load_model(tmp_path / "m.pt")
    for kwargs in (dict(custom_objects={"Block": Block}), dict(trusted=True), dict(safe_mode=False)):
        loaded = fitkit.load_model(tmp_path / "m.pt", **kwargs)
        assert isinstance(loaded, Head) and isinstance(loaded.backbone, Block) and same_weights(model, loaded)


def test_a_loss_function_of_the_users_needs_trust_and_torch_loss_modules_do_not(tmp_path):
    model = _compiled(lambda: Net(6), loss=my_loss)
    model.save(tmp_path / "fn.pt")
    with pytest.raises(checkpoint.UntrustedCheckpointError, match="compile settings .*my_loss.*trusted=True"):
        fitkit.load_model(tmp_path / "fn.pt")
    assert fitkit.load_model(tmp_path / "fn.pt", trusted=True).compiled_loss is not None
    for loss in (nn.SmoothL1Loss(beta=0.5), fitkit.losses.Huber(delta=2.0)):
        model = _compiled(lambda: Net(6), loss=loss, metrics=[fitkit.metrics.MeanAbsoluteError()])
        model.save(tmp_path / "m.pt")
        loaded = fitkit.load_model(tmp_path / "m.pt")  # torch.nn and fitkit classes only: no trust needed
        assert loaded.compiled


def test_what_cannot_be_pickled_is_reported_at_save_and_at_load(tmp_path):
    model = _compiled(lambda: Net(6), loss=lambda y_true, y_pred: ((y_true - y_pred) ** 2).mean(),
                      scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: 0.9 ** epoch))
    with pytest.warns(UserWarning) as record:
        model.save(tmp_path / "m.pt")
    text = " ".join(str(w.message) for w in record)
    assert "could not store compile's loss" in text and "could not store the LambdaLR scheduler" in text
    with pytest.warns(UserWarning, match="compiled without"):
        loaded = fitkit.load_model(tmp_path / "m.pt")
    assert loaded.scheduler is None and loaded.compiled_loss is None and same_weights(model, loaded)


def test_architecture_choice_and_its_errors(tmp_path):
    seq = _compiled(small_mlp)
    with pytest.raises(ValueError, match="architecture: got 'import', but Sequential .*not plain data.*'pickle'"):
        seq.save(tmp_path / "s.pt", architecture="import")
    with pytest.raises(ValueError, match="architecture: got 'json'"):
        seq.save(tmp_path / "s.pt", architecture="json")
    assert not os.listdir(tmp_path)  # nothing written
    net = _compiled(lambda: Net(6))
    net.save(tmp_path / "n.pt", architecture="pickle")
    assert torch.load(tmp_path / "n.pt", weights_only=True)["architecture"]["kind"] == "pickle"
    loaded = fitkit.load_model(tmp_path / "n.pt")  # Net is imported here, as it must be for "import" too
    assert isinstance(loaded, Net) and same_weights(net, loaded) and loaded._fitkit_init_args == ((6,), {})


def test_constructor_arguments_are_recorded_and_objects_among_them_are_not_pickled():
    assert Net(6, dropout=0.1)._fitkit_init_args == ((6,), {"dropout": 0.1})
    assert pickle.loads(pickle.dumps(Net(6, hidden=3)))._fitkit_init_args == ((6,), {"hidden": 3})
    assert copy.deepcopy(Head(nn.Linear(6, 4)))._fitkit_init_args is None


def test_model_checkpoint_writes_model_files_that_load_model_reads(tmp_path):
    model = _compiled(small_mlp)
    model.fit(*regression_data(), epochs=2, callbacks=[fitkit.callbacks.ModelCheckpoint(str(tmp_path / "m-{epoch}.pt"))],
              **FIT)
    assert sorted(os.listdir(tmp_path)) == ["m-1.pt", "m-2.pt"]
    loaded = fitkit.load_model(tmp_path / "m-2.pt")
    assert same_weights(model, loaded) and loaded.training_state.epoch == 2


def test_load_model_asks_for_the_class_when_it_is_not_imported(tmp_path):
    net = _compiled(lambda: Net(6))
    net.save(tmp_path / "n.pt")
    data = torch.load(tmp_path / "n.pt", weights_only=True)
    data["architecture"]["class"] = "not_a_module_anywhere:Net"
    torch.save(data, tmp_path / "moved.pt")
    with pytest.raises(ValueError, match=r"architecture: .*not imported.*custom_objects=\{'Net': Net\}.*trusted=True"):
        fitkit.load_model(tmp_path / "moved.pt")
    assert isinstance(fitkit.load_model(tmp_path / "moved.pt", custom_objects={"Net": Net}), Net)
    data["architecture"]["class"] = "os:system"
    torch.save(data, tmp_path / "evil.pt")
    with pytest.raises(TypeError, match="expected a subclass of fitkit.model.Model"):
        fitkit.load_model(tmp_path / "evil.pt")


def test_load_model_leaves_the_global_rngs_alone_and_can_skip_compile(tmp_path):
    net = _compiled(lambda: Net(6))
    net.save(tmp_path / "n.pt")
    state = torch.get_rng_state()
    loaded = fitkit.load_model(tmp_path / "n.pt", compile=False)  # builds Net: its layers draw initial weights
    assert torch.equal(state, torch.get_rng_state())
    assert not loaded.compiled and same_weights(net, loaded)


def test_uncompiled_and_wrapped_models_save_and_load(tmp_path):
    model = fitkit.wrap(nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2)))
    model.save(tmp_path / "w.pt")
    loaded = fitkit.load_model(tmp_path / "w.pt")
    assert not loaded.compiled and same_weights(model, loaded)
    assert loaded.module[1].running_mean.device.type == "cpu"


def test_save_weights_is_a_plain_state_dict_that_torch_loads(tmp_path):
    model = _compiled(small_mlp)
    model.fit(*regression_data(), epochs=1, **FIT)
    model.save_weights(tmp_path / "w.pt")
    plain = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 1))
    plain.load_state_dict(torch.load(tmp_path / "w.pt"))
    assert torch.equal(plain[0].weight, model[0].weight)
    wrapped = fitkit.wrap(nn.Sequential(nn.Linear(6, 2)))
    wrapped.save_weights(tmp_path / "inner.pt")  # the module's own names, no "module." prefix
    assert list(torch.load(tmp_path / "inner.pt", weights_only=True)) == ["0.weight", "0.bias"]
    again = fitkit.wrap(nn.Sequential(nn.Linear(6, 2)))
    again.load_weights(tmp_path / "inner.pt")
    assert same_weights(wrapped, again)


def test_load_weights_checks_names_and_shapes_before_changing_anything(tmp_path):
    torch.save({"0.weight": torch.zeros(16, 5), "0.bias": torch.zeros(16), "extra": torch.zeros(1)},
               tmp_path / "bad.pt")
    model = small_mlp()
    before = [t.clone() for t in model.state_dict().values()]
    with pytest.raises(ValueError) as info:
        model.load_weights(tmp_path / "bad.pt")
    message = str(info.value)
    assert message.startswith("filepath: the weights in")
    assert "missing from the file: 3.weight, 3.bias" in message and "not in the model: extra" in message
    assert "0.weight: file (16, 5), model (16, 6)" in message and "skip_mismatch=True" in message
    assert all(torch.equal(a, b) for a, b in zip(before, model.state_dict().values()))
    with pytest.warns(UserWarning, match="Skipped loading some weights"):
        model.load_weights(tmp_path / "bad.pt", skip_mismatch=True)
    assert torch.equal(model[0].bias, torch.zeros(16))
    with pytest.raises(FileNotFoundError, match="filepath: no file at"):
        model.load_weights(tmp_path / "missing.pt")


def test_load_weights_reads_a_model_file_and_refuses_pickled_modules(tmp_path):
    model = _compiled(small_mlp)
    model.save(tmp_path / "m.pt")
    other = small_mlp()
    other.load_weights(tmp_path / "m.pt")
    assert same_weights(model, other)
    torch.save(nn.Linear(2, 2), tmp_path / "pickled.pt")
    with pytest.raises(checkpoint.UntrustedCheckpointError, match="pickled Python objects .*Linear"):
        other.load_weights(tmp_path / "pickled.pt")


def test_overwrite_false_and_foreign_files(tmp_path):
    model = _compiled(small_mlp)
    model.save(tmp_path / "m.pt")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        model.save(tmp_path / "m.pt", overwrite=False)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        model.save_weights(tmp_path / "m.pt", overwrite=False)
    torch.save({"a": torch.zeros(1)}, tmp_path / "plain.pt")
    with pytest.raises(ValueError, match="is not a fitkit model file"):
        fitkit.load_model(tmp_path / "plain.pt")
    (tmp_path / "cut.pt").write_bytes((tmp_path / "m.pt").read_bytes()[:500])
    with pytest.raises(checkpoint.CorruptCheckpointError, match="not a whole torch checkpoint"):
        fitkit.load_model(tmp_path / "cut.pt")


@pytest.mark.parametrize("write", ["save", "save_weights"])
def test_a_write_that_fails_midway_leaves_the_previous_file_whole(tmp_path, monkeypatch, write):
    model = _compiled(small_mlp)
    path = tmp_path / "m.pt"
    getattr(model, write)(path)
    before = path.read_bytes()
    real_save = torch.save

    def half_then_fail(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        f.seek(0)
        f.truncate(len(before) // 2)  # half a file on disk, then the "crash"
        raise OSError("disk full")

    model.fit(*regression_data(), epochs=1, **FIT)  # new weights that the failed write would have stored
    monkeypatch.setattr(torch, "save", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        getattr(model, write)(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.pt"]  # no temporary file left behind
    (fitkit.load_model if write == "save" else small_mlp().load_weights)(path)


class Stepper(torch.optim.Optimizer):
    """A user's optimizer, saved by its import path."""

    def __init__(self, params, lr=0.1, alpha=0.5):
        super().__init__(params, {"lr": lr, "alpha": alpha})

    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.data.add_(p.grad, alpha=-group["lr"])


def test_a_file_whose_optimizer_state_no_longer_fits_its_class_is_refused_before_compile(tmp_path):
    model = Net(6)
    model.compile(optimizer=Stepper(model.parameters()), loss="mse")
    model.fit(*regression_data(), epochs=1, verbose=0)
    model.save(tmp_path / "m.pt")

    class Stepper2(Stepper):  # the class as it is now: a hyperparameter more, which its step() reads
        def __init__(self, params, lr=0.1, alpha=0.5, beta=0.9):
            torch.optim.Optimizer.__init__(self, params, {"lr": lr, "alpha": alpha, "beta": beta})

    with pytest.raises(ValueError, match=r"^filepath: the saved optimizer is not a Stepper2 like this model's \(it has "
                                         r"the hyperparameters \[\] and lacks \['beta'\]\)\. The class Stepper"):
        fitkit.load_model(tmp_path / "m.pt", custom_objects={"Stepper": Stepper2})
    loaded = fitkit.load_model(tmp_path / "m.pt")
    assert type(loaded.optimizer) is Stepper and loaded.optimizer.state_dict() == model.optimizer.state_dict()
