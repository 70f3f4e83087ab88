"""The base of every fitkit metric and the small tensor helpers the metric families share.

:class:`Metric` keeps additive running sums, created as zeros on the device of the first batch (no host
sync) and turned into a value only by ``result()``. :class:`Mean` is the weighted running mean Keras
logs and :class:`Sum` the weighted running sum; :class:`MeanMetricWrapper` is the mean of a per-sample
function ``fn(y_true, y_pred)``, which the accuracy and regression families are made of.
"""

import functools

import torch

from fitkit.conventions import snake_case
from fitkit.targets import match_rank

__all__ = ["Metric", "Sum", "Mean", "MeanMetricWrapper"]


# --------------------------------------------------------------------------------------------------
# Small tensor helpers


def _tensor(x):
    """Tensors pass through; NumPy arrays, lists and numbers become tensors (for direct calls)."""
    if x is None or isinstance(x, torch.Tensor):
        return x
    return torch.as_tensor(x)


def _state_dtype(device):
    # float64 keeps epoch sums exact over millions of samples; MPS has no float64.
    return torch.float32 if device.type == "mps" else torch.float64


def _as_float(x):
    """``x`` in a floating dtype at least as wide as float32 (half inputs are summed in float32)."""
    if x.dtype in (torch.float32, torch.float64):
        return x
    return x.float()


def _div_no_nan(num, den):
    return torch.where(den == 0, torch.zeros_like(num), num / torch.where(den == 0, torch.ones_like(den), den))


def _same_rank(x1, x2):
    """Keras's squeeze-or-expand: make ranks equal when they differ by a trailing axis of 1."""
    if x1.dim() == x2.dim() + 1 and x1.shape[-1] == 1:
        return (x1, x2.unsqueeze(-1)) if x2.dim() == 1 else (x1.squeeze(-1), x2)
    if x2.dim() == x1.dim() + 1 and x2.shape[-1] == 1:
        return (x1.unsqueeze(-1), x2) if x1.dim() == 1 else (x1, x2.squeeze(-1))
    return x1, x2


def _is_sparse(y_true, y_pred):
    """True when ``y_true`` holds class indices for a ``y_pred`` with one column per class."""
    if y_pred.dim() == 0 or y_pred.shape[-1] <= 1:
        return False
    return y_true.dim() == y_pred.dim() - 1 or (y_true.dim() == y_pred.dim() and y_true.shape[-1] == 1)


def _broadcast_weight(sample_weight, ref):
    """``sample_weight`` ((N,), (N, 1), or ``ref``'s shape) broadcast to ``ref``'s shape and dtype."""
    w = sample_weight.to(device=ref.device, dtype=ref.dtype if ref.is_floating_point() else torch.float32)
    while w.dim() > ref.dim() and w.shape[-1] == 1:
        w = w.squeeze(-1)
    while w.dim() < ref.dim():
        w = w.unsqueeze(-1)
    try:
        return torch.broadcast_to(w, ref.shape)
    except RuntimeError:
        raise ValueError(
            f"sample_weight of shape {tuple(sample_weight.shape)} does not fit predictions of shape "
            f"{tuple(ref.shape)}; expected shape ({ref.shape[0] if ref.dim() else 1},) or {tuple(ref.shape)}."
        ) from None


# --------------------------------------------------------------------------------------------------
# Base class


def _on_data_device(update):
    """Wrap a subclass's ``update`` so its states live on the device of the data before it runs."""

    @functools.wraps(update)
    def wrapper(self, *args, **kwargs):
        args = [_tensor(a) for a in args]
        kwargs = {k: _tensor(v) for k, v in kwargs.items()}
        device = next(a for a in (*args, *kwargs.values()) if a is not None).device
        if getattr(self, "_device", None) != device:
            self._place_states(device)
        with torch.no_grad():  # outputs that still carry a graph must not chain the epoch's sums into it
            return update(self, *args, **kwargs)

    wrapper._fitkit_wrapped = True
    return wrapper


