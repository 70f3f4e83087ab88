"""A Dataset or DataLoader read by more than one process: torch's ``DistributedSampler`` without its padding,
and the layout that keeps every rank's passes in step (see :mod:`fitkit.distributed`)."""

import math
import warnings

import torch

from .structures import is_map_dataset


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


def _shardable(loader):
    """Whether a DataLoader reads a map-style dataset through torch's own samplers, which fitkit may swap for
    a :class:`ShardSampler` (a sampler or batch sampler of the user's own is used as it is)."""
    sampler = loader.sampler
    plain = isinstance(sampler, torch.utils.data.SequentialSampler) or (
        type(sampler) is torch.utils.data.RandomSampler and not sampler.replacement
        and sampler.num_samples == len(loader.dataset))
    return plain and is_map_dataset(loader.dataset) and loader.batch_size is not None \
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
