"""More than one process: torch.distributed from torchrun's environment, with PyTorch's own engine.

Under ``torchrun --nproc_per_node=N train.py`` the same fit script trains data-parallel. ``compile``
(``distribute="auto"``, the default) reads torchrun's environment (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``), initialises the process group when nobody has (gloo on the CPU, nccl on CUDA with
the device ``cuda:LOCAL_RANK``), and wraps the model in ``DistributedDataParallel`` (or shards it with
FSDP2's ``fully_shard``, ``distribute="fsdp"``) before it builds the optimizer. What this module gives
the rest of fitkit:

* :class:`Shard`: this rank's part of every global batch (the data sources split each batch into
  contiguous shares, one per rank) and the share of the batch in flight;
* :func:`prepare`: the wrapping at compile time; :func:`no_sync` reaches DDP's ``no_sync`` (FSDP2's
  ``set_requires_gradient_sync``) for gradient accumulation;
* :func:`loss_for_backward`: each rank's loss weighted so that the averaged gradient is the gradient
  of the whole global batch on one process, also for a last batch that does not split evenly;
* :func:`reduce_logs`: the epoch's loss sums and every metric's states summed over the ranks (one
  flattened ``all_reduce``) before any callback sees the logs; :func:`agree_to_stop`;
* :func:`gather_predictions`: ``predict``'s outputs from every rank, in the order of one process;
* :func:`is_writer`, :func:`barrier`, :func:`full_state_dict` and friends: one writer (rank 0), the
  full state dict of a sharded model, its loading back.

Nothing here runs in a plain single-process fit: every entry point returns at once when the model was
not compiled for more than one process. FSDP2 and torch.distributed.checkpoint are imported when a model
is sharded, never at ``import fitkit``.
"""

import atexit
import contextlib
import os

import torch
import torch.distributed as dist

from . import model_file
from .logs import LazyLogs, materialize

#: What ``compile(distribute=...)`` accepts.
CHOICES = ("auto", "ddp", "fsdp", None)

_created_group = False  # whether fitkit initialised the process group (then it also destroys it)


# ----------------------------------------------------------------------------------------- environment

def _env_int(name):
    value = os.environ.get(name)
    try:
        return int(value) if value not in (None, "") else None
    except ValueError:
        return None


def launched():
    """Whether this process was started by torchrun (or another launcher setting RANK and WORLD_SIZE)."""
    return _env_int("RANK") is not None and _env_int("WORLD_SIZE") is not None


def initialized():
    """Whether a default process group exists (fitkit's or the user's)."""
    return dist.is_available() and dist.is_initialized()


def world_size():
    """Processes in the job: the process group's size, else torchrun's ``WORLD_SIZE``, else 1."""
    if initialized():
        return dist.get_world_size()
    return _env_int("WORLD_SIZE") or 1


def rank():
    """This process's rank: the process group's, else torchrun's ``RANK``, else 0."""
    if initialized():
        return dist.get_rank()
    return _env_int("RANK") or 0


def local_rank():
    """This process's index on its machine (torchrun's ``LOCAL_RANK``; 0 when not launched)."""
    return _env_int("LOCAL_RANK") or 0


def cuda_device():
    """The CUDA device of this process: ``cuda:LOCAL_RANK`` under torchrun, else the current one."""
    if not launched():
        return torch.device("cuda")
    count = torch.cuda.device_count()
    if local_rank() >= count:
        raise ValueError(f"device: this process is local rank {local_rank()} of torchrun, but the machine has {count} "
                         f"CUDA device(s); expected one device per process: launch at most "
                         f"--nproc_per_node={count}, or train on the CPU with compile(device='cpu')")
    return torch.device("cuda", local_rank())


