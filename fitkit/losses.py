"""Losses: Keras names and classes, torch loss modules and functionals, one calling convention.

Every loss is called Keras style, ``loss(y_true, y_pred, sample_weight=None)``, and returns a 0-dim
tensor reduced the Keras way ("sum_over_batch_size": per-sample losses, times ``sample_weight``, summed,
divided by the number of per-sample values, never by the sum of the weights). Targets are reconciled
first (``(N,)`` against ``(N, 1)``, integer labels cast), so torch's silent ``(N, N)`` broadcast never
happens.

>>> get("mse")(torch.zeros(4), torch.ones(4, 1))
tensor(1.)
>>> get(torch.nn.BCEWithLogitsLoss()).kind, get(torch.nn.BCEWithLogitsLoss()).from_logits
('binary', True)

Nothing here reads a value back to the host: no ``.item()``, no data-dependent Python branches.
"""

import torch
import torch.nn.functional as F

from fitkit.conventions import EPSILON, snake_case
import difflib

from fitkit.targets import as_float, check_label_shape, check_no_broadcast, check_same_shape, dense_targets, match_rank

_LOG2 = 0.6931471805599453
_REDUCTIONS = ("sum_over_batch_size", "mean", "sum", "mean_with_sample_weight", "none", None)
KINDS = ("binary", "categorical", "sparse_categorical", "regression", None)


# --------------------------------------------------------------------------------------- reduction

def _as_weight(sample_weight, values):
    """``sample_weight`` as a tensor that broadcasts per sample against ``values``."""
    sw = sample_weight
    if not isinstance(sw, torch.Tensor):
        sw = torch.as_tensor(sw)
    if sw.dtype != values.dtype or sw.device != values.device:
        sw = sw.to(device=values.device, dtype=values.dtype)
    if values.dim() == 0:
        return sw  # a scalar loss times weights: Keras's arithmetic, scalar * mean(weights)
    # Keras squeezes or expands a trailing axis of 1 on either side.
    if sw.dim() == values.dim() + 1 and sw.shape[-1] == 1:
        sw = sw.squeeze(-1)
    elif values.dim() == sw.dim() + 1 and values.shape[-1] == 1:
        sw = sw.unsqueeze(-1)
    if sw.dim() > values.dim():
        raise ValueError(
            f"sample_weight: got shape {tuple(sw.shape)}, more axes than the per-sample losses of "
            f"shape {tuple(values.shape)}; expected shape (N,) or a prefix of {tuple(values.shape)}."
        )
    for i, n in enumerate(sw.shape):
        if n != 1 and n != values.shape[i]:
            raise ValueError(
                f"sample_weight: got shape {tuple(sw.shape)}, which does not match the per-sample losses of "
                f"shape {tuple(values.shape)}; expected (N,) with N={values.shape[0]}, or a shape that "
                f"broadcasts from the left such as (N, T)."
            )
    if sw.dim() < values.dim():
        # One weight per sample (or per timestep) applies to all the remaining axes.
        sw = sw.reshape(tuple(sw.shape) + (1,) * (values.dim() - sw.dim()))
    return sw


def reduce_weighted(values, sample_weight=None, reduction="sum_over_batch_size", mask=None):
    """Keras's reduction of per-sample ``values``: weight, then sum and divide by the number of values.

    ``mask`` (bool, shaped like ``values``) drops entries and divides by the count of kept ones, as Keras
    does for ``ignore_class``.

    >>> reduce_weighted(torch.tensor([1.0, 3.0]), torch.tensor([1.0, 0.0]))
    tensor(0.5000)
    """
    if sample_weight is not None:
        sw = _as_weight(sample_weight, values)
        values = values * sw
    else:
        sw = None
    if mask is not None:
        values = values * mask
    if reduction in ("none", None):
        return values
    if values.dim() == 0:
        return values
    if mask is None and reduction != "sum" and (reduction != "mean_with_sample_weight" or sw is None):
        # sum_over_batch_size: the sum divided by the number of values, which is what mean() does.
        return values.mean() if values.numel() else values.sum()
    total = values.sum()
    if reduction == "sum":
        return total
    if reduction == "mean_with_sample_weight" and (sw is not None or mask is not None):
        weights = sw if sw is not None else values.new_ones(())
        if mask is not None:
            weights = weights * mask
        denom = torch.broadcast_to(weights, values.shape).sum()
        # divide_no_nan: zero total weight gives a zero loss, not NaN.
        return torch.where(denom != 0, total / torch.where(denom != 0, denom, 1.0), 0.0)
    return total / mask.sum().clamp_min(1)  # only the kept entries count


