"""Batches from a ``DataLoader``, ``Dataset``, generator or any iterable, converted and moved one at a time."""

import collections.abc
import itertools

import torch

from .. import checkpoint
from ..epoch_iterator import epoch_batches
from .class_weights import apply_class_weight
from .sharding import LoaderLayout
from .structures import (InputCasts, check_batch_samples, is_map_dataset, map_structure, move,
                         pack_x_y_sample_weight, tensors, unpack_x_y_sample_weight)


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
        if isinstance(loader, torch.utils.data.DataLoader) and is_map_dataset(loader.dataset) \
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
        return epoch_batches(self, skip)