def resolve(distribute):
    """``compile(distribute=...)`` checked and decided: None, "ddp" or "fsdp".

    "auto" (the default) is DDP when the job has more than one process, else None (one process trains
    alone); "ddp" and "fsdp" need torchrun's environment or a process group the user initialised.
    """
    if distribute not in CHOICES:
        raise ValueError(f"distribute: got {distribute!r}; expected 'auto' (DDP under torchrun with more than one "
                         "process), 'ddp', 'fsdp' or None (each process trains on its own)")
    if distribute == "auto":
        return "ddp" if world_size() > 1 and dist.is_available() else None
    if distribute is not None and not (initialized() or launched()):
        raise ValueError(f"distribute: got {distribute!r}, but this process was not started by torchrun (RANK and "
                         "WORLD_SIZE are not set) and no process group is initialised; launch the script with "
                         "`torchrun --nproc_per_node=N script.py`, or leave distribute='auto'")
    return distribute


def init_process_group(device):
    """Initialise the default process group from torchrun's environment unless one exists.

    gloo on the CPU; on CUDA, nccl for CUDA tensors and gloo for CPU ones (fitkit's few CPU collectives)
    with this process bound to ``device``. A group fitkit creates is destroyed at interpreter exit, not
    when a fit ends: evaluate, predict and save after fit still need it, and so may a second fit.
    """
    global _created_group
    if initialized():
        return
    options = {"backend": "gloo"}
    if device.type == "cuda":
        torch.cuda.set_device(device)
        options = {"backend": "cpu:gloo,cuda:nccl", "device_id": device}
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT")
    if attempt is not None and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
        # torchrun (c10d rendezvous) keeps one store across its restarts, where the keys of the attempt that
        # failed are still found: a restarted rank would connect to an address of the dead run
        # (pytorch/pytorch#135712). Each attempt gets keys of its own.
        store, rank_, world = next(dist.rendezvous("env://"))
        store = dist.PrefixStore(f"fitkit/attempt{attempt}", store)
        dist.init_process_group(store=store, rank=rank_, world_size=world, **options)
    else:
        dist.init_process_group(**options)
    _created_group = True
    atexit.register(_destroy_process_group)


def _destroy_process_group():
    global _created_group
    if _created_group and initialized():
        dist.destroy_process_group()
    _created_group = False


def _comm_device(prefer=None):
    """Where a collective runs: on ``prefer`` (the tensors' device) when the group has a backend for it,
    else on the CPU, unless the group only has nccl."""
    backend = str(dist.get_backend())
    if "nccl" in backend and (prefer is not None and prefer.type == "cuda"):
        return prefer
    if "nccl" in backend and "gloo" not in backend:
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# ----------------------------------------------------------------------------------------- the shard

class Shard:
    """This rank's part of the data: a contiguous share of every global batch.

    A global batch of ``B`` samples is split into ``world`` shares of ``B // world`` samples, the first
    ``B % world`` ranks taking one more (``numpy.array_split``'s rule): rank 0 never gets an empty
    share, a rank may get none when ``B < world``. The data sources record the share of the batch they
    gave last (``local``, ``total``; None for a ``*_on_batch`` call's own batch); a rank whose share is
    empty runs its step on one sample that counts for nothing (``local == 0``), so every rank runs
    the same number of forward and backward passes, as DDP and FSDP need.

    >>> shard = Shard(rank=1, world=2)
    >>> shard.split(0, 5), shard.local, shard.total
    ((3, 5), 2, 5)
    """

    def __init__(self, rank, world, sum_reduction=False):
        self.rank = rank
        self.world = world
        self.sum_reduction = sum_reduction  # the compiled loss sums over samples (reduction="sum")
        self.local = None
        self.total = None

    def share(self, size):
        """``(offset, count)`` of this rank's share of a batch of ``size`` samples."""
        base, extra = divmod(size, self.world)
        offset = self.rank * base + min(self.rank, extra)
        return offset, base + (self.rank < extra)

    def split(self, start, stop):
        """This rank's part ``(lo, hi)`` of the global batch ``[start, stop)``; records it as in flight."""
        offset, count = self.share(stop - start)
        self.local, self.total = count, stop - start
        return start + offset, start + offset + count

    def positions(self, n, batch_size):
        """This rank's positions in a pass of ``n`` samples in batches of ``batch_size``, in pass order."""
        full, last = divmod(n, batch_size)
        offset, count = self.share(batch_size)
        own = torch.arange(count) + offset
        parts = [(torch.arange(full) * batch_size).unsqueeze(1).add(own).reshape(-1)] if full and count else []
        if last:
            lo, hi = self.share(last)
            parts.append(torch.arange(full * batch_size + lo, full * batch_size + lo + hi))
        return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)

    def clear(self):
        """No batch of a source in flight: a ``*_on_batch`` call weighs its own batch as plain DDP does."""
        self.local = self.total = None

    def tag(self, batch):
        """``batch`` with the sizes :meth:`split` (or a sharded loader) recorded for it, to travel to its step:
        the epoch iterator may draw several batches before their steps run (``steps_per_execution``)."""
        return ShardedBatch(batch, self.local, self.total)


