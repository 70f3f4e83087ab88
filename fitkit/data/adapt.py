"""fit's, evaluate's and predict's data: any x form turned into a batch source, and fit's validation data."""

import math
import os

import torch

from ..py_dataset import PyDatasetSource, is_sequence
from .arrays import ArraySource
from .class_weights import apply_class_weight, class_weight_table
from .iterables import IterableSource
from .sharding import _shardable, shard_loader
from .structures import (_FILE_HINT, InputCasts, _described, is_array_like, is_map_dataset, map_structure,
                         num_samples, tensors, unpack_x_y_sample_weight)


def _in_memory(x, y, sample_weight):
    """A TensorDataset's tensors as (x, y, sw), so it takes the fast in-memory path; others as given."""
    if isinstance(x, torch.utils.data.TensorDataset) and y is None and sample_weight is None:
        return unpack_x_y_sample_weight(x.tensors, "x: a TensorDataset holds")
    return x, y, sample_weight


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
    if is_map_dataset(x) and _length(x) == 0:
        raise ValueError(f"{role}: got an empty {type(x).__name__} (len 0); expected at least one sample")
    if is_map_dataset(x) and shard is not None:
        loader, layout = shard_loader(x, None, batch_size or 32, shuffle, generator, shard)
        return IterableSource(loader, device=device, steps=steps, class_weight=table, casts=casts, shard=shard,
                              layout=layout, role=role)
    if is_map_dataset(x):
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
        if isinstance(x, torch.utils.data.DataLoader) and is_map_dataset(x.dataset) and _length(x.dataset) == 0:
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
