"""The hand-written PyTorch loops fitkit is measured against: the best plain loop for each workload.

"The same work" as fitkit's ``fit``: the same tensors, the same initial weights, the same shuffling
order (one ``randperm`` per epoch from a generator seeded like fitkit's), the same loss module, the same
optimizer, and the same epoch bookkeeping fitkit does (the epoch's training loss as the mean over
samples; the validation loss likewise). What a careful hand loop does and fitkit also does:

- targets are put in the shape and dtype the loss wants once, before the loop (fitkit is handed the
  raw ``(N,)`` integer labels, as a user would hand them, and reconciles them itself);
- one ``randperm`` per epoch, the epoch's data gathered once in that order, then contiguous slices;
- ``zero_grad(set_to_none=True)``;
- on the CPU the running loss is ``loss.item() * batch`` (``item`` costs 0.2 us there and no sync);
  on an accelerator the sum stays on the device and is read once per epoch, as fitkit does.

Each function returns ``(final epoch loss, model)``; the caller starts the clock before calling it.
"""

import contextlib
import time

import torch
from torch import nn

from . import workloads as w


def _running(total, loss, n, on_cpu):
    """``total + loss * n`` without a device sync off the CPU."""
    return total + (loss.item() if on_cpu else loss.detach()) * n


def article(x, y, model, epochs, fused=False, device="cpu"):
    """The article's loop, best written: BCELoss, Adam(lr=0.01), batch 32, shuffled each epoch."""
    s = w.ARTICLE
    on_cpu = torch.device(device).type == "cpu"
    optimizer = torch.optim.Adam(model.parameters(), lr=s["lr"], fused=fused or None)
    criterion = nn.BCELoss()
    x, y = x.to(device), y.to(device).float().unsqueeze(1)  # once: the targets as BCELoss wants them
    generator = torch.Generator().manual_seed(w.ORDER_SEED)
    n, bs = len(x), s["batch_size"]
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=generator).to(device)
        xs, ys = x[perm], y[perm]
        total = 0.0
        for start in range(0, n, bs):
            xb, yb = xs[start:start + bs], ys[start:start + bs]
            loss = criterion(model(xb), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total = _running(total, loss, len(xb), on_cpu)
        epoch_loss = float(total) / n
    return epoch_loss, model


def article_loader(loader, model, epochs, device="cpu"):
    """The same training over a user's DataLoader: each batch moved to the device, nothing else."""
    s = w.ARTICLE
    on_cpu = torch.device(device).type == "cpu"
    optimizer = torch.optim.Adam(model.parameters(), lr=s["lr"])
    criterion = nn.BCELoss()
    model.train()
    for _ in range(epochs):
        total, count = 0.0, 0
        for xb, yb in loader:
            xb, yb = xb.to(device), yb.to(device)
            loss = criterion(model(xb), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total = _running(total, loss, len(xb), on_cpu)
            count += len(xb)
        epoch_loss = float(total) / count
    return epoch_loss, model


def _mean_loss(model, criterion, x, y, bs, on_cpu):
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(x), bs):
            xb, yb = x[start:start + bs], y[start:start + bs]
            total = _running(total, criterion(model(xb), yb), len(xb), on_cpu)
    return float(total) / len(x)


def mlp(x, y, model, epochs, device="cpu", autocast=None, optimizer=None, step=None):
    """The MLP: CrossEntropyLoss, Adam(lr=1e-3), batch 64, the last 10% held out and evaluated each epoch.

    ``autocast``: a dtype to run the forward and the loss in under ``torch.autocast`` (training and
    validation), as a mixed-precision hand loop does. ``optimizer`` and ``step`` (a compiled
    ``(xb, yb) -> (outputs, loss)``) come from :func:`mlp_jit_prepare` for the compiled loop.
    """
    s = w.MLP
    on_cpu = torch.device(device).type == "cpu"
    optimizer = optimizer or torch.optim.Adam(model.parameters(), lr=s["lr"])
    criterion = nn.CrossEntropyLoss()
    x, y = x.to(device), y.to(device)
    cut = w.split(len(x), s["validation_split"])
    x_train, y_train, x_val, y_val = x[:cut], y[:cut], x[cut:], y[cut:]
    generator = torch.Generator().manual_seed(w.ORDER_SEED)
    n, bs = cut, s["batch_size"]
    mixed = contextlib.nullcontext() if autocast is None else torch.autocast(torch.device(device).type,
                                                                             dtype=autocast)
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(n, generator=generator).to(device)
        xs, ys = x_train[perm], y_train[perm]
        total = 0.0
        for start in range(0, n, bs):
            xb, yb = xs[start:start + bs], ys[start:start + bs]
            with mixed:
                loss = criterion(model(xb), yb) if step is None else step(xb, yb)[1]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total = _running(total, loss, len(xb), on_cpu)
        epoch_loss = float(total) / n
        model.eval()
        with mixed:
            val_loss = _mean_loss(model, criterion, x_val, y_val, bs, on_cpu)  # noqa: F841 (logged, as fit does)
    return epoch_loss, model


def ddp(x, y, model, epochs, device="cpu"):
    """The MLP's data-parallel loop by hand, each process one of ``world``: the same permutation on every
    process, each taking a contiguous share of every global batch (gathered once per epoch), DDP averaging
    the gradients, and the epoch's loss (and the validation loss, on sharded validation data) summed over
    the processes with one ``all_reduce`` each."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    s = w.DDP
    on_cpu = torch.device(device).type == "cpu"
    rank, world = dist.get_rank(), dist.get_world_size()
    wrapped = DistributedDataParallel(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=s["lr"])
    criterion = nn.CrossEntropyLoss()
    x, y = x.to(device), y.to(device)
    cut = w.split(len(x), s["validation_split"])
    bs, share = s["batch_size"], s["batch_size"] // world  # every batch splits evenly (see workloads.DDP)
    mine = (torch.arange(cut // bs) * bs).unsqueeze(1).add(torch.arange(share) + rank * share).reshape(-1)
    x_train, y_train = x[:cut], y[:cut]
    x_val, y_val = x[cut:], y[cut:]
    val_mine = (torch.arange(len(x_val) // bs) * bs).unsqueeze(1).add(torch.arange(share) + rank * share)
    x_val, y_val = x_val[val_mine.reshape(-1)], y_val[val_mine.reshape(-1)]
    generator = torch.Generator().manual_seed(w.ORDER_SEED)
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(cut, generator=generator)[mine].to(device)
        xs, ys = x_train[perm], y_train[perm]
        total = 0.0
        for start in range(0, len(xs), share):
            xb, yb = xs[start:start + share], ys[start:start + share]
            loss = criterion(wrapped(xb), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total = _running(total, loss, len(xb), on_cpu)
        sums = torch.tensor([float(total), float(len(xs))], dtype=torch.float64)
        dist.all_reduce(sums)
        epoch_loss = float(sums[0] / sums[1])
        model.eval()
        with torch.no_grad():
            val_total = 0.0
            for start in range(0, len(x_val), share):
                xb, yb = x_val[start:start + share], y_val[start:start + share]
                val_total = _running(val_total, criterion(wrapped(xb), yb), len(xb), on_cpu)
        val_sums = torch.tensor([float(val_total), float(len(x_val))], dtype=torch.float64)
        dist.all_reduce(val_sums)  # noqa: F841 (logged, as fit does)
    return epoch_loss, model


def mlp_jit_prepare(x, y, model):
    """The compiled hand loop's set-up: ``torch.compile`` of forward and loss, compiled by two warm-up steps on
    the first 80 samples (batches of 64 and 16: the shapes of the timed epochs). Returns
    ``(optimizer, step, seconds the warm-up took)``."""
    optimizer = torch.optim.Adam(model.parameters(), lr=w.MLP["lr"])
    criterion = nn.CrossEntropyLoss()

    def forward_and_loss(xb, yb):
        out = model(xb)
        return out, criterion(out, yb)

    step = torch.compile(forward_and_loss, fullgraph=True, dynamic=False)
    started = time.perf_counter()
    model.train()
    for xb, yb in ((x[:64], y[:64]), (x[64:80], y[64:80])):
        loss = step(xb, yb)[1]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return optimizer, step, time.perf_counter() - started


def evaluate(x, y, model, device="cpu"):
    """The mean loss over ``x`` in batches of 64 under ``no_grad``."""
    model.eval()
    on_cpu = torch.device(device).type == "cpu"
    return _mean_loss(model, nn.CrossEntropyLoss(), x.to(device), y.to(device), w.MLP["batch_size"], on_cpu), model


def predict(x, model, device="cpu"):
    """The outputs for ``x`` in batches of 64 under ``inference_mode``, joined on the CPU."""
    model.eval()
    bs = w.MLP["batch_size"]
    x = x.to(device)
    outputs = []
    with torch.inference_mode():
        for start in range(0, len(x), bs):
            outputs.append(model(x[start:start + bs]))
    out = torch.cat(outputs).cpu()
    return float(out.float().mean()), model
