"""The data, models and sizes every runner shares, so that each side does the same work.

Every runner builds its data and its model here, from the same seeds, before the clock starts: the
fitkit run, its hand-written twin and the peers start from identical tensors and identical initial
weights, and (where the optimizer is the same) end on the same weights.

Imports torch but not fitkit: the peers' runners use it too, in interpreters without fitkit.
"""

import torch
from torch import nn

DATA_SEED = 0   # the data
INIT_SEED = 1   # the initial weights
ORDER_SEED = 3  # the shuffling order: fitkit.set_seed(3) and torch.Generator().manual_seed(3) agree

# The article's workload: logistic regression on 1000 x 10, batch 32, Adam(lr=0.01), 50 epochs.
ARTICLE = {"n": 1000, "features": 10, "batch_size": 32, "lr": 0.01, "epochs": 50}
# A compute-bound MLP: 20000 x 256 -> 512 -> 512 -> 10, batch 64, 10% validation, 3 epochs.
MLP = {"n": 20000, "features": 256, "hidden": 512, "classes": 10, "batch_size": 64, "lr": 1e-3,
       "epochs": 3, "validation_split": 0.1}
# Data-parallel under torchrun, 2 CPU processes: the MLP's layers, a global batch of 128 (64 a process),
# 12.5% validation; every batch splits evenly (14336 = 112 x 128 to train, 2048 = 16 x 128 to validate).
DDP = {"n": 16384, "features": 256, "hidden": 512, "classes": 10, "batch_size": 128, "lr": 1e-3, "epochs": 3,
       "validation_split": 0.125, "processes": 2}
# What --quick shrinks them to: enough to run every line, in a second or two.
QUICK = {"article": {"epochs": 2}, "mlp": {"n": 1000, "epochs": 1}, "ddp": {"n": 1024, "epochs": 1}}


def sizes(name, quick=False):
    """The sizes of workload family ``name`` ("article", "mlp" or "ddp"), shrunk for ``--quick``."""
    base = dict({"article": ARTICLE, "mlp": MLP, "ddp": DDP}[name])
    if quick:
        base.update(QUICK[name])
    return base


def article_data(quick=False):
    """``x`` (N, 10) float32 and ``y`` (N,) int64 labels, as the article builds them."""
    s = sizes("article", quick)
    g = torch.Generator().manual_seed(DATA_SEED)
    x = torch.randn(s["n"], s["features"], generator=g)
    y = (x[:, 0] + 0.5 * torch.randn(s["n"], generator=g) > 0).long()
    return x, y


def mlp_data(quick=False, family="mlp"):
    """``x`` (N, 256) float32 and ``y`` (N,) int64 class labels drawn from a fixed random projection."""
    s = sizes(family, quick)
    g = torch.Generator().manual_seed(DATA_SEED)
    x = torch.randn(s["n"], s["features"], generator=g)
    projection = torch.randn(s["features"], s["classes"], generator=g)
    y = (x @ projection + 2.0 * torch.randn(s["n"], s["classes"], generator=g)).argmax(dim=1)
    return x, y


def article_model(base=nn.Module):
    """The article's ``LogisticRegression``: sigmoid(Linear(10, 1)), as a subclass of ``base``."""

    class LogisticRegression(base):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(ARTICLE["features"], 1)

        def forward(self, x):
            return torch.sigmoid(self.linear(x))

    torch.manual_seed(INIT_SEED)
    return LogisticRegression()


def mlp_layers():
    """The MLP's layers (Linear-ReLU-Linear-ReLU-Linear), initialised from ``INIT_SEED``."""
    s = MLP
    torch.manual_seed(INIT_SEED)
    return [nn.Linear(s["features"], s["hidden"]), nn.ReLU(), nn.Linear(s["hidden"], s["hidden"]), nn.ReLU(),
            nn.Linear(s["hidden"], s["classes"])]


def split(n, validation_split):
    """Where the validation part starts: the last ``validation_split`` of the samples (Keras's rule)."""
    return int(n * (1.0 - validation_split))


def warm_up():
    """Pay torch's one-time lazy costs before any clock starts, identically on every side.

    The first ``torch.optim`` optimizer a process builds imports ``torch._dynamo`` (about 0.9 s here),
    and the first backward and fused step initialise kernels: a fixed cost of the process, not of the
    loop being measured, that would otherwise blur every ratio towards 1.
    """
    p = nn.Parameter(torch.zeros(4))
    for fused in (False, True):
        opt = torch.optim.Adam([p], lr=0.01, fused=fused)
        (p * 2.0).sum().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    with torch.no_grad():
        nn.functional.binary_cross_entropy(torch.sigmoid(p), torch.ones(4))