class ShardedBatch:
    """A batch of this rank's share with the sizes of the share (``local``) and of the global batch it
    belongs to (``total``); :func:`routed` steps put them on the shard and hand the step the batch itself."""

    __slots__ = ("batch", "local", "total")

    def __init__(self, batch, local, total):
        self.batch, self.local, self.total = batch, local, total


def shard_of(model):
    """The :class:`Shard` of a model compiled for more than one process, else None."""
    compiled = getattr(model, "_compiled", None)
    return compiled.shard if compiled is not None else None


def is_writer(model=None):
    """Whether this process writes files and draws the progress bar: rank 0 of a distributed model,
    and every process that trains on its own (``distribute=None``, or a single process)."""
    shard = shard_of(model) if model is not None else None
    return shard is None or shard.rank == 0


def barrier(model=None):
    """Every rank of a distributed model waits here for the others (nothing otherwise)."""
    if shard_of(model) is not None:
        dist.barrier()


@contextlib.contextmanager
def one_writer(model):
    """``with one_writer(model) as writing:`` write only ``if writing``; every rank waits at the end
    until the writer is done, so that a file rank 0 announced exists for all."""
    yield is_writer(model)
    barrier(model)


# ----------------------------------------------------------------------------------------- wrapping

def prepare(model, strategy, device, fsdp_policy=None, sum_reduction=False):
    """Wrap ``model`` for ``strategy`` ("ddp", "fsdp" or None); returns ``(wrapper, shard, unsharded)``.

    The model stays the object the user holds and keeps its own ``state_dict`` names: DDP is a separate
    wrapper whose forward is the model's; FSDP2 shards the model in place (``unsharded`` is then a copy of
    its structure from before, without data, for ``model.save``). Call it after the model is on
    ``device`` and before the optimizer is built (FSDP2 replaces the parameters).
    """
    if strategy is None:
        return None, None, None
    init_process_group(device)
    shard = Shard(dist.get_rank(), dist.get_world_size(), sum_reduction) if dist.get_world_size() > 1 else None
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [device.index if device.index is not None else torch.cuda.current_device()] \
            if device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids), shard, None
    previous = getattr(model, "_compiled", None)
    if is_sharded(model):  # compiled again: the shards stay, and so does the structure saved before them
        return None, shard, getattr(previous, "unsharded", None)
    try:
        unsharded = model_file.architecture_copy(model)
    except Exception:  # a module deepcopy cannot copy: model.save then says why, as it would unsharded
        unsharded = None
    broadcast_module(model)  # fully_shard keeps each rank's own slice of its tensors: they must start equal
    _fully_shard(model, fsdp_policy)
    return None, shard, unsharded


def check_fsdp_policy(policy):
    """``fsdp_policy`` as a function ``module -> bool`` (None: the default policy); a clear error otherwise."""
    if policy is None or callable(policy) and not isinstance(policy, type):
        return policy
    classes = tuple(policy) if isinstance(policy, (set, frozenset, list, tuple)) else (policy,)
    if classes and all(isinstance(c, type) and issubclass(c, torch.nn.Module) for c in classes):
        return lambda module: isinstance(module, classes)
    raise ValueError(f"fsdp_policy: got {policy!r}; expected a function module -> bool (True: that submodule gets "
                     "its own fully_shard) or a set of nn.Module classes, e.g. {TransformerBlock}")


