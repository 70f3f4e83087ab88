"""Everything a user can pass as x / y / validation_data, turned into batches on the model's device.

In-memory data (NumPy arrays, tensors, and lists/tuples/dicts of them) never goes through a
``DataLoader``: it is converted once, placed on the device once, and each epoch draws one permutation
from the model's own ``torch.Generator`` and gathers batches with ``index_select``. A ``DataLoader``,
``Dataset``, generator or other iterable is iterated as it is, each batch moved to the device.

A batch is what Keras passes to ``train_step``: ``(x, y)``, ``(x, y, sample_weight)`` when there are
weights, ``x`` alone without targets (``(x,)`` when x is a tuple or list of inputs); see
:func:`pack_x_y_sample_weight` and :func:`unpack_x_y_sample_weight`.

Under more than one process (a :class:`fitkit.distributed.Shard` given as ``shard``) ``batch_size`` is
the global batch: in-memory data gives each rank a contiguous share of every batch of the same
permutation; a Dataset, or a DataLoader with torch's own samplers, is read through a
:class:`ShardSampler` (torch's ``DistributedSampler``, without its padding) with ``batch_size / world``
per rank. Every rank runs the same number of batches: a rank whose share is empty runs its step on one
sample that the shard marks as counting for nothing. Each batch then travels as a
:class:`fitkit.distributed.ShardedBatch` holding its share's sizes, which the step reads.
"""

import collections.abc
import itertools
import math
import os
import warnings

import numpy as np
import torch

from . import checkpoint
from .epoch_iterator import EpochIterator
from .py_dataset import PyDatasetSource, is_sequence

_ARRAY_KINDS = (np.ndarray, torch.Tensor)


# ----------------------------------------------------------------------------------------- structures

def flatten(structure):
    """The tensors of a tensor / list / tuple / dict structure, in a fixed order."""
    if structure is None:
        return []
    if isinstance(structure, dict):
        return [t for key in structure for t in flatten(structure[key])]
    if isinstance(structure, (list, tuple)):
        return [t for item in structure for t in flatten(item)]
    return [structure]


def _rebuilder(structure):
    """A function that puts a flat list of tensors back into the shape of ``structure``."""
    if structure is None:
        return lambda leaves, i=0: (None, i)
    if isinstance(structure, dict):
        parts = [(key, _rebuilder(value)) for key, value in structure.items()]

        def rebuild(leaves, i=0):
            out = {}
            for key, part in parts:
                out[key], i = part(leaves, i)
            return out, i
        return rebuild
    if isinstance(structure, (list, tuple)):
        parts = [_rebuilder(item) for item in structure]
        kind = type(structure) if type(structure) in (list, tuple) else tuple

        def rebuild(leaves, i=0):
            out = []
            for part in parts:
                value, i = part(leaves, i)
                out.append(value)
            return kind(out), i
        return rebuild
    return lambda leaves, i=0: (leaves[i], i + 1)


def map_structure(fn, structure):
    """``structure`` with ``fn`` applied to every tensor in it."""
    if structure is None:
        return None
    if isinstance(structure, dict):
        return {key: map_structure(fn, value) for key, value in structure.items()}
    if isinstance(structure, (list, tuple)):
        return type(structure)(map_structure(fn, item) for item in structure) \
            if type(structure) in (list, tuple) else tuple(map_structure(fn, item) for item in structure)
    return fn(structure)


