"""Keras's public ``keras.utils`` names, re-exported from the rooms of fitkit that own them.

>>> x, y, sample_weight = fitkit.utils.unpack_x_y_sample_weight(data)   # in a custom train_step
>>> class Batches(fitkit.utils.PyDataset): ...                          # a dataset of whole batches
>>> fitkit.utils.to_categorical([0, 2, 1], num_classes=3)                # one-hot targets
"""

from .data import pack_x_y_sample_weight, unpack_x_y_sample_weight
from .py_dataset import PyDataset, Sequence
from .targets import to_categorical

__all__ = ["PyDataset", "Sequence", "pack_x_y_sample_weight", "to_categorical", "unpack_x_y_sample_weight"]
