"""The fitkit side of each workload, written as a user would write it.

fitkit gets the data as the user has it (the article's ``(N,)`` integer labels, no ``.float()``, no
``.unsqueeze()``), draws its shuffling order from ``fitkit.set_seed``, and logs what it always logs.
Each function returns ``(final epoch loss, model)``; the caller starts the clock before calling it.
"""

import time

import torch
from torch import nn

import fitkit

from . import workloads as w


def article(x, y, model, epochs, optimizer="torch", verbose=0, device="cpu"):
    """``compile`` + ``fit`` on the article's workload.

    optimizer: "torch" is the user's own ``torch.optim.Adam(lr=0.01)``; "named" is
    ``fitkit.optimizers.Adam(learning_rate=0.01)``, which fitkit builds with the fastest kernel.
    """
    s = w.ARTICLE
    fitkit.set_seed(w.ORDER_SEED)
    opt = torch.optim.Adam(model.parameters(), lr=s["lr"]) if optimizer == "torch" \
        else fitkit.optimizers.Adam(learning_rate=s["lr"])
    model.compile(optimizer=opt, loss=nn.BCELoss(), device=device)
    history = model.fit(x, y, batch_size=s["batch_size"], epochs=epochs, verbose=verbose)
    return history.history["loss"][-1], model


def article_loader(loader, model, epochs, device="cpu"):
    """``fit`` on the user's DataLoader (fitkit iterates it as it is)."""
    s = w.ARTICLE
    model.compile(optimizer=torch.optim.Adam(model.parameters(), lr=s["lr"]), loss=nn.BCELoss(), device=device)
    history = model.fit(loader, epochs=epochs, verbose=0)
    return history.history["loss"][-1], model


def mlp(x, y, model, epochs, device="cpu", dtype_policy=None, compiled=False):
    """``fit`` with ``validation_split=0.1`` on the MLP workload; ``dtype_policy`` as compile takes it;
    ``compiled``: the model was compiled (with ``jit_compile=True``) by :func:`mlp_jit_prepare`."""
    s = w.MLP
    fitkit.set_seed(w.ORDER_SEED)
    if not compiled:
        model.compile(optimizer=torch.optim.Adam(model.parameters(), lr=s["lr"]), loss=nn.CrossEntropyLoss(),
                      device=device, dtype_policy=dtype_policy)
    history = model.fit(x, y, batch_size=s["batch_size"], epochs=epochs, verbose=0,
                        validation_split=s["validation_split"])
    return history.history["loss"][-1], model


def ddp(x, y, model, epochs, device="cpu"):
    """The MLP script unchanged under torchrun: compile's ``distribute="auto"`` wraps the model in DDP, the
    global batch of 128 is split over the processes, the epoch's losses are summed over them."""
    s = w.DDP
    fitkit.set_seed(w.ORDER_SEED)
    model.compile(optimizer=torch.optim.Adam(model.parameters(), lr=s["lr"]), loss=nn.CrossEntropyLoss(),
                  device=device)
    history = model.fit(x, y, batch_size=s["batch_size"], epochs=epochs, verbose=0,
                        validation_split=s["validation_split"])
    return history.history["loss"][-1], model


def mlp_jit_prepare(x, y, model, device="cpu"):
    """``compile(jit_compile=True)`` and a warm-up fit on the first 80 samples (batches of 64 and 16, the
    shapes of the timed epochs), which compiles the step. Returns the seconds the warm-up took."""
    fitkit.set_seed(w.ORDER_SEED)
    model.compile(optimizer=torch.optim.Adam(model.parameters(), lr=w.MLP["lr"]), loss=nn.CrossEntropyLoss(),
                  device=device, jit_compile=True)
    started = time.perf_counter()
    model.fit(x[:80], y[:80], batch_size=64, epochs=1, shuffle=False, verbose=0)
    seconds = time.perf_counter() - started
    if not model._compiled.step.jit.active:
        raise RuntimeError("jit_compile: the MLP's step did not compile (see the warning above)")
    return seconds


def compile_for_evaluate(model, device="cpu"):
    """The untimed part of the evaluate workload: the model was compiled when it was trained."""
    model.compile(optimizer=torch.optim.Adam(model.parameters()), loss=nn.CrossEntropyLoss(), device=device)


def evaluate(x, y, model, device="cpu"):
    """``evaluate`` with the MLP's loss, batch 64."""
    return model.evaluate(x, y, batch_size=w.MLP["batch_size"], verbose=0), model


def predict(x, model, device="cpu"):
    """``predict``, batch 64 (tensors in, CPU tensors out)."""
    if device != "cpu":
        model.to(device)
    out = model.predict(x, batch_size=w.MLP["batch_size"], verbose=0)
    return float(out.float().mean()), model


def article_model():
    return w.article_model(fitkit.Model)


def mlp_model():
    return fitkit.Sequential(*w.mlp_layers())