def _fully_shard(model, policy):
    """FSDP2: ``fully_shard`` each chosen submodule, deepest first, then the model itself.

    The default policy shards each direct child that has parameters (for a ``wrap()``ped module, the
    children of the module it wraps): one all-gather per layer, so only one layer is whole at a time.
    """
    from torch.distributed.fsdp import fully_shard

    if policy is None:
        inner = getattr(model, "module", None)
        parent = inner if isinstance(inner, torch.nn.Module) and set(model.children()) == {inner} else model
        chosen = {id(m) for m in parent.children() if any(True for _ in m.parameters())}

        def policy(module):
            return id(module) in chosen
    for module in reversed(list(model.modules())):
        if module is not model and policy(module):
            fully_shard(module)
    fully_shard(model)


def is_sharded(module):
    """Whether FSDP2 has sharded ``module`` (its class was swapped for an ``FSDP<Class>``)."""
    return any(cls.__name__ == "FSDPModule" and cls.__module__.startswith("torch.distributed.fsdp")
               for cls in type(module).__mro__)


def original_class(module):
    """The class the user wrote: FSDP2 swaps a sharded module's class for ``FSDP<Class>``."""
    cls = type(module)
    if is_sharded(module):
        return cls.__mro__[getattr(cls, "_orig_cls_mro_index", 2)]
    return cls


def broadcast_module(module, src=0):
    """Rank ``src``'s parameters and buffers to every rank, one broadcast per dtype."""
    tensors = [t for t in list(module.parameters()) + list(module.buffers())]
    by_dtype = {}
    for t in tensors:
        by_dtype.setdefault((t.dtype, t.device), []).append(t)
    with torch.no_grad():
        for (_, device), group in by_dtype.items():
            comm = _comm_device(device)  # a model on CUDA is broadcast by nccl, on the GPU
            flat = torch.cat([t.detach().reshape(-1) for t in group]).to(comm)
            dist.broadcast(flat, src)
            offset = 0
            for t in group:
                t.copy_(flat[offset:offset + t.numel()].view_as(t))
                offset += t.numel()


@contextlib.contextmanager
def no_sync(model):
    """Gradients accumulate locally, without the all-reduce, inside this block (DDP's ``no_sync``;
    FSDP2's ``set_requires_gradient_sync(False)``); nothing changes for a model trained alone.

    >>> with fitkit.distributed.no_sync(model):   # doctest: +SKIP
    ...     loss.backward()                         # the k-1 batches of an accumulation
    """
    compiled = getattr(model, "_compiled", None)
    wrapper = compiled.wrapper if compiled is not None else None
    if wrapper is not None:
        with wrapper.no_sync():
            yield
    elif is_sharded(model):
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)
    else:
        yield


# ----------------------------------------------------------------------------------------- the step

def one_batch(model, step):
    """``step`` for a ``*_on_batch`` call: the batch given is this rank's own (no share of a global batch),
    and the model's calls go through the DDP wrapper as in fit."""
    shard = shard_of(model)
    if shard is not None:
        shard.clear()
    return routed(model, step)


def routed(model, step):
    """``step`` (the model's train_step, test_step or predict_step) as a distributed model runs it: the
    share sizes of a :class:`ShardedBatch` put on the shard and the batch itself handed to the step, and
    under DDP the model's calls inside the step going through the wrapper, so that a ``train_step`` of the
    user's calling ``self(x)`` has its gradients averaged too. Outside the steps the model is called as a
    plain module (a call on rank 0 alone, for a summary or a look at an output, waits for nobody). The step
    itself on one process."""
    compiled = getattr(model, "_compiled", None)
    if compiled is None or compiled.shard is None:
        return step
    shard, wrapper = compiled.shard, compiled.wrapper

    def sharded_step(batch):
        if isinstance(batch, ShardedBatch):
            shard.local, shard.total, batch = batch.local, batch.total, batch.batch
        if wrapper is None:
            return step(batch)
        compiled.routing = True
        try:
            return step(batch)
        finally:
            compiled.routing = False
    return sharded_step


