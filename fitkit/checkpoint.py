"""Checkpoint files: atomic writes, weights-only loading, RNG states, the safe unpickling of objects.

Writing: every file goes through :func:`atomic_write`: a temporary file in the target's folder is
written, flushed and fsynced, then renamed over the target (``os.replace``) and the folder fsynced,
so a crash at any moment leaves the old file or the new one, each whole. A write that fails with an
exception removes its temporary file; one killed outright leaves a ``.<name>.*.tmp`` beside the
target (never the target itself), which :func:`remove_stale_temporaries` clears.

Reading: :func:`read` is ``torch.load(weights_only=True)``: tensors and plain data, never code. What
cannot be plain data (a pickled module, a loss object, an LR scheduler) travels inside the file as a
pickled byte string; :func:`unpack` reads it with torch's weights-only unpickler and an allowlist of
torch's own classes (``torch.nn`` modules and functions, LR schedulers) plus the caller's, and runs a
full unpickle, which can execute code from the file, only when told ``trusted=True``.

This module imports nothing of fitkit. The model file written by :meth:`fitkit.Model.save` (and the
descriptions of optimizers and schedulers it holds) is :mod:`fitkit.model_file`'s.

>>> with atomic_write("weights.pt") as f:          # doctest: +SKIP
...     torch.save(model.state_dict(), f)
"""

import contextlib
import copy
import functools
import importlib
import io
import os
import pickle
import random
import signal
import sys
import tempfile
import threading
import types
import warnings

import numpy as np
import torch
from torch import nn

MODEL_FORMAT = "fitkit.model"
BACKUP_FORMAT = "fitkit.backup"
FORMAT_VERSION = 1


class UntrustedCheckpointError(pickle.UnpicklingError):
    """The file holds pickled objects outside the allowlist; loading them could run code from the file."""


class CorruptCheckpointError(ValueError):
    """The file is not a whole torch checkpoint (truncated, overwritten, or not a checkpoint at all)."""


# ----------------------------------------------------------------------------------------- atomic writes

def _read_umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def _fsync_folder(folder):
    # The rename is durable only once the folder entry is on disk; not every OS lets us open a folder.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _temporary_prefix(path):
    return f".{os.path.basename(path)}."


def _pid_alive(pid):
    """Whether process ``pid`` runs (its temporary file may be a write in progress)."""
    if os.name != "posix":
        return True  # no harmless probe there (os.kill(pid, 0) would send Ctrl-C on Windows): keep its file
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # it exists, owned by someone else
    return True


@contextlib.contextmanager
def _interrupts_held():
    """Hold a Ctrl-C (SIGINT) back while a temporary file is created or removed, and deliver it right
    after: an interrupt cannot land between the file's creation and the code that removes it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    try:
        previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    except (ValueError, OSError, TypeError):
        yield
        return
    if previous is None:  # a handler not set from Python: put back the default
        previous = signal.SIG_DFL
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            signal.raise_signal(signal.SIGINT)  # handled as it would have been, now that it is safe


def _user_error(exc, path, what):
    """An OSError of creating the temporary file, said of the user's ``path`` (the same type)."""
    folder = os.path.dirname(os.path.abspath(path))
    if isinstance(exc, FileNotFoundError):
        why = f"its folder {folder!r} does not exist; create it first (os.makedirs(folder, exist_ok=True))"
    elif isinstance(exc, PermissionError):
        why = f"no permission to write in its folder {folder!r} (read-only?); choose another path"
    else:
        why = f"{exc.strerror or exc}"
    return type(exc)(f"{what}: cannot write {path!r}: {why}")