def is_array_like(value):
    """Whether ``value`` is in-memory data: an array, a tensor, or a list/tuple/dict of them."""
    if isinstance(value, _ARRAY_KINDS) or (hasattr(value, "__array__") and not isinstance(value, (str, bytes))):
        return True
    if isinstance(value, dict):
        return len(value) > 0 and all(is_array_like(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        if len(value) == 0:
            return False
        if all(isinstance(v, (int, float, bool, np.number)) for v in value):
            return True  # a plain list of numbers, such as labels
        return all(is_array_like(v) for v in value)
    return False


def to_tensor(value, name, float_dtype=torch.float32):
    """A tensor from an array-like; float64 data (NumPy or torch) becomes ``float_dtype`` (the model's float
    dtype; float32 by default), as Keras casts float64 arrays to floatx."""
    if isinstance(value, torch.Tensor):
        return value.to(float_dtype) if value.dtype == torch.float64 and float_dtype != torch.float64 else value
    if isinstance(value, (str, bytes, os.PathLike)):
        raise ValueError(f"{name}: got {_described(value)}; expected numbers (a NumPy array or a torch tensor)"
                         f"{_FILE_HINT if not isinstance(value, bytes) else ''}")
    if not isinstance(value, np.ndarray):
        try:
            value = np.asarray(value)
        except Exception as exc:
            raise ValueError(f"{name}: could not convert a {type(value).__name__} to an array ({exc}); "
                             "expected a NumPy array, a torch tensor, or a list/tuple/dict of them") from None
    if value.dtype == np.float64 and float_dtype == torch.float32:
        value = value.astype(np.float32)
    elif value.dtype == object or value.dtype.kind in "USO":
        raise TypeError(f"{name}: got an array of dtype {value.dtype}; expected numbers "
                        "(encode strings and objects as numbers first)")
    if not value.flags.writeable or not value.flags.c_contiguous:
        value = np.ascontiguousarray(value).copy()
    tensor = torch.from_numpy(value)
    return tensor.to(float_dtype) if tensor.dtype == torch.float64 and float_dtype != torch.float64 else tensor


_FILE_HINT = ("; a file path is not data: load it first, e.g. np.load(path) or "
              "pandas.read_csv(path).to_numpy()")


def _described(value):
    if isinstance(value, os.PathLike):
        return f"a path {os.fspath(value)!r}"
    return f"a {type(value).__name__} {value!r}"


def tensors(structure, name, float_dtype=torch.float32):
    """``structure`` with every array-like leaf converted to a tensor (float64 to ``float_dtype``)."""
    if structure is None:
        return None
    if isinstance(structure, dict):
        return {k: tensors(v, f"{name}[{k!r}]", float_dtype) for k, v in structure.items()}
    if isinstance(structure, (list, tuple)) and not all(
            isinstance(v, (int, float, bool, np.number)) for v in structure):
        return type(structure)(tensors(v, f"{name}[{i}]", float_dtype) for i, v in enumerate(structure))
    return to_tensor(structure, name, float_dtype)


class InputCasts:
    """How data is cast for a model, as Keras's float ``Input`` and floatx casts do.

    ``float_dtype``: what float64 data (x, y and sample weights, from any source) becomes: the dtype of
    the model's first floating parameter (float32 when it has none). ``int_x_to_float``: an integer x (a
    single tensor) fed to a model that computes in float is cast to ``float_dtype``, with one warning
    naming the cast, unless the model's first layer takes integer ids (an ``nn.Embedding``): tutorials
    feed ``np.array([range(100), ...])`` to Dense layers, and Keras's float Input casts it.

    >>> InputCasts.for_model(torch.nn.Linear(3, 1)).int_x_to_float
    True
    """

    def __init__(self, float_dtype=torch.float32, int_x_to_float=False):
        self.float_dtype = float_dtype
        self.int_x_to_float = int_x_to_float
        self.warned = False

    @classmethod
    def for_model(cls, model):
        float_dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), None)
        first = next((m for m in model.modules() if next(m.children(), None) is None), None)
        takes_ids = isinstance(first, (torch.nn.Embedding, torch.nn.EmbeddingBag))
        return cls(float_dtype or torch.float32, int_x_to_float=float_dtype is not None and not takes_ids)

    def x(self, x, role="x"):
        """``x`` cast for the model: an integer single tensor becomes float (one warning per fit)."""
        if not self.int_x_to_float or not isinstance(x, torch.Tensor) or x.is_floating_point() \
                or x.is_complex() or x.dtype == torch.bool:
            return x
        if not self.warned:
            self.warned = True
            warnings.warn(f"{role}: integer inputs ({x.dtype}) are cast to {self.float_dtype}, the dtype the "
                          "model computes in, as Keras's float Input does; pass float data to skip the cast "
                          "(integer ids for an nn.Embedding first layer stay integer).", UserWarning,
                          stacklevel=5)
        return x.to(self.float_dtype)


def num_samples(structure, name):
    """The shared first dimension of every tensor in ``structure``; a clear error when they differ."""
    sizes = {t.shape[0] if t.dim() > 0 else None for t in flatten(structure)}
    if None in sizes:
        raise ValueError(f"{name}: got a 0-dimensional value; expected arrays whose first axis is the samples")
    if len(sizes) != 1:
        raise ValueError(f"{name}: the arrays have different numbers of samples {sorted(sizes)}; "
                         "expected one shared first dimension")
    return sizes.pop()


def check_batch_samples(x, y, sample_weight, role="x"):
    """Raise a ValueError unless the x, y and sample_weight of one batch share a non-zero first dimension.

    Run on every batch of an iterable (a shape read, no device work): a generator whose y has one row
    for a batch of 32 inputs would otherwise be broadcast by the loss.
    """
    if type(x) is torch.Tensor and type(y) is torch.Tensor and sample_weight is None \
            and x.dim() and y.dim() and x.shape[0] == y.shape[0] != 0:
        return  # the usual batch, decided without building lists
    sizes = []
    for part, value in (("x", x), ("y", y), ("sample_weight", sample_weight)):
        for t in flatten(value):
            sizes.append((part, t.shape[0] if t.dim() else None))
    if any(n is None for _, n in sizes):
        raise ValueError(f"{role}: a batch holds a 0-dimensional value; expected arrays whose first axis is "
                         "the batch's samples")
    if len({n for _, n in sizes}) > 1:
        found = ", ".join(f"{n} in {part}" for part, n in dict.fromkeys(sizes))
        raise ValueError(f"{role}: a batch holds different numbers of samples ({found}); expected x, y and "
                         "sample_weight of a batch to share their first dimension")
    if sizes and sizes[0][1] == 0:
        raise ValueError(f"{role}: a batch holds 0 samples; expected at least one sample per batch")


def is_numpy_input(x):
    """Whether the user gave NumPy data (predict then answers in NumPy)."""
    leaves = flatten(x) if isinstance(x, (list, tuple, dict)) else [x]
    return bool(leaves) and all(isinstance(t, np.ndarray) or (hasattr(t, "__array__") and not
                                isinstance(t, torch.Tensor)) for t in leaves)


def move(structure, device, non_blocking=False):
    """``structure`` on ``device`` (tensors already there are returned as they are)."""
    if structure is None:
        return None
    return map_structure(lambda t: t.to(device, non_blocking=non_blocking)
                         if isinstance(t, torch.Tensor) else t, structure)


# ----------------------------------------------------------------------------------------- weights

