"""The model file :meth:`fitkit.Model.save` writes and :func:`fitkit.load_model` reads, and the descriptions of
optimizers and schedulers that let a fresh model rebuild them (also checked by ``TrainingState``).

A model file is ``torch.save`` of plain data: ``format``, ``version``, the ``architecture`` (the class's
import path and constructor arguments, what ``get_config()`` returns, or the module pickled without its
weights), the ``weights``, compile's settings with the optimizer's and scheduler's descriptions, the
``training`` state (epoch, data-order generator) and the History. Everything is read with
``torch.load(weights_only=True)``; pickled parts go through :func:`fitkit.checkpoint.unpack`'s allowlist.
"""

import copy
import os
import pickle
import warnings

import torch

from .checkpoint import (MODEL_FORMAT, CorruptCheckpointError, FORMAT_VERSION, check_custom_objects,
                         check_overwrite, check_weights, class_path, is_importable, is_plain, pack, preserved_rng,
                         read, resolve_class, save, structure_copy, unpack, unsafe_globals)

ARCHITECTURES = ("auto", "import", "pickle")


# ----------------------------------------------------------------------------------------- optimizer

def describe_optimizer(optimizer, named_parameters, state=None):
    """How to rebuild a torch optimizer on a fresh copy of the model: class, defaults, groups, state
    (``state``: the optimizer's ``state_dict()`` when it was gathered elsewhere, from shards say)."""
    names = {}
    for name, param in named_parameters:
        names.setdefault(id(param), name)
    groups = []
    for i, group in enumerate(optimizer.param_groups):
        unknown = [tuple(p.shape) for p in group["params"] if id(p) not in names]
        if unknown:
            raise ValueError(f"optimizer: param group {i} holds tensors of shapes {unknown} that are not parameters "
                             "of the model, so a loaded model could not rebuild it; build the optimizer on "
                             "model.parameters()")
        groups.append([names[id(p)] for p in group["params"]])
    defaults = {k: v for k, v in optimizer.defaults.items() if is_plain(v)}
    return {"class": class_path(optimizer), "defaults": defaults, "param_names": groups,
            "state": optimizer.state_dict() if state is None else state}


def _short(path):
    return path.rsplit(":", 1)[-1] if isinstance(path, str) else str(path)


_SCHEDULER_KEYS = frozenset({"initial_lr", "max_lr", "min_lr", "base_lr", "max_momentum", "base_momentum"})


def check_optimizer_state(optimizer, saved, saved_class=None, what="filepath",
                          remedy="Build and compile the model as the saved one was."):
    """Raise a ValueError naming how a saved optimizer ``state_dict`` differs from ``optimizer`` before any
    of it is loaded: another class (by ``saved_class``, a :func:`class_path`), other param group sizes,
    other hyperparameters (SGD's momentum against Adam's betas, say: loading those fails half-way)."""
    if not isinstance(saved, dict) or "param_groups" not in saved or "state" not in saved:
        raise ValueError(f"{what}: the saved optimizer state is not a torch optimizer state_dict. {remedy}")
    sizes = [len(g["params"]) for g in saved["param_groups"]]
    have = [len(g["params"]) for g in optimizer.param_groups]
    # LR schedulers add their own keys to the groups: they say nothing of the optimizer's class.
    ignored = {"params"} | _SCHEDULER_KEYS
    saved_keys = set(saved["param_groups"][0]) - ignored if sizes else set()
    have_keys = set(optimizer.param_groups[0]) - ignored if have else set()
    keys = (f" (it has the hyperparameters {sorted(saved_keys - have_keys)} and lacks "
            f"{sorted(have_keys - saved_keys)})") if saved_keys != have_keys else ""
    mine = type(optimizer).__name__
    if saved_class is not None and saved_class != class_path(optimizer):
        raise ValueError(f"{what}: the saved optimizer is a {_short(saved_class)}, not a {mine} like this "
                         f"model's{keys}. {remedy}")
    if keys:
        raise ValueError(f"{what}: the saved optimizer is not a {mine} like this model's{keys}. {remedy}")
    if sizes != have:
        raise ValueError(f"{what}: the saved optimizer has param groups of sizes {sizes}; this model's {mine} "
                         f"has {have}. {remedy}")


