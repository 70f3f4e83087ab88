"""Optimizers: Keras names and Keras-style specs -> torch optimizers, built with the fastest kernel.

``compile(optimizer=...)`` accepts a name (``"adam"``), a spec such as ``Adam(learning_rate=1e-3)``
(built on the model's parameters at compile time), or any ``torch.optim.Optimizer``, used as it is.
Specs take Keras's argument names and defaults and map them onto the torch class (``rho`` -> ``alpha``,
``beta_1, beta_2`` -> ``betas``, ``epsilon`` -> ``eps``).

>>> import torch
>>> opt = get("adam", torch.nn.Linear(3, 1).parameters())
>>> type(opt).__name__, opt.param_groups[0]["eps"], implementation(opt)
('Adam', 1e-07, 'fused')

Where torch's update rule differs from Keras's, the torch rule is used: Adam, Adamax and RMSprop add
``epsilon`` at a slightly different place (a difference of order epsilon), and ``weight_decay`` is
decoupled (Keras's form) for Adam, AdamW and Nadam but torch's L2 form for the others; the two agree
for SGD without momentum. SGD (any momentum, Nesterov included), Adadelta and Nadam follow Keras
exactly (Nadam through torch's ``momentum_decay=1.0``, which is Keras's 0.96**t momentum schedule).

Every spec also takes Keras's gradient arguments ``clipnorm``, ``clipvalue``, ``global_clipnorm`` and
``gradient_accumulation_steps`` (checked as Keras checks them: at most one of the three clips, k >= 2);
they are not torch optimizer options: fitkit's training step applies them (:mod:`fitkit.step`), and
``compile`` takes the same four for a name or a torch optimizer.

Learning-rate access (:func:`current_lr`, :func:`group_lr`, :func:`set_group_lr`, :func:`optimizer_of`)
reads and sets a torch optimizer's per-group ``"lr"``, which fused and capturable optimizers keep as a
tensor; the learning-rate callbacks go through it.
"""

import difflib
import functools
import numbers

import torch

__all__ = [
    "OptimizerSpec", "Adam", "AdamW", "SGD", "RMSprop", "Adagrad", "Adadelta", "Adamax", "Nadam",
    "get", "implementation", "serialize", "deserialize",
    "optimizer_of", "group_lr", "set_group_lr", "current_lr", "clear_grads", "with_keras_attributes",
    "check_step_options", "step_options",
]

# Device types whose fused kernels torch 2.13 ships, per class; anything else uses foreach or the loop.
_FUSED_DEVICES = {
    torch.optim.Adam: ("cpu", "cuda", "mps", "xpu"),
    torch.optim.AdamW: ("cpu", "cuda", "mps", "xpu"),
    torch.optim.SGD: ("cpu", "cuda", "mps", "xpu"),
    torch.optim.Adagrad: ("cpu", "cuda"),
}
# torch's foreach kernels pay off on accelerators; on the CPU they are a loop in C++ and torch's own
# default there is the Python loop, which we keep.
_FOREACH_DEVICES = ("cuda", "xpu")
_PLAIN_TENSOR_TYPES = (torch.Tensor, torch.nn.Parameter)