# ------------------------------------------------------------------------------------------ bases

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _tensors(y_true, y_pred, upcast=False):
    # Arrays and lists are accepted, as Keras does; tensors pass through untouched.
    if not isinstance(y_pred, torch.Tensor):
        y_pred = torch.as_tensor(y_pred)
    elif upcast and y_pred.dtype in _LOW_PRECISION:
        y_pred = y_pred.float()  # Keras computes losses in float32 under mixed precision
    if not isinstance(y_true, torch.Tensor):
        y_true = torch.as_tensor(y_true, device=y_pred.device)
    return y_true, y_pred


class Loss:
    """Base class: subclass and implement ``call(y_true, y_pred) -> per-sample losses``, Keras style.

    ``__call__(y_true, y_pred, sample_weight=None)`` reconciles the targets, calls ``call`` and reduces.
    ``kind`` is one of ``KINDS`` and ``from_logits`` True/False/None; metrics read both to resolve
    "accuracy".

    >>> class Cubed(Loss):
    ...     def call(self, y_true, y_pred):
    ...         return ((y_pred - y_true) ** 3).abs().mean(-1)
    >>> Cubed()(torch.zeros(2, 1), torch.ones(2, 1))
    tensor(1.)
    """

    kind = None
    from_logits = None
    _upcast = True  # __call__ computes in float32 under mixed precision

    def __init__(self, name=None, reduction="sum_over_batch_size"):
        if reduction not in _REDUCTIONS:
            raise ValueError(
                f"Invalid value for argument `reduction`: {reduction!r}. Expected one of {_REDUCTIONS}."
            )
        # Acronyms stay joined ("MyMSELoss" -> "my_mseloss"): the default names losses have always had.
        self.name = name or snake_case(type(self).__name__, acronyms_as_words=False)
        self.reduction = reduction

    def __call__(self, y_true, y_pred, sample_weight=None):
        values, mask = self._losses(*_tensors(y_true, y_pred, upcast=True))
        return reduce_weighted(values, sample_weight, self.reduction, mask)

    def _losses(self, y_true, y_pred):
        """(per-sample losses, mask or None); subclasses that mask entries override this."""
        y_true, y_pred = self._prepare(y_true, y_pred)
        if y_true.shape != y_pred.shape:  # equal shapes pass every check: the usual step pays one comparison
            self._check_shapes(y_true, y_pred)
        return self.call(y_true, y_pred), None

    def _prepare(self, y_true, y_pred):
        # Keras's base Loss only casts y_true to the compute dtype.
        return as_float(y_true, y_pred), y_pred

    def _check_shapes(self, y_true, y_pred):
        """Raise a ValueError (``"y: ..."``) when the reconciled targets cannot meet ``y_pred`` without a
        broadcast; fitkit's own losses, which compare element by element, need equal shapes."""
        check_no_broadcast(y_true, y_pred, self.name)

    def check_targets(self, y_true, y_pred):
        """The shape check every call makes, without computing the loss (fit runs it on the first batch
        before any step). Raises a ValueError naming ``y`` and both shapes.

        >>> get("mse").check_targets(torch.zeros(4, 3), torch.zeros(4, 1))
        Traceback (most recent call last):
        ...
        ValueError: y: got targets of shape (4, 3) for model outputs of shape (4, 1); ...
        """
        self._check_shapes(*self._prepare(*_tensors(y_true, y_pred, upcast=self._upcast)))

    def prepare_targets(self, y_true, y_pred):
        """All of ``y_true`` reconciled as every call reconciles a batch of it against ``y_pred``.

        For a caller holding the whole target array (fit on in-memory data): it pays the cast and
        reshape once (``(N,)`` integer labels -> float ``(N, 1)`` for a binary loss) and each call
        then finds its targets ready. ``y_pred`` is one batch of predictions. Returns None when there
        is nothing to gain, or when this loss reconciles targets in a way that cannot be done ahead
        (a ``_prepare`` or ``_losses`` of its own, outside this module).

        >>> BinaryCrossentropy().prepare_targets(torch.tensor([0, 1, 1]), torch.rand(2, 1)).shape
        torch.Size([3, 1])
        """
        cls = type(self)
        if cls._losses is not Loss._losses or cls._prepare.__module__ != __name__:
            return None
        if not isinstance(y_true, torch.Tensor) or not isinstance(y_pred, torch.Tensor) or y_pred.dim() == 0 \
                or y_true.dim() == 0:
            return None
        y_true, y_pred = _tensors(y_true, y_pred, upcast=self._upcast)
        # A prediction shaped like all the targets (values unused): _prepare decides on shapes and dtypes.
        like = y_pred[:1].expand(y_true.shape[0], *y_pred.shape[1:])
        prepared = self._prepare(y_true, like)[0]
        if prepared is y_true or self._prepare(prepared, like)[0] is not prepared:
            return None  # nothing to do, or a second pass would change them again: leave it per batch
        return prepared

    def call(self, y_true, y_pred):
        raise NotImplementedError(f"{type(self).__name__} must implement call(y_true, y_pred).")

    def __repr__(self):
        extra = "" if self.from_logits is None else f", from_logits={self.from_logits}"
        return f"{type(self).__name__}(name={self.name!r}{extra})"