@contextlib.contextmanager
def atomic_write(filepath, what="filepath"):
    """A binary file to write that replaces ``filepath`` only once it is complete and on disk.

    On any exception (Ctrl-C included, at any instant) the temporary file is removed and ``filepath``
    is untouched; temporary files that earlier writes of ``filepath`` left when killed outright
    (SIGKILL, power loss) are removed first. An error creating the file names ``filepath`` and says
    what is wrong (a missing or read-only folder), as ``what: ...``.

    >>> with atomic_write("model.pt") as f:       # doctest: +SKIP
    ...     torch.save(obj, f)
    """
    path = os.fspath(filepath)
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(folder):
        remove_stale_temporaries(path)
    tmp = f = None
    try:
        with _interrupts_held():
            try:
                # The writer's pid in the name: a later write removes only files of writers that are gone.
                fd, tmp = tempfile.mkstemp(prefix=f"{_temporary_prefix(path)}{os.getpid()}.", suffix=".tmp",
                                           dir=folder)
            except OSError as exc:
                raise _user_error(exc, path, what) from None
            f = os.fdopen(fd, "wb")
        with f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        # mkstemp makes the file private (0600); give it the mode a plain open() would have.
        os.chmod(tmp, os.stat(path).st_mode & 0o777 if os.path.exists(path) else 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException as exc:
        with _interrupts_held():
            if f is not None:
                with contextlib.suppress(Exception):
                    f.close()
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
        interrupt = _interrupt_behind(exc)
        if interrupt is not None:
            # torch.save's zip writer turns a Ctrl-C inside it into a RuntimeError as it closes: Ctrl-C it is.
            raise interrupt.with_traceback(interrupt.__traceback__) from None
        raise
    _fsync_folder(folder)


def _interrupt_behind(exc):
    """The KeyboardInterrupt that ``exc`` (not itself one) was raised while handling, or None."""
    seen = exc.__context__
    while seen is not None and not isinstance(exc, KeyboardInterrupt):
        if isinstance(seen, KeyboardInterrupt):
            return seen
        seen = seen.__context__
    return None


def remove_stale_temporaries(filepath):
    """Delete temporary files that writes of ``filepath`` killed mid-way (SIGKILL, power loss) left.

    A temporary file names its writer's process: the file of a writer that still runs (another process
    writing the same path now, or this one) is kept; so are those of other writers on Windows, where no
    process can be probed harmlessly.
    """
    path = os.fspath(filepath)
    folder = os.path.dirname(os.path.abspath(path))
    prefix = _temporary_prefix(path)
    with contextlib.suppress(OSError):
        for name in os.listdir(folder):
            if not (name.startswith(prefix) and name.endswith(".tmp")):
                continue
            writer = name[len(prefix):].split(".")[0]
            if writer.isdigit() and "." in name[len(prefix):-len(".tmp")] and \
                    (int(writer) == os.getpid() or _pid_alive(int(writer))):
                continue
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(folder, name))


def save(obj, filepath, what="filepath"):
    """``torch.save(obj, filepath)``, atomically (see :func:`atomic_write`)."""
    with atomic_write(filepath, what) as f:
        torch.save(obj, f)


def check_overwrite(filepath, overwrite, what="filepath"):
    """The path as a string; a FileExistsError when it exists and ``overwrite`` is False."""
    try:
        path = os.fspath(filepath)
    except TypeError:
        raise TypeError(f"{what}: got {filepath!r}; expected a str or os.PathLike file path") from None
    if os.path.isdir(path):
        raise IsADirectoryError(f"{what}: {path!r} is a directory; expected a file path such as 'model.pt'")
    if not overwrite and os.path.exists(path):
        raise FileExistsError(f"{what}: {path!r} exists and overwrite=False; pass overwrite=True to replace it")
    return path


# ----------------------------------------------------------------------------------------- reading

def _globals_in(path):
    """The classes/functions a torch file's pickle names that weights-only loading refuses."""
    finder = getattr(torch.serialization, "get_unsafe_globals_in_checkpoint", None)
    if finder is None:
        return []
    try:
        return sorted(finder(path))
    except Exception:  # a file torch cannot even scan: the caller reports the load error itself
        return []