class OptimizerSpec:
    """A Keras-style optimizer description, turned into a torch optimizer by :meth:`build`.

    Subclasses declare ``torch_class`` and implement ``_torch_kwargs``; their ``__init__`` takes the
    Keras arguments. ``get_config()`` returns those arguments, ``from_config`` rebuilds the spec.
    """

    torch_class = None
    _default_lr = 0.001

    def __init__(self, learning_rate, lr=None, step_options=None, **config):
        if lr is not None:
            if learning_rate != self._default_lr and learning_rate != lr:
                raise TypeError(
                    f"{type(self).__name__}: got learning_rate={learning_rate!r} and lr={lr!r}; "
                    "lr is an alias of learning_rate, give one of them"
                )
            learning_rate = lr
        self._config = {"learning_rate": _check_number("learning_rate", learning_rate, type(self))}
        for key, value in config.items():
            self._config[key] = _check_option(key, value, type(self))
        unknown = sorted(set(step_options or {}) - set(STEP_OPTIONS))
        if unknown:
            raise TypeError(f"{type(self).__name__}: got the argument(s) {', '.join(unknown)}; expected its own "
                            f"arguments or Keras's {', '.join(STEP_OPTIONS)}")
        options = check_step_options(type(self).__name__, **(step_options or {}))
        self._config.update({k: v for k, v in options.items() if v is not None})

    def __getattr__(self, name):
        # Keras exposes its arguments as attributes (opt.learning_rate, opt.beta_1).
        config = self.__dict__.get("_config", {})
        if name in config:
            return config[name]
        if name in STEP_OPTIONS:
            return None  # Keras's optimizers have them all, None when not set
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def get_config(self):
        """The constructor arguments, Keras names, as a plain dict (JSON-serializable)."""
        return dict(self._config)

    def step_options(self):
        """``clipnorm``, ``clipvalue``, ``global_clipnorm`` and ``gradient_accumulation_steps`` (None when
        not given): what fitkit's training step does with the gradients before this optimizer steps."""
        return {key: self._config.get(key) for key in STEP_OPTIONS}

    @classmethod
    def from_config(cls, config):
        """The spec that ``get_config()`` described."""
        return cls(**config)

    def build(self, params, device=None):
        """A torch optimizer over ``params`` (tensors or param-group dicts), fused where torch can.

        ``device`` is where the parameters will live when training runs (default: where they are).
        """
        params = _as_param_list(params)
        return _build_fastest(self.torch_class, params, self._torch_kwargs(), device)

    def _torch_kwargs(self):
        raise NotImplementedError

    def __eq__(self, other):
        return type(self) is type(other) and self._config == other._config

    def __hash__(self):
        return hash((type(self), tuple(sorted(self._config.items()))))

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self._config.items())
        return f"{type(self).__name__}({args})"


def _decay(weight_decay):
    return 0.0 if weight_decay is None else weight_decay


class Adam(OptimizerSpec):
    """Adam with Keras defaults. ``weight_decay`` is decoupled, as in Keras (torch's AdamW rule).

    >>> Adam(learning_rate=3e-4).get_config()["learning_rate"]
    0.0003
    """

    torch_class = torch.optim.Adam

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, amsgrad=False,
                 weight_decay=None, *, lr=None, **kwargs):
        super().__init__(learning_rate, lr, kwargs, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon,
                         amsgrad=amsgrad, weight_decay=weight_decay)

    def _torch_kwargs(self):
        c = self._config
        kwargs = dict(lr=c["learning_rate"], betas=(c["beta_1"], c["beta_2"]), eps=c["epsilon"],
                      amsgrad=c["amsgrad"], weight_decay=_decay(c["weight_decay"]))
        if c["weight_decay"]:
            kwargs["decoupled_weight_decay"] = True
        return kwargs


class AdamW(OptimizerSpec):
    """AdamW with Keras defaults (``weight_decay=0.004``, not torch's 0.01)."""

    torch_class = torch.optim.AdamW

    def __init__(self, learning_rate=0.001, weight_decay=0.004, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
                 amsgrad=False, *, lr=None, **kwargs):
        super().__init__(learning_rate, lr, kwargs, weight_decay=weight_decay, beta_1=beta_1, beta_2=beta_2,
                         epsilon=epsilon, amsgrad=amsgrad)

    def _torch_kwargs(self):
        c = self._config
        return dict(lr=c["learning_rate"], betas=(c["beta_1"], c["beta_2"]), eps=c["epsilon"],
                    amsgrad=c["amsgrad"], weight_decay=_decay(c["weight_decay"]))


class SGD(OptimizerSpec):
    """SGD with Keras defaults (``learning_rate=0.01``); steps equal Keras's, Nesterov included."""

    torch_class = torch.optim.SGD
    _default_lr = 0.01

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, weight_decay=None, *, lr=None, **kwargs):
        super().__init__(learning_rate, lr, kwargs, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)
        if nesterov and not momentum:
            raise ValueError(f"SGD: nesterov=True needs momentum > 0, got momentum={momentum!r}")

    def _torch_kwargs(self):
        c = self._config
        return dict(lr=c["learning_rate"], momentum=c["momentum"], nesterov=c["nesterov"],
                    weight_decay=_decay(c["weight_decay"]))


