"""fitkit.optimizers: Keras names and defaults on torch classes, fastest kernel, pass-through, errors."""

import json

import pytest
import torch

from fitkit import optimizers
from fitkit.optimizers import SGD, Adam, AdamW, implementation


def _params():
    torch.manual_seed(0)
    return list(torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 1)).parameters())


# name -> (torch class, the param_groups values that Keras's defaults map to)
KERAS_DEFAULTS = {
    "adam": (torch.optim.Adam, dict(lr=0.001, betas=(0.9, 0.999), eps=1e-7, amsgrad=False, weight_decay=0.0)),
    "adamw": (torch.optim.AdamW, dict(lr=0.001, betas=(0.9, 0.999), eps=1e-7, weight_decay=0.004)),
    "sgd": (torch.optim.SGD, dict(lr=0.01, momentum=0.0, nesterov=False, weight_decay=0.0)),
    "rmsprop": (torch.optim.RMSprop, dict(lr=0.001, alpha=0.9, momentum=0.0, eps=1e-7, centered=False)),
    "adagrad": (torch.optim.Adagrad, dict(lr=0.001, initial_accumulator_value=0.1, eps=1e-7)),
    "adadelta": (torch.optim.Adadelta, dict(lr=0.001, rho=0.95, eps=1e-7)),
    "adamax": (torch.optim.Adamax, dict(lr=0.001, betas=(0.9, 0.999), eps=1e-7)),
    "nadam": (torch.optim.NAdam, dict(lr=0.001, betas=(0.9, 0.999), eps=1e-7, momentum_decay=1.0)),
}


@pytest.mark.parametrize("name", sorted(KERAS_DEFAULTS))
def test_name_builds_torch_class_with_keras_defaults(name):
    cls, expected = KERAS_DEFAULTS[name]
    params = _params()
    opt = optimizers.get(name, params)
    assert type(opt) is cls
    group = opt.param_groups[0]
    for key, value in expected.items():
        assert group[key] == pytest.approx(value), key
    assert [id(p) for p in group["params"]] == [id(p) for p in params]


def test_names_are_case_insensitive():
    assert type(optimizers.get("RMSprop", _params())) is torch.optim.RMSprop
    assert type(optimizers.get(" Adam ", _params())) is torch.optim.Adam


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd", "adagrad"])
def test_fused_on_cpu_where_torch_has_it(name):
    opt = optimizers.get(name, _params())
    assert implementation(opt) == "fused"
    assert opt.param_groups[0]["fused"] is True


@pytest.mark.parametrize("name", ["rmsprop", "adadelta", "adamax", "nadam"])
def test_for_loop_on_cpu_without_fused(name):
    # foreach on the CPU is no faster than torch's loop there, so fitkit keeps torch's default.
    assert implementation(optimizers.get(name, _params())) == "for-loop"


def test_non_float_params_fall_back_from_fused():
    p = torch.zeros(3, dtype=torch.float32, requires_grad=True)
    counter = torch.zeros(2, dtype=torch.int64)  # a non-float tensor rules fused out for the whole optimizer
    opt = optimizers.get("adam", [{"params": [p]}, {"params": [counter], "lr": 0.0}])
    assert implementation(opt) == "for-loop"


def test_fused_refusal_at_build_falls_back(monkeypatch):
    assert implementation(optimizers.get("adam", _params())) == "fused"  # the trial step passed (cached)
    real_init = torch.optim.Adam.__init__

    def refuse_fused(self, params, *args, fused=None, **kwargs):
        if fused:
            raise RuntimeError("no fused kernel here")
        real_init(self, params, *args, fused=fused, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "__init__", refuse_fused)
    opt = optimizers.get("adam", _params())
    assert type(opt) is torch.optim.Adam and implementation(opt) == "for-loop"


def test_fused_that_cannot_step_on_device_is_not_chosen():
    # A device with no fused kernel is detected by a trial step, before fit ever calls step().
    assert not optimizers._fused_runs(torch.optim.Adam, "no_such_device", torch.float32, ())
    assert optimizers._fused_runs(torch.optim.Adam, "cpu", torch.float32, ())


def test_fused_adam_trains_like_default():
    torch.manual_seed(0)
    x, y = torch.randn(64, 4), torch.randn(64, 1)
    results = []
    for make in (lambda p: optimizers.get("adam", p), lambda p: torch.optim.Adam(p, lr=1e-3, eps=1e-7)):
        torch.manual_seed(1)
        model = torch.nn.Linear(4, 1)
        opt = make(model.parameters())
        for _ in range(20):
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            opt.step()
        results.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    torch.testing.assert_close(results[0], results[1], rtol=1e-5, atol=1e-6)


def test_torch_optimizer_passes_through_untouched():
    params = _params()
    opt = torch.optim.SGD(params, lr=0.123, momentum=0.5)
    before = [dict((k, v) for k, v in g.items() if k != "params") for g in opt.param_groups]
    assert optimizers.get(opt, params) is opt
    assert [dict((k, v) for k, v in g.items() if k != "params") for g in opt.param_groups] == before
    assert implementation(opt) == "for-loop"