def read(filepath, what="filepath", hint=""):
    """``torch.load(filepath, map_location="cpu", weights_only=True)`` with errors that say what is wrong.

    A file that holds pickled objects (not only tensors and plain data) raises
    :class:`UntrustedCheckpointError` naming them; a truncated or foreign file raises
    :class:`CorruptCheckpointError`. ``hint`` is appended to the first message.
    """
    try:
        path = os.fspath(filepath)
    except TypeError:
        raise TypeError(f"{what}: got {filepath!r}; expected a str or os.PathLike file path") from None
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what}: no file at {path!r}")
    with open(path, "rb") as f:
        head = f.read(4)
    if head[:2] != b"PK" and head[:1] != b"\x80":
        # torch.save writes a zip archive (or, in its legacy format, a pickle): this is neither.
        raise CorruptCheckpointError(f"{what}: {path!r} is not a fitkit or torch checkpoint file (it starts with "
                                     f"{head!r}, not a zip archive or a pickle); pass a file written by "
                                     "Model.save, save_weights or torch.save")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" in str(exc) or "Unsupported global" in str(exc):
            names = _globals_in(path)
            if not names and head[:2] != b"PK":
                raise CorruptCheckpointError(f"{what}: {path!r} is not a fitkit or torch checkpoint file that can "
                                             "be read (not a zip archive, and its pickle is damaged or foreign)") \
                    from None
            listed = f" ({', '.join(names)})" if names else ""
            raise UntrustedCheckpointError(
                f"{what}: {path!r} holds pickled Python objects{listed}, not only tensors and plain data, "
                f"and loading them could run code from the file.{hint}") from None
        raise CorruptCheckpointError(f"{what}: {path!r} is not a whole torch checkpoint ({exc})") from None
    except (RuntimeError, EOFError, ValueError, OSError, AttributeError, KeyError) as exc:
        raise CorruptCheckpointError(f"{what}: {path!r} is not a whole torch checkpoint "
                                     f"({type(exc).__name__}: {exc})") from None


# ----------------------------------------------------------------------------------------- RNG states