def check_scheduler_state(scheduler, saved, saved_class=None, what="filepath",
                          remedy="Build and compile the model as the saved one was."):
    """Raise a ValueError naming how a saved LR scheduler ``state_dict`` differs from ``scheduler``
    (another class, other attributes) before any of it is loaded: a scheduler's ``load_state_dict``
    copies whatever it is given, so a StepLR's state would silently turn a CosineAnnealingLR into a
    hybrid of both."""
    have_class = class_path(scheduler)
    if saved_class is not None and saved_class != have_class:
        raise ValueError(f"{what}: the saved scheduler is a {_short(saved_class)}; this model's is a "
                         f"{_short(have_class)}. {remedy}")
    if not isinstance(saved, dict):
        raise ValueError(f"{what}: the saved scheduler state is not a torch scheduler state_dict. {remedy}")
    have = set(scheduler.state_dict())
    missing, extra = sorted(have - set(saved)), sorted(set(saved) - have)
    if saved_class is None and (missing or extra):
        raise ValueError(f"{what}: the saved scheduler is not a {type(scheduler).__name__} like this model's: it "
                         f"has {extra} and lacks {missing}. {remedy}")


def build_optimizer(description, named_parameters, custom_objects=None, trusted=False):
    """The optimizer :func:`describe_optimizer` described, on these parameters (its state not loaded yet)."""
    cls = resolve_class(description["class"], torch.optim.Optimizer, "optimizer", custom_objects, trusted)
    params = dict(named_parameters)
    missing = [n for names in description["param_names"] for n in names if n not in params]
    if missing:
        raise ValueError(f"optimizer: the saved optimizer trains parameters the model does not have: {missing[:8]}")
    groups = [{"params": [params[n] for n in names]} for names in description["param_names"]]
    defaults = dict(description["defaults"])
    try:
        return cls(groups, **defaults)
    except TypeError:
        # A custom optimizer whose constructor takes other names than its defaults: build the base
        # Optimizer on them; load_state_dict then restores every group's hyperparameters.
        optimizer = cls.__new__(cls)
        torch.optim.Optimizer.__init__(optimizer, groups, defaults)
        return optimizer


def _attach_scheduler(scheduler, optimizer):
    scheduler.optimizer = optimizer
    for inner in getattr(scheduler, "_schedulers", ()) or ():  # SequentialLR, ChainedScheduler
        _attach_scheduler(inner, optimizer)


def describe_scheduler(scheduler):
    """``{"class", "blob", "unsaved"}``: the scheduler pickled without its optimizer, or why it could not be."""
    entry = {"class": class_path(scheduler), "blob": None, "unsaved": None}
    optimizer = getattr(scheduler, "optimizer", None)
    try:
        entry["blob"] = pack(copy.deepcopy(scheduler, {id(optimizer): None}))
    except (pickle.PicklingError, AttributeError, TypeError) as exc:
        entry["unsaved"] = f"{type(exc).__name__}: {exc}"
    return entry


# ----------------------------------------------------------------------------------------- model files

def _architecture(model, architecture, replace, allow):
    cls = type(model)
    path = class_path(cls)
    own_config = "get_config" in dir(cls) and callable(getattr(model, "get_config", None))
    args = getattr(model, "_fitkit_init_args", None)
    plain_args = args is not None and is_plain(list(args[0])) and is_plain(args[1])
    if architecture in ("auto", "import") and is_importable(cls):
        if own_config:
            config = model.get_config()
            if is_plain(config):
                return {"kind": "config", "class": path, "config": config}
            if architecture == "import":
                raise ValueError(f"architecture: {cls.__name__}.get_config() returned values that are not plain "
                                 "data (numbers, strings, lists, dicts, tensors); fix get_config or pass "
                                 "architecture='pickle'")
        elif plain_args:
            return {"kind": "import", "class": path, "args": list(args[0]), "kwargs": dict(args[1])}
    if architecture == "import":
        why = ("it is defined inside a function" if not is_importable(cls) else
               "its constructor arguments are unknown" if args is None else
               "its constructor arguments are not plain data (numbers, strings, lists, dicts, tensors)")
        raise ValueError(f"architecture: got 'import', but {cls.__name__} cannot be rebuilt by import path and "
                         f"constructor arguments: {why}. Pass architecture='pickle' (load_model then needs "
                         f"trusted=True or custom_objects) or give {cls.__name__} a get_config() method")
    try:
        blob = pack(structure_copy(model, replace))
    except (pickle.PicklingError, AttributeError, TypeError) as exc:
        raise ValueError(f"architecture: {cls.__name__} cannot be pickled ({exc}); define the class (and what "
                         "it holds) at module level, or give it plain constructor arguments") from None
    needs = unsafe_globals(blob, list(allow) + [cls])  # load_model trusts the class itself as it does for "import"
    if needs and architecture == "auto":
        # Python shows a warning once per place: ModelCheckpoint saving every epoch does not repeat it.
        warnings.warn(f"model.save pickled the {cls.__name__} module (its constructor arguments are not plain data), "
                      f"and the pickle names {', '.join(needs)}: load_model will need custom_objects with those "
                      "classes or trusted=True. Pass architecture='pickle' to say that is intended.", stacklevel=4)
    return {"kind": "pickle", "class": path, "module": blob, "needs": needs}


