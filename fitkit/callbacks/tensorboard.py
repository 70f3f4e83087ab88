"""TensorBoard: write the epoch logs (and optionally batch logs, weight histograms, the graph) as
TensorBoard event files through ``torch.utils.tensorboard``; needs the ``tensorboard`` extra."""

import os
import warnings

from .. import distributed
from ..optimizers import current_lr
from .base import Callback


def _summary_writer_class():
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise ImportError(
            "The TensorBoard callback needs the tensorboard package: pip install fitkit[tensorboard] "
            f"(or pip install tensorboard). ({e})"
        ) from None
    return SummaryWriter


class TensorBoard(Callback):
    """Logs to ``log_dir``, laid out as Keras does: training values under ``log_dir/train`` and
    ``val_`` values (prefix dropped) under ``log_dir/validation``, as ``epoch_<name>`` at step
    ``epoch``; the learning rate as ``epoch_learning_rate`` (the logged one, else the optimizer's).
    View with ``tensorboard --logdir logs``.

    ``update_freq="batch"`` or an int N also writes ``batch_<name>`` every N training batches
    (reading batch logs syncs the device, so only then); ``histogram_freq=N`` writes a histogram of
    every parameter every N epochs; ``write_graph=True`` traces the model on the first training
    batch's input and writes the graph (a model that cannot be traced gets a warning, not an error).
    Under torchrun rank 0 alone writes (the epoch logs are the same on every rank, batch logs are rank 0's).

    >>> tb = TensorBoard(log_dir="logs/run1")  # doctest: +SKIP
    """

    def __init__(self, log_dir="logs", histogram_freq=0, write_graph=False, update_freq="epoch",
                 write_images=False, write_steps_per_second=False, profile_batch=0, embeddings_freq=0,
                 embeddings_metadata=None):
        super().__init__()
        self._writer_class = _summary_writer_class()  # fail now, not after an epoch of training
        unsupported = {"write_images": write_images, "write_steps_per_second": write_steps_per_second,
                       "profile_batch": profile_batch, "embeddings_freq": embeddings_freq,
                       "embeddings_metadata": embeddings_metadata}
        unsupported = sorted(k for k, v in unsupported.items() if v)
        if unsupported:
            # Accepted so that Keras code runs unchanged; said out loud because nothing is written.
            warnings.warn(f"fitkit's TensorBoard does not support {unsupported}; ignored.", stacklevel=2)
        if update_freq != "epoch" and update_freq != "batch" and (
            isinstance(update_freq, bool) or not isinstance(update_freq, int) or update_freq < 1
        ):
            raise ValueError(f"update_freq must be 'epoch', 'batch' or a positive int; got {update_freq!r}.")
        self.log_dir = os.fspath(log_dir)
        self.histogram_freq = histogram_freq
        self.write_graph = write_graph
        self.update_freq = 1 if update_freq == "batch" else update_freq
        self._writers = {}
        self._global_train_batch = 0
        self._graph_hook = None

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

    def on_train_batch_end(self, batch, logs=None):
        self._global_train_batch += 1
        if self.update_freq == "epoch" or self._global_train_batch % self.update_freq \
                or not distributed.is_writer(self.model):
            return
        writer = self._writer("train")
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
        if self.histogram_freq and epoch % self.histogram_freq == 0 and distributed.is_sharded(self.model):
            # Whole parameters of a sharded model are gathered from every rank (a collective): all take part.
            histograms = [(name, distributed.full_tensors(param.detach()))
                          for name, param in self.model.named_parameters()]
        else:
            histograms = [(name, param.detach()) for name, param in self.model.named_parameters()]
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
        for which, values in (("train", train), ("val", val)):
            if not values:
                continue
            writer = self._writer(which)
            for name, value in values.items():
                writer.add_scalar(f"epoch_{name}", float(value), epoch)
        if self.histogram_freq and epoch % self.histogram_freq == 0:
            writer = self._writer("train")
            for name, param in histograms:
                writer.add_histogram(f"{name}/histogram", param, epoch)
        for writer in self._writers.values():
            writer.flush()

    def on_train_end(self, logs=None):
        if self._graph_hook is not None:
            self._graph_hook.remove()
            self._graph_hook = None
        for writer in self._writers.values():
            writer.close()
        self._writers = {}