def loss_for_backward(model, loss):
    """``loss`` weighted so that the gradient DDP (or FSDP2) averages over the ranks is the gradient of
    the whole global batch on one process.

    A rank's loss is the mean over its ``local`` samples of the global batch's ``total``: weighted by
    ``local * world / total``, the mean of the ranks' gradients is the single-process gradient (Keras's
    ``sum_over_batch_size`` reduction, torch's ``reduction="mean"``). A loss that sums over samples
    (``reduction="sum"``) is weighted by ``world``; an empty share by 0.
    """
    shard = shard_of(model)
    if shard is None or shard.total is None:
        return loss
    if shard.local == 0:
        return loss * 0.0
    scale = shard.world if shard.sum_reduction else shard.local * shard.world / shard.total
    return loss if scale == 1.0 else loss * scale


# ----------------------------------------------------------------------------------------- reductions

def _flat_sums(compiled):
    """The compiled state's running sums as ``(values, write_back)``: every LossTracker's sum and count,
    every metric's ``states()``, in one fixed order (the same on every rank)."""
    trackers = [compiled.tracker] + list(compiled.part_trackers.values())
    values, setters = [], []
    for tracker in trackers:
        total, count = tracker.totals()
        values += [total, count]

        def put(t, tracker=tracker):
            tracker.set_totals(t[0], t[1])
        setters.append((2, put))
    for metric in (compiled.metrics.metrics if compiled.metrics is not None else ()):
        if getattr(metric, "_state_specs", None) and getattr(metric, "_device", None) is None:
            metric._place_states(compiled.device)  # a rank that has seen no sample still has zeros to add
        for name, state in metric.states().items():
            values.append(state)

            def put(t, state=state):
                state.copy_(t.reshape(state.shape).to(dtype=state.dtype, device=state.device))
            setters.append((state.numel(), put))
    return values, setters


def _all_reduce_flat(values):
    """``values`` (numbers and tensors) summed over the ranks in one float64 ``all_reduce``."""
    comm = _comm_device()
    parts = [v.detach().reshape(-1).to(comm, torch.float64) if isinstance(v, torch.Tensor)
             else torch.tensor([float(v)], dtype=torch.float64, device=comm) for v in values]
    if not parts:
        return torch.zeros(0, dtype=torch.float64)
    flat = torch.cat(parts)
    dist.all_reduce(flat)
    return flat


def reduce_sums(compiled):
    """Sum the compiled state's running sums over the ranks, in place: its ``results()`` are then the
    whole data's (AUC and precision from the summed states, not a mean of per-rank results)."""
    values, setters = _flat_sums(compiled)
    flat = _all_reduce_flat(values)
    offset = 0
    for size, put in setters:
        put(flat[offset:offset + size])
        offset += size


def reduce_logs(model, logs):
    """The logs of an epoch (or an evaluation) as floats, the same on every rank.

    On one process it is ``materialize(logs)``. A distributed model first sums its running sums over
    the ranks and reads its results afresh (the running logs a rank's progress bar read were its own);
    logs that a custom ``train_step`` made itself (a plain dict) are averaged over the ranks.
    """
    compiled = getattr(model, "_compiled", None)
    if compiled is None or compiled.shard is None:
        return materialize(logs)
    if logs is None or isinstance(logs, LazyLogs):
        reduce_sums(compiled)
        return materialize(LazyLogs(compiled.results)) if logs is not None else {}
    local = materialize(logs)
    flat = _all_reduce_flat(list(local.values()))  # the same keys on every rank: the same train_step
    return {k: float(flat[i]) / compiled.shard.world for i, k in enumerate(local)}


