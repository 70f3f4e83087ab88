"""What ``compile()`` builds, in one room: the compiled state of a model and the running sums of an epoch.

Keras keeps the same things together (``keras/src/trainers/compile_utils.py``):

* :func:`output_names`: how the outputs of a model with several outputs are named in the logs;
* :class:`LossTracker`: the epoch's mean loss over samples;
* :class:`LossContainer`: the compiled loss of one or many outputs, with ``loss_weights``;
* :class:`MetricsContainer`: the compiled metrics, built into named log entries;
* :class:`CompiledState`: what ``Model.compile`` set up (optimizer, scheduler, loss, metrics, device)
  with ``reset()`` / ``results()`` / ``state_dict()`` / ``load_state_dict()`` over every running sum;
* :func:`build`: ``Model.compile``'s work, its arguments checked before anything changes.

Nothing here reads a device value per step: sums stay on the device and :meth:`CompiledState.results`
hands out 0-dim tensors.
"""

import copy
import functools
import numbers

import torch
from torch import nn

from . import distributed, jit, mixed_precision, model_file, optimizers
from .losses import get as get_loss
from .metrics import get as get_metric
from .step import StepMechanics


def output_names(y_pred):
    """Keras's names for a model's outputs: a dict's keys, ``output_1``, ``output_2``, ... for a list or
    tuple, None for a single tensor.

    >>> output_names([torch.zeros(1), torch.zeros(1)])
    ['output_1', 'output_2']
    """
    if isinstance(y_pred, dict):
        return list(y_pred)
    if isinstance(y_pred, (list, tuple)):
        return [f"output_{i + 1}" for i in range(len(y_pred))]
    return None


# ----------------------------------------------------------------------------------------- loss tracker

class LossTracker:
    """The epoch's mean loss over samples: each batch's loss weighted by its size, as Keras logs it.

    It is Keras's loss tracker (``model.metrics[0]``, named ``"loss"``) with Keras's metric methods:
    ``update_state(loss, sample_weight=None)`` (a batch's loss, weighted by ``sample_weight``: the batch
    size in fitkit's and Keras's own steps, 1 when not given, as Keras's ``Mean``), ``result()`` and
    ``reset_state()``. ``update(loss, batch_size)`` is the fast form the steps use.

    On an accelerator a step only appends the detached loss to a list (no device op, no sync); the
    weighted mean is computed when somebody reads it, and long epochs are folded into a running sum now
    and then. On the CPU, where reading a value syncs nothing, the sum is a Python float (float64):
    the cheapest bookkeeping there is.
    """

    _FOLD_EVERY = 4096

    def __init__(self, name="loss"):
        self.name = name
        self.reset()

    def reset(self):
        self._values, self._sizes = [], []
        self._sum, self._count = None, 0

    def reset_state(self):
        self.reset()

    def update_state(self, values, sample_weight=None):
        """Keras's ``Mean.update_state`` for losses: a scalar counts as one value of weight
        ``sample_weight`` (1 when None); ``(N, ...)`` values count as N values (each the mean of its row)."""
        values = torch.as_tensor(values).detach()
        if values.dim() > 0 and sample_weight is not None and not isinstance(sample_weight, numbers.Number) \
                and torch.as_tensor(sample_weight).numel() > 1:
            weights = torch.as_tensor(sample_weight, device=values.device, dtype=torch.float64)
            rows = values.reshape(values.shape[0], -1).double().mean(1) if values.dim() > 1 else values.double()
            total = weights.sum()
            self.update((rows * weights).sum() / total, total.item())
            return
        if values.dim() > 0:
            count = values.shape[0]
            values = values.reshape(count, -1).float().mean() if values.dim() > 1 else values.float().mean()
            self.update(values, count)
            return
        if sample_weight is None:
            sample_weight = 1
        elif isinstance(sample_weight, torch.Tensor):
            sample_weight = sample_weight.item()
        self.update(values, sample_weight)

    def update(self, loss, batch_size):
        if loss.is_cpu and loss.numel() == 1:
            value = loss.item() * batch_size
            self._sum = value if self._sum is None else self._sum + value
            self._count += batch_size
            return
        self._values.append(loss.detach())
        self._sizes.append(batch_size)
        if len(self._values) >= self._FOLD_EVERY:
            self._fold()

    def _fold(self):
        values = torch.stack(self._values).float()
        # non_blocking: the sizes go up without waiting for the device (a fold may happen mid-epoch)
        sizes = torch.tensor(self._sizes, dtype=values.dtype).to(values.device, non_blocking=True)
        partial = (values * sizes).sum()
        self._sum = partial if self._sum is None else self._sum + partial
        self._count += sum(self._sizes)
        self._values, self._sizes = [], []

    def result(self):
        if self._values:
            self._fold()
        if self._sum is None or self._count == 0:
            return torch.tensor(0.0)
        return self._sum / self._count

    def totals(self):
        """``(sum, count)`` so far (a float or a 0-dim tensor, and an int): what ranks add up."""
        if self._values:
            self._fold()
        return (0.0 if self._sum is None else self._sum), self._count

    def set_totals(self, total, count):
        """Replace the running sum and count (by the sums over every rank, see fitkit.distributed)."""
        self._values, self._sizes = [], []
        kept = self._sum
        self._sum = float(total) if not isinstance(kept, torch.Tensor) else \
            torch.as_tensor(total).to(device=kept.device, dtype=kept.dtype)
        self._count = int(round(float(count)))

    def state_dict(self):
        """The running state as it is (nothing folded), so a mid-epoch resume sums exactly as before."""
        return {"values": list(self._values), "sizes": list(self._sizes), "sum": self._sum, "count": self._count}

    def load_state_dict(self, state, device=None):
        """Put back :meth:`state_dict`'s output; ``device`` moves its tensors (a backup is read on the CPU)."""
        def on(value):
            return value.to(device) if device is not None and isinstance(value, torch.Tensor) else value

        self._values, self._sizes = [on(v) for v in state["values"]], list(state["sizes"])
        self._sum, self._count = on(state["sum"]), state["count"]