class ClassWeights:
    """``class_weight`` as two sorted tensors, class indices and their weights, looked up per sample with
    ``searchsorted``: no table as long as the largest class index, no host sync; a label not listed
    (a negative one too) weighs 1.

    >>> ClassWeights({0: 1.0, 10**9: 3.0}).lookup(torch.tensor([0, 5, -1, 10**9])).tolist()
    [1.0, 1.0, 1.0, 3.0]
    """

    def __init__(self, class_weight, name="class_weight"):
        if not isinstance(class_weight, dict) or not class_weight:
            raise ValueError(f"{name}: got {class_weight!r}; expected a non-empty dict class index -> weight")
        for key, value in class_weight.items():
            if isinstance(key, bool) or not isinstance(key, (int, np.integer)) or key < 0:
                raise ValueError(f"{name}: got the key {key!r}; expected non-negative integer class indices")
            if not isinstance(value, (int, float, np.number)) or isinstance(value, bool):
                raise ValueError(f"{name}: got the weight {value!r} for class {key}; expected a number")
        keys = sorted(int(k) for k in class_weight)
        self.keys = torch.tensor(keys, dtype=torch.int64)
        self.values = torch.tensor([float(class_weight[k]) for k in keys], dtype=torch.float32)

    def lookup(self, idx):
        """The weight of each class index in ``idx`` (any shape), on ``idx``'s device."""
        if self.keys.device != idx.device:
            self.keys, self.values = self.keys.to(idx.device), self.values.to(idx.device)
        idx = idx.long()
        pos = torch.searchsorted(self.keys, idx).clamp_(max=self.keys.numel() - 1)
        return torch.where(self.keys[pos] == idx, self.values[pos], torch.ones((), device=idx.device))


def class_weight_table(class_weight, name="class_weight"):
    """``class_weight`` checked and ready to look up (:class:`ClassWeights`)."""
    return ClassWeights(class_weight, name)


def class_indices(y):
    """Class index per sample: integer labels as they are, one-hot rows by argmax, 0/1 floats rounded."""
    if y.dim() > 1 and y.shape[-1] > 1:
        return y.argmax(dim=-1)
    if y.dim() > 1:
        y = y.reshape(y.shape[0])
    return y if not y.is_floating_point() else y.round().long()


def apply_class_weight(y, sample_weight, table):
    """Per-sample weights: the class weights of ``y`` times ``sample_weight`` when there is one."""
    if isinstance(y, (list, tuple, dict)):
        raise ValueError("class_weight: got a model with several outputs; class_weight needs a single "
                         "target array (use sample_weight instead)")
    if y.dim() > 2 or y.dim() == 0:
        raise ValueError(f"class_weight: got targets of shape {tuple(y.shape)}; class weights need class labels "
                         "of shape (N,) or (N, 1), or one-hot targets (N, C), as in Keras; weight other targets "
                         "with sample_weight")
    weights = table.lookup(class_indices(y))
    return weights if sample_weight is None else weights * sample_weight


# ----------------------------------------------------------------------------------------- sources

#: Training data up to this size is gathered into one shuffled copy per pass and its batches are
#: slices (views: the cheapest a step can get); larger data is gathered batch by batch with
#: ``index_select``, so shuffling never holds a second copy of it.
GATHER_PASS_BYTES = 64 * 2**20


