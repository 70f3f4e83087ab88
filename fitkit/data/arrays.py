"""In-memory data (arrays, tensors and structures of them): batches without a ``DataLoader``.

Converted once, placed on the device once; each pass draws one permutation from the model's own
``torch.Generator`` and gathers its batches (see :class:`ArraySource`). Under more than one process each
rank takes its contiguous share of every global batch of the same permutation.
"""

import math

import torch

from ..epoch_iterator import epoch_batches
from .structures import _rebuilder, flatten, map_structure, num_samples, pack_x_y_sample_weight


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
        return epoch_batches(self, skip)
