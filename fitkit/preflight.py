"""Before the first step of a fit: the data checked against the model and the loss, and the targets
reconciled once, from the model's first outputs.

:func:`run` takes a first batch of the training data (and of the validation data) before any callback
begins, computes the model's outputs for it without training (evaluation mode, no step, every RNG as
it was), and checks, raising before any weight, optimizer state or file changes:

* the data is not empty (arrays of 0 samples, an empty Dataset, a generator that yields nothing);
* NaN or infinite values in in-memory x, y or sample_weight (a warning, one pass over the data);
* a forward pass that fails says which inputs fit passed (shapes and dtypes) in a note on the error;
* the targets' shape can be reconciled with the outputs' for the compiled loss (``Loss.check_targets``,
  which every loss call repeats per batch: a shape comparison, no device work);
* a multi-class loss has more than one output unit;
* labels fit the loss: class indices are integers in ``[0, classes)`` (the loss's ignored label aside),
  binary targets lie in ``[0, 1]`` (hinge losses: ``[-1, 1]``). In-memory targets are checked once per
  fit (one min/max pass); an iterable's are checked batch by batch on the CPU batch before it moves to
  the device, so no step waits for the device (a batch the iterable yields already on an accelerator
  is summed on the device and read once, when the epoch's batches end: then the error comes after
  that epoch's steps);
* outputs that look like probabilities given to a logits loss, or logits given to a probability loss
  (a warning, once per compile; an error for ``nn.BCELoss``, which would fail in the step).

Then, for in-memory data, the targets are reconciled with the compiled loss once (integer labels of
shape ``(N,)`` become the float ``(N, 1)`` a binary loss wants), so no step pays that cast and reshape.

Which checks apply when: the emptiness, length and NaN checks always. The forward pass and the loss
checks (shapes, units, labels, probabilities) only where fitkit knows what a step does with the data:
fitkit's own ``train_step`` (``test_step`` for the validation data) and a compiled loss. A custom
``train_step`` may use x and the targets in its own way, so fit does not guess: the shape check inside
every compiled loss call still applies to whatever the step passes it. The ahead-of-time target
reconciliation also needs metrics given by name (those read targets of either form alike).
"""

import sys
import warnings
import weakref

import torch

from . import data
from .losses import TorchLoss

# Compiled states already warned about probabilities / logits: once per compile, not once per fit.
_WARNED = weakref.WeakKeyDictionary()


def first_outputs(model, x, where=None, producers=None):
    """The model's outputs for the inputs ``x``, computed without training and without moving any RNG,
    BatchNorm statistic or the model's training mode.

    ``where`` (e.g. "the first batch of the training data") turns an exception of the forward pass into
    the same exception with a note naming what fit passed to it: the inputs' shapes and dtypes.
    ``producers``, a dict, receives for each output tensor (by ``id``) the name of the operation that
    made it ("Sigmoid", "Softmax", ...; see :func:`_producer`): the forward then records its graph,
    which is dropped before the (detached) outputs are returned.
    """
    was_training = model.training
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    try:
        with torch.random.fork_rng(devices=devices), torch.set_grad_enabled(producers is not None):
            model.eval()
            out = model._forward(x)
        if producers is None:
            return out

        def detach(t):
            if not isinstance(t, torch.Tensor):
                return t
            d = t.detach()
            producers[id(d)] = _producer(t.grad_fn)
            return d
        return data.map_structure(detach, out)
    except Exception as exc:
        if where is None:
            raise
        note = (f"fitkit: the model's forward pass failed on {where}, before any training step (nothing "
                f"changed). fit passed {_describe_inputs(x)}. Check the model's first layer against these "
                "(its number of input features, the dtype it takes) and the forward method's arguments.")
        if hasattr(exc, "add_note"):  # Python 3.11+: the same exception, its traceback, and the note
            exc.add_note(note)
            raise
        chained = _same_type(exc, note)
        if chained is None:
            raise
        raise chained from exc
    finally:
        model.train(was_training)


# Operations that only move or reshape values: the producer of an output is found behind them.
_PASS_THROUGH = frozenset({"Squeeze", "Unsqueeze", "View", "Reshape", "ReshapeAlias", "UnsafeView", "Clone",
                           "Slice", "Select", "ToCopy", "Permute", "Transpose", "T", "Expand", "Alias",
                           "AsStrided", "Contiguous"})