# ----------------------------------------------------------------------------------------- losses

class LossContainer:
    """The compiled loss of a model with one or many outputs.

    ``loss`` is one identifier (applied to every output), a list (one per output, ``None`` skips one) or
    a dict keyed like the outputs; ``loss_weights`` a number, list or dict (default 1). Calling it returns
    ``(total, parts)``: the weighted sum and, when more than one output has a loss, the *unweighted* loss
    of each output by name (dict keys, or "output_1", "output_2", ... for list outputs); Keras logs these
    as "<name>_loss". ``y_true`` and ``sample_weight`` are structured like ``y_pred`` (a single
    ``sample_weight`` tensor applies to every output).

    ``single`` is the Loss when one loss covers everything (one identifier, or a list of one), else None;
    ``losses`` holds the resolved Loss objects in the structure the user gave (Loss, list or dict).

    >>> c = LossContainer(["mse", "mae"], loss_weights=[1.0, 0.5])
    >>> total, parts = c([torch.zeros(2, 1), torch.zeros(2, 1)], [torch.ones(2, 1), torch.ones(2, 1)])
    >>> float(total), sorted(parts)
    (1.5, ['output_1', 'output_2'])
    """

    def __init__(self, loss, loss_weights=None):
        if isinstance(loss, (list, tuple)):
            self.losses = [None if l is None else get_loss(l) for l in loss]
            present = [l for l in self.losses if l is not None]
            self.single = self.losses[0] if len(self.losses) == 1 else None
        elif isinstance(loss, dict):
            self.losses = {k: None if l is None else get_loss(l) for k, l in loss.items()}
            present = [l for l in self.losses.values() if l is not None]
            self.single = None
        else:
            if loss is None:
                raise ValueError("Invalid value for argument `loss`: None. Expected a loss to compile.")
            self.losses = self.single = get_loss(loss)
            present = [self.losses]
        if not present:
            raise ValueError(f"Invalid value for argument `loss`: {loss!r}. Every entry is None; "
                             f"expected at least one loss.")
        self.loss_weights = self._check_weights(loss_weights)
        self._plans = {}
        self._tensor_plan = None  # (loss, weight) once a single-tensor output has been seen

    def _check_weights(self, w):
        if w is None or isinstance(w, (int, float)):
            return w
        if isinstance(w, (list, tuple)):
            if isinstance(self.losses, (list, dict)) and len(w) != len(self.losses):
                raise ValueError(
                    f"`loss_weights` has {len(w)} entries but `loss` has {len(self.losses)}; expected one "
                    f"weight per loss."
                )
            return list(w)
        if isinstance(w, dict):
            if isinstance(self.losses, dict) and not set(w) <= set(self.losses):
                raise ValueError(
                    f"`loss_weights` keys {sorted(map(str, set(w) - set(self.losses)))} are not among the "
                    f"`loss` keys {list(self.losses)}."
                )
            return dict(w)
        raise ValueError(f"Invalid type for argument `loss_weights`: {w!r} ({type(w).__name__}). Expected "
                        f"a number, a list or a dict.")

    def _plan(self, y_pred):
        """[(key, position, name, loss, weight)] for the outputs that have a loss; built once per structure."""
        if isinstance(y_pred, dict):
            struct = ("dict", tuple(y_pred))
        elif isinstance(y_pred, (list, tuple)):
            struct = ("list", len(y_pred))
        else:
            struct = ("tensor",)
        plan = self._plans.get(struct)
        if plan is None:
            plan = self._plans[struct] = self._build(y_pred)
            if struct == ("tensor",) and len(plan) == 1:
                self._tensor_plan = plan[0][3:]
        return plan

    def _build(self, y_pred):
        ids = output_names(y_pred)
        if isinstance(y_pred, dict):
            keys, names_ = ids, [str(k) for k in ids]
        elif ids is not None:
            keys, names_ = list(range(len(ids))), ids
        else:
            keys, names_, ids = [None], ["output_1"], ["output_1"]
        n = len(keys)
        if isinstance(self.losses, list):
            if len(self.losses) != n:
                raise ValueError(
                    f"`loss` has {len(self.losses)} entries but the model has {n} output(s) {ids}; "
                    f"expected a list of {n} losses (None skips an output)."
                )
            losses = list(self.losses)
        elif isinstance(self.losses, dict):
            if n == 1 and len(self.losses) == 1 and not isinstance(y_pred, dict):
                losses = list(self.losses.values())
            else:
                unknown = [k for k in self.losses if k not in ids]
                if unknown:
                    raise ValueError(
                        f"`loss` keys {unknown} are not among the model's outputs; expected keys from {ids}."
                    )
                losses = [self.losses.get(k) for k in ids]
        else:
            losses = [self.losses] * n
        w = self.loss_weights
        if w is None or isinstance(w, (int, float)):
            weights = [1.0 if w is None else float(w)] * n
        elif isinstance(w, list):
            if len(w) != n:
                raise ValueError(f"`loss_weights` has {len(w)} entries but the model has {n} output(s) "
                                 f"{ids}; expected {n} weights.")
            weights = [float(x) for x in w]
        else:
            unknown = [k for k in w if k not in ids]
            if unknown and not (n == 1 and len(w) == 1):
                raise ValueError(f"`loss_weights` keys {unknown} are not among the model's outputs; "
                                 f"expected keys from {ids}.")
            weights = [float(next(iter(w.values())))] if unknown else [float(w.get(k, 1.0)) for k in ids]
        return [(keys[i], i, names_[i], losses[i], weights[i]) for i in range(n) if losses[i] is not None]

    @staticmethod
    def _pick(struct, key, pos, name, what):
        if isinstance(struct, dict):
            if key in struct:
                return struct[key]
            if name in struct:
                return struct[name]
            if what == "sample_weight":
                return None
            raise ValueError(f"`{what}` has no entry for output {name!r}; received keys {list(struct)}, "
                             f"expected one for each output that has a loss.")
        if len(struct) <= pos:
            raise ValueError(f"`{what}` has {len(struct)} entries; expected one per model output.")
        return struct[pos]

    def prepare_targets(self, y_true, y_pred):
        """All of ``y_true`` reconciled ahead for the single loss of a single output (see
        :meth:`Loss.prepare_targets`); None otherwise, or when there is nothing to gain."""
        if not isinstance(y_pred, torch.Tensor) or not isinstance(y_true, torch.Tensor):
            return None
        plan = self._plan(y_pred)
        if len(plan) != 1 or plan[0][3] is not self.single:
            return None
        return self.single.prepare_targets(y_true, y_pred)

    def __call__(self, y_true, y_pred, sample_weight=None):
        if self._tensor_plan is not None and type(y_pred) is torch.Tensor and type(y_true) is torch.Tensor \
                and (sample_weight is None or type(sample_weight) is torch.Tensor):
            loss, weight = self._tensor_plan  # the usual case, straight to the loss: it runs every step
            total = loss(y_true, y_pred, sample_weight)
            return (total if weight == 1.0 else total * weight), {}
        plan = self._plan(y_pred)
        if plan[0][0] is None:  # a single tensor output
            _, _, _, loss, weight = plan[0]
            if isinstance(y_true, (list, tuple)) and len(y_true) == 1:
                y_true = y_true[0]
            if isinstance(sample_weight, (list, tuple)) and len(sample_weight) == 1:
                sample_weight = sample_weight[0]
            total = loss(y_true, y_pred, sample_weight)
            return (total if weight == 1.0 else total * weight), {}
        # Keras also takes targets for only the outputs that have a loss: one tensor, or a shorter list.
        only_lossy = (not isinstance(y_true, (list, tuple, dict)) and len(plan) == 1) or (
            isinstance(y_true, (list, tuple)) and len(y_true) == len(plan) < len(y_pred))
        if not only_lossy and not isinstance(y_true, (list, tuple, dict)):
            raise ValueError(f"`y` must be structured like the model's {len(y_pred)} outputs (a list "
                             f"or dict of targets); received a single {type(y_true).__name__}.")
        per_output_sw = isinstance(sample_weight, (list, tuple, dict))
        total, parts = None, {}
        for j, (key, pos, name, loss, weight) in enumerate(plan):
            sw = self._pick(sample_weight, key, pos, name, "sample_weight") if per_output_sw else sample_weight
            if only_lossy:
                target = y_true[j] if isinstance(y_true, (list, tuple)) else y_true
            else:
                target = self._pick(y_true, key, pos, name, "y")
            value = loss(target, y_pred[key], sw)
            parts[name] = value
            weighted = value if weight == 1.0 else value * weight
            total = weighted if total is None else total + weighted
        return total, (parts if len(plan) > 1 else {})