class RMSprop(OptimizerSpec):
    """RMSprop with Keras defaults (``rho=0.9``, torch calls it ``alpha``; torch's default is 0.99)."""

    torch_class = torch.optim.RMSprop

    def __init__(self, learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7, centered=False,
                 weight_decay=None, *, lr=None, **kwargs):
        super().__init__(learning_rate, lr, kwargs, rho=rho, momentum=momentum, epsilon=epsilon, centered=centered,
                         weight_decay=weight_decay)

    def _torch_kwargs(self):
        c = self._config
        return dict(lr=c["learning_rate"], alpha=c["rho"], momentum=c["momentum"], eps=c["epsilon"],
                    centered=c["centered"], weight_decay=_decay(c["weight_decay"]))


class Adagrad(OptimizerSpec):
    """Adagrad with Keras defaults (``initial_accumulator_value=0.1``; torch's default is 0)."""

    torch_class = torch.optim.Adagrad

    def __init__(self, learning_rate=0.001, initial_accumulator_value=0.1, epsilon=1e-7,
                 weight_decay=None, *, lr=None, **kwargs):
        super().__init__(learning_rate, lr, kwargs, initial_accumulator_value=initial_accumulator_value,
                         epsilon=epsilon, weight_decay=weight_decay)

    def _torch_kwargs(self):
        c = self._config
        return dict(lr=c["learning_rate"], initial_accumulator_value=c["initial_accumulator_value"],
                    eps=c["epsilon"], weight_decay=_decay(c["weight_decay"]))


class Adadelta(OptimizerSpec):
    """Adadelta with Keras defaults (``learning_rate=0.001``; torch's default is 1.0)."""

    torch_class = torch.optim.Adadelta

    def __init__(self, learning_rate=0.001, rho=0.95, epsilon=1e-7, weight_decay=None, *, lr=None, **kwargs):
        super().__init__(learning_rate, lr, kwargs, rho=rho, epsilon=epsilon, weight_decay=weight_decay)

    def _torch_kwargs(self):
        c = self._config
        return dict(lr=c["learning_rate"], rho=c["rho"], eps=c["epsilon"],
                    weight_decay=_decay(c["weight_decay"]))


class Adamax(OptimizerSpec):
    """Adamax with Keras defaults (``learning_rate=0.001``; torch's default is 0.002)."""

    torch_class = torch.optim.Adamax

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, weight_decay=None,
                 *, lr=None, **kwargs):
        super().__init__(learning_rate, lr, kwargs, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon,
                         weight_decay=weight_decay)

    def _torch_kwargs(self):
        c = self._config
        return dict(lr=c["learning_rate"], betas=(c["beta_1"], c["beta_2"]), eps=c["epsilon"],
                    weight_decay=_decay(c["weight_decay"]))


class Nadam(OptimizerSpec):
    """Nadam with Keras defaults, on torch's NAdam with Keras's momentum schedule (0.96**t)."""

    torch_class = torch.optim.NAdam

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, weight_decay=None,
                 *, lr=None, **kwargs):
        super().__init__(learning_rate, lr, kwargs, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon,
                         weight_decay=weight_decay)

    def _torch_kwargs(self):
        c = self._config
        # torch's mu_t = beta_1 * (1 - 0.5 * 0.96 ** (t * momentum_decay)); Keras's has no momentum_decay.
        kwargs = dict(lr=c["learning_rate"], betas=(c["beta_1"], c["beta_2"]), eps=c["epsilon"],
                      momentum_decay=1.0, weight_decay=_decay(c["weight_decay"]))
        if c["weight_decay"]:
            kwargs["decoupled_weight_decay"] = True
        return kwargs


# ---------------------------------------------------------------------------------------------------
# Keras's arguments of every optimizer that act on the gradients (fitkit's step applies them, see step.py)

STEP_OPTIONS = ("clipnorm", "clipvalue", "global_clipnorm", "gradient_accumulation_steps")