class _Elementwise(Loss):
    """A loss computed per element and averaged over the last axis, as Keras's mean(..., axis=-1)."""

    kind = "regression"
    from_logits = False

    def _prepare(self, y_true, y_pred):
        # A rank-1 prediction is one value per sample: give it the trailing axis, so that the mean over
        # the last axis keeps one loss per sample and sample_weight applies per sample.
        if y_pred.dim() == 1:
            y_pred = y_pred.unsqueeze(-1)
        return dense_targets(y_true, y_pred), y_pred

    def _check_shapes(self, y_true, y_pred):
        check_same_shape(y_true, y_pred, self.name)


class _Distribution(Loss):
    """A loss over a whole distribution on the last axis (sum or max over it), like Keras's."""

    def _prepare(self, y_true, y_pred):
        return dense_targets(y_true, y_pred), y_pred

    def _check_shapes(self, y_true, y_pred):
        check_same_shape(y_true, y_pred, self.name)


# ---------------------------------------------------------------------------------- regression

class MeanSquaredError(_Elementwise):
    """``mean((y_pred - y_true) ** 2, axis=-1)``; names "mse", "mean_squared_error"."""

    def __init__(self, reduction="sum_over_batch_size", name="mean_squared_error"):
        super().__init__(name, reduction)

    def call(self, y_true, y_pred):
        return F.mse_loss(y_pred, y_true, reduction="none").mean(-1)


class MeanAbsoluteError(_Elementwise):
    """``mean(|y_pred - y_true|, axis=-1)``; names "mae", "mean_absolute_error"."""

    def __init__(self, reduction="sum_over_batch_size", name="mean_absolute_error"):
        super().__init__(name, reduction)

    def call(self, y_true, y_pred):
        return F.l1_loss(y_pred, y_true, reduction="none").mean(-1)


class MeanAbsolutePercentageError(_Elementwise):
    """``100 * mean(|(y_true - y_pred) / max(|y_true|, eps)|, axis=-1)``; "mape"."""

    def __init__(self, reduction="sum_over_batch_size", name="mean_absolute_percentage_error"):
        super().__init__(name, reduction)

    def call(self, y_true, y_pred):
        return (y_true - y_pred).div(y_true.abs().clamp_min(EPSILON)).abs().mean(-1) * 100.0


class MeanSquaredLogarithmicError(_Elementwise):
    """``mean((log(1 + max(y_pred, eps)) - log(1 + max(y_true, eps))) ** 2, axis=-1)``; "msle"."""

    def __init__(self, reduction="sum_over_batch_size", name="mean_squared_logarithmic_error"):
        super().__init__(name, reduction)

    def call(self, y_true, y_pred):
        return (torch.log1p(y_pred.clamp_min(EPSILON)) - torch.log1p(y_true.clamp_min(EPSILON))).square().mean(-1)


class Huber(_Elementwise):
    """Quadratic within ``delta`` of the target, linear beyond; "huber"."""

    def __init__(self, delta=1.0, reduction="sum_over_batch_size", name="huber_loss"):
        super().__init__(name, reduction)
        self.delta = float(delta)

    def call(self, y_true, y_pred):
        return F.huber_loss(y_pred, y_true, reduction="none", delta=self.delta).mean(-1)


class LogCosh(_Elementwise):
    """``mean(log(cosh(y_pred - y_true)), axis=-1)``, computed without overflow; "log_cosh", "logcosh"."""

    def __init__(self, reduction="sum_over_batch_size", name="log_cosh"):
        super().__init__(name, reduction)

    def call(self, y_true, y_pred):
        x = y_pred - y_true
        return (x + F.softplus(-2.0 * x) - _LOG2).mean(-1)


class Poisson(_Elementwise):
    """``mean(y_pred - y_true * log(y_pred + eps), axis=-1)``; "poisson"."""

    def __init__(self, reduction="sum_over_batch_size", name="poisson"):
        super().__init__(name, reduction)

    def call(self, y_true, y_pred):
        return (y_pred - y_true * torch.log(y_pred + EPSILON)).mean(-1)