def _producer(grad_fn):
    """The name of the operation that made a tensor ("Sigmoid" for ``SigmoidBackward0``), looking past
    reshapes and copies; None without autograd history."""
    while grad_fn is not None:
        name = type(grad_fn).__name__.rstrip("0123456789")
        name = name[:-len("Backward")] if name.endswith("Backward") else name
        if name not in _PASS_THROUGH:
            return name
        nxt = [f for f, _ in grad_fn.next_functions if f is not None]
        grad_fn = nxt[0] if nxt else None
    return None


def _same_type(exc, note):
    """Before Python 3.11: an exception of ``exc``'s type whose message ends with ``note``, or None."""
    try:
        return type(exc)(f"{exc}\n{note}")
    except Exception:
        return None


def stacklevel():
    """``warnings.warn``'s stacklevel that names the first caller outside fitkit (the user's fit line)."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_globals.get("__name__", "").split(".")[0] == "fitkit":
        frame, level = frame.f_back, level + 1
    return level


def _describe(t):
    if isinstance(t, torch.Tensor):
        return f"a {str(t.dtype).replace('torch.', '')} tensor of shape {tuple(t.shape)} on {t.device}"
    return f"a {type(t).__name__}"


def _describe_inputs(x):
    """How ``Model._forward`` called the model with ``x``, in words: ``forward(x)`` with its shapes."""
    if isinstance(x, dict):
        return "forward(**x) with " + ", ".join(f"{k}={_describe(v)}" for k, v in x.items())
    if isinstance(x, (list, tuple)):
        return "forward(*x) with " + ", ".join(f"x[{i}] = {_describe(v)}" for i, v in enumerate(x))
    return f"forward(x) with x = {_describe(x)}"


# ----------------------------------------------------------------------------------------- the run

def run(model, train, val=None, own_train_step=True, own_test_step=True):
    """Everything fit checks and prepares before any callback begins (see the module's docstring).

    ``own_train_step`` / ``own_test_step``: whether the model's ``train_step`` / ``test_step`` are
    fitkit's own (only then are the loss checks made on the training / validation data).
    """
    compiled = model._compiled
    loss = compiled.loss if compiled is not None else None
    x, y, sw = _first_batch(train)
    if isinstance(train, data.ArraySource):
        stats = _scan(train, "x")
    else:
        stats = None
    y_pred = None
    if own_train_step and loss is not None and y is not None:
        producers = {}
        y_pred = first_outputs(model, x, "the first batch of the training data", producers)
        rules = _check_outputs(compiled, y, y_pred, producers)
        _check_labels(train, rules, stats, y)
    if val is not None:
        _check_validation(model, compiled, val, own_test_step and loss is not None)
    if y_pred is not None:
        prepare_targets(model, train, own_train_step, y_pred)


def _first_batch(source):
    """A first batch ``(x, y, sample_weight)`` of ``source`` on the device (ValueError when empty)."""
    if isinstance(source, data.ArraySource):
        return source.first_batch()
    return data.unpack_x_y_sample_weight(source.peek())


def _check_validation(model, compiled, val, with_loss):
    role = "validation_data"
    vx, vy, _ = _first_batch(val)
    stats = _scan(val, role) if isinstance(val, data.ArraySource) else None
    if not with_loss or vy is None:
        return
    y_pred = first_outputs(model, vx, "the first batch of validation_data")
    try:
        rules = _check_outputs(compiled, vy, y_pred, {})
        _check_labels(val, rules, stats, vy)
    except ValueError as exc:
        raise _renamed(exc, role) from None


def _renamed(exc, role):
    """A ``"y: ..."`` error about the validation targets, said of ``validation_data``."""
    text = str(exc)
    return ValueError(f"{role}: {text[3:]}" if text.startswith("y: ") else text)


# ----------------------------------------------------------------------------------------- in memory

def _range(t):
    """``(min, max)`` of a tensor as Python floats (NaN when it holds a NaN): one pass."""
    if t.dtype == torch.bool:
        return float(bool(t.all())), float(bool(t.any()))  # min is 1 only if all are True
    lo, hi = torch.aminmax(t)
    return lo.item(), hi.item()


def _named_leaves(structure, name):
    """``(name, tensor)`` for each tensor of a structure: ``x``, ``x[0]``, ``x['image']``."""
    if isinstance(structure, dict):
        return [leaf for k, v in structure.items() for leaf in _named_leaves(v, f"{name}[{k!r}]")]
    if isinstance(structure, (list, tuple)):
        return [leaf for i, v in enumerate(structure) for leaf in _named_leaves(v, f"{name}[{i}]")]
    return [] if structure is None else [(name, structure)]


def _scan(source, role):
    """One pass over an in-memory source's tensors: their ``(min, max)`` by tensor id, and a warning for
    NaN or infinite values in x, y or sample_weight."""
    stats = {}
    prefix = "" if role == "x" else f"{role}'s "
    for part, structure in (("x", source.x), ("y", source.y), ("sample_weight", source.sample_weight)):
        for name, t in _named_leaves(structure, part):
            if t.numel() == 0 or not (t.is_floating_point() or part == "y"):
                continue  # integer inputs (token ids) hold no NaN; only targets need their range
            lo, hi = _range(t)
            stats[id(t)] = (lo, hi)
            if t.is_floating_point() and not (abs(lo) < float("inf") and abs(hi) < float("inf")):
                bad = int((~torch.isfinite(t)).sum())
                warnings.warn(
                    f"{part if role == 'x' else role}: {bad} of the {t.numel()} values in {prefix}{name} (shape "
                    f"{tuple(t.shape)}) are NaN or infinite; a batch that holds one gives a NaN loss and, after "
                    "its step, NaN weights. Fix: drop or impute them before fit (np.nan_to_num, or a mask).",
                    UserWarning, stacklevel=stacklevel())
    return stats


# ----------------------------------------------------------------------------------------- outputs

def _outputs(compiled, y, y_pred):
    """``[(loss, pick, y_pred_part, output name)]``: each loss of the compiled LossContainer with the
    function that picks its targets out of a batch's ``y``, as the container itself does."""
    container = compiled.loss
    if isinstance(y_pred, torch.Tensor):
        plan = container._plan(y_pred)
        if not plan or plan[0][0] is not None:
            return []
        single = plan[0][3]

        def pick(y):
            return y[0] if isinstance(y, (list, tuple)) and len(y) == 1 else y
        return [(single, pick, y_pred, None)]
    if not isinstance(y_pred, (list, tuple, dict)):
        return []
    plan = container._plan(y_pred)
    only_lossy = (not isinstance(y, (list, tuple, dict)) and len(plan) == 1) or (
        isinstance(y, (list, tuple)) and len(y) == len(plan) < len(y_pred))
    found = []
    for j, (key, pos, name, loss, _) in enumerate(plan):
        if only_lossy:
            def pick(y, j=j):
                return y[j] if isinstance(y, (list, tuple)) else y
        else:
            def pick(y, key=key, pos=pos, name=name):
                return container._pick(y, key, pos, name, "y")
        found.append((loss, pick, y_pred[key], name))
    return found


def _class_axis(loss, y_pred):
    axis = getattr(loss, "class_axis", -1)
    if isinstance(loss, TorchLoss) and y_pred.dim() == 1:
        axis = 0
    return axis % y_pred.dim() if y_pred.dim() else None


class _LabelRule:
    """What one loss accepts as targets: class indices in ``[0, classes)`` ("index"), or values in
    ``[low, high]`` ("range"); ``check(lo, hi, fractional)`` raises naming what was found."""

    def __init__(self, loss, pick, kind, classes=None, low=0.0, high=1.0, ignored=None, output=None, fix=None):
        self.loss, self.pick, self.kind = loss, pick, kind
        self.classes, self.low, self.high, self.ignored = classes, low, high, ignored
        self.output, self.fix = output, fix

    def _where(self):
        return f" for output {self.output!r}" if self.output is not None else ""

    def check(self, t, lo, hi, fractional):
        name = self.loss.name
        if lo != lo or hi != hi:
            raise ValueError(f"y: the targets{self._where()} hold NaN; the loss {name!r} needs numbers. Fix: drop "
                             "or impute the NaN targets")
        if self.kind == "range":
            if lo < self.low or hi > self.high:
                raise ValueError(f"y: got targets from {_num(lo)} to {_num(hi)}{self._where()} for the loss "
                                 f"{name!r}, which needs values in [{_num(self.low)}, {_num(self.high)}]. Fix: "
                                 f"{self.fix}")
            return
        if fractional:
            example = f" (such as {_num(float(t[t != t.trunc()][0]))})" if t is not None else ""
            raise ValueError(f"y: got fractional labels{example}{self._where()} for the class-index loss {name!r}; "
                             f"it needs integer class indices in [0, {self.classes}), and torch would truncate "
                             "these. Fix: round the labels, or use 'categorical_crossentropy' for soft targets")
        if lo < 0 or hi >= self.classes:
            lo, hi = self._without_ignored(t, lo, hi)
        if lo < 0 or hi >= self.classes:
            units = f"give the model's last layer {int(hi) + 1} units, or " if hi >= self.classes else ""
            raise ValueError(
                f"y: got labels from {_num(lo)} to {_num(hi)}{self._where()} for the loss {name!r}, but the model's "
                f"outputs have {self.classes} classes; expected class indices in [0, {self.classes}). Fix: "
                f"{units}re-encode the labels as 0..{self.classes - 1}")

    def _without_ignored(self, t, lo, hi):
        """``(min, max)`` of the labels other than the loss's ignored one (a second pass, when needed)."""
        if self.ignored is None or t is None:
            return lo, hi
        kept = t[t != self.ignored]
        return _range(kept) if kept.numel() else (0.0, 0.0)


def _num(v):
    return str(int(v)) if float(v).is_integer() else f"{v:.4g}"


_BINARY_FIX = ("for several classes use 'sparse_categorical_crossentropy' (nn.CrossEntropyLoss) with one output "
               "unit per class; for -1/1 labels map them to 0/1")


def _label_rule(loss, pick, y_true, y_pred, output):
    """The :class:`_LabelRule` of ``loss`` for these shapes, or None when it takes any values."""
    kind, logits = getattr(loss, "kind", None), getattr(loss, "from_logits", None)
    if kind == "sparse_categorical":
        if isinstance(loss, TorchLoss) and tuple(y_true.shape) == tuple(y_pred.shape):
            return _LabelRule(loss, pick, "range", output=output,  # class probabilities
                              fix="give class probabilities in [0, 1], or class indices of shape (N,)")
        classes = y_pred.shape[_class_axis(loss, y_pred)]
        return _LabelRule(loss, pick, "index", classes=classes, ignored=getattr(loss, "ignored_label", None),
                          output=output)
    if kind == "binary":
        if logits is None:  # hinge losses take -1/1 (or 0/1) labels
            return _LabelRule(loss, pick, "range", low=-1.0, output=output, fix="map the labels to -1/1 (or 0/1)")
        return _LabelRule(loss, pick, "range", output=output, fix=_BINARY_FIX)
    if kind == "categorical" and logits is not None and not isinstance(loss, TorchLoss):
        return _LabelRule(loss, pick, "range", output=output,  # one-hot or probabilities
                          fix="give one-hot targets (np.eye(classes)[labels]) or class probabilities")
    return None


def _check_outputs(compiled, y, y_pred, producers):
    """Shapes, output units and probabilities-vs-logits for each loss on the first batch; returns the
    label rules to check the targets with. ``producers``: see :func:`first_outputs` (empty: the
    probabilities-vs-logits check is left to the training data's outputs)."""
    rules = []
    for loss, pick, out, output in _outputs(compiled, y, y_pred):
        if not isinstance(out, torch.Tensor):
            continue
        y_true = pick(y)
        if not isinstance(y_true, torch.Tensor):
            continue
        try:
            loss.check_targets(y_true, out)
        except ValueError as exc:
            if output is None or not str(exc).startswith("y: "):
                raise
            raise ValueError(f"y: for output {output!r}, {str(exc)[3:]}") from None
        _check_units(loss, out, output)
        rule = _label_rule(loss, pick, y_true, out, output)
        if rule is not None:
            rules.append(rule)
        if producers:
            _check_probabilities(compiled, loss, out, output, producers.get(id(out)))
    return rules


def _check_units(loss, y_pred, output):
    kind = getattr(loss, "kind", None)
    if kind not in ("sparse_categorical", "categorical") or y_pred.dim() == 0:
        return
    axis = _class_axis(loss, y_pred)
    if y_pred.shape[axis] == 1:
        where = f" for output {output!r}" if output is not None else ""
        raise ValueError(
            f"loss: {loss.name!r} is a multi-class loss, but the model has 1 output unit{where} (outputs of shape "
            f"{tuple(y_pred.shape)}): softmax over one class is always 1, so nothing would be learned. Fix: give "
            "the last layer one unit per class, or for two classes use 'binary_crossentropy' "
            "(nn.BCEWithLogitsLoss) with one unit")


def _check_probabilities(compiled, loss, y_pred, output, producer):
    """Warn (once per compile) when probabilities meet a logits loss, or logits a probability loss.

    Probabilities are told by the operation that made the outputs (``producer``: a final sigmoid or
    softmax), not by their values: an untrained model's logits may well all lie in (0, 1). Logits are
    told by their values: outside [0, 1], or rows that do not sum to 1 for a multi-class loss.
    ``nn.BCELoss`` on values outside [0, 1] would fail in the step: that one is an error.
    """
    kind, logits = getattr(loss, "kind", None), getattr(loss, "from_logits", None)
    if logits is None or kind not in ("binary", "categorical", "sparse_categorical") \
            or not y_pred.is_floating_point() or y_pred.numel() == 0:
        return
    name = loss.name
    where = f" for output {output!r}" if output is not None else ""
    if logits:
        log_probabilities = name in ("NLLLoss", "nll_loss", "nll", "KLDivLoss", "kl_div")
        if producer in ("Sigmoid", "Hardsigmoid") or (producer == "Softmax" and kind != "binary"):
            fix = "use log_softmax instead of softmax" if log_probabilities else f"remove the final {producer.lower()}"
            message = (f"loss: the model's outputs{where} come from a {producer.lower()}, so they are probabilities, "
                       f"but {name!r} takes {'log-probabilities' if log_probabilities else 'logits'} and "
                       f"applies the {'log' if log_probabilities else producer.lower()} itself. Fix: {fix}, or use a "
                       "probability loss (nn.BCELoss(), 'binary_crossentropy', 'categorical_crossentropy')")
        else:
            return
    else:
        p = y_pred.detach().float()
        lo, hi = _range(p)
        if lo != lo or hi != hi:
            return  # NaN outputs: the NaN warnings and the loss say it
        in_unit = 0.0 <= lo and hi <= 1.0
        if kind == "binary":
            if in_unit:
                return
            message = (f"loss: the model's outputs{where} on the first batch range from {lo:.4g} to {hi:.4g}, like "
                       f"logits, but {name!r} takes probabilities in [0, 1]. Fix: end the model with a sigmoid, or "
                       "use a logits loss (nn.BCEWithLogitsLoss(), BinaryCrossentropy(from_logits=True))")
            if isinstance(loss, TorchLoss):
                raise ValueError(message)  # F.binary_cross_entropy refuses them: fail here, with the fix
        else:
            axis = _class_axis(loss, p)
            if in_unit and p.dim() and p.shape[axis] > 1 and float((p.sum(axis) - 1.0).abs().max()) <= 1e-3:
                return
            message = (f"loss: the model's outputs{where} on the first batch are not probabilities (they range "
                       f"from {lo:.4g} to {hi:.4g}{'' if not in_unit else ' and their rows do not sum to 1'}), but "
                       f"{name!r} takes probabilities (Keras's default from_logits=False). Fix: end the model with a "
                       "softmax, or use a logits loss (nn.CrossEntropyLoss(), from_logits=True)")
    warned = _WARNED.setdefault(compiled, set())
    if (id(loss), message[:60]) not in warned:
        warned.add((id(loss), message[:60]))
        warnings.warn(message, UserWarning, stacklevel=stacklevel())


# ----------------------------------------------------------------------------------------- labels

def _label_stats(t, rule, known=None):
    """``(min, max, fractional)`` of one target tensor, for ``rule`` (``known``: its min and max)."""
    lo, hi = known or _range(t)
    fractional = rule.kind == "index" and t.is_floating_point() and lo == lo and hi == hi \
        and bool((t != t.trunc()).any())
    return lo, hi, fractional


def _check_labels(source, rules, stats, first_y):
    """Check the targets of ``source`` against ``rules``: all of them now when they are in memory (from
    the min/max pass already made), else the first batch's (``first_y``) now and every batch's as it
    comes."""
    if not rules:
        return
    if isinstance(source, data.ArraySource):
        y = source.y
        for rule in rules:
            t = rule.pick(y)
            if not isinstance(t, torch.Tensor):
                continue
            rule.check(t, *_label_stats(t, rule, stats.get(id(t))))
        return
    whole = _all_targets(source)
    if whole is not None:  # a DataLoader over a TensorDataset: all its targets at once, no per-batch check
        for rule in rules:
            t = rule.pick(whole)
            rule.check(t, *_label_stats(t, rule))
        return
    if isinstance(source, data.IterableSource):
        check = BatchLabels(rules)
        check(None, first_y, None)
        check.end_epoch()
        source.batch_check = check


def _all_targets(source):
    """Every target an iterable source will yield, when they lie in one tensor it can read now: a
    DataLoader with the default collation over a TensorDataset of (x, y) or (x, y, sample_weight)."""
    loader = getattr(source, "iterable", None)
    if not isinstance(loader, torch.utils.data.DataLoader) or \
            not isinstance(loader.dataset, torch.utils.data.TensorDataset) or \
            loader.collate_fn not in (torch.utils.data.default_collate, torch.utils.data.default_convert):
        return None
    tensors = loader.dataset.tensors
    return tensors[1] if len(tensors) in (2, 3) else None


class BatchLabels:
    """The label check of an iterable's batches, called with each batch's tensors before they move.

    A CPU batch (what a DataLoader or generator usually yields) is checked at once: a min/max of its
    few targets on the host, no device involved. Targets that arrive already on an accelerator are not
    read per batch (that would make every step wait for the device): their min, max and a fractional
    flag accumulate on the device, and :meth:`end_epoch` reads them once, after the epoch's last batch.
    """

    def __init__(self, rules):
        self.rules = rules
        self._pending = {}  # rule index -> (min, max, fractional) device tensors of this epoch

    def __call__(self, x, y, sample_weight):
        if y is None:
            return
        for i, rule in enumerate(self.rules):
            t = rule.pick(y)
            if not isinstance(t, torch.Tensor) or t.numel() == 0:
                continue
            if t.device.type == "cpu":
                rule.check(t, *_label_stats(t, rule))
            else:
                self._accumulate(i, rule, t)

    def _accumulate(self, i, rule, t):
        v = t.detach()
        v = v.float() if v.dtype == torch.bool else v
        if rule.kind == "index" and rule.ignored is not None:
            # The ignored label counts as neither min nor max (torch.where: no boolean indexing, no sync).
            ignored = v == rule.ignored
            lo = torch.where(ignored, torch.full_like(v, 0), v).amin()
            hi = torch.where(ignored, torch.full_like(v, 0), v).amax()
        else:
            lo, hi = torch.aminmax(v)
        frac = (v != v.trunc()).any() if rule.kind == "index" and v.is_floating_point() else torch.zeros(
            (), dtype=torch.bool, device=v.device)
        seen = self._pending.get(i)
        if seen is not None:
            lo, hi, frac = torch.minimum(seen[0], lo), torch.maximum(seen[1], hi), seen[2] | frac
        self._pending[i] = (lo, hi, frac)

    def end_epoch(self):
        """Read what accumulated on the device (one read per epoch) and raise for bad labels."""
        pending, self._pending = self._pending, {}
        for i, (lo, hi, frac) in pending.items():
            self.rules[i].check(None, float(lo), float(hi), bool(frac))


# ----------------------------------------------------------------------------------------- targets

def prepare_targets(model, train, own_train_step, y_pred=None):
    """Reconcile the in-memory targets of ``train`` with the compiled loss, once per fit (see above).

    ``y_pred``: the model's outputs for the first batch, when the caller has them already.
    """
    compiled = model._compiled
    if not (own_train_step and compiled.loss is not None and compiled.named_metrics_only
            and isinstance(train, data.ArraySource) and isinstance(train.y, torch.Tensor)):
        return
    if y_pred is None:
        x, _, _ = train.first_batch()
        y_pred = first_outputs(model, x)
    train.map_targets(lambda y: compiled.loss.prepare_targets(y, y_pred))