def check_step_options(who=None, clipnorm=None, clipvalue=None, global_clipnorm=None,
                       gradient_accumulation_steps=None):
    """The four gradient options checked as Keras checks them. Errors name the argument first
    (``"clipnorm: got ..."``, compile's style), or the spec ``who`` first (``"Adam: clipnorm got ..."``).

    Each clip value is a number >= 0 or None (0 means no clipping, as in Keras), at most one of the three
    is given, and ``gradient_accumulation_steps`` is an integer >= 2 or None.

    >>> check_step_options("Adam", clipnorm=1.0)["clipnorm"]
    1.0
    """
    def error(names, got, expected):
        head = f"{who}: {names} got" if who else f"{names}: got"
        return ValueError(f"{head} {got}; expected {expected}")

    options = {"clipnorm": clipnorm, "clipvalue": clipvalue, "global_clipnorm": global_clipnorm}
    for name, value in options.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not float(value) >= 0.0:
            raise error(name, repr(value), "a number >= 0 or None")
        options[name] = float(value)
    given = {k: v for k, v in options.items() if v is not None}
    if len(given) > 1:
        raise error(", ".join(given), ", ".join(f"{k}={v!r}" for k, v in given.items()),
                    "only one of clipnorm, clipvalue and global_clipnorm (Keras's rule)")
    k = gradient_accumulation_steps
    if k is not None and (isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 2):
        raise error("gradient_accumulation_steps", repr(k), "an integer >= 2 or None")
    options["gradient_accumulation_steps"] = None if k is None else int(k)
    return options


def step_options(identifier):
    """The gradient options that an optimizer identifier carries: a spec's (or its serialized dict's);
    all None for a name or a torch optimizer (those take them from ``compile``)."""
    if isinstance(identifier, dict) and "class_name" in identifier:
        identifier = deserialize(identifier)
    if isinstance(identifier, OptimizerSpec):
        return identifier.step_options()
    return dict.fromkeys(STEP_OPTIONS)


_BY_NAME = {
    "adam": Adam, "adamw": AdamW, "sgd": SGD, "rmsprop": RMSprop, "adagrad": Adagrad,
    "adadelta": Adadelta, "adamax": Adamax, "nadam": Nadam,
}
_ACCEPTED = (
    "one of the names " + ", ".join(repr(n) for n in _BY_NAME)
    + ", a spec such as fitkit.optimizers.Adam(learning_rate=1e-3), or a torch.optim.Optimizer instance"
)


def get(identifier, params, device=None, allow_empty=False):
    """The torch optimizer that ``compile(optimizer=identifier)`` means, over ``params``.

    A name (case-insensitive) builds that optimizer with Keras's defaults; a spec (or a spec class, or a
    ``{"class_name": ..., "config": ...}`` dict from :func:`serialize`) is built; a torch optimizer is
    returned as it is. ``allow_empty`` builds a named or spec optimizer over no parameters (one empty param
    group) instead of refusing: compile does it for a model that has none.

    >>> import torch
    >>> get("sgd", torch.nn.Linear(2, 1).parameters()).param_groups[0]["lr"]
    0.01
    """
    if allow_empty:
        params = list(params)
        if not _tensors_of(params):
            if isinstance(identifier, torch.optim.Optimizer) and \
                    not any(g["params"] for g in identifier.param_groups):
                return identifier  # a model without parameters, and an optimizer over none (load_model's)
            params = [{"params": []}]
    if isinstance(identifier, torch.optim.Optimizer):
        return _check_given_optimizer(identifier, params)
    if isinstance(identifier, str):
        key = identifier.strip().lower()
        if key not in _BY_NAME:
            close = difflib.get_close_matches(key, _BY_NAME, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"optimizer: unknown name {identifier!r}{hint}; expected {_ACCEPTED}")
        return _BY_NAME[key]().build(params, device)
    if isinstance(identifier, dict) and "class_name" in identifier:
        return deserialize(identifier).build(params, device)
    if isinstance(identifier, OptimizerSpec):
        return identifier.build(params, device)
    if isinstance(identifier, type) and issubclass(identifier, OptimizerSpec) and identifier.torch_class:
        return identifier().build(params, device)
    if isinstance(identifier, type) and issubclass(identifier, torch.optim.Optimizer):
        raise TypeError(
            f"optimizer: got the class {identifier.__name__}, not an instance; pass "
            f"{identifier.__name__}(model.parameters(), ...) or {_ACCEPTED}"
        )
    raise TypeError(f"optimizer: got {identifier!r} of type {type(identifier).__name__}; expected {_ACCEPTED}")


