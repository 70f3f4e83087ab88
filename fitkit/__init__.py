"""fitkit: Keras's compile / fit / evaluate / predict for PyTorch, done right and fast.

>>> import fitkit
>>> from torch import nn
>>> model = fitkit.Sequential(nn.Linear(10, 1), nn.Sigmoid())
>>> model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
>>> history = model.fit(x, y, epochs=50, validation_split=0.2,
...                     callbacks=[fitkit.callbacks.EarlyStopping(patience=5, restore_best_weights=True)])
"""

from . import callbacks, checkpoint, losses, metrics, mixed_precision, model_file, optimizers, utils
from .history import History
from .mixed_precision import dtype_policy, set_dtype_policy
from .model import Model, Sequential, wrap
from .seed import set_seed

__version__ = "0.1.0"

__all__ = ["Model", "Sequential", "History", "wrap", "load_model", "set_seed", "set_dtype_policy", "dtype_policy",
           "plot_histories", "callbacks", "checkpoint", "losses", "metrics", "mixed_precision", "optimizers", "utils",
           "__version__"]


def load_model(filepath, custom_objects=None, compile=True, safe_mode=True, trusted=False):
    """The model :meth:`Model.save` wrote: compiled (optimizer and scheduler state included) and ready to
    continue training where it was saved, with its data-order generator, epoch counter and History.

    The file is read with ``torch.load(weights_only=True)``. A model saved by import path is rebuilt by
    calling its class (which must be imported, or given in ``custom_objects``); a pickled module, loss or
    scheduler is unpickled with torch's weights-only unpickler when it names only torch.nn layers, LR
    schedulers, fitkit classes and ``custom_objects``; anything else needs ``trusted=True`` (a full
    unpickle, which can run code from the file: only for files you trust). ``safe_mode=False`` is
    Keras's spelling of ``trusted=True``. ``compile=False`` returns the model uncompiled.

    >>> model = fitkit.load_model("model.pt")
    >>> model.fit(x, y, epochs=5, initial_epoch=model.training_state.epoch)
    """
    from . import model as _model

    return model_file.load_model(filepath, base=Model, history_class=History, allow=_model._allowlist(),
                                 custom_objects=custom_objects, compile=compile,
                                 trusted=bool(trusted) or safe_mode is False)


def plot_histories(histories, path=None, show=None, monitor=None):
    """Several runs on shared axes, one color each, with each run's best epoch marked by a star.

    ``histories`` is a dict ``{label: History}`` (a list gets the labels "run 1", "run 2", ...);
    ``monitor`` (default ``"val_loss"`` when every run has it, else ``"loss"``) decides the best
    epochs. Validation curves are solid, training curves dashed; accuracy-like axes end at 1.0 and a
    loss spanning orders of magnitude goes on a log scale. Saves to ``path`` when given and returns
    the matplotlib ``Figure`` (``show`` as for :meth:`History.plot`). Needs ``pip install fitkit[plot]``.

    >>> fitkit.plot_histories({"fixed 50": h1, "early stopping": h2, "auto": h3}, "runs.png")  # doctest: +SKIP
    """
    from .plotting import plot_histories as draw  # matplotlib loads only when plotting

    return draw(histories, path, show, monitor)