class CosineSimilarity(_Distribution):
    """``-sum(l2_normalize(y_true) * l2_normalize(y_pred), axis)``: -1 for parallel vectors."""

    kind = "regression"
    from_logits = False

    def __init__(self, axis=-1, reduction="sum_over_batch_size", name="cosine_similarity"):
        super().__init__(name, reduction)
        self.axis = axis

    def _normalize(self, x):
        return x * torch.rsqrt(x.square().sum(self.axis, keepdim=True)).clamp_max(1.0 / EPSILON)

    def call(self, y_true, y_pred):
        return -(self._normalize(y_true) * self._normalize(y_pred)).sum(self.axis)


# ----------------------------------------------------------------------------- probabilistic

def _bce_on_probs(y_true, p):
    """Element-wise binary cross-entropy of clipped probabilities ``p``."""
    p = p.clamp(EPSILON, 1.0 - EPSILON)
    if torch.is_autocast_enabled(p.device.type):  # torch refuses F.binary_cross_entropy under autocast
        return -(y_true * torch.log(p) + (1.0 - y_true) * torch.log(1.0 - p))
    return F.binary_cross_entropy(p, y_true, reduction="none")


class BinaryCrossentropy(_Elementwise):
    """Binary cross-entropy, Keras defaults: probabilities clipped to [eps, 1 - eps] unless from_logits.

    >>> BinaryCrossentropy(from_logits=True)(torch.tensor([1, 0]), torch.tensor([[0.0], [0.0]]))
    tensor(0.6931)
    """

    kind = "binary"

    def __init__(self, from_logits=False, label_smoothing=0.0, axis=-1,
                 reduction="sum_over_batch_size", name="binary_crossentropy"):
        super().__init__(name, reduction)
        self.from_logits = bool(from_logits)
        self.label_smoothing = float(label_smoothing)
        self.axis = axis

    def _smooth(self, y_true):
        if self.label_smoothing:
            return y_true * (1.0 - self.label_smoothing) + 0.5 * self.label_smoothing
        return y_true

    def call(self, y_true, y_pred):
        y_true = self._smooth(y_true)
        if self.from_logits:
            bce = F.binary_cross_entropy_with_logits(y_pred, y_true, reduction="none")
        else:
            bce = _bce_on_probs(y_true, y_pred)
        return bce.mean(self.axis)


class BinaryFocalCrossentropy(BinaryCrossentropy):
    """Binary cross-entropy times ``(1 - p_t) ** gamma`` (Lin et al.), optionally class-balanced."""

    def __init__(self, apply_class_balancing=False, alpha=0.25, gamma=2.0, from_logits=False,
                 label_smoothing=0.0, axis=-1, reduction="sum_over_batch_size",
                 name="binary_focal_crossentropy"):
        super().__init__(from_logits, label_smoothing, axis, reduction, name)
        self.apply_class_balancing = bool(apply_class_balancing)
        self.alpha = float(alpha)
        self.gamma = float(gamma)

    def call(self, y_true, y_pred):
        y_true = self._smooth(y_true)
        p = torch.sigmoid(y_pred) if self.from_logits else y_pred
        bce = _bce_on_probs(y_true, p)
        p_t = y_true * p + (1.0 - y_true) * (1.0 - p)
        focal = (1.0 - p_t).pow(self.gamma) * bce
        if self.apply_class_balancing:
            focal = (y_true * self.alpha + (1.0 - y_true) * (1.0 - self.alpha)) * focal
        return focal.mean(self.axis)


class CategoricalCrossentropy(_Distribution):
    """Cross-entropy against one-hot (or soft) targets shaped like ``y_pred``.

    Probabilities are renormalised and clipped to [eps, 1 - eps] unless ``from_logits``.
    """

    kind = "categorical"

    def _check_shapes(self, y_true, y_pred):
        check_same_shape(y_true, y_pred, self.name, expected=(
            f"one-hot targets shaped like the outputs {tuple(y_pred.shape)} (for integer class labels use "
            "'sparse_categorical_crossentropy')"))

    def __init__(self, from_logits=False, label_smoothing=0.0, axis=-1,
                 reduction="sum_over_batch_size", name="categorical_crossentropy"):
        super().__init__(name, reduction)
        self.from_logits = bool(from_logits)
        self.label_smoothing = float(label_smoothing)
        self.axis = axis

    def call(self, y_true, y_pred):
        if self.label_smoothing:
            n = y_true.shape[self.axis]
            y_true = y_true * (1.0 - self.label_smoothing) + self.label_smoothing / n
        if self.from_logits:
            log_p = F.log_softmax(y_pred, dim=self.axis)
        else:
            p = y_pred / y_pred.sum(self.axis, keepdim=True)
            log_p = torch.log(p.clamp(EPSILON, 1.0 - EPSILON))
        return -(y_true * log_p).sum(self.axis)