def serialize(spec):
    """``{"class_name": "Adam", "config": {...}}``, the form :func:`deserialize` and :func:`get` read."""
    if not isinstance(spec, OptimizerSpec):
        raise TypeError(f"optimizer: serialize needs a fitkit.optimizers spec, got {type(spec).__name__}")
    return {"class_name": type(spec).__name__, "config": spec.get_config()}


def deserialize(config):
    """The spec that :func:`serialize` wrote."""
    name = config.get("class_name") if isinstance(config, dict) else None
    cls = _BY_NAME.get(str(name).lower())
    if cls is None:
        raise ValueError(f"optimizer: unknown class_name {name!r} in {config!r}; expected {_ACCEPTED}")
    return cls.from_config(config.get("config", {}))


def implementation(optimizer):
    """Which kernel ``optimizer.step()`` runs: ``"fused"``, ``"foreach"`` or ``"for-loop"``.

    A group left at ``foreach=None`` gets what torch picks at step time (foreach on CUDA tensors).
    """
    groups = optimizer.param_groups
    if groups and all(g.get("fused") for g in groups):
        return "fused"
    foreach = []
    for g in groups:
        if g.get("fused"):
            foreach.append(False)
        elif g.get("foreach") is None:
            foreach.append(not g.get("differentiable", False) and _foreach_by_default(g["params"]))
        else:
            foreach.append(bool(g["foreach"]))
    return "foreach" if foreach and all(foreach) else "for-loop"


def _foreach_by_default(params):
    return bool(params) and all(
        type(p) in _PLAIN_TENSOR_TYPES and p.device.type in _FOREACH_DEVICES for p in params
    )


# ---------------------------------------------------------------------------------------------------
# learning-rate access: a torch optimizer keeps one "lr" per param group, possibly as a tensor


def optimizer_of(model, who):
    """``model.optimizer`` as a torch optimizer, or a clear error naming the callback ``who``."""
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None or not hasattr(optimizer, "param_groups"):
        raise TypeError(
            f"{who} needs model.optimizer to be a torch.optim.Optimizer (compile the model first); "
            f"got {type(optimizer).__name__}."
        )
    return optimizer


def group_lr(group):
    """A param group's learning rate as a float (reading a tensor lr syncs; done once per epoch)."""
    lr = group["lr"]
    return float(lr.item()) if isinstance(lr, torch.Tensor) else float(lr)


def set_group_lr(group, lr):
    """Set a param group's learning rate in place, keeping a tensor lr a tensor."""
    if isinstance(group["lr"], torch.Tensor):
        group["lr"].fill_(lr)
    else:
        group["lr"] = lr


def current_lr(optimizer):
    """The learning rate fitkit logs: the first param group's (the only one in most models)."""
    return group_lr(optimizer.param_groups[0])


# ---------------------------------------------------------------------------------------------------
# Keras's optimizer attributes on the torch optimizer a model trains with


