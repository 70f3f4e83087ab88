"""``compile(jit_compile=...)``: the training step's forward and loss through ``torch.compile``.

With ``jit_compile=True`` fitkit's ``train_step`` runs the model's forward and the compiled loss as one
``torch.compile``\\ d function (``fullgraph=True``, one graph per batch shape); torch compiles its
backward with it (AOTAutograd), and the optimizer step stays torch's own (fused where fitkit built it).
The first batch of each shape pays the compilation (seconds on a CPU, tens of seconds for a large
model), every later batch runs the compiled kernels. A model whose forward or loss does not compile as
one graph (a graph break: Python that reads tensor values, an unsupported operation) trains eagerly,
after one warning, instead of failing. A ``compute_loss`` of the user's own runs eagerly after the
compiled forward. Evaluation and prediction run eagerly.

``jit_compile="auto"`` (the default, Keras's) turns compilation on only where it pays: on CUDA, with
triton present, for a model of at least :data:`AUTO_MIN_PARAMETERS` trainable parameters. Below that
a fit is usually over before the compilation (tens of seconds) is earned back, and on the CPU the
compiled step of a small model is no faster than the eager one. Keras's torch backend, for comparison,
resolves "auto" to eager everywhere.

>>> model.compile(optimizer="adam", loss="mse", jit_compile=True)    # doctest: +SKIP
"""

import time
import warnings

import torch

from .data import flatten
from .step import batch_size

#: "auto" compiles on CUDA from this many trainable parameters on (a ResNet-18 has 11 million).
AUTO_MIN_PARAMETERS = 1_000_000


def resolve(jit_compile, run_eagerly, model, device):
    """Whether the step is compiled: ``jit_compile`` checked, "auto" decided, ``run_eagerly`` obeyed."""
    if not (isinstance(jit_compile, bool) or (isinstance(jit_compile, str) and jit_compile == "auto")):
        raise ValueError(f"jit_compile: got {jit_compile!r}; expected True, False or 'auto'")
    if run_eagerly:
        if jit_compile is True:
            warnings.warn("If `run_eagerly` is True, then `jit_compile` cannot also be True. Disabling "
                          "`jit_compile`.", UserWarning, stacklevel=4)  # Keras's words
        return False
    if jit_compile == "auto":
        return pays(model, device)
    return jit_compile


def pays(model, device):
    """The "auto" rule: CUDA, triton, and at least :data:`AUTO_MIN_PARAMETERS` trainable parameters."""
    if torch.device(device).type != "cuda":
        return False
    if sum(p.numel() for p in model.parameters() if p.requires_grad) < AUTO_MIN_PARAMETERS:
        return False
    try:
        from torch.utils._triton import has_triton
    except ImportError:
        return False
    return bool(has_triton())


def _own(model, method):
    """Whether ``model``'s ``method`` is fitkit's (not overridden by the user's class)."""
    return getattr(getattr(type(model), method, None), "__module__", None) == "fitkit.model"


class CompiledStep:
    """The compiled forward-and-loss of one compiled model; falls back to eager once, with a warning.

    ``compile_seconds`` adds up the wall time of the calls that compiled (the first batch of each shape).
    """

    def __init__(self):
        self.active = True
        self.compile_seconds = 0.0
        self._fn = None
        self._own_loss = True
        self._shapes = set()

    def _build(self, model):
        self._own_loss = _own(model, "compute_loss")
        loss = model._compiled.loss
        forward = model._forward
        if self._own_loss:
            def forward_and_loss(x, y, sample_weight):
                y_pred = forward(x)
                total, parts = loss(y, y_pred, sample_weight)
                return y_pred, total, parts
            fn = forward_and_loss
        else:
            def forward_only(x, y, sample_weight):
                return forward(x), None, None
            fn = forward_only
        # fullgraph: a graph break is an error at the first call, which turns compilation off (below),
        # rather than a step split into pieces that may well be slower than eager.
        return torch.compile(fn, fullgraph=True, dynamic=False)

    def __call__(self, model, x, y, sample_weight):
        try:
            if self._fn is None:
                self._fn = self._build(model)
            shape = tuple(tuple(t.shape) for t in flatten((x, y, sample_weight)))
            new_shape = shape not in self._shapes
            started = time.perf_counter() if new_shape else None
            y_pred, total, parts = self._fn(x, y, sample_weight)
            if new_shape:
                self._shapes.add(shape)
                self.compile_seconds += time.perf_counter() - started
        except Exception as exc:  # whatever torch.compile cannot do, the eager step can (or says why not)
            self.active = False
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            warnings.warn(f"jit_compile: torch.compile could not compile the training step ({type(exc).__name__}: "
                          f"{first}); training goes on eagerly. Pass compile(jit_compile=False) to skip the "
                          "attempt.", UserWarning, stacklevel=4)
            y_pred = model._forward(x)
            return y_pred, model._compute_loss(x, y, y_pred, sample_weight, training=True)
        if not self._own_loss:
            return y_pred, model._compute_loss(x, y, y_pred, sample_weight, training=True)
        model._compiled.update_parts(parts, batch_size(y_pred, x))  # the step adds the total
        return y_pred, total