def _empty_is_zero(result):
    """Wrap a subclass's ``result`` so that it works before any update (states are zeros, on the CPU)."""

    @functools.wraps(result)
    def wrapper(self):
        if getattr(self, "_device", None) is None and getattr(self, "_state_specs", None):
            self._place_states(torch.device("cpu"))
            try:
                return result(self)
            finally:  # stay unplaced so the first update creates the states on the data's device
                for name in self._state_specs:
                    setattr(self, name, None)
                self._device = None
        return result(self)

    wrapper._fitkit_wrapped = True
    return wrapper


class Metric:
    """A streaming metric: ``update(y_true, y_pred, sample_weight=None)`` per batch, ``result()`` at the end.

    ``result()`` returns a 0-dim tensor (never a Python float: reading it is the caller's choice) and is
    0.0 before any update, as in Keras. ``update_state``/``reset_state`` are Keras aliases.

    To write your own, declare additive states with :meth:`add_state` in ``__init__``; they are created
    as zeros on the device of the first batch, before your ``update`` runs, and zeroed by ``reset()``::

        class Positives(fitkit.metrics.Metric):
            def __init__(self, threshold=0.5, name="positives"):
                super().__init__(name)
                self.threshold = threshold
                self.add_state("count")

            def update(self, y_true, y_pred, sample_weight=None):
                self.count += (y_pred > self.threshold).sum()

            def result(self):
                return self.count.float()

    Overriding the Keras names (``update_state``, ``reset_state``) works as well.
    """

    def __init__(self, name=None):
        self.name = name or snake_case(type(self).__name__)
        self._state_specs = {}
        self._device = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        own = cls.__dict__
        for new, old in (("update", "update_state"), ("reset", "reset_state")):
            if new in own and old not in own:
                setattr(cls, old, own[new])
            elif old in own and new not in own:
                setattr(cls, new, own[old])
        for name in ("update", "update_state"):
            fn = cls.__dict__.get(name)
            if fn is not None and not getattr(fn, "_fitkit_wrapped", False):
                setattr(cls, name, _on_data_device(fn))
        fn = own.get("result")
        if fn is not None and not getattr(fn, "_fitkit_wrapped", False):
            cls.result = _empty_is_zero(fn)

    def add_state(self, name, shape=(), dtype=None):
        """Declare a zero-initialised accumulator ``self.<name>``, made on the data's device at first update.

        ``dtype`` defaults to float64 (float32 on MPS) so that epoch-long sums stay exact.
        """
        if not hasattr(self, "_state_specs"):
            raise RuntimeError(f"{type(self).__name__}.__init__ must call super().__init__() before add_state.")
        self._state_specs[name] = (tuple(shape), dtype)
        setattr(self, name, None)

    def _place_states(self, device):
        for name, (shape, dtype) in getattr(self, "_state_specs", {}).items():
            value = getattr(self, name, None)
            if value is None:
                setattr(self, name, torch.zeros(shape, dtype=dtype or _state_dtype(device), device=device))
            else:  # the data moved (another device between fits): carry the sums along
                dtype = value.dtype if dtype or device.type != "mps" else torch.float32
                setattr(self, name, value.to(device=device, dtype=dtype))
        self._device = device

    def states(self):
        """The accumulators by name: all are sums, so ranks can all-reduce them (SUM) before ``result()``."""
        return {name: getattr(self, name) for name in getattr(self, "_state_specs", {})
                if getattr(self, name, None) is not None}

    def update(self, y_true, y_pred, sample_weight=None):
        raise NotImplementedError(f"{type(self).__name__} must implement update(y_true, y_pred, sample_weight=None).")

    def update_state(self, y_true, y_pred, sample_weight=None):
        return self.update(y_true, y_pred, sample_weight=sample_weight)

    def result(self):
        raise NotImplementedError(f"{type(self).__name__} must implement result().")

    def reset(self):
        for value in self.states().values():
            value.zero_()

    def reset_state(self):
        for value in self.states().values():
            value.zero_()

    def __repr__(self):
        return f"<{type(self).__name__} name={self.name}>"


# --------------------------------------------------------------------------------------------------
# Means