def test_torch_optimizer_on_other_parameters_is_refused():
    opt = torch.optim.SGD(_params(), lr=0.1)
    with pytest.raises(ValueError, match="optimizer.*none of the model's parameters"):
        optimizers.get(opt, _params())


def test_spec_builds_with_its_arguments():
    opt = optimizers.get(SGD(learning_rate=0.5, momentum=0.9, nesterov=True), _params())
    group = opt.param_groups[0]
    assert (type(opt), group["lr"], group["momentum"], group["nesterov"]) == (torch.optim.SGD, 0.5, 0.9, True)
    opt = optimizers.get(optimizers.RMSprop(rho=0.8, centered=True), _params())
    assert opt.param_groups[0]["alpha"] == 0.8 and opt.param_groups[0]["centered"] is True
    opt = Adam(learning_rate=0.01).build(_params())
    assert opt.param_groups[0]["lr"] == 0.01


def test_spec_class_builds_with_defaults():
    assert optimizers.get(AdamW, _params()).param_groups[0]["weight_decay"] == 0.004


def test_adam_weight_decay_is_decoupled_like_keras():
    group = optimizers.get(Adam(weight_decay=0.1), _params()).param_groups[0]
    assert group["weight_decay"] == 0.1 and group["decoupled_weight_decay"] is True


def test_lr_alias():
    assert Adam(lr=0.02).learning_rate == 0.02
    assert Adam(lr=0.02).get_config() == Adam(learning_rate=0.02).get_config()
    with pytest.raises(TypeError, match="lr"):
        Adam(learning_rate=0.1, lr=0.2)


@pytest.mark.parametrize("spec", [
    Adam(learning_rate=3e-4, amsgrad=True), AdamW(weight_decay=0.1), SGD(momentum=0.9, nesterov=True),
    optimizers.RMSprop(momentum=0.1, centered=True), optimizers.Adagrad(initial_accumulator_value=0.5),
    optimizers.Adadelta(rho=0.9), optimizers.Adamax(beta_2=0.99), optimizers.Nadam(epsilon=1e-6),
])
def test_config_round_trip(spec):
    config = spec.get_config()
    assert "learning_rate" in config and "lr" not in config
    again = type(spec).from_config(config)
    assert again == spec and again.get_config() == config
    assert optimizers.deserialize(optimizers.serialize(spec)) == spec
    assert json.loads(json.dumps(config)) == config


def test_keras_spec_defaults():
    assert Adam().get_config() == dict(learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
                                       amsgrad=False, weight_decay=None)
    assert SGD().get_config() == dict(learning_rate=0.01, momentum=0.0, nesterov=False, weight_decay=None)
    assert optimizers.RMSprop().rho == 0.9 and optimizers.Adadelta().rho == 0.95


def test_sgd_momentum_steps_equal_torch():
    torch.manual_seed(0)
    x, y = torch.randn(32, 4), torch.randn(32, 1)

    def train(make):
        torch.manual_seed(1)
        model = torch.nn.Linear(4, 1)
        opt = make(model.parameters())
        for i in range(10):
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(x[i:i + 8]), y[i:i + 8]).backward()
            opt.step()
        return [p.detach().clone() for p in model.parameters()]

    ours = train(lambda p: optimizers.get(SGD(learning_rate=0.05, momentum=0.9), p))
    theirs = train(lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9))
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("bad, exc", [("adamm", ValueError), ("", ValueError), (3, TypeError),
                                      (None, TypeError), (torch.optim.Adam, TypeError)])
def test_bad_identifier_names_argument_and_value(bad, exc):
    with pytest.raises(exc) as info:
        optimizers.get(bad, _params())
    message = str(info.value)
    assert "optimizer" in message and "'adam'" in message and "'rmsprop'" in message
    given = bad.__name__ if isinstance(bad, type) else repr(bad)
    assert given in message


def test_unknown_name_suggests_close_match():
    with pytest.raises(ValueError, match="did you mean 'rmsprop'"):
        optimizers.get("rmsprob", _params())


def test_empty_parameters_are_an_error():
    with pytest.raises(ValueError, match="optimizer.*no parameters"):
        optimizers.get("adam", [])
    with pytest.raises(ValueError, match="optimizer.*holds no parameters"):
        empty = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        empty.param_groups.clear()
        optimizers.get(empty, _params())


@pytest.mark.parametrize("make, match", [
    (lambda: Adam(learning_rate="fast"), "learning_rate must be a number, got 'fast'"),
    (lambda: Adam(learning_rate=-1.0), "learning_rate must be >= 0, got -1.0"),
    (lambda: Adam(beta_1=1.5), "beta_1 must be in \\[0, 1\\), got 1.5"),
    (lambda: optimizers.RMSprop(rho=1.0), "rho must be in"),
    (lambda: SGD(nesterov="yes"), "nesterov must be True or False"),
    (lambda: SGD(nesterov=True), "nesterov=True needs momentum"),
])
def test_bad_spec_arguments(make, match):
    with pytest.raises((TypeError, ValueError), match=match):
        make()
