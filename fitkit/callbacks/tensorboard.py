"""TensorBoard: write what Keras's TensorBoard callback writes (epoch and batch scalars, steps per second,
weight histograms and weight images, the graph) as TensorBoard event files through
``torch.utils.tensorboard``; needs the ``tensorboard`` extra."""

import os
import time
import warnings

import numpy as np
import torch

from .. import distributed
from ..optimizers import current_lr
from .base import Callback

_IMAGES_PER_WEIGHT = 3  # tf.summary.image's max_outputs, which Keras leaves at its default


def _summary_writer_class():
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise ImportError(
            "The TensorBoard callback needs the tensorboard package: pip install fitkit[tensorboard] "
            f"(or pip install tensorboard). ({e})"
        ) from None
    return SummaryWriter


def _model_weights(model):
    """(name, tensor) for every weight Keras would log: parameters, then floating-point buffers (a
    BatchNorm's running mean and variance are Keras's non-trainable moving mean and variance)."""
    yield from model.named_parameters()
    for name, buffer in model.named_buffers():
        if buffer.is_floating_point():
            yield name, buffer


def weight_image(weight):
    """A weight as Keras draws it for ``write_images``: a uint8 image (H, W, C), or None when Keras
    draws none.

    torch stores conv kernels (out, in, k...) where Keras stores (k..., in, out): they are laid out as
    Keras's first, then Keras's rule applies: squeeze; a vector is a column; a matrix is drawn with its
    shorter side down; a 3-D kernel is one image per output channel; a 4-D kernel only when its last
    axis holds 1, 3 or 4 channels. The first ``3`` images go side by side (TensorBoard shows three
    samples of a Keras image summary), with values in [0, 1] scaled to bytes as TensorFlow scales them.
    """
    w = weight.detach().float().cpu()
    if w.dim() == 3:
        w = w.permute(2, 1, 0)
    elif w.dim() == 4:
        w = w.permute(2, 3, 1, 0)
    w = w.squeeze()
    if w.dim() == 1:
        w = w.reshape(1, w.shape[0], 1, 1)
    elif w.dim() == 2:
        if w.shape[0] > w.shape[1]:
            w = w.t()
        w = w.reshape(1, w.shape[0], w.shape[1], 1)
    elif w.dim() == 3:
        w = w.permute(2, 0, 1).unsqueeze(-1)
    if w.dim() != 4 or w.shape[-1] not in (1, 3, 4):
        return None
    images = w[:_IMAGES_PER_WEIGHT].numpy()
    # tf.image.convert_image_dtype(saturate=True): scale by 255.5, clip, truncate.
    images = np.clip(images * 255.5, 0, 255).astype(np.uint8)
    return np.concatenate(list(images), axis=1)


