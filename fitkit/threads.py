"""``fit(threads=...)``: how many CPU threads torch's kernels use while a fit trains.

A small model's kernels are tiny: handing each of them to several threads costs more than the work
itself, and a fit that would take one second on one thread takes three to eight on two. So
``threads="auto"`` (the default) gives a fit on the CPU one thread per :data:`FLOPS_PER_THREAD` of work
in the forward of one training batch, at least one and at most the count torch has when the fit starts
(its default, or what the user set): one thread for the small models, torch's own count for models big
enough for threads to pay. ``threads=k`` uses k threads during the fit; ``threads=None`` leaves torch
alone. The count is set with ``torch.set_num_threads`` (process-wide) and put back when fit returns,
also on an exception or Ctrl-C; torch's inter-op threads are left as they are (torch does not allow
changing them once used).

The choice is a deterministic rule of the step's size, not a timing: the thread count changes the order
of float reductions inside some kernels, and a timed choice could differ from run to run. The work is
counted once per model and batch shape with torch's ``FlopCounterMode`` over a no-grad forward of the
first training batch (evaluation mode, every RNG as it was; for in-memory data the first batch in stored
order, so a fit resumed mid-epoch measures the same batch), so the same script on the same machine
always picks the same count, a fit split over several calls picks it in each of them, and a resumed run
picks it again: the weights are the same run after run, call after call, resume after resume. A model
trained on another device than the CPU gets no change.

>>> history = model.fit(x, y, epochs=10)               # threads="auto"          # doctest: +SKIP
>>> history = model.fit(x, y, epochs=10, threads=4)    # four threads during fit  # doctest: +SKIP
"""

import numbers
import weakref

import torch

from . import data

#: Forward FLOPs of one training batch per thread (a 256-512-512-10 MLP at batch 64 is 51 MFLOP, the
#: article's logistic regression at batch 32 is 640 FLOP). Measured on a 2-core VM with MLPs of growing
#: width (hand loops, 1 thread against 2): below 4 MFLOP two threads cost 1.1-1.2x on a quiet machine
#: and up to 12x while another process holds the second core; they save 15-20 % from 13 MFLOP on and
#: 35 % at 135 MFLOP; so a second thread from 8 MFLOP (benchmarks/README.md).
FLOPS_PER_THREAD = 4e6

_pending = weakref.WeakKeyDictionary()   # model -> the FitThreads of its running fit, until its first batch
_measured = weakref.WeakKeyDictionary()  # model -> {batch signature: forward FLOPs}


def check(threads):
    """``threads`` as fit accepts it: "auto", a positive integer or None."""
    if threads is None or (isinstance(threads, str) and threads == "auto"):
        return threads
    if isinstance(threads, bool) or not isinstance(threads, numbers.Integral) or threads < 1:
        raise ValueError(f"threads: got {threads!r}; expected 'auto', a positive integer or None")
    return int(threads)


def choose(flops, available):
    """The thread count for a step of ``flops`` forward FLOPs: one per :data:`FLOPS_PER_THREAD`, in
    ``[1, available]``.

    >>> choose(640, 16), choose(51e6, 2), choose(51e6, 16)
    (1, 2, 12)
    """
    return int(max(1, min(available, flops // FLOPS_PER_THREAD)))


def forward_flops(model, x):
    """Forward FLOPs of ``model`` on the batch ``x`` (matrix products and convolutions, as torch's
    ``FlopCounterMode`` counts them), measured once per model and batch shape; None when the count fails."""
    signature = tuple((tuple(t.shape), t.dtype) for t in data.flatten(x))
    known = _measured.setdefault(model, {})
    if signature not in known:
        from torch.utils.flop_counter import FlopCounterMode

        from .preflight import first_outputs
        try:
            with FlopCounterMode(display=False) as counter:
                first_outputs(model, x)
            known[signature] = counter.get_total_flops()
        except Exception:  # an operation the counter cannot follow: the step itself will tell its story
            known[signature] = None
    return known[signature]


class FitThreads:
    """The thread count of one fit: a context manager around the training, restoring torch's count.

    ``source`` is the fit's training data: in-memory data is measured on its first batch (in stored
    order, at full batch size) when the fit starts; a DataLoader or generator on the first batch it
    yields (see :func:`watch`).
    """

    def __init__(self, model, threads, source):
        self.model = model
        self.threads = check(threads)
        self.source = source
        self.restore = None
        self.chosen = None

    def __enter__(self):
        self.restore = torch.get_num_threads()
        if isinstance(self.threads, int):
            self._set(self.threads)
        elif self.threads == "auto" and self.model.device.type == "cpu" and self.restore > 1:
            if callable(getattr(self.source, "first_batch", None)):
                self.decide(self.source.first_batch())
            else:
                _pending[self.model] = self  # decided on the first batch, by watch()
        return self

    def __exit__(self, *exc):
        _pending.pop(self.model, None)
        if self.restore is not None and torch.get_num_threads() != self.restore:
            torch.set_num_threads(self.restore)
        return False

    def _set(self, count):
        self.chosen = count
        if torch.get_num_threads() != count:
            torch.set_num_threads(count)

    def decide(self, batch):
        """Set the count for the step on the training batch ``batch`` (Keras's form, or a rank's share of one)."""
        _pending.pop(self.model, None)
        x, _, _ = data.unpack_x_y_sample_weight(getattr(batch, "batch", batch))  # a ShardedBatch holds its batch
        flops = forward_flops(self.model, x)
        if flops is not None:
            self._set(choose(flops, self.restore))


def watch(model, executions):
    """The executions ``(first, last, batches)`` of an epoch, deciding ``threads="auto"`` at the first batch
    when the fit still has to."""
    pending = _pending.get(model)
    if pending is None:
        return executions
    return _deciding(pending, executions)


def _deciding(pending, executions):
    executions = iter(executions)
    for execution in executions:
        pending.decide(execution[2][0])
        yield execution
        break
    yield from executions