class SparseCategoricalCrossentropy(Loss):
    """Cross-entropy against integer class labels of shape ``(N,)`` or ``(N, 1)`` (int or float).

    ``ignore_class`` drops those labels (e.g. -1 or 255 in segmentation maps): they add nothing and the
    mean is over the remaining ones, as in Keras.

    >>> SparseCategoricalCrossentropy(from_logits=True)(torch.tensor([[0.0]]), torch.zeros(1, 4))
    tensor(1.3863)
    """

    kind = "sparse_categorical"

    def __init__(self, from_logits=False, ignore_class=None, axis=-1,
                 reduction="sum_over_batch_size", name="sparse_categorical_crossentropy"):
        super().__init__(name, reduction)
        self.from_logits = bool(from_logits)
        self.ignore_class = None if ignore_class is None else int(ignore_class)
        self.axis = axis

    def _labels(self, y_true, y_pred):
        axis = self.axis % y_pred.dim()
        if y_true.dim() == y_pred.dim() and y_true.shape[axis] == 1:
            y_true = y_true.squeeze(axis)
        check_label_shape(y_true, y_pred, y_pred.shape[:axis] + y_pred.shape[axis + 1:], self.name)
        if y_true.dtype != torch.long:
            y_true = y_true.long()
        return y_true, axis

    def check_targets(self, y_true, y_pred):
        self._labels(*_tensors(y_true, y_pred, upcast=True))

    @property
    def class_axis(self):
        """The axis of the outputs that holds the classes (``axis``, Keras's last by default)."""
        return self.axis

    @property
    def ignored_label(self):
        """The label that adds nothing to the loss (``ignore_class``), or None."""
        return self.ignore_class

    def _losses(self, y_true, y_pred):
        labels, axis = self._labels(y_true, y_pred)
        squeeze = y_pred.dim() == 1  # one sample without a batch axis
        if squeeze:
            y_pred, labels = y_pred.unsqueeze(0), labels.unsqueeze(0)
        elif axis != 1:
            y_pred = y_pred.movedim(axis, 1)  # torch keeps classes on axis 1
        ignore = -100 if self.ignore_class is None else self.ignore_class
        if self.from_logits:
            values = F.cross_entropy(y_pred, labels, reduction="none", ignore_index=ignore)
        else:
            p = y_pred / y_pred.sum(1, keepdim=True)
            values = F.nll_loss(torch.log(p.clamp(EPSILON, 1.0 - EPSILON)), labels,
                                reduction="none", ignore_index=ignore)
        if squeeze:
            values, labels = values.squeeze(0), labels.squeeze(0)
        mask = None if self.ignore_class is None else labels != self.ignore_class
        return values, mask


class KLDivergence(_Distribution):
    """``sum(y_true * log(y_true / y_pred), axis=-1)`` with both clipped to [eps, 1]; "kld"."""

    kind = "categorical"
    from_logits = False

    def __init__(self, reduction="sum_over_batch_size", name="kl_divergence"):
        super().__init__(name, reduction)

    def call(self, y_true, y_pred):
        y_true = y_true.clamp(EPSILON, 1.0)
        y_pred = y_pred.clamp(EPSILON, 1.0)
        return (y_true * torch.log(y_true / y_pred)).sum(-1)


# ----------------------------------------------------------------------------------------- hinge

def _hinge_labels(y_true):
    # Keras maps {0, 1} labels to {-1, 1} and leaves others alone; a torch.where keeps it on the device.
    is_binary = ((y_true == 0) | (y_true == 1)).all()
    return torch.where(is_binary, 2.0 * y_true - 1.0, y_true)


class Hinge(_Elementwise):
    """``mean(max(1 - y_true * y_pred, 0), axis=-1)``; labels in {-1, 1} or {0, 1}."""

    kind = "binary"
    from_logits = None

    def __init__(self, reduction="sum_over_batch_size", name="hinge"):
        super().__init__(name, reduction)

    def call(self, y_true, y_pred):
        return (1.0 - _hinge_labels(y_true) * y_pred).clamp_min(0.0).mean(-1)