class TensorBoard(Callback):
    """Logs to ``log_dir``, laid out as Keras does: training values under ``log_dir/train`` and
    ``val_`` values (prefix dropped) under ``log_dir/validation``, as ``epoch_<name>`` at step
    ``epoch``; the learning rate as ``epoch_learning_rate`` (the logged one, else the optimizer's).
    View with ``tensorboard --logdir logs``.

    ``update_freq="batch"`` or an int N also writes ``batch_<name>`` every N training batches
    (reading batch logs syncs the device, so only then). ``write_steps_per_second=True`` writes
    ``epoch_steps_per_second`` (training batches over the epoch's wall time, validation included, as
    Keras measures it) and, with batch updates, ``batch_steps_per_second`` (one over the time from a
    batch's start to its end: on an accelerator that is the host's pace, since nothing waits for the
    device). ``histogram_freq=N`` writes ``<weight>/histogram`` for every parameter and floating-point
    buffer every N epochs; ``write_images=True`` also draws each of them as ``<weight>/image`` in those
    epochs (see :func:`weight_image`), as Keras does. ``write_graph=True`` traces the model on the first
    training batch's input and writes the graph (a model that cannot be traced gets a warning).
    Under torchrun rank 0 alone writes (the epoch logs are the same on every rank, batch logs are rank 0's).

    >>> tb = TensorBoard(log_dir="logs/run1", histogram_freq=1, write_images=True)  # doctest: +SKIP
    """

    def __init__(self, log_dir="logs", histogram_freq=0, write_graph=False, update_freq="epoch",
                 write_images=False, write_steps_per_second=False, profile_batch=0, embeddings_freq=0,
                 embeddings_metadata=None):
        super().__init__()
        self._writer_class = _summary_writer_class()  # fail now, not after an epoch of training
        unsupported = {"profile_batch": profile_batch, "embeddings_freq": embeddings_freq,
                       "embeddings_metadata": embeddings_metadata}
        unsupported = sorted(k for k, v in unsupported.items() if v)
        if unsupported:
            # Accepted so that Keras code runs unchanged; said out loud because nothing is written.
            warnings.warn(f"fitkit's TensorBoard does not support {unsupported}; ignored.", stacklevel=2)
        if update_freq != "epoch" and update_freq != "batch" and (
            isinstance(update_freq, bool) or not isinstance(update_freq, int) or update_freq < 1
        ):
            raise ValueError(f"update_freq must be 'epoch', 'batch' or a positive int; got {update_freq!r}.")
        if isinstance(histogram_freq, bool) or not isinstance(histogram_freq, int) or histogram_freq < 0:
            raise ValueError(f"histogram_freq: got {histogram_freq!r}; expected a number of epochs >= 0")
        if write_images and not histogram_freq:
            warnings.warn("TensorBoard(write_images=True) draws the weights in the epochs that write histograms, "
                          "as Keras does; with histogram_freq=0 it draws none. Pass histogram_freq=1.",
                          stacklevel=2)
        self.log_dir = os.fspath(log_dir)
        self.histogram_freq = histogram_freq
        self.write_graph = write_graph
        self.write_images = write_images
        self.write_steps_per_second = write_steps_per_second
        self.update_freq = 1 if update_freq == "batch" else update_freq
        self._writers = {}
        self._global_train_batch = 0
        self._epoch_first_batch = 0
        self._epoch_start = None
        self._batch_start = None
        self._graph_hook = None
        if write_steps_per_second and self.update_freq != "epoch":
            # An instance hook: the batch clock costs a call per batch only when batch rates are written.
            self.on_train_batch_begin = self._start_batch_clock

    def _writer(self, which):
        # Created on first use, so that a run without validation makes no validation folder.
        if which not in self._writers:
            sub = "train" if which == "train" else "validation"
            self._writers[which] = self._writer_class(os.path.join(self.log_dir, sub))
        return self._writers[which]

    def on_train_begin(self, logs=None):
        self._global_train_batch = 0
        if self.write_graph and distributed.is_sharded(self.model):
            # Tracing runs a forward on rank 0 alone, and a sharded model's forward needs every rank.
            warnings.warn("TensorBoard cannot write the graph of a model sharded with FSDP; write_graph is "
                          "ignored.", stacklevel=2)
            self.write_graph = False
        if self.write_graph and self._graph_hook is None and distributed.is_writer(self.model):
            self._graph_hook = self.model.register_forward_pre_hook(self._write_graph)

    def _write_graph(self, module, args):
        self._graph_hook.remove()
        self._graph_hook = None
        self.write_graph = False  # once per callback
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.trace's notice
                self._writer("train").add_graph(module, tuple(args))
        except Exception as e:  # tracing fails for some models; the run must go on
            warnings.warn(f"TensorBoard could not write the model graph: {e}", stacklevel=2)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_first_batch = self._global_train_batch
        self._epoch_start = time.perf_counter()

    def _start_batch_clock(self, batch, logs=None):
        self._batch_start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self._global_train_batch += 1
        if self.update_freq == "epoch" or self._global_train_batch % self.update_freq \
                or not distributed.is_writer(self.model):
            return
        writer = self._writer("train")
        if self.write_steps_per_second and self._batch_start is not None:
            seconds = time.perf_counter() - self._batch_start
            writer.add_scalar("batch_steps_per_second", 1.0 / max(seconds, 1e-9), self._global_train_batch)
        for name, value in dict(logs or {}).items():
            writer.add_scalar(f"batch_{name}", float(value), self._global_train_batch)

    def on_test_end(self, logs=None):
        # Keras writes the evaluation values against the training step count as well.
        if not logs or getattr(self.model, "optimizer", None) is None or not distributed.is_writer(self.model):
            return
        writer = self._writer("val")
        for name, value in dict(logs).items():
            writer.add_scalar(f"evaluation_{name}_vs_iterations", float(value), self._global_train_batch)
        writer.flush()

    def on_epoch_end(self, epoch, logs=None):
        writing = distributed.is_writer(self.model)
        weights = None
        if self.histogram_freq and epoch % self.histogram_freq == 0:
            # Whole tensors of a sharded model are gathered from every rank (a collective): all take part.
            sharded = distributed.is_sharded(self.model)
            weights = [(name, distributed.full_tensors(w.detach()) if sharded else w.detach())
                       for name, w in _model_weights(self.model)]
        if not writing:
            return
        logs = dict(logs or {})
        train = {k: v for k, v in logs.items() if not k.startswith("val_")}
        val = {k[4:]: v for k, v in logs.items() if k.startswith("val_")}
        optimizer = getattr(self.model, "optimizer", None)
        if "learning_rate" not in train and optimizer is not None and hasattr(optimizer, "param_groups"):
            # Logged value first: it is the lr the epoch trained with, the optimizer's may already
            # be reduced by a ReduceLROnPlateau placed before this callback.
            train["learning_rate"] = current_lr(optimizer)
        if self.write_steps_per_second and self._epoch_start is not None:
            seconds = time.perf_counter() - self._epoch_start
            train["steps_per_second"] = (self._global_train_batch - self._epoch_first_batch) / max(seconds, 1e-9)
        for which, values in (("train", train), ("val", val)):
            if not values:
                continue
            writer = self._writer(which)
            for name, value in values.items():
                writer.add_scalar(f"epoch_{name}", float(value), epoch)
        if weights is not None:
            self._log_weights(epoch, weights)
        for writer in self._writers.values():
            writer.flush()

    def _log_weights(self, epoch, weights):
        """Keras's weight summaries: ``<weight>/histogram``, and ``<weight>/image`` with write_images."""
        writer = self._writer("train")
        with torch.no_grad():
            for name, weight in weights:
                writer.add_histogram(f"{name}/histogram", weight, epoch)
                if self.write_images:
                    image = weight_image(weight)
                    if image is not None:
                        writer.add_image(f"{name}/image", image, epoch, dataformats="HWC")

    def on_train_end(self, logs=None):
        if self._graph_hook is not None:
            self._graph_hook.remove()
            self._graph_hook = None
        for writer in self._writers.values():
            writer.close()
        self._writers = {}