class ArraySource:
    """Batches of in-memory tensors: one permutation per pass, then slices of the pass's gathered copy
    (data up to ``GATHER_PASS_BYTES``) or ``index_select`` per batch (larger data).

    :meth:`new_pass` draws the permutation and returns an iterator over the pass's batches; which of them
    make an epoch (``steps``, steps_per_epoch, below or above one pass) is Keras's EpochIterator's rule,
    in :mod:`fitkit.epoch_iterator`.
    """

    def __init__(self, x, y=None, sample_weight=None, *, batch_size=32, shuffle=False, generator=None,
                 device=None, steps=None, shard=None, role="x"):
        self.x, self.y, self.sample_weight = x, y, sample_weight
        self.shard = shard  # this rank's part of each batch (more than one process), else None
        self.role = role
        self.n = num_samples((x, y, sample_weight), "x, y and sample_weight" if role == "x" else role)
        if self.n == 0:
            raise ValueError(f"{role}: got arrays of 0 samples; expected at least one sample")
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.generator = generator
        self.steps = steps
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.batches_per_pass = max(1, math.ceil(self.n / batch_size))
        self._leaves = flatten((x, y, sample_weight))
        self._rebuild = _rebuilder((x, y, sample_weight))
        self._rebuild_batch = _rebuilder(pack_x_y_sample_weight(x, y, sample_weight))  # same leaves, Keras's form
        self._per_batch_transfer = False
        self._place()
        nbytes = sum(t.numel() * t.element_size() for t in self._leaves)
        self._gather_pass = not self._per_batch_transfer and nbytes <= GATHER_PASS_BYTES
        self._perm = None
        self._pass = None  # the pass's leaves in batch order (sliced per batch), or None: index_select _perm
        self._cursor = self.n  # a new pass starts on the first batch
        self.pass_rng_state = None

    def _place(self):
        """Move the data to the device once, or keep it on the host (pinned) when it would not fit."""
        if self.device.type == "cpu":
            return
        nbytes = sum(t.numel() * t.element_size() for t in self._leaves)
        fits = True
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            fits = nbytes < 0.4 * free
        if fits:
            self._leaves = [t.to(self.device) for t in self._leaves]
        else:
            self._leaves = [t.pin_memory() for t in self._leaves]
            self._per_batch_transfer = True

    @property
    def num_batches(self):
        """Batches in one pass."""
        return self.batches_per_pass

    @property
    def num_steps(self):
        """Batches per epoch."""
        return self.steps if self.steps is not None else self.batches_per_pass

    @property
    def example(self):
        """The first sample of x (batch of one) for summary(): a copy, so it holds none of the data."""
        x = self._rebuild([t[:1] for t in self._leaves])[0][0]
        return map_structure(lambda t: t.clone(), x)

    def release(self):
        """Drop every reference to the data (fit calls it when it ends, also by an exception)."""
        self.x = self.y = self.sample_weight = None
        self._leaves, self._pass, self._perm = [], None, None

    def first_batch(self):
        """The first ``batch_size`` samples in their stored order ``(x, y, sample_weight)``, on the device."""
        return self._rebuild([t[:self.batch_size].to(self.device) for t in self._leaves])[0]

    def _start_pass(self):
        self._cursor = 0
        self._perm, self._pass = None, None  # drop the last pass's copy before gathering the next
        if not self.shuffle:
            self._pass = self._leaves
            return
        # Saved so an exact resume can redraw the same permutation (checkpoint.py, BackupAndRestore).
        self.pass_rng_state = self.generator.get_state() if self.generator is not None else None
        perm = torch.randperm(self.n, generator=self.generator)
        perm = perm.to(self._leaves[0].device) if self._leaves[0].device.type != "cpu" else perm
        if self._gather_pass and self.shard is not None:
            perm = perm[self.shard.positions(self.n, self.batch_size)]  # gather this rank's samples alone
        if self._gather_pass:
            self._pass = [t.index_select(0, perm) for t in self._leaves]
        else:
            self._perm = perm

    def map_targets(self, fn):
        """Replace the targets (``y``, when it is one tensor) by ``fn(y)``, in the data and in the running
        pass's copy, so the batches still to come carry them; ``fn`` returns None to leave them."""
        if not isinstance(self.y, torch.Tensor):
            return
        k = len(flatten(self.x))  # the leaves are x's, then y, then sample_weight
        new = fn(self._leaves[k])
        if new is None:
            return
        if self._pass is not None and self._pass is not self._leaves:
            self._pass[k] = fn(self._pass[k])
        self._leaves[k] = new

    def state_dict(self):
        return {"cursor": self._cursor, "pass_rng_state": self.pass_rng_state}

    def load_state_dict(self, state):
        """Go back to a saved position: redraw the pass's permutation from its saved RNG state."""
        if state.get("pass_rng_state") is not None and self.generator is not None:
            self.generator.set_state(state["pass_rng_state"])
            self._start_pass()
        elif self.shuffle is False:
            self._start_pass()
        self._cursor = state["cursor"]

    def new_pass(self):
        """Draw the next pass's order and return an iterator over its batches, in Keras's form."""
        self._start_pass()
        return self._batches()

    def resume_pass(self):
        """The rest of the pass :meth:`load_state_dict` went back to."""
        return self._batches()

    def _batches(self):
        bs, n, shard = self.batch_size, self.n, self.shard
        rebuild, transfer = self._rebuild_batch, self._per_batch_transfer
        while self._cursor < n:
            start = self._cursor
            stop = self._cursor = min(start + bs, n)
            if shard is not None:
                batch = self._share(start, stop)
            elif self._pass is not None:  # read each batch: map_targets may replace it mid-pass
                batch = [t[start:stop] for t in self._pass]
            else:
                idx = self._perm[start:stop]
                batch = [t.index_select(0, idx) for t in self._leaves]
            if transfer:
                batch = [t.to(self.device, non_blocking=True) for t in batch]
            yield rebuild(batch)[0] if shard is None else shard.tag(rebuild(batch)[0])

    def _share(self, start, stop):
        """This rank's part of the global batch ``[start, stop)`` (recorded on the shard as in flight)."""
        lo, hi = self.shard.split(start, stop)
        if lo == hi:  # an empty share: one sample, which the shard marks as counting for nothing
            return [t[:1] for t in self._leaves]
        if self._pass is self._leaves:  # not shuffled: the samples in their stored order
            return [t[lo:hi] for t in self._leaves]
        if self._pass is not None:  # the pass holds this rank's samples alone, batch after batch
            offset = (start // self.batch_size) * self.shard.share(self.batch_size)[1]
            return [t[offset:offset + hi - lo] for t in self._pass]
        idx = self._perm[lo:hi]
        return [t.index_select(0, idx) for t in self._leaves]

    def gather_plan(self, steps):
        """How ``predict``'s outputs of ``steps`` batches come together (see :func:`fitkit.distributed.
        gather_predictions`): ``(positions, counts, kept)``: the place in the output of each rank's rows in
        rank order, the rows each rank contributes, and which of this rank's rows are real samples."""
        shard, bs = self.shard, self.batch_size
        n = min(self.n, steps * bs)
        positions = [type(shard)(r, shard.world).positions(n, bs) for r in range(shard.world)]
        sizes = torch.full((n // bs,), bs, dtype=torch.long)
        if n % bs:
            sizes = torch.cat([sizes, torch.tensor([n % bs])])
        base, extra = sizes // shard.world, sizes % shard.world
        mine = base + (shard.rank < extra).long()
        rows = mine.clamp_min(1)
        kept = torch.repeat_interleave(mine > 0, rows).nonzero().reshape(-1)
        return torch.cat(positions), [len(p) for p in positions], kept

    def epoch(self, skip=0):
        """Yield one epoch of batches as fit runs them (see :mod:`fitkit.epoch_iterator`)."""
        return _epoch_batches(self, skip)


def pack_x_y_sample_weight(x, y=None, sample_weight=None):
    """The batch Keras hands to ``train_step``: ``(x, y, sample_weight)``, ``(x, y)`` without weights, and
    without targets ``x`` alone (``(x,)`` when x is a tuple or list, so that it unpacks as one input).

    >>> pack_x_y_sample_weight("x", "y")
    ('x', 'y')
    >>> pack_x_y_sample_weight(("x1", "x2"))
    (('x1', 'x2'),)
    """
    if y is None and sample_weight is None:
        return (x,) if isinstance(x, (tuple, list)) else x
    if sample_weight is None:
        return (x, y)
    return (x, y, sample_weight)


def unpack_x_y_sample_weight(data, what="data: got"):
    """``(x, y, sample_weight)`` from a batch, by Keras's rule: a tuple (or list) of one, two or three items
    is ``(x,)``, ``(x, y)`` or ``(x, y, sample_weight)``; anything else is ``x`` alone. Use it in a custom
    ``train_step`` (``fitkit.utils.unpack_x_y_sample_weight``, Keras's name).

    >>> unpack_x_y_sample_weight(("x", "y"))
    ('x', 'y', None)
    """
    if not isinstance(data, (tuple, list)):
        return data, None, None
    if len(data) == 1:
        return data[0], None, None
    if len(data) == 2:
        return data[0], data[1], None
    if len(data) == 3:
        return data[0], data[1], data[2]
    raise ValueError(f"{what} a {type(data).__name__} of {len(data)} items; expected (x,), (x, y) or "
                     "(x, y, sample_weight) (wrap several inputs in a tuple: ((x1, x2), y))")


_NONE = object()  # what peek() finds in data that holds no batch


def _generators_of(loader):
    """The torch.Generators a DataLoader (its sampler, its batch sampler's sampler) draws from."""
    found = []
    for owner in (loader, getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None),
                  getattr(getattr(loader, "batch_sampler", None), "sampler", None)):
        g = getattr(owner, "generator", None)
        if isinstance(g, torch.Generator) and all(g is not f for f in found):
            found.append(g)
    return found


def _first_of(iterable):
    """The first raw batch of a re-iterable, leaving every RNG as it was; ``_NONE`` when it has none."""
    rng = checkpoint.get_rng_state()  # the global RNGs: Python's, NumPy's, torch's (and CUDA's)
    generators = [(g, g.get_state()) for g in _generators_of(iterable)]
    try:
        loader = iterable
        samplers = (torch.utils.data.SequentialSampler, torch.utils.data.RandomSampler)
        if isinstance(loader, torch.utils.data.DataLoader) and _is_dataset(loader.dataset) \
                and loader.batch_size is not None and type(loader.sampler) in samplers:
            # The loader's first samples in storage order: no sampler draw, no worker started.
            n = len(loader.dataset)
            if n == 0:
                return _NONE
            return loader.collate_fn([loader.dataset[i] for i in range(min(loader.batch_size, n))])
        iterator = iter(iterable)
        try:
            return next(iterator, _NONE)
        finally:
            del iterator  # a multi-process loader's workers stop here
    finally:
        checkpoint.set_rng_state(rng)
        for g, state in generators:
            g.set_state(state)


class ShardSampler(torch.utils.data.DistributedSampler):
    """torch's ``DistributedSampler`` without its padding: rank ``r`` reads samples ``r, r + world, ...``
    of the pass's order (the seed plus ``set_epoch``'s epoch, as torch draws it), each sample once.

    With a per-rank batch of ``b`` the ranks' ``k``-th batches together are the ``k``-th global batch of
    ``world * b`` samples in that order, as one process would read them; a rank left with fewer batches
    runs empty shares at the end (:class:`LoaderLayout`) instead of reading repeated samples.
    """

    def __init__(self, dataset, num_replicas, rank, shuffle=True, seed=0):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=False)
        self.total_size = len(dataset)
        self.num_samples = len(range(rank, self.total_size, num_replicas))

    def __iter__(self):
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            indices = torch.randperm(len(self.dataset), generator=generator).tolist()
        else:
            indices = list(range(len(self.dataset)))
        return iter(indices[self.rank::self.num_replicas])


class LoaderLayout:
    """The batches of a :class:`ShardSampler`'s loader on every rank: how many global steps a pass has
    (rank 0's batches), and the sizes of this rank's share and of the whole global batch at each step."""

    def __init__(self, n, world, rank, batch_size, drop_last=False):
        self.n, self.world, self.batch_size, self.drop_last = n, world, batch_size, drop_last
        self._q, self._s = divmod(n, world)
        self.mine = self._q + (rank < self._s)  # this rank's samples per pass
        first = self._q + (self._s > 0)
        self.steps = first // batch_size if drop_last else math.ceil(first / batch_size)

    def local(self, k):
        size = min(self.batch_size, max(0, self.mine - k * self.batch_size))
        return 0 if self.drop_last and size < self.batch_size else size

    def total(self, k):
        b, world = self.batch_size, self.world
        if not self.drop_last:
            return min(world * b, self.n - k * world * b)
        return b * ((self._s if (self._q + 1) // b > k else 0) + ((world - self._s) if self._q // b > k else 0))


class IterableSource:
    """Batches from a DataLoader, generator or any iterable, moved to the device one at a time.

    :meth:`new_pass` is a fresh ``iter()`` of a re-iterable (a DataLoader) and the same iterator again for
    a one-shot generator, which sets ``exhausted`` once it has run dry. Which batches make an epoch
    (``steps``) is Keras's EpochIterator's rule, in :mod:`fitkit.epoch_iterator`. With a ``layout`` (a
    loader sharded by :func:`shard_loader`) every rank runs ``layout.steps`` batches a pass, the missing
    last ones as empty shares on ``shard``.
    """

    def __init__(self, iterable, *, device=None, steps=None, class_weight=None, casts=None, shard=None,
                 layout=None, role="x"):
        self.iterable = iterable
        self.role = role
        # Called on each batch's tensors before they move to the device (fit's label checks; see
        # fitkit.preflight); its ``end_epoch()``, when it has one, after each pass's last batch.
        self.batch_check = None
        self._pending = None  # the batch peek() drew from a one-shot iterator: the first one yielded
        self.layout = layout
        self.shard = shard if layout is not None else None
        self._passes = 0      # passes started (a sharded loader's sampler draws pass i's order at set_epoch(i))
        self._midway = False  # a sharded pass has started and not ended
        self._dummy = None
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.steps = steps
        self.class_weight = class_weight
        self.casts = casts or InputCasts()
        # An iterator (a generator) is one-shot; a re-iterable (a DataLoader) is asked nothing here: a
        # probe iter() would draw from the loader's generator (changing the user's shuffle order) and
        # start its worker processes.
        self.one_shot = isinstance(iterable, collections.abc.Iterator) or not hasattr(iterable, "__iter__")
        self._iterator = None
        self.exhausted = False
        self.example = None
        self.non_blocking = self.device.type == "cuda"

    @property
    def num_batches(self):
        """Batches in one pass, or None when the iterable does not say."""
        if self.layout is not None:
            return self.layout.steps
        try:
            return len(self.iterable)
        except TypeError:
            return None

    @property
    def num_steps(self):
        """Batches per epoch, or None when the iterable does not say."""
        return self.steps if self.steps is not None else self.num_batches

    def _one_shot_iterator(self):
        if self._iterator is None:
            it = self.iterable
            self._iterator = iter(it) if hasattr(it, "__iter__") else iter(it.__next__, object())
        return self._iterator

    def _raw(self):
        if not self.one_shot:
            return iter(self.iterable)
        iterator = self._one_shot_iterator()
        if self._pending is not None:  # the batch peek() drew comes first
            pending, self._pending = self._pending, None
            return itertools.chain([pending], iterator)
        return iterator

    def peek(self):
        """A first batch on the device, in Keras's form, to check before training starts.

        It changes nothing the epochs will see: a one-shot iterator's batch is kept and yielded first; a
        DataLoader over a map-style Dataset gives its first samples, collated, without a sampler or a
        worker; any other re-iterable is iterated once with every RNG (Python's, NumPy's, torch's, the
        loader's generator) put back after. A ValueError when the data holds no batch.
        """
        if self._pending is None and self.one_shot:
            if self.exhausted:
                raise ValueError(f"{self.role}: the iterator is exhausted; expected one that yields batches")
            self._pending = next(self._one_shot_iterator(), _NONE)
        raw = self._pending if self._pending is not None else _first_of(self.iterable)
        if raw is _NONE:
            self._pending = None
            raise ValueError(f"{self.role}: the {type(self.iterable).__name__} yielded no batches; expected at "
                             "least one batch of samples")
        return self.convert(raw)

    def release(self):
        """Drop every reference to the data (fit calls it when it ends, also by an exception)."""
        self.iterable = self._iterator = self._pending = self.batch_check = self._dummy = None
        self.exhausted = True

    def new_pass(self):
        """An iterator over the batches of a pass, each unpacked, converted, moved and packed as Keras's."""
        if self.layout is not None:
            return self._sharded_pass()
        return self._batches(self._raw())

    def resume_pass(self):
        """None: this source cannot seek, so the epoch iterator starts the pass again (the same order:
        see :meth:`state_dict`) and drops the batches already done."""
        return None

    def _sharded_pass(self):
        """A pass of a sharded loader, kept in step with every rank: ``layout.steps`` batches, the ones this
        rank's part ran out of as empty shares (one sample that counts for nothing)."""
        layout, shard = self.layout, self.shard
        sampler = self.iterable.sampler
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(self._passes)
        self._passes += 1
        self._midway = True
        iterator = iter(self.iterable)
        for k in range(layout.steps):
            shard.local, shard.total = layout.local(k), layout.total(k)
            try:
                item = next(iterator)
            except StopIteration:  # this rank's part ran out before the pass did
                shard.local = 0
                if self._dummy is None:
                    self._dummy = self.iterable.collate_fn([self.iterable.dataset[0]])
                item = self._dummy
            yield shard.tag(self._converted(item))
        self._midway = False
        end = getattr(self.batch_check, "end_epoch", None)
        if end is not None:
            end()

    def state_dict(self):
        """Where a sharded loader is: the pass whose order the current (or next) epoch reads."""
        if self.layout is None:
            return None
        return {"passes": self._passes - 1 if self._midway else self._passes}

    def load_state_dict(self, state):
        if self.layout is not None and state:
            self._passes = state["passes"]
            self._midway = False

    def gather_plan(self, steps):
        """As :meth:`ArraySource.gather_plan`, for a sharded loader: rank ``r`` read samples ``r, r + world, ...``."""
        layout, world = self.layout, self.shard.world
        steps = min(steps, layout.steps)
        positions = []
        for r in range(world):
            other = LoaderLayout(layout.n, world, r, layout.batch_size, layout.drop_last)
            count = sum(other.local(k) for k in range(steps))
            positions.append(torch.arange(count) * world + r)
        mine = positions[self.shard.rank].numel()
        return torch.cat(positions), [len(p) for p in positions], torch.arange(mine)

    def convert(self, item, what=None):
        """One raw batch unpacked, converted (and cast), checked (its parts' lengths, fit's label checks on
        the host), on the device, with class weights, in Keras's form."""
        x, y, sw = unpack_x_y_sample_weight(item, what or f"{self.role}: an iterable yielded")
        dtype, blocking = self.casts.float_dtype, self.non_blocking
        x, y, sw = tensors(x, self.role, dtype), tensors(y, "y", dtype), tensors(sw, "sample_weight", dtype)
        check_batch_samples(x, y, sw, self.role)
        if self.batch_check is not None:
            self.batch_check(x, y, sw)
        x = self.casts.x(move(x, self.device, blocking))
        y = move(y, self.device, blocking)
        sw = move(sw, self.device, blocking)
        if self.class_weight is not None and y is not None:
            sw = apply_class_weight(y, sw, self.class_weight)
        return pack_x_y_sample_weight(x, y, sw)

    def _converted(self, item):
        batch = self.convert(item)
        if self.example is None:
            x, _, _ = unpack_x_y_sample_weight(batch)
            self.example = map_structure(lambda t: t[:1].clone(), x)
        return batch

    def _batches(self, raw):
        for item in raw:
            yield self._converted(item)
        if self.one_shot:
            self.exhausted = True
        end = getattr(self.batch_check, "end_epoch", None)
        if end is not None:
            end()

    def epoch(self, skip=0):
        """Yield one epoch of batches as fit runs them (see :mod:`fitkit.epoch_iterator`)."""
        return _epoch_batches(self, skip)


def _epoch_batches(source, skip=0):
    """One epoch of ``source``'s batches, in order, by the EpochIterator that fit would use (kept on the
    source, so that a pass runs on into the next call with ``steps``)."""
    it = source.__dict__.get("_epoch_iterator")
    if it is None:
        it = source.__dict__["_epoch_iterator"] = EpochIterator(source)
    for _, _, batches in it.epoch(skip):
        yield from batches


# ----------------------------------------------------------------------------------------- adapt

def _is_dataset(x):
    return isinstance(x, torch.utils.data.Dataset) and not isinstance(x, torch.utils.data.IterableDataset)


def _in_memory(x, y, sample_weight):
    """A TensorDataset's tensors as (x, y, sw), so it takes the fast in-memory path; others as given."""
    if isinstance(x, torch.utils.data.TensorDataset) and y is None and sample_weight is None:
        return unpack_x_y_sample_weight(x.tensors, "x: a TensorDataset holds")
    return x, y, sample_weight


def _shardable(loader):
    """Whether a DataLoader reads a map-style dataset through torch's own samplers, which fitkit may swap for
    a :class:`ShardSampler` (a sampler or batch sampler of the user's own is used as it is)."""
    sampler = loader.sampler
    plain = isinstance(sampler, torch.utils.data.SequentialSampler) or (
        type(sampler) is torch.utils.data.RandomSampler and not sampler.replacement
        and sampler.num_samples == len(loader.dataset))
    return plain and _is_dataset(loader.dataset) and loader.batch_size is not None \
        and type(loader.batch_sampler) is torch.utils.data.BatchSampler


def shard_loader(dataset, loader, batch_size, shuffle, generator, shard):
    """``(loader, layout)``: the dataset read through a :class:`ShardSampler` with this rank's part of the
    global ``batch_size``, keeping every other setting of the user's ``loader`` (when there is one).

    The sampler's seed is drawn from the model's generator, the same on every rank.
    """
    world = shard.world
    per_rank = max(1, batch_size // world)
    if per_rank * world != batch_size:
        warnings.warn(f"batch_size: the global batch of {batch_size} does not split over {world} processes; each "
                      f"reads {per_rank} samples a step (a global batch of {per_rank * world}). Give a multiple of "
                      f"{world} to keep {batch_size}.", UserWarning, stacklevel=4)
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator).item()) if shuffle and generator is not None \
        else 0
    sampler = ShardSampler(dataset, world, shard.rank, shuffle=shuffle, seed=seed)
    settings = {}
    if loader is not None:
        names = ("num_workers", "collate_fn", "pin_memory", "drop_last", "timeout", "worker_init_fn",
                 "multiprocessing_context", "generator", "persistent_workers", "pin_memory_device", "in_order")
        settings = {name: getattr(loader, name) for name in names if hasattr(loader, name)}
        if loader.num_workers > 0:
            settings["prefetch_factor"] = loader.prefetch_factor
    sharded = torch.utils.data.DataLoader(dataset, batch_size=per_rank, sampler=sampler, **settings)
    layout = LoaderLayout(len(dataset), world, shard.rank, per_rank, bool(settings.get("drop_last", False)))
    return sharded, layout


def source(x, y=None, sample_weight=None, *, batch_size=None, shuffle=False, generator=None, device=None,
           steps=None, class_weight=None, role="x", casts=None, shard=None):
    """A batch source for any x form fit/evaluate/predict accept; ``casts`` (:class:`InputCasts`) says how
    the data is cast for the model; with ``shard``, this rank's part of it.

    >>> src = source(np.zeros((10, 3)), np.zeros(10), batch_size=4)
    >>> [tuple(b[0].shape) for b in src.epoch()]
    [(4, 3), (4, 3), (2, 3)]
    """
    table = class_weight_table(class_weight) if class_weight is not None else None
    casts = casts or InputCasts()
    x, y, sample_weight = _in_memory(x, y, sample_weight)
    if is_array_like(x):
        x = casts.x(tensors(x, role, casts.float_dtype), role)
        y = tensors(y, "y", casts.float_dtype)
        sw = tensors(sample_weight, "sample_weight", casts.float_dtype)
        if sw is not None and sw.is_floating_point() is False:
            sw = sw.float()
        if table is not None:
            if sw is not None:
                raise ValueError("class_weight: given together with sample_weight; as in Keras, use one of "
                                 "them (fold the class weights into sample_weight to combine both)")
            if y is None:
                raise ValueError("class_weight: given without y; class weights are looked up from the targets")
            sw = apply_class_weight(y, sw, table)
        return ArraySource(x, y, sw, batch_size=batch_size or 32, shuffle=shuffle, generator=generator,
                           device=device, steps=steps, shard=shard, role=role)
    if y is not None:
        raise ValueError(f"y: got a value together with x of type {type(x).__name__}; a Dataset, DataLoader "
                         "or generator yields its own targets, so y must be None")
    if sample_weight is not None:
        raise ValueError(f"sample_weight: not supported with x of type {type(x).__name__}; yield "
                         "(x, y, sample_weight) from the data instead")
    if isinstance(x, (str, bytes, os.PathLike)):
        raise ValueError(f"{role}: got {_described(x)}; expected arrays, tensors, a Dataset, a DataLoader or an "
                         f"iterable of batches{_FILE_HINT if not isinstance(x, bytes) else ''}")
    if _is_dataset(x) and _length(x) == 0:
        raise ValueError(f"{role}: got an empty {type(x).__name__} (len 0); expected at least one sample")
    if _is_dataset(x) and shard is not None:
        loader, layout = shard_loader(x, None, batch_size or 32, shuffle, generator, shard)
        return IterableSource(loader, device=device, steps=steps, class_weight=table, casts=casts, shard=shard,
                              layout=layout, role=role)
    if _is_dataset(x):
        loader = torch.utils.data.DataLoader(x, batch_size=batch_size or 32, shuffle=shuffle,
                                             generator=generator if shuffle else None)
        return IterableSource(loader, device=device, steps=steps, class_weight=table, casts=casts, role=role)
    if is_sequence(x):
        if batch_size is not None:
            raise ValueError(f"batch_size: got {batch_size} with a {type(x).__name__} (a PyDataset/Sequence), "
                             "whose items are whole batches; leave batch_size as None")
        convert = IterableSource(x, device=device, class_weight=table, casts=casts).convert
        return PyDatasetSource(x, lambda item: convert(item, f"{role}: {type(x).__name__}.__getitem__ returned"),
                               shuffle=shuffle, generator=generator, steps=steps)
    if isinstance(x, torch.utils.data.DataLoader) or isinstance(x, torch.utils.data.IterableDataset) \
            or hasattr(x, "__iter__") or hasattr(x, "__next__"):
        if batch_size is not None and isinstance(x, torch.utils.data.DataLoader):
            raise ValueError(f"batch_size: got {batch_size} with a DataLoader, which batches itself; "
                             "leave batch_size as None")
        if isinstance(x, torch.utils.data.DataLoader) and _is_dataset(x.dataset) and _length(x.dataset) == 0:
            raise ValueError(f"{role}: got a DataLoader over an empty {type(x.dataset).__name__} (len 0); "
                             "expected at least one sample")
        if isinstance(x, torch.utils.data.DataLoader) and _length(x) == 0:
            raise ValueError(f"{role}: got a DataLoader that yields no batches (drop_last=True with "
                             f"{_length(x.dataset)} samples and batch_size={x.batch_size}); expected at least one "
                             "batch: lower batch_size or pass drop_last=False")
        if shard is not None and isinstance(x, torch.utils.data.DataLoader) and _shardable(x):
            shuffled = isinstance(x.sampler, torch.utils.data.RandomSampler)
            loader, layout = shard_loader(x.dataset, x, x.batch_size, shuffled, generator, shard)
            return IterableSource(loader, device=device, steps=steps, class_weight=table, casts=casts,
                                  shard=shard, layout=layout, role=role)
        return IterableSource(x, device=device, steps=steps, class_weight=table, casts=casts, role=role)
    raise ValueError(f"{role}: got a {type(x).__name__}; expected a NumPy array, a torch tensor, a list/tuple/"
                     "dict of them, a torch Dataset, a DataLoader, a PyDataset, or a generator/iterable of batches")


def _length(dataset):
    """``len(dataset)``, or None for a Dataset without ``__len__``."""
    try:
        return len(dataset)
    except TypeError:
        return None


def split_validation(x, y, sample_weight, validation_split):
    """``(train, val)`` tuples of (x, y, sw): the last ``validation_split`` of the samples, before shuffling.

    As Keras: the training part is the first ``floor(n * (1 - validation_split))`` samples.
    """
    if isinstance(x, (str, bytes, os.PathLike)):
        raise ValueError(f"x: got {_described(x)}; expected arrays or tensors{_FILE_HINT}")
    x, y, sample_weight = _in_memory(x, y, sample_weight)
    if not is_array_like(x):
        raise ValueError(f"validation_split: only works with arrays or tensors, got x of type "
                         f"{type(x).__name__}; pass validation_data instead")
    x, y, sw = tensors(x, "x"), tensors(y, "y"), tensors(sample_weight, "sample_weight")
    n = num_samples((x, y, sw), "x, y and sample_weight")
    split_at = int(math.floor(n * (1.0 - validation_split)))
    if split_at == 0 or split_at == n:
        raise ValueError(f"validation_split: {validation_split} of {n} samples leaves "
                         f"{split_at} for training and {n - split_at} for validation; "
                         "both parts need at least one sample")

    def part(sl):
        return map_structure(lambda t: t[sl], (x, y, sw))
    return part(slice(0, split_at)), part(slice(split_at, n))


def _validation_triple(validation_data):
    """``(x, y, sw)`` of validation_data: a pair or triple of arrays, or a Dataset/DataLoader/iterable."""
    if isinstance(validation_data, (tuple, list)):
        if len(validation_data) not in (2, 3) or not is_array_like(validation_data[0]):
            raise ValueError(f"validation_data: got a {type(validation_data).__name__} of {len(validation_data)} "
                             "items; expected (x_val, y_val), (x_val, y_val, sample_weight_val), a Dataset, "
                             "a DataLoader or an iterable of batches")
        return unpack_x_y_sample_weight(validation_data, "validation_data: got")
    return validation_data, None, None


def adapt(x, y=None, sample_weight=None, *, batch_size=None, shuffle=True, class_weight=None, steps_per_epoch=None,
          validation_split=0.0, validation_data=None, validation_batch_size=None, validation_steps=None,
          generator=None, device=None, casts=None, shard=None):
    """fit's data: ``(train, validation)`` batch sources (validation None when there is none).

    ``validation_data`` wins over ``validation_split``, which takes the last samples before shuffling.

    >>> train, val = adapt(np.zeros((10, 3)), np.zeros(10), batch_size=4, validation_split=0.2)
    >>> train.num_steps, val.num_steps
    (2, 1)
    """
    if validation_data is not None:
        val = _validation_triple(validation_data)
    elif validation_split:
        (x, y, sample_weight), val = split_validation(x, y, sample_weight, validation_split)
    else:
        val = None
    train = source(x, y, sample_weight, batch_size=batch_size, shuffle=shuffle, generator=generator, device=device,
                   steps=steps_per_epoch, class_weight=class_weight, casts=casts, shard=shard)
    if val is not None:
        val = source(*val, batch_size=validation_batch_size or batch_size, device=device, steps=validation_steps,
                     role="validation_data", casts=casts, shard=shard)
    return train, val