class SquaredHinge(_Elementwise):
    """``mean(max(1 - y_true * y_pred, 0) ** 2, axis=-1)``; labels in {-1, 1} or {0, 1}."""

    kind = "binary"
    from_logits = None

    def __init__(self, reduction="sum_over_batch_size", name="squared_hinge"):
        super().__init__(name, reduction)

    def call(self, y_true, y_pred):
        return (1.0 - _hinge_labels(y_true) * y_pred).clamp_min(0.0).square().mean(-1)


class CategoricalHinge(_Distribution):
    """``max(max((1 - y_true) * y_pred) - sum(y_true * y_pred) + 1, 0)`` over the last axis."""

    kind = "categorical"

    def __init__(self, reduction="sum_over_batch_size", name="categorical_hinge"):
        super().__init__(name, reduction)

    def call(self, y_true, y_pred):
        pos = (y_true * y_pred).sum(-1)
        neg = ((1.0 - y_true) * y_pred).amax(-1)
        return (neg - pos + 1.0).clamp_min(0.0)


# --------------------------------------------------------------------------- callables and torch

class LossFunction(Loss):
    """A Keras-order callable ``fn(y_true, y_pred)`` returning per-sample losses or a scalar.

    >>> LossFunction(lambda t, p: (p - t).abs())(torch.zeros(3), torch.ones(3)).item()
    1.0
    """

    def __init__(self, fn, name=None, reduction="sum_over_batch_size"):
        default = getattr(fn, "__name__", None) or snake_case(type(fn).__name__, acronyms_as_words=False)
        super().__init__(name or default, reduction)
        self.fn = fn

    def _prepare(self, y_true, y_pred):
        return dense_targets(y_true, y_pred), y_pred  # Keras: float targets, ranks reconciled

    def call(self, y_true, y_pred):
        out = self.fn(y_true, y_pred)
        return out if isinstance(out, torch.Tensor) else torch.as_tensor(out, device=y_pred.device)


_nn = torch.nn
# (kind, from_logits) for torch losses; log-probabilities count as logits (argmax is the same).
_TORCH_MODULES = (
    (_nn.BCEWithLogitsLoss, ("binary", True)),
    (_nn.BCELoss, ("binary", False)),
    (_nn.MultiLabelSoftMarginLoss, ("binary", True)),
    (_nn.CrossEntropyLoss, ("sparse_categorical", True)),
    (_nn.NLLLoss, ("sparse_categorical", True)),
    (_nn.KLDivLoss, ("categorical", True)),
    (_nn.MSELoss, ("regression", False)),
    (_nn.L1Loss, ("regression", False)),
    (_nn.SmoothL1Loss, ("regression", False)),
    (_nn.HuberLoss, ("regression", False)),
    (_nn.PoissonNLLLoss, ("regression", False)),
)
_TORCH_FUNCTIONS = {
    F.binary_cross_entropy_with_logits: ("binary", True),
    F.binary_cross_entropy: ("binary", False),
    F.multilabel_soft_margin_loss: ("binary", True),
    F.cross_entropy: ("sparse_categorical", True),
    F.nll_loss: ("sparse_categorical", True),
    F.kl_div: ("categorical", True),
    F.mse_loss: ("regression", False),
    F.l1_loss: ("regression", False),
    F.smooth_l1_loss: ("regression", False),
    F.huber_loss: ("regression", False),
    F.poisson_nll_loss: ("regression", False),
}


def _is_torch_function(fn):
    base = getattr(fn, "func", fn)  # functools.partial(F.cross_entropy, label_smoothing=0.1)
    return str(getattr(base, "__module__", None) or "").startswith("torch")


def _none_reduction_copy(module):
    """A shallow copy of ``module`` with ``reduction="none"``.

    It shares the parameter and buffer dicts (``weight``, ``pos_weight``), so moving the user's module
    to another device moves the copy's tensors too.
    """
    copy = type(module).__new__(type(module))
    copy.__dict__.update(module.__dict__)
    copy.reduction = "none"
    return copy