def running_sums(compiled):
    """The running sums of an unfinished epoch summed over the ranks, as ``CompiledState.state_dict()``
    lays them out (the live sums are left as they are): what a backup or model file records mid-epoch.
    Only rank 0 loads them back (:func:`takes_running`), so the next sum over the ranks counts them once."""
    if compiled.shard is None:
        return compiled.state_dict()
    values, _ = _flat_sums(compiled)  # first: it gives a metric that saw no sample its zero states
    state = compiled.state_dict()
    flat = _all_reduce_flat(values)
    offset = 0
    for saved in [state["loss"]] + list(state["parts"].values()):
        kept = saved["sum"]  # a float on the CPU, a tensor elsewhere (see LossTracker)
        total = flat[offset].to(kept.dtype) if isinstance(kept, torch.Tensor) else float(flat[offset])
        saved.update(values=[], sizes=[], sum=total, count=int(round(float(flat[offset + 1]))))
        offset += 2
    for states in state["metrics"].values():
        for name, value in states.items():
            states[name] = flat[offset:offset + value.numel()].reshape(value.shape).to(value.dtype)
            offset += value.numel()
    return state


def takes_running(model):
    """Whether this rank puts back the saved running sums of an unfinished epoch (rank 0 alone: they are
    the sums over every rank)."""
    return is_writer(model)


_STOP_REASONS = ("early_stopping", "terminate_on_nan", "time_budget", "data_exhausted", "stopped")


def agree_to_stop(model):
    """Whether training ends after this epoch, decided the same on every rank: it ends when any rank
    asks (a callback, data that ran out, rank 0's clock for ``time_budget``), with the reason of the
    lowest such rank. One small ``all_reduce`` per epoch."""
    shard = shard_of(model)
    if shard is None:
        return model.stop_training
    reason = model.stop_reason if model.stop_training else None
    code = _STOP_REASONS.index(reason) + 1 if reason in _STOP_REASONS else (len(_STOP_REASONS) + 1 if reason else 0)
    # the lowest asking rank wins: encode (rank, reason) so that a MIN over the ranks picks it
    key = torch.tensor([shard.rank * 64 + code if model.stop_training else 1 << 40], dtype=torch.float64,
                       device=_comm_device())
    dist.all_reduce(key, op=dist.ReduceOp.MIN)
    first = int(key.item())
    if first == 1 << 40:
        return False
    code = first % 64
    if not model.stop_training:
        model.stop_training = True
        model.stop_reason = _STOP_REASONS[code - 1] if 0 < code <= len(_STOP_REASONS) else "stopped"
    return True


def sync_generator(model, generator):
    """Every rank draws its data order from rank 0's generator state (one broadcast per fit), however each
    process was seeded."""
    if shard_of(model) is None:
        return
    state = generator.get_state().to(_comm_device())
    dist.broadcast(state, 0)
    generator.set_state(state.cpu())


# ----------------------------------------------------------------------------------------- predict

def gather_predictions(model, source, result, steps):
    """``predict``'s outputs of every rank joined in the order one process gives (every rank gets all).

    ``source`` says how the ``steps`` batches were shared out (``gather_plan``): contiguous shares of each
    global batch (in-memory data) or every ``world``-th sample (a sharded Dataset or DataLoader). The
    rows of empty shares are dropped; each output is gathered in one ``all_gather``, padded to the
    longest rank's rows.
    """
    shard = shard_of(model)
    if shard is None or getattr(source, "shard", None) is None:
        return result
    positions, counts_, kept = source.gather_plan(steps)
    order = torch.argsort(positions)
    comm = _comm_device()
    longest = max(counts_)

    def join(t):
        mine = t.index_select(0, kept.to(t.device)) if t.shape[0] != kept.numel() else t
        padded = torch.zeros((longest,) + tuple(mine.shape[1:]), dtype=mine.dtype, device=comm)
        padded[:mine.shape[0]] = mine.to(comm)
        pieces = [torch.empty_like(padded) for _ in range(shard.world)]
        dist.all_gather(pieces, padded)
        joined = torch.cat([p[:c] for p, c in zip(pieces, counts_)])
        return joined.index_select(0, order.to(comm)).to(t.device)

    from .data import map_structure

    return map_structure(join, result)


