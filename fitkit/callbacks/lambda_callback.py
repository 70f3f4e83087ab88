"""LambdaCallback: a callback made of plain functions, one per hook."""

import difflib
import warnings

from .base import HOOKS, Callback

_ALL_HOOKS = frozenset(HOOKS) | {"on_batch_begin", "on_batch_end"}


class LambdaCallback(Callback):
    """A callback whose hooks are the functions given; hooks not given do nothing and cost nothing.

    The functions take the hook's positional arguments: ``on_epoch_begin/end(epoch, logs)``,
    ``on_train_begin/end(logs)``, ``on_train_batch_begin/end(batch, logs)``; any other hook of
    Callback may be given by name (``on_test_end=fn``). Other keyword arguments become attributes of
    the callback, as in Keras (``LambdaCallback(on_epoch_end=fn, log_file=f)`` then ``cb.log_file``);
    one named like a hook that is not one (``on_epoch_ends``) is kept too, with a warning naming the
    hook it resembles, since it will never be called.

    >>> log = LambdaCallback(on_epoch_end=lambda epoch, logs: print(epoch, logs["loss"]))
    """

    def __init__(self, on_epoch_begin=None, on_epoch_end=None, on_train_begin=None,
                 on_train_end=None, on_train_batch_begin=None, on_train_batch_end=None, **kwargs):
        super().__init__()
        hooks = {name: fn for name, fn in kwargs.items() if name in _ALL_HOOKS}
        extras = {name: value for name, value in kwargs.items() if name not in _ALL_HOOKS}
        for name in extras:
            if name.startswith("on_"):
                close = difflib.get_close_matches(name, sorted(_ALL_HOOKS), n=1)
                warnings.warn(
                    f"LambdaCallback: {name!r} is not a callback hook, so it is kept as an attribute and never "
                    f"called{'; did you mean ' + repr(close[0]) + '?' if close else ''}", stacklevel=2)
        # Keras keeps every extra keyword argument as an attribute; hooks are set below, after them.
        self.__dict__.update(extras)
        given = dict(hooks, on_epoch_begin=on_epoch_begin, on_epoch_end=on_epoch_end,
                     on_train_begin=on_train_begin, on_train_end=on_train_end,
                     on_train_batch_begin=on_train_batch_begin,
                     on_train_batch_end=on_train_batch_end)
        for hook, fn in given.items():
            if fn is None:
                continue
            if not callable(fn):
                raise TypeError(f"LambdaCallback {hook} must be callable; got {fn!r}.")
            # An instance attribute shadows the base's no-op; CallbackList sees only these as hooks.
            setattr(self, hook, fn)
