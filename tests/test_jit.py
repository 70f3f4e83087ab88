"""compile(jit_compile=...) (fitkit/jit.py): torch.compile of the step's forward and loss, the eager fallback
with one warning, and the "auto" rule. Compilation costs seconds on a CPU: one compiled fit, two steps."""

import warnings

import pytest
import torch
from torch import nn

import fitkit
from conftest import regression_data
from fitkit import jit


def _net(cls=None, seed=0):
    torch.manual_seed(seed)
    layers = [nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 1)]
    return (cls or fitkit.Sequential)(*layers)


def test_the_compiled_step_trains_to_the_weights_of_the_eager_step():
    x, y = regression_data(n=32)
    eager, compiled = _net(), _net()
    eager.compile(optimizer=fitkit.optimizers.Adam(learning_rate=0.01), loss="mse", metrics=["mae"],
                  jit_compile=False)
    compiled.compile(optimizer=fitkit.optimizers.Adam(learning_rate=0.01), loss="mse", metrics=["mae"],
                     jit_compile=True)
    assert eager._compiled.step.jit is None and compiled._compiled.step.jit is not None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        h_compiled = compiled.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    assert not [w for w in caught if "jit_compile" in str(w.message)]  # compiled, no fallback
    h_eager = eager.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    step = compiled._compiled.step.jit
    assert step.active and step.compile_seconds > 0
    for a, b in zip(eager.parameters(), compiled.parameters()):
        assert torch.allclose(a, b, atol=1e-6, rtol=0)
    assert h_compiled.history["loss"] == pytest.approx(h_eager.history["loss"], rel=1e-5)
    assert h_compiled.history["mae"] == pytest.approx(h_eager.history["mae"], rel=1e-5)


class Branchy(fitkit.Model):
    """Reads a tensor value in Python: a graph break, which fullgraph compilation refuses."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(6, 1)

    def forward(self, x):
        if x.sum().item() > 1e9:
            return self.fc(x) * 2
        return self.fc(x)


def test_a_graph_break_trains_eagerly_after_one_warning():
    x, y = regression_data(n=48)
    eager, compiled = Branchy(), Branchy()
    eager.compile(optimizer="sgd", loss="mse", jit_compile=False)
    compiled.compile(optimizer="sgd", loss="mse", jit_compile=True)
    fitkit.set_seed(0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compiled.fit(x, y, batch_size=16, epochs=2, verbose=0)
    ours = [w for w in caught if "jit_compile" in str(w.message)]
    assert len(ours) == 1 and "training goes on eagerly" in str(ours[0].message)
    assert not compiled._compiled.step.jit.active
    fitkit.set_seed(0)
    eager.fit(x, y, batch_size=16, epochs=2, verbose=0)
    assert all(torch.equal(a, b) for a, b in zip(eager.parameters(), compiled.parameters()))


def test_auto_is_eager_on_the_cpu_and_keras_run_eagerly_turns_compilation_off():
    model = _net()
    model.compile(optimizer="sgd", loss="mse")  # jit_compile="auto", Keras's default
    assert model._compiled.step.jit is None
    assert not jit.pays(model, "cpu")
    assert not jit.pays(model, "cuda")  # 65 parameters: never worth compiling
    with pytest.warns(UserWarning, match="If `run_eagerly` is True, then `jit_compile` cannot also be True"):
        model.compile(optimizer="sgd", loss="mse", jit_compile=True, run_eagerly=True)
    assert model._compiled.step.jit is None
    with pytest.raises(ValueError, match=r"^jit_compile: got 'yes'; expected True, False or 'auto'$"):
        model.compile(optimizer="sgd", loss="mse", jit_compile="yes")
    assert model._compiled.config["jit_compile"] is True  # the failed compile changed nothing


def test_auto_compiles_big_models_on_cuda_where_triton_is(monkeypatch):
    big = fitkit.Sequential(nn.Linear(1000, 1000), nn.ReLU(), nn.Linear(1000, 10))  # 1.01 million parameters
    small = fitkit.Sequential(nn.Linear(100, 10))
    from torch.utils import _triton
    monkeypatch.setattr(_triton, "has_triton", lambda: True)
    assert jit.pays(big, "cuda") and not jit.pays(small, "cuda") and not jit.pays(big, "cpu")
    monkeypatch.setattr(_triton, "has_triton", lambda: False)
    assert not jit.pays(big, "cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device: jit_compile='auto' compiles there")
def test_auto_compiles_a_million_parameter_model_on_cuda_and_matches_eager():
    torch.manual_seed(0)
    x, y = torch.randn(256, 1000), torch.randn(256, 10)
    runs = []
    for jit_compile in ("auto", False):
        torch.manual_seed(1)
        model = fitkit.Sequential(nn.Linear(1000, 1000), nn.ReLU(), nn.Linear(1000, 10))
        model.compile(optimizer="adam", loss="mse", jit_compile=jit_compile, device="cuda")
        model.fit(x, y, batch_size=64, epochs=2, shuffle=False, verbose=0)
        runs.append(model)
    assert runs[0]._compiled.step.jit is not None and runs[0]._compiled.step.jit.active
    for a, b in zip(runs[0].parameters(), runs[1].parameters()):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)