def _compile_entry(model, allow, optimizer_state=None):
    compiled = getattr(model, "_compiled", None)
    if compiled is None:
        return None
    config = dict(compiled.config)
    plain = {k: v for k, v in config.items() if is_plain(v)}
    objects = {k: v for k, v in config.items() if k not in plain}
    entry = {"config": plain, "objects": None, "unsaved": [], "scheduler": None,
             "optimizer": describe_optimizer(model.optimizer, model.named_parameters(), optimizer_state)}
    if objects:
        try:
            entry["objects"] = pack(objects)
        except (pickle.PicklingError, AttributeError, TypeError) as exc:
            entry["unsaved"] = sorted(objects)
            warnings.warn(f"model.save could not store compile's {', '.join(sorted(objects))} ({exc}); a lambda or a "
                          "local function cannot be pickled. load_model compiles without them: call "
                          "model.compile(optimizer=model.optimizer, scheduler=model.scheduler, loss=...) after "
                          "loading (that keeps the optimizer's state), or use a module-level function or object.",
                          stacklevel=4)
    if model.scheduler is not None:
        entry["scheduler"] = describe_scheduler(model.scheduler)
        if entry["scheduler"]["unsaved"]:
            warnings.warn(f"model.save could not store the {type(model.scheduler).__name__} scheduler "
                          f"({entry['scheduler']['unsaved']}); load_model compiles without it. Use module-level "
                          "functions in the scheduler, or re-compile with scheduler=... after loading.", stacklevel=4)
    return entry


def _not_architecture(model):
    """What lives on the model but is not architecture: compile's objects, the fit state, the last batch;
    as ``(object, substitute)`` pairs for :func:`structure_copy`."""
    state = model.training_state
    replace = [(state, type(state)())]
    for name in ("_compiled", "history", "_input_example"):
        value = getattr(model, name, None)
        if value is not None:
            replace.append((value, None))
    return replace


def architecture_copy(model):
    """The model's structure without its data (meta tensors) or training objects: what ``save`` pickles.
    Taken before FSDP2 shards a model (a sharded module cannot be copied), for its later saves."""
    return structure_copy(model, _not_architecture(model))


def save_model(model, filepath, overwrite=True, architecture="auto", allow=(), gathered=None):
    """Write ``model`` (a compiled or uncompiled fitkit Model) to ``filepath``; see :meth:`fitkit.Model.save`.

    ``gathered`` holds what the ranks of a distributed model gathered together (``weights``,
    ``optimizer_state``, ``training``, and ``structure``: the model as it was before sharding).
    """
    path = check_overwrite(filepath, overwrite)
    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture: got {architecture!r}; expected 'auto', 'import' (class import path and "
                         "constructor arguments) or 'pickle' (the module pickled)")
    gathered = gathered or {}
    state = model.training_state
    structure = gathered.get("structure") or model
    history = getattr(model, "history", None)
    weights = gathered.get("weights")
    training = gathered.get("training")
    payload = {
        "format": MODEL_FORMAT,
        "version": FORMAT_VERSION,
        "architecture": _architecture(structure, architecture, _not_architecture(structure), allow),
        "weights": {k: v.detach() for k, v in (model.state_dict() if weights is None else weights).items()},
        "compile": _compile_entry(model, allow, gathered.get("optimizer_state")),
        "training": state.state_dict(model_state=False) if training is None else training,
        "history": history.to_dict() if hasattr(history, "to_dict") else None,
    }
    save(payload, path)