class TorchLoss(Loss):
    """A torch loss module or functional, called in torch order ``fn(y_pred, y_true)``.

    Targets are reconciled first (``nn.MSELoss`` with y ``(N,)`` and pred ``(N, 1)`` gives the right mean,
    ``nn.BCELoss`` takes int labels, ``nn.CrossEntropyLoss`` takes labels ``(N, 1)``). Without
    ``sample_weight`` the module runs exactly as given; with it, a ``reduction="none"`` copy gives
    per-sample losses that are weighted and reduced the Keras way.

    >>> TorchLoss(torch.nn.CrossEntropyLoss())(torch.tensor([[1]]), torch.zeros(1, 2))
    tensor(0.6931)
    """

    _upcast = False  # the torch loss gets the prediction as the model made it

    def __init__(self, fn, name=None):
        is_module = isinstance(fn, torch.nn.Module)
        base = fn if is_module else getattr(fn, "func", fn)
        default = type(fn).__name__ if is_module else getattr(base, "__name__", type(fn).__name__)
        super().__init__(name or default, "sum_over_batch_size")
        self.fn = fn
        self.kind, self.from_logits = None, None
        if is_module:
            for cls, info in _TORCH_MODULES:
                if isinstance(fn, cls):
                    self.kind, self.from_logits = info
                    break
        else:
            self.kind, self.from_logits = _TORCH_FUNCTIONS.get(base, (None, None))
        # How to get unreduced losses when sample_weight comes: made once, here.
        self._unreduced = None
        self._sum_reduced = False
        if is_module:
            mode = getattr(fn, "reduction", None)
            if mode == "none":
                self._unreduced = fn
            elif mode == "sum":
                self._sum_reduced = True
            elif mode is not None:
                self._unreduced = _none_reduction_copy(fn)
            self.torch_reduction = mode
        else:
            self._unreduced = lambda y_pred, y_true: fn(y_pred, y_true, reduction="none")
            self.torch_reduction = "mean"

    def _prepare(self, y_true, y_pred):
        if self.kind == "sparse_categorical":
            if y_true.shape == y_pred.shape and y_pred.dim() > 1 and y_pred.shape[1] > 1:
                return as_float(y_true, y_pred), y_pred  # class probabilities, which CrossEntropyLoss accepts
            if y_true.dim() == y_pred.dim() and y_true.shape[-1] == 1:
                y_true = y_true.squeeze(-1)
            if y_true.dtype != torch.long:
                y_true = y_true.long()
            return y_true, y_pred
        if self.kind is not None or y_true.is_floating_point():
            return dense_targets(y_true, y_pred), y_pred
        return match_rank(y_true, y_pred), y_pred  # unknown loss, integer targets: keep their dtype

    def _check_shapes(self, y_true, y_pred):
        kind = self.kind
        if kind == "sparse_categorical":
            if y_true.shape != y_pred.shape:  # class probabilities shaped like the scores pass as they are
                expected = y_pred.shape[:1] + y_pred.shape[2:] if y_pred.dim() > 1 else ()
                check_label_shape(y_true, y_pred, expected, self.name)
        elif kind is not None:
            check_same_shape(y_true, y_pred, self.name)
        else:
            check_no_broadcast(y_true, y_pred, self.name)

    @property
    def class_axis(self):
        """torch keeps the classes on axis 1 of the scores (axis 0 for one unbatched sample)."""
        return 1

    @property
    def ignored_label(self):
        """``ignore_index`` of a cross-entropy / NLL loss (torch's default -100), else None."""
        if self.kind != "sparse_categorical":
            return None
        keywords = getattr(self.fn, "keywords", None) or {}  # functools.partial(F.cross_entropy, ...)
        return getattr(self.fn, "ignore_index", keywords.get("ignore_index", -100))

    def __call__(self, y_true, y_pred, sample_weight=None):
        y_true, y_pred = self._prepare(*_tensors(y_true, y_pred))
        if y_true.shape != y_pred.shape:  # equal shapes pass every check: the usual step pays one comparison
            self._check_shapes(y_true, y_pred)
        if sample_weight is None:
            out = self.fn(y_pred, y_true)
            return out if out.dim() == 0 else reduce_weighted(out)
        if self._sum_reduced:
            raise ValueError(
                f"Cannot apply `sample_weight` to {self.name} with reduction='sum': it returns one "
                f"summed value. Use reduction='mean' or 'none' (fitkit then weights per sample)."
            )
        if self._unreduced is None:  # a module without a `reduction` attribute
            values = self.fn(y_pred, y_true)
            if values.dim() == 0:
                raise ValueError(
                    f"Cannot apply `sample_weight` to the loss module {self.name}: it returns a scalar. "
                    f"Give it a `reduction='none'` mode, or return per-sample losses."
                )
        else:
            values = self._unreduced(y_pred, y_true)
        # Mean over the axes the weights do not cover: (N,) weights -> one loss per sample.
        sw_rank = max(getattr(sample_weight, "ndim", 1), 1)
        if values.dim() > sw_rank:
            values = values.reshape(tuple(values.shape[:sw_rank]) + (-1,)).mean(-1)
        return reduce_weighted(values, sample_weight)


# -------------------------------------------------------------------------------------------- get

