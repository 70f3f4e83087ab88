"""Keras's public ``keras.utils`` names, re-exported from the rooms of fitkit that own them.

>>> x, y, sample_weight = fitkit.utils.unpack_x_y_sample_weight(data)   # in a custom train_step
>>> class Batches(fitkit.utils.PyDataset): ...                          # a dataset of whole batches
"""

from .data import pack_x_y_sample_weight, unpack_x_y_sample_weight
from .py_dataset import PyDataset, Sequence

__all__ = ["PyDataset", "Sequence", "pack_x_y_sample_weight", "unpack_x_y_sample_weight"]