class KerasOptimizerAttributes:
    """What Keras code reads and calls on ``model.optimizer``, given to the torch optimizer compile uses.

    ``learning_rate`` reads the first param group's rate and, assigned, sets every group's (a tensor lr
    stays a tensor, so fused and capturable kernels keep working); ``iterations`` is the number of steps
    taken; ``apply(grads, trainable_variables)`` / ``apply_gradients(grads_and_vars)`` put the gradients in
    ``.grad`` and take one ``step()``, as a Keras optimizer applies them.

    How: :func:`with_keras_attributes` sets these four descriptors on the optimizer's class (torch's
    ``Adam``, or the user's class), each only where the class has no attribute of that name. Nothing
    else changes: ``type(opt) is torch.optim.Adam`` still holds, and the state_dict, pickling, hooks and
    schedulers are torch's. Other optimizers of that class in the process gain the same four names;
    that is the price of keeping ``type(opt)``, and the reason for setting only names the class lacks.
    (A run-time subclass would touch one object only, but ``type(opt)`` would change and a pickle could
    not name its class.)
    """

    @property
    def learning_rate(self):
        return group_lr(self.param_groups[0])

    @learning_rate.setter
    def learning_rate(self, value):
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not float(value) >= 0.0:
            raise ValueError(f"learning_rate: got {value!r}; expected a number >= 0 (for a schedule pass "
                             "compile(scheduler=...) or use the LearningRateScheduler callback)")
        for group in self.param_groups:
            set_group_lr(group, float(value))

    @property
    def iterations(self):
        """Optimizer steps taken: the step count the optimizer keeps (Adam, RMSprop, ...), else the steps
        counted since compile."""
        for group in self.param_groups:
            for p in group["params"]:
                step = self.state.get(p, {}).get("step")
                if step is not None:
                    return int(step)
        return self.__dict__.get("_fitkit_iterations", 0)

    def apply(self, grads, trainable_variables=None):
        """Keras's ``optimizer.apply``: gradients for ``trainable_variables`` (default: every parameter of
        the optimizer, in order), then one step."""
        variables = [p for g in self.param_groups for p in g["params"]] if trainable_variables is None \
            else list(trainable_variables)
        grads = list(grads)
        if len(grads) != len(variables):
            raise ValueError(f"grads: got {len(grads)} gradients for {len(variables)} variables; expected one "
                             "gradient per variable")
        for grad, variable in zip(grads, variables):
            if grad is not variable.grad:
                variable.grad = grad
        self.step()

    def apply_gradients(self, grads_and_vars):
        """Keras's ``optimizer.apply_gradients([(grad, variable), ...])``."""
        pairs = list(grads_and_vars)
        self.apply([g for g, _ in pairs], [v for _, v in pairs])


_KERAS_NAMES = ("learning_rate", "iterations", "apply", "apply_gradients")


def with_keras_attributes(optimizer):
    """``optimizer`` with Keras's ``learning_rate`` / ``iterations`` / ``apply`` / ``apply_gradients`` (see
    :class:`KerasOptimizerAttributes`); names its class (or the object) already has are left as they are.
    Returns the same object.

    >>> opt = with_keras_attributes(torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.1))
    >>> opt.learning_rate = 0.01
    >>> opt.param_groups[0]["lr"], type(opt) is torch.optim.SGD
    (0.01, True)
    """
    cls = type(optimizer)
    for name in _KERAS_NAMES:
        if not hasattr(cls, name) and name not in vars(optimizer):
            setattr(cls, name, KerasOptimizerAttributes.__dict__[name])
    if _count_step not in optimizer._optimizer_step_post_hooks.values():
        optimizer.register_step_post_hook(_count_step)
    return optimizer


def _count_step(optimizer, args, kwargs):
    optimizer.__dict__["_fitkit_iterations"] = optimizer.__dict__.get("_fitkit_iterations", 0) + 1


# ---------------------------------------------------------------------------------------------------
# clearing gradients

def clear_grads(optimizer):
    """``optimizer.zero_grad(set_to_none=True)``: the same effect, without the profiler bracket that
    torch's ``zero_grad`` opens on every call (a tenth of a small model's step on the CPU). An optimizer
    with a ``zero_grad`` of its own is called as it is.
    """
    if type(optimizer).zero_grad is not torch.optim.Optimizer.zero_grad or "zero_grad" in vars(optimizer):
        optimizer.zero_grad(set_to_none=True)
        return
    for group in optimizer.param_groups:
        for p in group["params"]:
            p.grad = None


# ---------------------------------------------------------------------------------------------------
# building


def _as_param_list(params):
    if isinstance(params, torch.Tensor):
        params = [params]
    try:
        params = list(params)
    except TypeError:
        raise TypeError(
            f"optimizer: params must be an iterable of tensors or param-group dicts, got {type(params).__name__}"
        ) from None
    if not _tensors_of(params) and not (len(params) == 1 and isinstance(params[0], dict)
                                         and not list(params[0].get("params", [None]))):
        raise ValueError(
            "optimizer: the model has no parameters to optimize (got an empty parameter list); "
            "build the model's layers before compile, or compile without an optimizer"
        )
    return params