# ----------------------------------------------------------------------------------------- metrics

def _is_group(x):
    return x is None or isinstance(x, (list, tuple, dict))


def _as_list(x):
    if x is None:
        return []
    if isinstance(x, dict):
        return [m for v in x.values() for m in _as_list(v)]
    if isinstance(x, (list, tuple)):
        return [m for v in x for m in _as_list(v)]
    return [x]


class MetricsContainer:
    """The metrics of ``compile(metrics=..., weighted_metrics=...)``, built into named :class:`Metric` objects.

    ``metrics``/``weighted_metrics``: a list of identifiers (see :func:`fitkit.metrics.get`); for several outputs, a dict
    output name -> identifier(s), or a list with one entry per output (an identifier or a list of them), as
    Keras 3 distributes a list (log keys "<output>_<metric>"; a dict's outputs in sorted key order). ``loss``: the resolved loss, or a dict output name -> loss.
    ``output_names``: the model's outputs; when None and the first ``y_pred`` is a dict or a list of several
    tensors, names come from the dict keys or are "output_1", "output_2", ...

    Only ``weighted_metrics`` receive ``sample_weight``. Log keys follow Keras 3: duplicates get "_1",
    "_2"; a weighted metric whose key is already taken becomes "weighted_<name>".

    >>> c = MetricsContainer(["mae"], weighted_metrics=["mae"])
    >>> c.names
    ['mae', 'weighted_mae']
    """

    def __init__(self, metrics=None, weighted_metrics=None, loss=None, output_names=None):
        # A single identifier is accepted as a list of one.
        self._specs = {
            "metrics": metrics if _is_group(metrics) else [metrics],
            "weighted_metrics": weighted_metrics if _is_group(weighted_metrics) else [weighted_metrics],
        }
        self._loss = loss
        self._output_names = list(output_names) if output_names is not None else None
        self._entries = None  # (log key, metric, output index, weighted)
        self._checked = False
        self._dict_outputs = False
        if self._output_names is not None or not self._per_output_spec():
            self._build(self._output_names)

    # ---- building

    def _per_output_spec(self):
        for spec in self._specs.values():
            if isinstance(spec, dict) or (isinstance(spec, (list, tuple)) and any(_is_group(x) for x in spec)):
                return True
        return False

    def _loss_of(self, index, name):
        loss = self._loss
        if isinstance(loss, dict):
            return loss.get(name)
        if isinstance(loss, (list, tuple)):
            return loss[index] if index < len(loss) else None
        return loss

    def _split(self, spec, outputs, argument):
        """One list of identifiers per output."""
        n = len(outputs) if outputs else 1
        if not spec:
            return [[] for _ in range(n)]
        if n == 1:
            if isinstance(spec, dict) and outputs and set(spec) <= set(outputs):
                return [_as_list(spec.get(outputs[0]))]
            return [_as_list(spec)]
        if isinstance(spec, dict):
            unknown = [k for k in spec if k not in outputs]
            if unknown:
                raise ValueError(f"`{argument}` names outputs {unknown} that the model does not have; "
                                 f"its outputs are {outputs}. Received {argument}={spec!r}.")
            return [_as_list(spec.get(name)) for name in outputs]
        # A list on a model with several outputs has one entry per output (a metric or a list of them), as
        # Keras 3's CompileMetrics reads it; Keras matches a dict's outputs in sorted key order.
        if len(spec) != n:
            raise ValueError(f"{argument}: got a list of {len(spec)} entries for a model with {n} outputs "
                             f"{outputs}; expected one entry per output (a metric or a list of metrics), as "
                             f"Keras 3 reads a list, or a dict output name -> metrics. Received "
                             f"{argument}={spec!r}.")
        order = sorted(outputs, key=str) if self._dict_outputs else outputs
        by_output = dict(zip(order, spec))
        return [_as_list(by_output[name]) for name in outputs]

    def _build(self, outputs):
        multi = outputs is not None and len(outputs) > 1
        names = outputs if outputs else [None]
        entries, taken, seen = [], {}, set()
        for argument, weighted in (("metrics", False), ("weighted_metrics", True)):
            for index, identifiers in enumerate(self._split(self._specs[argument], outputs, argument)):
                for identifier in identifiers:
                    metric = get_metric(identifier, self._loss_of(index, names[index]), argument)
                    if id(metric) in seen:  # one object on several outputs: each needs its own state
                        metric = copy.deepcopy(metric)
                    seen.add(id(metric))
                    prefix = f"{names[index]}_" if multi else ""
                    key = prefix + metric.name
                    if key in taken and weighted:
                        key = f"{prefix}weighted_{metric.name}"
                    if key in taken:
                        taken[key] += 1
                        key = f"{key}_{taken[key] - 1}"
                    taken.setdefault(key, 1)
                    entries.append((key, metric, index, weighted))
        self._entries = entries
        self._built_names = outputs
        self._n_outputs = len(names)

    def _structure(self, y_pred):
        """At the first batch: learn the outputs from ``y_pred`` when compile did not name them."""
        self._checked = True
        if self._output_names is not None:
            return
        names = output_names(y_pred)
        self._dict_outputs = isinstance(y_pred, dict)
        if names is not None and len(names) > 1:
            self._build(names)
        elif self._entries is None:
            self._build(names if isinstance(y_pred, dict) else None)
        else:
            return
        # Built after the loop reset the sums: metric objects given to compile (or unpickled from a model
        # file) may still hold sums of an earlier run.
        self.reset()

    # ---- Keras's metric methods: the compile-metrics object is one entry of ``model.metrics``

    name = "compile_metrics"

    def update_state(self, y_true, y_pred, sample_weight=None):
        self.update(y_true, y_pred, sample_weight)

    def reset_state(self):
        self.reset()

    def result(self):
        """Log key -> 0-dim tensor of every compiled metric (a dict, as Keras's ``CompileMetrics``)."""
        return self.results()

    # ---- per batch

    def _flatten(self, y, what):
        n = self._n_outputs
        if isinstance(y, dict):
            if n == 1 and len(y) == 1:
                return list(y.values())
            names = self._built_names or []
            missing = [name for name in names if name not in y]
            if missing:
                raise ValueError(f"{what} has no entry for outputs {missing}; its keys are {list(y)}.")
            return [y[name] for name in names]
        if isinstance(y, (list, tuple)):
            if len(y) != n:
                raise ValueError(f"{what} holds {len(y)} tensors but the model has {n} outputs.")
            return list(y)
        if n != 1:
            raise ValueError(f"{what} is a single tensor but the model has {n} outputs {self._built_names}.")
        return [y]

    def update(self, y_true, y_pred, sample_weight=None):
        """Update every metric with its output; only weighted metrics get ``sample_weight``."""
        if not self._checked:
            self._structure(y_pred)
        if not self._entries:
            return
        ys_true = self._flatten(y_true, "y_true")
        ys_pred = self._flatten(y_pred, "y_pred")
        if sample_weight is None or isinstance(sample_weight, torch.Tensor):
            weights = [sample_weight] * self._n_outputs
        elif isinstance(sample_weight, (list, tuple)) and len(sample_weight) < self._n_outputs:
            weights = [sample_weight[0]] * self._n_outputs  # Keras repeats the first for every output
        else:
            weights = self._flatten(sample_weight, "sample_weight")
        for _, metric, index, weighted in self._entries:
            metric.update(ys_true[index], ys_pred[index], sample_weight=weights[index] if weighted else None)

    def results(self):
        """Log key -> 0-dim tensor (no host sync)."""
        return {key: metric.result() for key, metric, _, _ in self._entries or ()}

    def reset(self):
        for _, metric, _, _ in self._entries or ():
            metric.reset()

    @property
    def names(self):
        """Log keys in order (empty until the first batch when the outputs are only known from it)."""
        return [key for key, _, _, _ in self._entries or ()]

    @property
    def metrics(self):
        """The :class:`Metric` objects, in log order."""
        return [metric for _, metric, _, _ in self._entries or ()]

    def __len__(self):
        return len(self._entries or ())

    def __repr__(self):
        return f"MetricsContainer({self.names})"


