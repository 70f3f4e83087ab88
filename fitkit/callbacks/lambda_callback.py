"""LambdaCallback: a callback made of plain functions, one per hook."""

from .base import HOOKS, Callback

_ALL_HOOKS = frozenset(HOOKS) | {"on_batch_begin", "on_batch_end"}


class LambdaCallback(Callback):
    """A callback whose hooks are the functions given; hooks not given do nothing and cost nothing.

    The functions take the hook's positional arguments: ``on_epoch_begin/end(epoch, logs)``,
    ``on_train_begin/end(logs)``, ``on_train_batch_begin/end(batch, logs)``; any other hook of
    Callback may be given by name (``on_test_end=fn``).

    >>> log = LambdaCallback(on_epoch_end=lambda epoch, logs: print(epoch, logs["loss"]))
    """

    def __init__(self, on_epoch_begin=None, on_epoch_end=None, on_train_begin=None,
                 on_train_end=None, on_train_batch_begin=None, on_train_batch_end=None, **kwargs):
        super().__init__()
        unknown = sorted(set(kwargs) - _ALL_HOOKS)
        if unknown:
            raise TypeError(
                f"LambdaCallback got {unknown}, which are not callback hooks; expected names among "
                f"{sorted(_ALL_HOOKS)}."
            )
        given = dict(kwargs, on_epoch_begin=on_epoch_begin, on_epoch_end=on_epoch_end,
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