def _tensors_of(params):
    """The tensors in a torch params argument: tensors, (name, tensor) pairs or param-group dicts."""
    tensors = []
    for item in params:
        if isinstance(item, dict):
            group = item.get("params", [])
            tensors.extend(_tensors_of([group] if isinstance(group, torch.Tensor) else group))
        elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], torch.Tensor):
            tensors.append(item[1])
        else:
            tensors.append(item)
    return tensors


def _build_fastest(torch_class, params, kwargs, device):
    """``torch_class(params, **kwargs)`` with fused kernels if they run here, else foreach, else default."""
    tensors = _tensors_of(params)
    if not tensors:  # an empty group (a model without parameters): no kernel to choose
        return torch_class(params, **kwargs)
    device_types = {torch.device(device).type} if device is not None else {t.device.type for t in tensors}
    plain = all(type(t) in _PLAIN_TENSOR_TYPES for t in tensors)
    if plain and torch_class in _FUSED_DEVICES and all(t.is_floating_point() for t in tensors):
        dtypes = {t.dtype for t in tensors}
        if all(
            d in _FUSED_DEVICES[torch_class] and _fused_runs(torch_class, d, dt, tuple(sorted(kwargs.items())))
            for d in device_types
            for dt in dtypes
        ):
            try:
                return torch_class(params, fused=True, **kwargs)
            except (RuntimeError, ValueError, TypeError):
                pass  # a torch that refuses fused here: the next choice is as correct, only slower
    if plain and device_types and all(d in _FOREACH_DEVICES for d in device_types):
        try:
            return torch_class(params, foreach=True, **kwargs)
        except (RuntimeError, ValueError, TypeError):
            pass
    return torch_class(params, **kwargs)


@functools.lru_cache(maxsize=None)
def _fused_runs(torch_class, device_type, dtype, kwargs_items):
    """Whether one fused step runs for this class, device, dtype and options (checked once per process).

    torch only checks device and dtype at the first ``step()``; trying it here on a scratch tensor
    means a model never meets that error in the middle of ``fit``.
    """
    try:
        p = torch.zeros(2, device=device_type, dtype=dtype, requires_grad=True)
        opt = torch_class([p], fused=True, **dict(kwargs_items))
        p.grad = torch.ones_like(p)
        opt.step()
        return bool(torch.isfinite(p).all())
    except Exception:  # any failure means "not here"; the caller falls back to a slower correct kernel
        return False


def _check_given_optimizer(optimizer, params):
    tensors = [p for g in optimizer.param_groups for p in g["params"]]
    if not tensors:
        raise ValueError(f"optimizer: the torch optimizer {type(optimizer).__name__} holds no parameters")
    if params is not None:
        model_params = {id(t) for t in _tensors_of(list(params))}
        if model_params and not any(id(t) in model_params for t in tensors):
            raise ValueError(
                f"optimizer: the torch optimizer {type(optimizer).__name__} holds none of the model's "
                "parameters (was it built on another module, or before the model was copied?); "
                "build it on model.parameters()"
            )
    return optimizer


# ---------------------------------------------------------------------------------------------------
# argument checks: name the argument and what it accepts, before torch raises its own message

_UNIT_INTERVAL = {"beta_1", "beta_2", "rho"}
_FLAGS = {"amsgrad", "nesterov", "centered"}


def _check_number(name, value, cls):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        hint = " (for a schedule pass compile(scheduler=...))" if name == "learning_rate" else ""
        raise TypeError(f"{cls.__name__}: {name} must be a number, got {value!r}{hint}")
    value = float(value)
    if not value >= 0.0:  # also catches NaN
        raise ValueError(f"{cls.__name__}: {name} must be >= 0, got {value!r}")
    return value


def _check_option(name, value, cls):
    if name in _FLAGS:
        if not isinstance(value, bool):
            raise TypeError(f"{cls.__name__}: {name} must be True or False, got {value!r}")
        return value
    if name == "weight_decay" and value is None:
        return None
    value = _check_number(name, value, cls)
    if name in _UNIT_INTERVAL and not value < 1.0:
        raise ValueError(f"{cls.__name__}: {name} must be in [0, 1), got {value!r}")
    return value