# ----------------------------------------------------------------------------------------- the compiled state

def _empty(structure):
    """``structure`` (a tensor, or lists/dicts of them) with no samples left: ``t[:0]`` everywhere."""
    if isinstance(structure, torch.Tensor):
        return structure[:0]
    if isinstance(structure, dict):
        return {k: _empty(v) for k, v in structure.items()}
    if isinstance(structure, (list, tuple)):
        return type(structure)(_empty(v) for v in structure)
    return structure


def _named_only(spec):
    """Whether a metrics spec holds only names ("accuracy", "mae"), in lists or dicts, or nothing."""
    if spec is None or isinstance(spec, str):
        return True
    if isinstance(spec, dict):
        return all(_named_only(v) for v in spec.values())
    if isinstance(spec, (list, tuple)):
        return all(_named_only(v) for v in spec)
    return False


class CompiledState:
    """What ``compile()`` set up, and the running sums of the epoch under way.

    A plain object, so ``nn.Module`` does not register loss modules as submodules of the model. The
    metrics container is built at the first batch, once the structure of the outputs is known.
    """

    def __init__(self, optimizer, loss, metrics, weighted_metrics, loss_weights, scheduler,
                 scheduler_interval, scheduler_monitor, device, config, step=None):
        self.optimizer = optimizer
        self.step = step  # fitkit.step.StepMechanics: autocast, loss scaling, accumulation, clipping, jit
        self.loss = loss
        self.metric_specs = (metrics, weighted_metrics)
        self.metrics = None
        self.loss_weights = loss_weights
        self.scheduler = scheduler
        self.scheduler_interval = scheduler_interval
        self.scheduler_monitor = scheduler_monitor
        self.device = device
        self.config = config
        self.steps_per_execution = 1  # train/test/predict steps per execution (batch hooks once each)
        self.tracker = LossTracker()
        self.part_trackers = {}
        self._pending_metric_states = None
        # Keras's compile-metrics object exists from compile on (a custom step lists it in model.metrics and
        # updates it before any batch has built it); it builds itself on the first batch's outputs.
        if metrics or weighted_metrics:
            single = loss.single if loss is not None and loss.single is not None else \
                (loss.losses if loss is not None else None)
            self.metrics = MetricsContainer(metrics, weighted_metrics, loss=single)
        # More than one process (fitkit.distributed): the DDP wrapper the forward goes through (None for
        # FSDP2, which shards the model in place), and this rank's part of each batch (None alone).
        self.strategy = None
        self.wrapper = None
        self.routing = False  # inside a step: the model's calls go through the wrapper (Model.__call__)
        self.shard = None
        self.unsharded = None  # FSDP2: the model's structure before sharding, for model.save

    @property
    def named_metrics_only(self):
        """Whether every compiled metric was given by name: those read targets in either form alike, so
        fit may reconcile the targets with the loss ahead of the steps."""
        return _named_only(self.metric_specs)

    # ---- per batch

    def update_loss(self, total, parts, batch_size):
        """Add a batch's loss (and the unweighted loss of each output, when there are several)."""
        self.update_total(total, batch_size)
        self.update_parts(parts, batch_size)

    def _share(self):
        """``(counted, scale)`` of this rank's part of the batch (fitkit.distributed): an empty share adds
        nothing to the sums; a loss summed over samples is the global batch's sum once added up over the
        ranks, so each rank's share of the logged mean is its sum times ``total / local``."""
        shard = self.shard
        if shard is None:
            return True, None
        if shard.local == 0:
            return False, None
        return True, (shard.total / shard.local if shard.sum_reduction and shard.total else None)

    def update_total(self, total, batch_size):
        """Add a batch's total loss to the loss tracker, weighted by the batch size (Keras's loss mean)."""
        counted, scale = self._share()
        if counted:
            self.tracker.update(total if scale is None else total * scale, batch_size)

    def update_parts(self, parts, batch_size):
        """Add the unweighted loss of each output (several outputs only): Keras's compiled loss does it as
        it computes the loss, so a ``compute_loss`` call records them; the total is the step's to record."""
        counted, scale = self._share()
        for name, value in parts.items():
            tracker = self.part_trackers.get(name)
            if tracker is None:
                tracker = self.part_trackers[name] = LossTracker(f"{name}_loss")
            if counted:
                tracker.update(value if scale is None else value * scale, batch_size)

    def update_metrics(self, y, y_pred, sample_weight=None):
        """Add a batch to the compiled metrics (built on the outputs of the first batch)."""
        if self.shard is not None and self.shard.local == 0:
            # A rank's empty share: no sample is added, yet the metrics see the outputs' structure.
            y, y_pred, sample_weight = _empty(y), _empty(y_pred), _empty(sample_weight)
        if self.metrics is not None and y is not None:
            self.metrics.update(y, y_pred, sample_weight)
            if self._pending_metric_states is not None:
                self._add_metric_states(self._pending_metric_states)
                self._pending_metric_states = None

    # ---- the epoch's sums

    def log_names(self):
        """The log keys in order: ``loss``, each output's loss, then the metrics (known after a batch)."""
        names = ["loss"] + [f"{name}_loss" for name in self.part_trackers]
        return names + (list(self.metrics.names) if self.metrics is not None else [])

    def results(self):
        """Log key -> 0-dim tensor (no host sync): the loss, each output's loss, the metrics."""
        values = {"loss": self.tracker.result()}
        for name, tracker in self.part_trackers.items():
            values[f"{name}_loss"] = tracker.result()
        if self.metrics is not None:
            values.update(self.metrics.results())
        return values

    def reset(self):
        """Start every running sum afresh (fit does it at each epoch and validation pass)."""
        self.tracker.reset()
        for tracker in self.part_trackers.values():
            tracker.reset()
        if self.metrics is not None:
            self.metrics.reset()
        self._pending_metric_states = None

    def _metric_states(self):
        """Log key -> that metric's accumulators (``Metric.states()``: the tensors themselves, all sums)."""
        if self.metrics is None:
            return {}
        return {key: metric.states() for key, metric in zip(self.metrics.names, self.metrics.metrics)}

    def state_dict(self):
        """The running sums as they are: loss trackers and every metric's states (tensors, plain data)."""
        return {
            "loss": self.tracker.state_dict(),
            "parts": {name: tracker.state_dict() for name, tracker in self.part_trackers.items()},
            "metrics": {key: {name: value.detach().clone() for name, value in states.items()}
                        for key, states in self._metric_states().items()},
        }

    def load_state_dict(self, state, device=None):
        """Put back :meth:`state_dict`'s sums, before the next batch of the same epoch.

        The loss trackers are set at once. A metric's states exist only once it has seen a batch (they
        are made on the data's device), so the saved sums are added right after the next update: a
        sum plus one batch is the same float as one batch plus the sum.
        """
        self.tracker.load_state_dict(state["loss"], device)
        for name, saved in (state.get("parts") or {}).items():
            tracker = self.part_trackers.get(name)
            if tracker is None:
                tracker = self.part_trackers[name] = LossTracker(f"{name}_loss")
            tracker.load_state_dict(saved, device)
        self._pending_metric_states = state.get("metrics") or None

    def _add_metric_states(self, saved):
        for key, states in self._metric_states().items():
            for name, value in (saved.get(key) or {}).items():
                current = states.get(name)
                if current is not None:
                    current.add_(value.to(device=current.device, dtype=current.dtype))


