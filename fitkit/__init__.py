"""fitkit: Keras's compile / fit / evaluate / predict for PyTorch, done right and fast.

>>> import fitkit
>>> from torch import nn
>>> model = fitkit.Sequential(nn.Linear(10, 1), nn.Sigmoid())
>>> model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
>>> history = model.fit(x, y, epochs=50, validation_split=0.2,
...                     callbacks=[fitkit.callbacks.EarlyStopping(patience=5, restore_best_weights=True)])
"""

from . import callbacks, losses, metrics, optimizers
from .history import History
from .model import Model, Sequential, wrap
from .seed import set_seed

__version__ = "0.1.0"

__all__ = ["Model", "Sequential", "History", "wrap", "set_seed", "callbacks", "losses", "metrics",
           "optimizers", "__version__"]
