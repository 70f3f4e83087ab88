"""The arguments of fit, evaluate and predict, checked before anything changes, in fitkit's error style
(``"argument: got X; expected Y"``)."""

import numbers

from . import distributed

_VERBOSE = (0, 1, 2, "auto")


def check_verbose(verbose, model=None):
    """``verbose`` as the loops use it: 0, 1 or 2 ("auto" is 1), and 0 on every process but the writer."""
    if verbose not in _VERBOSE or isinstance(verbose, bool):
        raise ValueError(f"verbose: got {verbose!r}; expected 0 (silent), 1 (progress bar), 2 (one line per "
                         "epoch) or 'auto'")
    if not distributed.is_writer(model):
        return 0  # more than one process: rank 0 alone prints
    return 1 if verbose == "auto" else verbose


def check_positive_int(value, name, allow_none=True):
    """A ValueError naming ``name`` unless ``value`` is a positive integer (or None when ``allow_none``)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name}: got {value!r}; expected a positive integer" + (" or None" if allow_none else ""))


def check_fit_args(x, epochs, initial_epoch, batch_size, validation_split, validation_freq, steps_per_epoch,
                   validation_steps, validation_batch_size, callbacks, shuffle, time_budget):
    """Every argument of fit that can be checked before the data is read; raises before anything changes."""
    if isinstance(epochs, bool) or not isinstance(epochs, numbers.Integral) or epochs < 0:
        raise ValueError(f"epochs: got {epochs!r}; expected a non-negative integer or 'auto'")
    if isinstance(initial_epoch, bool) or not isinstance(initial_epoch, numbers.Integral) or initial_epoch < 0:
        raise ValueError(f"initial_epoch: got {initial_epoch!r}; expected a non-negative integer")
    check_positive_int(batch_size, "batch_size")
    check_positive_int(validation_batch_size, "validation_batch_size")
    check_positive_int(steps_per_epoch, "steps_per_epoch")
    check_positive_int(validation_steps, "validation_steps")
    check_positive_int(validation_freq, "validation_freq", allow_none=False)
    if isinstance(validation_split, bool) or not isinstance(validation_split, numbers.Real) \
            or not 0.0 <= validation_split < 1.0:
        raise ValueError(f"validation_split: got {validation_split!r}; expected a fraction in [0, 1)")
    if not isinstance(shuffle, bool):
        raise ValueError(f"shuffle: got {shuffle!r}; expected True or False")
    check_callbacks(callbacks)
    if time_budget is not None and (isinstance(time_budget, bool) or not isinstance(time_budget, numbers.Real)
                                    or time_budget <= 0):
        raise ValueError(f"time_budget: got {time_budget!r}; expected a positive number of seconds or None")
    if x is None:
        raise ValueError("x: got None; expected training data (arrays, tensors, a Dataset, a DataLoader "
                         "or an iterable of batches)")


def check_callbacks(callbacks):
    """A TypeError for a callback class given instead of an instance, or something that is no callback."""
    for cb in callbacks:
        if isinstance(cb, type):
            raise TypeError(f"callbacks: got the class {cb.__name__}; expected an instance: pass "
                            f"{cb.__name__}(...) (with its arguments), not {cb.__name__}")
        if not hasattr(cb, "set_model"):
            raise TypeError(f"callbacks: got {cb!r}; expected fitkit.callbacks.Callback instances")


def callbacks_list(callbacks):
    """``callbacks`` (None, one callback or a list of them) as a checked list."""
    if callbacks is None:
        return []
    if isinstance(callbacks, (list, tuple)):
        callbacks = list(callbacks)
    elif hasattr(callbacks, "set_model"):
        callbacks = [callbacks]
    else:
        raise TypeError(f"callbacks: got {type(callbacks).__name__}; expected a list of Callback instances")
    check_callbacks(callbacks)
    return callbacks