def get_rng_state():
    """Python's, NumPy's, torch's CPU and (once initialised) every CUDA device's RNG state.

    Tensors and plain data only, so a file holding it loads with ``weights_only=True``.

    >>> state = get_rng_state(); x = torch.rand(1); set_rng_state(state); assert torch.equal(x, torch.rand(1))
    """
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "torch": torch.get_rng_state(),
        "cuda": None,
    }
    # An uninitialised CUDA has drawn nothing yet; reading it would start CUDA for nothing.
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    """Put back what :func:`get_rng_state` returned."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available():
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        else:
            warnings.warn(f"The saved RNG state covers {len(cuda)} CUDA devices but {torch.cuda.device_count()} "
                          "are visible; their RNG states were not restored.", stacklevel=2)


@contextlib.contextmanager
def preserved_rng():
    """Run a block (building a model, say) without moving any global RNG the caller sees."""
    state = get_rng_state()
    try:
        yield
    finally:
        set_rng_state(state)


# ----------------------------------------------------------------------------------------- plain data

_SCALARS = (type(None), bool, int, float, str, bytes)


def is_plain(value):
    """Whether ``value`` is data ``torch.load(weights_only=True)`` reads back as it was.

    None, bool, int, float, str, bytes, tensors, and lists, tuples and str-keyed dicts of them.
    NumPy values are not (their pickle names NumPy functions).
    """
    if type(value) in _SCALARS or isinstance(value, torch.Tensor):
        return True
    if type(value) in (list, tuple):
        return all(is_plain(v) for v in value)
    if type(value) is dict:
        return all(type(k) in (str, int) and is_plain(v) for k, v in value.items())
    return False


# ----------------------------------------------------------------------------------------- classes by name

def class_path(obj):
    """``"module:QualName"`` of a class (or of an object's class): how a file names it."""
    cls = obj if isinstance(obj, type) else type(obj)
    return f"{cls.__module__}:{cls.__qualname__}"


def is_importable(cls):
    """Whether :func:`resolve_class` can find ``cls`` by its path (not a class local to a function)."""
    return "<locals>" not in cls.__qualname__


def check_custom_objects(custom_objects):
    """``custom_objects`` as a dict name -> class (Keras's argument of load_model)."""
    if custom_objects is None:
        return {}
    if not isinstance(custom_objects, dict) or not all(isinstance(k, str) for k in custom_objects):
        raise TypeError(f"custom_objects: got {custom_objects!r}; expected a dict class name -> class, "
                        "e.g. {'Net': Net}")
    return dict(custom_objects)


def resolve_class(path, base, what, custom_objects=None, trusted=False):
    """The class a file names by ``"module:QualName"``, checked to subclass ``base``.

    Looked up in ``custom_objects`` (by name or path), then in the modules already imported; a module
    not imported yet is imported only with ``trusted=True`` (importing runs its code).
    """
    module_name, _, qualname = path.partition(":")
    short = qualname.rsplit(".", 1)[-1]
    custom = check_custom_objects(custom_objects)
    cls = next((custom[k] for k in (path, f"{module_name}.{qualname}", qualname, short) if k in custom), None)
    if cls is None:
        module = sys.modules.get(module_name)
        if module is None and trusted:
            module = importlib.import_module(module_name)
        if module is None:
            raise ValueError(
                f"{what}: the file names the class {qualname} of the module {module_name!r}, which is not "
                f"imported; import it first (from {module_name} import {short}), pass "
                f"custom_objects={{'{short}': {short}}}, or trusted=True to let fitkit import {module_name!r}")
        cls = module
        for part in qualname.split("."):
            cls = getattr(cls, part, None)
        if cls is None:
            where = "this script (the one that saved it defined it)" if module_name == "__main__" \
                else f"the module {module_name!r}"
            raise ValueError(f"{what}: the file names the class {qualname}, which {where} does not define; "
                             f"define or import it, or pass custom_objects={{'{short}': {short}}}")
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise TypeError(f"{what}: the file names {path!r}, which resolved to {cls!r}; expected a subclass of "
                        f"{base.__module__}.{base.__qualname__}")
    return cls


# ----------------------------------------------------------------------------------------- pickled objects

@functools.lru_cache(maxsize=None)
def torch_allowlist():
    """torch's own classes and functions a pickled module or scheduler may name and still load safely.

    Every ``nn.Module`` subclass defined in ``torch.nn.modules``, the public functions of
    ``torch.nn.functional`` (activations that layers keep as attributes) and the LR schedulers. Their
    constructors and ``__setstate__`` only set attributes, so naming them in a file runs no code of
    the file's choosing.
    """
    found, seen, stack = [], set(), [nn.Module]
    while stack:
        for sub in stack.pop().__subclasses__():
            if sub not in seen:
                seen.add(sub)
                stack.append(sub)
                if sub.__module__.startswith("torch.nn.modules."):
                    found.append(sub)
    functional = torch.nn.functional
    for name in dir(functional):
        obj = getattr(functional, name)
        if not name.startswith("_") and callable(obj) and not isinstance(obj, (type, types.ModuleType)) \
                and str(getattr(obj, "__module__", "")).startswith("torch"):
            found.append(obj)
    schedulers = torch.optim.lr_scheduler
    for obj in vars(schedulers).values():
        if isinstance(obj, type) and obj.__module__ == schedulers.__name__ and hasattr(obj, "step"):
            found.append(obj)
    return tuple(found)


def pack(obj):
    """``obj`` pickled by ``torch.save`` into bytes, to travel inside a checkpoint dict."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


@functools.lru_cache(maxsize=None)
def takes_renamed_globals():
    """Whether this torch's ``safe_globals`` takes ``(obj, "module.QualName")`` pairs as well as objects.

    A pair allows ``obj`` under a path it was pickled by and has since left (a class moved into a
    sub-module). A torch without them reads every entry as an object and fails on a pair, so there
    :func:`unpack` leaves the pairs out, and a file naming an old path needs ``trusted=True``.
    """
    finder = getattr(torch.serialization, "get_unsafe_globals_in_checkpoint", None)
    if finder is None or not hasattr(torch.serialization, "safe_globals"):
        return False
    try:
        with torch.serialization.safe_globals([(is_plain, f"{__name__}.renamed_probe")]):
            finder(io.BytesIO(pack(None)))
    except (AttributeError, TypeError, ValueError):
        return False
    return True


def _allowed(allow):
    allowed = list(torch_allowlist()) + list(allow)
    if takes_renamed_globals():
        return allowed
    return [entry for entry in allowed if not isinstance(entry, tuple)]


def unsafe_globals(blob, allow=()):
    """What :func:`unpack` would refuse in ``blob`` without ``trusted=True`` (module.name strings).

    ``allow`` holds classes and functions, and ``(obj, "module.QualName")`` pairs for an object pickled
    under another path (see :func:`takes_renamed_globals`).
    """
    finder = getattr(torch.serialization, "get_unsafe_globals_in_checkpoint", None)
    allowed = _allowed(allow)
    if finder is None or not hasattr(torch.serialization, "safe_globals"):
        return ["(this torch cannot list them)"]
    with torch.serialization.safe_globals(allowed):
        return sorted(finder(io.BytesIO(blob)))


def unpack(blob, what, allow=(), trusted=False):
    """The object :func:`pack` stored: weights-only with the allowlist, or a full unpickle if ``trusted``."""
    if trusted:
        return torch.load(io.BytesIO(blob), map_location="cpu", weights_only=False)
    names = unsafe_globals(blob, allow)
    if names:
        raise UntrustedCheckpointError(
            f"{what}: the file stores it as a pickle that names {', '.join(names)}; unpickling those can run "
            "code from the file, so load_model needs trusted=True to do it. Pass trusted=True only for a file "
            "you trust, or pass custom_objects={...} with the classes you vouch for.")
    with torch.serialization.safe_globals(_allowed(allow)):
        return torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)


def structure_copy(module, replace=None):
    """A deep copy of ``module`` whose state-dict tensors are empty ``meta`` tensors (no data copied).

    ``replace`` holds ``(object, substitute)`` pairs: objects reachable from the module and what the
    copy holds instead (None drops an attribute's value). Tensors outside the state dict
    (non-persistent buffers) are copied.
    """
    memo = {id(obj): new for obj, new in (replace or ())}
    for tensor in module.state_dict(keep_vars=True).values():
        if id(tensor) in memo or isinstance(tensor, nn.parameter.UninitializedTensorMixin):
            continue
        meta = torch.empty_like(tensor, device="meta")
        memo[id(tensor)] = nn.Parameter(meta, requires_grad=tensor.requires_grad) \
            if isinstance(tensor, nn.Parameter) else meta
    return copy.deepcopy(module, memo)


# ----------------------------------------------------------------------------------------- weights

def check_weights(module, weights, filepath, skip_mismatch=False, what="filepath",
                  remedy="Pass skip_mismatch=True to load only the entries that fit."):
    """The entries of ``weights`` to load into ``module``; a ValueError naming every mismatch first.

    With ``skip_mismatch`` the mismatched and missing entries are skipped (with a warning) instead.
    """
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise ValueError(f"{what}: {filepath!r} does not hold a state_dict (a dict of name -> tensor); got "
                         f"{type(weights).__name__}")
    expected = module.state_dict()
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    shapes = [f"{k}: file {tuple(weights[k].shape)}, model {tuple(v.shape)}" for k, v in expected.items()
              if k in weights and not isinstance(v, nn.parameter.UninitializedTensorMixin)
              and tuple(weights[k].shape) != tuple(v.shape)]
    problems = []
    for label, items in (("missing from the file", missing), ("not in the model", unexpected),
                         ("with another shape", shapes)):
        if items:
            shown = ", ".join(items[:8]) + (f", ... ({len(items)} in all)" if len(items) > 8 else "")
            problems.append(f"{label}: {shown}")
    if not problems:
        return weights
    message = f"the weights in {filepath!r} do not fit {type(module).__name__}: " + "; ".join(problems)
    if not skip_mismatch:
        raise ValueError(f"{what}: {message}. {remedy}")
    warnings.warn(f"Skipped loading some weights: {message}.", stacklevel=3)
    bad = set(unexpected) | {s.split(":")[0] for s in shapes}
    return {k: v for k, v in weights.items() if k not in bad}