_KERAS = {
    "mean_squared_error": MeanSquaredError,
    "mean_absolute_error": MeanAbsoluteError,
    "mean_absolute_percentage_error": MeanAbsolutePercentageError,
    "mean_squared_logarithmic_error": MeanSquaredLogarithmicError,
    "binary_crossentropy": BinaryCrossentropy,
    "binary_focal_crossentropy": BinaryFocalCrossentropy,
    "categorical_crossentropy": CategoricalCrossentropy,
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
    "huber": Huber,
    "log_cosh": LogCosh,
    "kl_divergence": KLDivergence,
    "poisson": Poisson,
    "hinge": Hinge,
    "squared_hinge": SquaredHinge,
    "categorical_hinge": CategoricalHinge,
    "cosine_similarity": CosineSimilarity,
}
_ALIASES = {
    "mse": "mean_squared_error", "MSE": "mean_squared_error",
    "mae": "mean_absolute_error", "MAE": "mean_absolute_error",
    "mape": "mean_absolute_percentage_error", "MAPE": "mean_absolute_percentage_error",
    "msle": "mean_squared_logarithmic_error", "MSLE": "mean_squared_logarithmic_error",
    "bce": "binary_crossentropy", "BCE": "binary_crossentropy",
    "kld": "kl_divergence", "KLD": "kl_divergence", "kullback_leibler_divergence": "kl_divergence",
    "logcosh": "log_cosh", "huber_loss": "huber",
}
_TORCH_NAMES = {
    "cross_entropy": _nn.CrossEntropyLoss,
    "bce_with_logits": _nn.BCEWithLogitsLoss,
    "nll": _nn.NLLLoss,
    "l1": _nn.L1Loss,
    "smooth_l1": _nn.SmoothL1Loss,
}
_CLASSES = {cls.__name__: cls for cls in _KERAS.values()}


def names():
    """Every string ``get`` accepts."""
    return sorted(set(_KERAS) | set(_ALIASES) | set(_TORCH_NAMES) | set(_CLASSES))


def _suggestion(identifier):
    """" (did you mean ...?)" for a loss name that is not one: the closest known name, or the torch class."""
    torch_class = getattr(torch.nn, identifier, None)
    if isinstance(torch_class, type) and issubclass(torch_class, torch.nn.modules.loss._Loss):
        return f" (did you mean the torch module nn.{identifier}()? pass an instance: loss=nn.{identifier}())"
    def squash(name):
        return name.lower().replace("_", "")
    known = {squash(name): name for name in names()}
    close = difflib.get_close_matches(squash(identifier), known, n=1, cutoff=0.6)
    return f" (did you mean {known[close[0]]!r}?)" if close else ""


def get(identifier):
    """A :class:`Loss` from a name, a Loss, a torch loss module/functional, or a callable.

    Strings are Keras names ("mse", "binary_crossentropy", ...; Keras defaults, so ``from_logits=False``),
    Keras class names ("BinaryCrossentropy") or torch-style names ("cross_entropy", "bce_with_logits",
    "nll", "l1", "smooth_l1"; torch semantics, logits). Torch modules (``nn.CrossEntropyLoss()``) and
    functionals (``F.mse_loss``) are called in torch order; any other callable in Keras order
    ``fn(y_true, y_pred)``. ``None`` gives ``None`` (no loss), as in Keras.

    >>> get("sparse_categorical_crossentropy").kind
    'sparse_categorical'
    >>> get(torch.nn.functional.mse_loss).name
    'mse_loss'
    """
    if identifier is None or isinstance(identifier, Loss):
        return identifier
    if isinstance(identifier, str):
        key = _ALIASES.get(identifier, identifier)
        if key in _KERAS:
            return _KERAS[key]()
        if key in _CLASSES:
            return _CLASSES[key]()
        if key in _TORCH_NAMES:
            return TorchLoss(_TORCH_NAMES[key](), name=key)
        raise ValueError(
            f"Unknown value for argument `loss`: {identifier!r}{_suggestion(identifier)}. Expected one of "
            f"{names()}, a fitkit.losses.Loss, a torch loss module or function, or a callable(y_true, y_pred)."
        )
    if isinstance(identifier, type):
        if issubclass(identifier, (Loss, torch.nn.Module)):
            return get(identifier())
    elif isinstance(identifier, torch.nn.Module):
        return TorchLoss(identifier)
    elif callable(identifier):
        if _is_torch_function(identifier):
            return TorchLoss(identifier)
        return LossFunction(identifier)
    raise TypeError(
        f"Invalid type for argument `loss`: {identifier!r} ({type(identifier).__name__}). Expected a "
        f"loss name such as 'mse', a fitkit.losses.Loss, a torch loss module or function, or a "
        f"callable(y_true, y_pred)."
    )
