"""Everything a user can pass as x / y / validation_data, turned into batches on the model's device.

The package's rooms: :mod:`.structures` (nested tensors, Keras's batch forms), :mod:`.class_weights`,
:mod:`.arrays` (in-memory data), :mod:`.iterables` (DataLoaders, Datasets, generators), :mod:`.sharding`
(more than one process) and :mod:`.adapt` (any x form to a source; fit's validation data).

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

from .adapt import adapt, source, split_validation
from .arrays import GATHER_PASS_BYTES, ArraySource
from .class_weights import ClassWeights, apply_class_weight, class_indices, class_weight_table
from .iterables import IterableSource
from .sharding import LoaderLayout, ShardSampler, shard_loader
from .structures import (InputCasts, check_batch_samples, flatten, is_array_like, is_map_dataset, is_numpy_input,
                         map_structure, move, num_samples, pack_x_y_sample_weight, tensors, to_tensor,
                         unpack_x_y_sample_weight)

__all__ = [
    "adapt", "source", "split_validation", "ArraySource", "IterableSource", "GATHER_PASS_BYTES", "ClassWeights",
    "apply_class_weight", "class_indices", "class_weight_table", "LoaderLayout", "ShardSampler", "shard_loader",
    "InputCasts", "check_batch_samples", "flatten", "is_array_like", "is_map_dataset", "is_numpy_input",
    "map_structure", "move", "num_samples", "pack_x_y_sample_weight", "tensors", "to_tensor",
    "unpack_x_y_sample_weight",
]
