"""Nested data as fit sees it: tensors in lists, tuples and dicts, converted, checked, moved and packed.

Keras's batch forms live here too: :func:`pack_x_y_sample_weight` makes the batch ``train_step`` gets,
``(x, y)``, ``(x, y, sample_weight)`` or ``x`` alone, and :func:`unpack_x_y_sample_weight` splits it.
"""

import os
import warnings

import numpy as np
import torch

_ARRAY_KINDS = (np.ndarray, torch.Tensor)


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


def is_map_dataset(x):
    """Whether ``x`` is a map-style torch ``Dataset`` (indexable, not an ``IterableDataset``)."""
    return isinstance(x, torch.utils.data.Dataset) and not isinstance(x, torch.utils.data.IterableDataset)


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
