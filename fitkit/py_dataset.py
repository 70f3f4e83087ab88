"""Keras's ``PyDataset`` (alias ``Sequence``): a dataset that hands out whole batches by index, and the
batch source fit reads it with.

A ``PyDataset`` subclass (or any object with ``__len__`` and ``__getitem__`` and no ``__iter__`` that is
not a torch ``Dataset``: an old-style Keras ``Sequence``) returns batch ``i`` for ``i`` in
``0 .. len - 1``; fit asks for every index once per pass, in a new random order each pass when
``shuffle=True`` (fit's default, as Keras 3 does; drawn from the model's own generator, so runs repeat),
calls ``on_epoch_begin()`` / ``on_epoch_end()`` around every epoch, and with ``workers > 1`` reads
batches ahead in that many threads, keeping at most ``max_queue_size`` of them, in order.

``use_multiprocessing=True`` reads in threads too, and says so once: processes would need the dataset
pickled into each worker and clash with CUDA and with fork-unsafe libraries; a torch
``DataLoader(num_workers=...)`` is the way to load in processes with torch, and fit takes one as it is.
"""

import collections
import itertools
import warnings

import torch


class PyDataset:
    """Base class for a dataset of whole batches, as Keras's ``keras.utils.PyDataset``.

    Implement ``__len__`` (the number of batches; or a ``num_batches`` property returning None for an
    endless dataset) and ``__getitem__(index)`` returning a batch ``(x,)``, ``(x, y)`` or
    ``(x, y, sample_weight)``; optionally ``on_epoch_begin()`` / ``on_epoch_end()``.

    workers: threads that read batches ahead (1: none). use_multiprocessing: accepted for Keras code;
    fitkit reads in threads (see the module's docstring). max_queue_size: batches read ahead at most.

    >>> class Batches(fitkit.utils.PyDataset):
    ...     def __init__(self, x, y, batch_size, **kwargs):
    ...         super().__init__(**kwargs)
    ...         self.x, self.y, self.batch_size = x, y, batch_size
    ...     def __len__(self):
    ...         return math.ceil(len(self.x) / self.batch_size)
    ...     def __getitem__(self, i):
    ...         s = slice(i * self.batch_size, (i + 1) * self.batch_size)
    ...         return self.x[s], self.y[s]
    >>> model.fit(Batches(x, y, 32, workers=4), epochs=5)     # doctest: +SKIP
    """

    def __init__(self, workers=1, use_multiprocessing=False, max_queue_size=10):
        self._workers = workers
        self._use_multiprocessing = use_multiprocessing
        self._max_queue_size = max_queue_size

    def _warn_if_super_not_called(self):
        if not all(hasattr(self, name) for name in ("_workers", "_use_multiprocessing", "_max_queue_size")):
            self.__dict__.setdefault("_workers", 1)
            self.__dict__.setdefault("_use_multiprocessing", False)
            self.__dict__.setdefault("_max_queue_size", 10)
            warnings.warn("Your `PyDataset` class should call `super().__init__(**kwargs)` in its constructor. "
                          "`**kwargs` can include `workers`, `use_multiprocessing`, `max_queue_size`. Do not "
                          "pass these arguments to `fit()`, as they will be ignored.", stacklevel=3)

    @property
    def workers(self):
        self._warn_if_super_not_called()
        return self._workers

    @workers.setter
    def workers(self, value):
        self._workers = value

    @property
    def use_multiprocessing(self):
        self._warn_if_super_not_called()
        return self._use_multiprocessing

    @use_multiprocessing.setter
    def use_multiprocessing(self, value):
        self._use_multiprocessing = value

    @property
    def max_queue_size(self):
        self._warn_if_super_not_called()
        return self._max_queue_size

    @max_queue_size.setter
    def max_queue_size(self, value):
        self._max_queue_size = value

    def __getitem__(self, index):
        raise NotImplementedError(f"{type(self).__name__} must implement __getitem__(index) returning a batch")

    @property
    def num_batches(self):
        """The number of batches (``len(self)``), or None for an endless dataset."""
        if hasattr(self, "__len__"):
            return len(self)
        raise NotImplementedError(f"{type(self).__name__} must implement __len__ (or a num_batches property "
                                  "returning None for an endless dataset)")

    def __iter__(self):
        count = self.num_batches
        for index in range(count) if count is not None else itertools.count():
            yield self[index]

    def on_epoch_begin(self):
        """Called at the start of every epoch."""

    def on_epoch_end(self):
        """Called at the end of every epoch."""