class Mean(Metric):
    """Weighted running mean of values: ``update(values, sample_weight=None)``.

    Values of shape (N, ...) count as N samples, each the mean of its trailing axes (Keras semantics);
    a 0-dim value counts as one sample.

    >>> m = Mean()
    >>> m.update(torch.tensor([1.0, 3.0, 5.0, 7.0]), sample_weight=torch.tensor([1.0, 1.0, 0.0, 0.0]))
    >>> float(m.result())
    2.0
    """

    def __init__(self, name="mean"):
        super().__init__(name)
        self.add_state("total")
        self.add_state("count")

    def update(self, values, sample_weight=None):
        self._accumulate(values, sample_weight)

    def _accumulate(self, values, sample_weight=None, scalar_count=1):
        values = _as_float(values)
        if sample_weight is None:
            if values.dim() == 0:
                self.total += values * scalar_count
                self.count += scalar_count
                return
            if values.dim() > 1:
                values = values.flatten(1).mean(1)
            self.total += values.sum()
            self.count += values.shape[0]
            return
        w = sample_weight.to(device=values.device, dtype=values.dtype)
        if values.dim() == 0:
            w_sum = w.sum() * (scalar_count if w.dim() == 0 else 1)
            self.total += values * w_sum
            self.count += w_sum
            return
        if w.dim() == 0:
            w = w.expand(values.shape[0])
        values, w = _same_rank(values, w)
        if values.dim() > w.dim():
            values = values.flatten(w.dim()).mean(-1)
        w = _broadcast_weight(w, values)
        values = values * w
        if values.dim() > 1:
            values, w = values.flatten(1).mean(1), w.flatten(1).mean(1)
        self.total += values.sum()
        self.count += w.sum()

    def result(self):
        return _div_no_nan(self.total, self.count).float()


class Sum(Metric):
    """Weighted running sum of values: ``update(values, sample_weight=None)``.

    >>> m = Sum()
    >>> m.update(torch.tensor([1.0, 3.0, 5.0, 7.0]), sample_weight=torch.tensor([1.0, 1.0, 0.0, 0.0]))
    >>> float(m.result())
    4.0
    """

    def __init__(self, name="sum"):
        super().__init__(name)
        self.add_state("total")

    def update(self, values, sample_weight=None):
        values = _as_float(values)
        if sample_weight is not None:
            w = sample_weight.to(device=values.device, dtype=values.dtype)
            values, w = _same_rank(values, w)
            if values.dim() > w.dim():  # values per sample and position, weights per sample
                values = values.flatten(w.dim()).sum(-1)
            values = values * _broadcast_weight(w, values)
        self.total += values.sum()

    def result(self):
        return self.total.float()


def _callable_name(fn):
    name = getattr(fn, "name", None)
    if isinstance(name, str) and name:
        return name
    name = getattr(fn, "__name__", None) or getattr(getattr(fn, "func", None), "__name__", None)
    return name or snake_case(type(fn).__name__)


class MeanMetricWrapper(Mean):
    """Weighted streaming mean of ``fn(y_true, y_pred, **kwargs)``.

    ``fn`` returns one value per sample (shape (N,) or (N, ...)) or a scalar. A scalar is taken as the
    mean of the batch and weighted by the batch size (or the sum of the sample weights), so the epoch
    value is the mean over samples even when the last batch is short. ``y_true`` is first reconciled with
    ``y_pred`` ((N,) vs (N, 1)) so that ``fn`` never broadcasts them into (N, N).

    >>> m = MeanMetricWrapper(lambda t, p: (t - p).abs(), name="abs_err")
    >>> m.update(torch.tensor([0.0, 1.0]), torch.tensor([[1.0], [1.0]]))
    >>> float(m.result())
    0.5
    """

    def __init__(self, fn, name=None, **kwargs):
        if not callable(fn):
            raise TypeError(f"MeanMetricWrapper expects a callable fn(y_true, y_pred); received fn={fn!r}.")
        super().__init__(name or _callable_name(fn))
        self._fn = fn
        self._fn_kwargs = kwargs

    def update(self, y_true, y_pred, sample_weight=None):
        values = self._fn(match_rank(y_true, y_pred), y_pred, **self._fn_kwargs)
        if not isinstance(values, torch.Tensor):  # a Python number: a fill on the device, not a copy
            values = torch.full((), float(values), device=y_pred.device)
        self._accumulate(values, sample_weight, scalar_count=y_pred.shape[0] if y_pred.dim() else 1)