# ----------------------------------------------------------------------------------------- full states

def _dcp():
    from torch.distributed.checkpoint import state_dict as dcp_state

    return dcp_state


def full_state_dict(model, everywhere=False):
    """The model's ``state_dict`` with whole tensors: for a sharded model, gathered (a collective: every
    rank calls it) onto the CPU of rank 0 (others get ``{}``), or of every rank with ``everywhere``."""
    if not is_sharded(model):
        return {k: v.detach() for k, v in model.state_dict().items()}
    dcp = _dcp()
    options = dcp.StateDictOptions(full_state_dict=True, cpu_offload=not everywhere)
    state = dcp.get_model_state_dict(model, options=options)
    return {k: v.detach().cpu() if everywhere else v for k, v in state.items()}


def load_full_state_dict(model, state, strict=True):
    """Load ``state`` (whole tensors, or the model's own sharded ones) into ``model``."""
    if not is_sharded(model) or not any(type(v).__name__ != "DTensor" for v in state.values()):
        return model.load_state_dict(state, strict=strict)
    dcp = _dcp()
    return dcp.set_model_state_dict(model, state, options=dcp.StateDictOptions(full_state_dict=True, strict=strict))


def full_optimizer_state(model, optimizer):
    """``optimizer.state_dict()`` with whole tensors, keyed as torch keys it (parameter indices), so one
    process loads it; a collective for a sharded model (rank 0 gets it, others an empty dict)."""
    if not is_sharded(model) or not optimizer.state:
        return optimizer.state_dict()
    dcp = _dcp()
    state = dcp.get_optimizer_state_dict(model, optimizer,
                                         options=dcp.StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not state:
        return {}
    index = {}
    for group in state["param_groups"]:
        for fqn in group["params"]:
            index[fqn] = len(index)
    return {"state": {index[k]: v for k, v in state["state"].items()},
            "param_groups": [dict(g, params=[index[f] for f in g["params"]]) for g in state["param_groups"]]}


def load_optimizer_state(model, optimizer, state):
    """Load :func:`full_optimizer_state`'s output (or a single process's ``optimizer.state_dict()``)."""
    if not is_sharded(model) or not state.get("state"):
        return optimizer.load_state_dict(state)
    names = {id(p): n for n, p in model.named_parameters()}
    fqns = [names[id(p)] for g in optimizer.param_groups for p in g["params"]]
    keyed = {"state": {fqns[i]: v for i, v in state["state"].items()},
             "param_groups": [dict(g, params=[fqns[i] for i in g["params"]]) for g in state["param_groups"]]}
    dcp = _dcp()
    dcp.set_optimizer_state_dict(model, optimizer, keyed, options=dcp.StateDictOptions(full_state_dict=True))


def full_tensors(value):
    """``value`` (dicts, lists of tensors) with every sharded tensor gathered whole on the CPU (a
    collective per sharded tensor: every rank calls it)."""
    if type(value).__name__ == "DTensor":
        return value.full_tensor().cpu()
    if isinstance(value, dict):
        return {k: full_tensors(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(full_tensors(v) for v in value)
    return value


def move_optimizer(model, optimizer, param_names, state):
    """Point a torch optimizer built before FSDP2 sharded the model at the sharded parameters (found by
    name), and put back its ``state`` (``state_dict()`` from before) on the shards. The user's optimizer,
    and a scheduler built on it, stay the objects they hold."""
    params = dict(model.named_parameters())
    for group, names in zip(optimizer.param_groups, param_names):
        group["params"] = [params[name] for name in names]
    optimizer.state.clear()
    if state.get("state"):
        load_optimizer_state(model, optimizer, state)