Sequence = PyDataset  # Keras 3 exports both names for the same class


def is_sequence(x):
    """Whether ``x`` is read as a Keras ``PyDataset`` / ``Sequence``: a PyDataset, or an object with
    ``__len__`` and ``__getitem__`` but no ``__iter__`` that is not a torch Dataset (one sample per index)."""
    if isinstance(x, PyDataset):
        return True
    return (hasattr(x, "__len__") and hasattr(x, "__getitem__") and not hasattr(x, "__iter__")
            and not isinstance(x, (torch.utils.data.Dataset, str, bytes, dict)))


_WARNED_PROCESSES = set()


class PyDatasetSource:
    """The batches of a PyDataset for fit / evaluate / predict (see :mod:`fitkit.epoch_iterator`).

    ``convert(item)`` turns what ``__getitem__`` returned into a batch on the device, in Keras's form.
    """

    def __init__(self, dataset, convert, *, shuffle=False, generator=None, steps=None):
        self.dataset = dataset
        self.convert = convert
        self.shuffle = shuffle
        self.generator = generator
        self.steps = steps
        self.exhausted = False  # a PyDataset starts again from index 0 every pass
        self.example = None

    @property
    def num_batches(self):
        dataset = self.dataset
        return dataset.num_batches if isinstance(dataset, PyDataset) else len(dataset)

    @property
    def num_steps(self):
        return self.steps if self.steps is not None else self.num_batches

    def _settings(self):
        if not isinstance(self.dataset, PyDataset):
            return 1, 10
        workers, processes, depth = self.dataset.workers, self.dataset.use_multiprocessing, \
            self.dataset.max_queue_size
        if processes and type(self.dataset) not in _WARNED_PROCESSES:
            _WARNED_PROCESSES.add(type(self.dataset))
            warnings.warn(f"{type(self.dataset).__name__}: use_multiprocessing=True reads batches in {workers} "
                          "threads in fitkit, not processes; to load in processes, give fit a torch "
                          "DataLoader(num_workers=...).", UserWarning, stacklevel=5)
        return max(1, int(workers or 1)), max(1, int(depth or 1))

    def peek(self):
        """The first batch (``dataset[0]``), converted, to check before training starts; a ValueError when
        the dataset holds no batch."""
        if self.num_batches == 0:
            raise ValueError(f"x: the {type(self.dataset).__name__} holds no batches (len 0); expected at least one")
        return self.convert(self.dataset[0])

    def release(self):
        """Drop the reference to the dataset (fit calls it when it ends, also by an exception)."""
        self.dataset = None
        self.exhausted = True

    def new_pass(self):
        """An iterator over a pass: every index once (shuffled with ``shuffle``), converted."""
        count = self.num_batches
        if count is None:
            order = itertools.count()
        elif self.shuffle:
            order = torch.randperm(count, generator=self.generator).tolist()
        else:
            order = range(count)
        workers, depth = self._settings()
        items = self._ahead(order, workers, depth) if workers > 1 else map(self.dataset.__getitem__, order)
        return self._batches(items)

    def _batches(self, items):
        for item in items:
            batch = self.convert(item)
            if self.example is None:
                x = batch[0] if isinstance(batch, tuple) else batch
                self.example = _first_rows(x)
            yield batch

    def _ahead(self, order, workers, depth):
        """``dataset[i]`` for ``i`` in ``order``, read by ``workers`` threads at most ``depth`` ahead, in order."""
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fitkit-pydataset")
        pending = collections.deque()
        order = iter(order)
        try:
            for index in itertools.islice(order, depth):
                pending.append(pool.submit(self.dataset.__getitem__, index))
            while pending:
                item = pending.popleft().result()
                for index in itertools.islice(order, 1):
                    pending.append(pool.submit(self.dataset.__getitem__, index))
                yield item
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def on_epoch_begin(self):
        hook = getattr(self.dataset, "on_epoch_begin", None)
        if callable(hook):
            hook()

    def on_epoch_end(self):
        hook = getattr(self.dataset, "on_epoch_end", None)
        if callable(hook):
            hook()


def _first_rows(x):
    if isinstance(x, dict):
        return {k: _first_rows(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_first_rows(v) for v in x)
    return x[:1] if isinstance(x, torch.Tensor) else x