def require(model, what):
    """The model's :class:`CompiledState`, or the one error every caller gives when there is none."""
    state = getattr(model, "_compiled", None)
    if state is None:
        raise RuntimeError(f"{what}: the model is not compiled; call model.compile(optimizer=..., loss=...) first")
    return state


# ----------------------------------------------------------------------------------------- building

def resolve_device(device, model):
    """Where to train: ``device`` when given, else where the model was placed, else CUDA, MPS, the CPU."""
    if device is not None:
        try:
            device = torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise ValueError(f"device: got {device!r}; expected a torch device such as 'cpu', 'cuda', "
                             f"'cuda:1' or 'mps' ({exc})") from None
        return distributed.cuda_device() if device.type == "cuda" and device.index is None else device
    placed = {t.device for t in list(model.parameters()) + list(model.buffers())}
    non_cpu = [d for d in placed if d.type != "cpu"]
    if non_cpu:
        return non_cpu[0]
    if getattr(model, "_fitkit_placed", False):
        return torch.device("cpu")
    if torch.cuda.is_available():
        return distributed.cuda_device()  # cuda:LOCAL_RANK under torchrun
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def build(model, optimizer="rmsprop", loss=None, loss_weights=None, metrics=None, weighted_metrics=None,
          steps_per_execution=1, scheduler=None, scheduler_interval="epoch", scheduler_monitor=None,
          device=None, distribute="auto", fsdp_policy=None, run_eagerly=None, jit_compile="auto",
          auto_scale_loss=True, dtype_policy=None, clipnorm=None, clipvalue=None, global_clipnorm=None,
          gradient_accumulation_steps=None):
    """``Model.compile``'s work: check every argument, place the model, wrap it for more than one process
    (:mod:`fitkit.distributed`), then build the optimizer and scheduler on its (sharded) parameters and
    the step mechanics (:mod:`fitkit.step`).

    Returns the :class:`CompiledState`; nothing on the model changes before the arguments are checked.
    """
    strategy = distributed.resolve(distribute)
    policy = distributed.check_fsdp_policy(fsdp_policy)
    if fsdp_policy is not None and strategy != "fsdp":
        raise ValueError(f"fsdp_policy: given with distribute={distribute!r}, which "
                         f"{'resolves to ' + repr(strategy) if distribute == 'auto' else 'does not shard'}; it only "
                         "applies to distribute='fsdp'")
    if not isinstance(auto_scale_loss, bool):
        raise ValueError(f"auto_scale_loss: got {auto_scale_loss!r}; expected True or False")
    step_options = _step_options(optimizer, clipnorm=clipnorm, clipvalue=clipvalue, global_clipnorm=global_clipnorm,
                                 gradient_accumulation_steps=gradient_accumulation_steps)
    if scheduler_interval not in ("epoch", "step"):
        raise ValueError(f"scheduler_interval: got {scheduler_interval!r}; expected 'epoch' or 'step'")
    if isinstance(steps_per_execution, bool) or not isinstance(steps_per_execution, numbers.Integral) \
            or steps_per_execution < 1:
        raise ValueError(f"steps_per_execution: got {steps_per_execution!r}; expected a positive integer")
    if scheduler_monitor is not None and not isinstance(scheduler_monitor, str):
        raise ValueError(f"scheduler_monitor: got {scheduler_monitor!r}; expected a log key such as 'val_loss'")
    if loss is not None:
        loss_container = LossContainer(loss, loss_weights)
    elif loss_weights is not None:
        raise ValueError("loss_weights: given without a loss; expected loss=... as well")
    else:
        loss_container = None
    for name, value in (("metrics", metrics), ("weighted_metrics", weighted_metrics)):
        if value is not None and not isinstance(value, (list, tuple, dict)):
            raise ValueError(f"{name}: got {value!r}; expected a list of metrics (e.g. ['accuracy']) "
                             "or a dict output name -> list")
    target = resolve_device(device, model)
    precision = mixed_precision.resolve(dtype_policy, target)
    use_jit = jit.resolve(jit_compile, run_eagerly, model, target)
    if target != model.device or any(t.device != target for t in model.parameters()):
        nn.Module.to(model, target)
    # FSDP2 replaces the parameters: an optimizer already built on them is moved onto the shards (by name).
    moving = model_file.describe_optimizer(optimizer, model.named_parameters()) \
        if strategy == "fsdp" and isinstance(optimizer, torch.optim.Optimizer) \
        and not distributed.is_sharded(model) else None
    wrapper, shard, unsharded = distributed.prepare(model, strategy, target, policy, sum_reduction=_sums(loss_container))
    if moving is not None:
        distributed.move_optimizer(model, optimizer, moving["param_names"], moving["state"])
    # A model without parameters (parameter-free, say) compiles as in Keras: its optimizer holds an empty
    # param group, so the learning rate, schedulers and checkpoints work as for any model.
    opt = optimizers.with_keras_attributes(
        optimizers.get(optimizer, model.parameters(), device=target, allow_empty=True))
    sched = scheduler(opt) if callable(scheduler) and not hasattr(scheduler, "step") else scheduler
    if sched is not None and (not hasattr(sched, "step") or getattr(sched, "optimizer", opt) is not opt):
        raise ValueError("scheduler: expected a torch LR scheduler built on the same optimizer given to "
                         "compile (or a function optimizer -> scheduler); got "
                         f"{type(sched).__name__}" + (" on another optimizer" if hasattr(sched, "step") else ""))
    if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau) and scheduler_interval == "step" \
            and (scheduler_monitor or "").startswith("val_"):
        raise ValueError(f"scheduler_monitor: got {scheduler_monitor!r} with scheduler_interval='step'; a "
                         "ReduceLROnPlateau stepped each batch sees the batch logs, which hold no val_ keys: "
                         "monitor 'loss' (the default) or a metric, or step it per epoch")
    config = {"optimizer": optimizer if isinstance(optimizer, str) else None, "loss": loss,
              "loss_weights": loss_weights, "metrics": metrics, "weighted_metrics": weighted_metrics,
              "scheduler_interval": scheduler_interval, "scheduler_monitor": scheduler_monitor,
              "steps_per_execution": int(steps_per_execution),
              # what load_model passes back to compile, with the torch optimizer the spec became
              "dtype_policy": precision.name, "jit_compile": jit_compile, "auto_scale_loss": auto_scale_loss,
              **step_options}
    scaler = mixed_precision.grad_scaler(target) if precision.name == "mixed_float16" and auto_scale_loss else None
    mechanics = StepMechanics(opt, target, precision, scaler=scaler, jit=jit.CompiledStep() if use_jit else None,
                              **step_options)
    previous = getattr(model, "_compiled", None)
    if previous is not None and previous.optimizer is opt and previous.step is not None:
        mechanics.carry_over(previous.step)  # compile again with model.optimizer: its state goes on, as Keras's
    if shard is not None:
        # Gradient accumulation under DDP / FSDP2: the gradients are synchronised on a window's last batch only.
        mechanics.no_sync = functools.partial(distributed.no_sync, model)
    state = CompiledState(opt, loss_container, metrics, weighted_metrics, loss_weights, sched,
                          scheduler_interval, scheduler_monitor, target, config, step=mechanics)
    state.steps_per_execution = int(steps_per_execution)
    state.strategy, state.wrapper, state.shard, state.unsharded = strategy, wrapper, shard, unsharded
    return state


def _sums(loss):
    """Whether every compiled loss sums over samples (``reduction="sum"``) instead of averaging them."""
    if loss is None:
        return False
    found = loss.losses.values() if isinstance(loss.losses, dict) else \
        (loss.losses if isinstance(loss.losses, list) else [loss.losses])
    found = [l for l in found if l is not None]
    return bool(found) and all(getattr(l, "torch_reduction", None) == "sum" or getattr(l, "reduction", None) == "sum"
                               for l in found)


def _step_options(optimizer, **given):
    """compile's clipnorm / clipvalue / global_clipnorm / gradient_accumulation_steps merged with an
    optimizer spec's own (each given once), checked by Keras's rules."""
    given = optimizers.check_step_options(**given)
    own = optimizers.step_options(optimizer)
    both = [k for k in given if given[k] is not None and own.get(k) is not None]
    if both:
        raise ValueError(f"{both[0]}: given both to compile and on the optimizer {optimizer!r}; expected it once")
    merged = {k: given[k] if given[k] is not None else own.get(k) for k in given}
    return optimizers.check_step_options(**merged)