def _build(arch, weights, base, allow, custom_objects, trusted):
    kind = arch.get("kind")
    if kind == "pickle":
        # The model's own class is trusted as it is for kind "import" (imported by the caller, or given in
        # custom_objects); any other class the pickle names must be allowlisted too.
        own = [] if trusted else [resolve_class(arch["class"], base, "architecture", custom_objects, trusted)]
        model = unpack(arch["module"], "architecture", list(allow) + own, trusted)
        if not isinstance(model, base):
            raise TypeError(f"architecture: the file holds a {type(model).__name__}; expected a {base.__name__}")
        check_weights(model, weights, "the model file", what="architecture", remedy="The file is inconsistent.")
        model.load_state_dict(weights, assign=True)
        return model
    cls = resolve_class(arch["class"], base, "architecture", custom_objects, trusted)
    if kind == "config":
        model = cls.from_config(arch["config"]) if hasattr(cls, "from_config") else cls(**arch["config"])
    elif kind == "import":
        model = cls(*arch["args"], **arch["kwargs"])
    else:
        raise CorruptCheckpointError(f"architecture: unknown kind {kind!r} in the file")
    model.load_state_dict(check_weights(model, weights, "the model file", what="architecture",
                                        remedy="The class or its arguments changed since the model was saved."))
    return model


def load_model(filepath, base, history_class, allow=(), custom_objects=None, compile=True, trusted=False):
    """The model :func:`save_model` wrote; see :func:`fitkit.load_model`."""
    data = read(filepath, hint=" A fitkit model file holds only tensors and plain data at its top level; this "
                               "one was not written by Model.save.")
    if not isinstance(data, dict) or data.get("format") != MODEL_FORMAT:
        raise ValueError(f"filepath: {os.fspath(filepath)!r} is not a fitkit model file (Model.save writes them); "
                         "for a state_dict file use model.load_weights(filepath)")
    if data.get("version", 0) > FORMAT_VERSION:
        raise ValueError(f"filepath: {os.fspath(filepath)!r} has format version {data['version']}; this fitkit "
                         f"reads up to {FORMAT_VERSION}: upgrade fitkit")
    allow = list(allow) + list(check_custom_objects(custom_objects).values())
    # Building a model runs its layers' initialisers; the caller's RNG must not notice.
    with preserved_rng():
        model = _build(data["architecture"], data["weights"], base, allow, custom_objects, trusted)
    entry = data.get("compile")
    if compile and entry is not None:
        _compile(model, entry, allow, custom_objects, trusted)
    training = data.get("training") or {}
    model.training_state.load_state_dict(training)
    if data.get("history") is not None:
        model.history = history_class.from_dict(data["history"])
    return model


def _compile(model, entry, allow, custom_objects, trusted):
    kwargs = dict(entry["config"])
    if entry.get("objects") is not None:
        kwargs.update(unpack(entry["objects"], "compile settings (loss, metrics)", allow, trusted))
    if entry.get("unsaved"):
        warnings.warn(f"load_model: compile's {', '.join(entry['unsaved'])} were not saved (not picklable); the "
                      "model is compiled without them. Compile again with "
                      "model.compile(optimizer=model.optimizer, scheduler=model.scheduler, ...).", stacklevel=4)
    optimizer_name = kwargs.pop("optimizer", None)
    optimizer = build_optimizer(entry["optimizer"], model.named_parameters(), custom_objects, trusted)
    scheduler = None
    described = entry.get("scheduler")
    if described is not None and described.get("blob") is not None:
        scheduler = unpack(described["blob"], "scheduler", allow, trusted)
        _attach_scheduler(scheduler, optimizer)
    elif described is not None:
        warnings.warn(f"load_model: the {described['class']} scheduler was not saved ({described['unsaved']}); the "
                      "model is compiled without a scheduler.", stacklevel=4)
    # The file's optimizer state must fit the optimizer rebuilt from it: the class it names (or the one
    # custom_objects maps that name to) may have changed since. Checked before compile, so a mismatch
    # leaves nothing half-loaded. The class itself is the file's own choice: no class name to compare.
    check_optimizer_state(optimizer, entry["optimizer"]["state"], None,
                          remedy=f"The class {_short(entry['optimizer']['class'])} has changed since the file was "
                                 "saved; pass compile=False and compile the model yourself.")
    model.compile(optimizer=optimizer, scheduler=scheduler, **kwargs)
    # After compile placed the parameters: the state follows them to their device.
    optimizer.load_state_dict(entry["optimizer"]["state"])
    model._compiled.config["optimizer"] = optimizer_name
