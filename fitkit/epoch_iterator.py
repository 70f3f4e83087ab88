"""Which batches make each epoch, and how they are handed out: Keras 3's ``EpochIterator``
(``keras/src/trainers/epoch_iterator.py``), on fitkit's batch sources.

A source (:mod:`fitkit.data`) gives passes over its data: ``source.new_pass()`` is an iterator over one
pass (a fresh permutation of in-memory arrays, a fresh ``iter()`` of a DataLoader, the same iterator
again for a one-shot generator) and ``source.num_batches`` is its length when it is known. From them an
:class:`EpochIterator` makes epochs exactly as Keras does:

* Without ``steps_per_epoch`` an epoch is one whole pass.
* With ``steps_per_epoch`` the pass runs on from one epoch into the next, and an epoch ends early, with
  Keras's warning "Your input ran out of data; interrupting training. ...", when the pass ends inside it;
  the next epoch then starts a new pass. Data of 5 batches with ``steps_per_epoch=2`` gives epochs of
  2, 2, 1 (warning), 2, 2, 1 (warning), ... batches; with ``steps_per_epoch=5`` and 3 batches every epoch
  has the 3 batches and warns. (Keras says "interrupting training" here although training goes on; so
  does fitkit, with a last sentence saying what happens next.)
* A pass of unknown length (a generator, an ``IterableDataset``) is drawn from until it ends; its length
  is then known. A one-shot generator cannot start again: when it runs dry the epoch ends there (with
  the warning when ``steps_per_epoch`` is set, as in Keras), :attr:`exhausted` becomes true and fit ends
  after that epoch, with the warning if epochs were still to come. (Keras replays the generator's first
  batches in the epochs after; fitkit stops instead of training on them.)
* ``steps_per_execution=k`` hands out up to k batches at a time as one execution: the batch hooks run
  once per execution with Keras's indices, ``begin`` its first step and ``end = begin + k - 1`` (also for
  a last execution that got fewer batches); an epoch of S steps is ``ceil(S / k)`` executions of k
  batches, so it runs up to k - 1 batches past S, as Keras's does.

>>> it = EpochIterator(fitkit.data.source(np.zeros((5, 1)), np.zeros(5), batch_size=1), steps_per_epoch=2)
>>> [[begin for begin, _, _ in it.epoch()] for _ in range(3)]       # doctest: +SKIP
[[0, 1], [0, 1], [0]]
"""

import itertools
import warnings

RAN_OUT = ("Your input ran out of data; interrupting training. Make sure that your dataset or generator can "
           "generate at least `steps_per_epoch * epochs` batches.")


class EpochIterator:
    """The epochs of one source for fit, evaluate or predict (see the module's docstring)."""

    def __init__(self, source, steps_per_epoch=None, steps_per_execution=1):
        self.source = source
        self.steps_per_epoch = steps_per_epoch if steps_per_epoch is not None else getattr(source, "steps", None)
        self.steps_per_execution = int(steps_per_execution)
        self._current = None  # the pass under way, kept across epochs when steps_per_epoch is set
        self._steps_seen = 0  # steps drawn from the current pass (counted per execution, as Keras)
        self._num_batches = source.num_batches
        self._warned = False

    # ---- what fit reads

    @property
    def num_steps(self):
        """Steps per epoch as Keras's progress bar and ``params["steps"]`` show them (None: unknown)."""
        return self.steps_per_epoch or self._num_batches

    @property
    def exhausted(self):
        """Whether a one-shot source ran dry: it cannot give another batch."""
        return bool(getattr(self.source, "exhausted", False))

    @property
    def example(self):
        return self.source.example

    def warn_exhausted(self):
        """Keras's warning, once per epoch: fit says it when a one-shot source ran dry before the last epoch."""
        if not self._warned:
            self._warned = True
            warnings.warn(RAN_OUT + " The data cannot start again (a one-shot generator or iterator), so "
                          "training stops after this epoch.", UserWarning, stacklevel=4)

    def release(self):
        """Drop the data (fit calls it when it ends, also by an exception): the source's, and the pass."""
        self._current = None
        self.source.release()

    def reset(self):
        """Start from a new pass (evaluate does it each time, as Keras's)."""
        self._current = None
        self._steps_seen = 0
        self._num_batches = self.source.num_batches

    # ---- the epochs

    def epoch(self, skip=0):
        """Yield the epoch's executions ``(begin, end, batches)``; ``skip`` resumes an epoch after that many
        steps (the source's restored position, or that many batches drawn and dropped)."""
        source, k, spe = self.source, self.steps_per_execution, self.steps_per_epoch
        self._warned = False
        begin_hook = getattr(source, "on_epoch_begin", None)
        if begin_hook is not None:
            begin_hook()
        try:
            steps = spe or self._num_batches or -1
            if steps > 0:
                if skip and self._current is None:
                    self._start_pass()
                    self._drop(skip)
                elif not skip and (self._current is None or spe is None):
                    self._start_pass()
                for step in range(skip, steps, k):
                    if self._num_batches and self._steps_seen >= self._num_batches:
                        if spe:
                            self._warn_ran_out()
                        break
                    self._steps_seen += k
                    batches, ran_out = self._next_execution(k, spe)
                    if batches:
                        yield step, step + k - 1, batches
                    if ran_out:
                        return
                if self._num_batches and self._steps_seen >= self._num_batches:
                    self._current = None  # the next epoch starts a new pass
            else:  # no steps_per_epoch and a pass of unknown length: draw until it ends
                self._start_pass()
                if skip:
                    self._drop(skip)
                step = skip
                while True:
                    self._steps_seen = step + k
                    batches, ran_out = self._next_execution(k, spe)
                    if batches:
                        yield step, step + k - 1, batches
                    if ran_out:
                        return
                    step += k
        finally:
            # A `break` in the caller's loop closes this generator at once (CPython frees it), so a
            # Sequence's on_epoch_end runs at the end of every epoch, however it ended.
            end_hook = getattr(source, "on_epoch_end", None)
            if end_hook is not None:
                end_hook()

    def _start_pass(self):
        self._current = self.source.new_pass()
        self._steps_seen = 0

    def _drop(self, n):
        """Draw and drop ``n`` batches: a resumed epoch of a source that cannot seek."""
        for _ in itertools.islice(self._current, n):
            pass
        self._steps_seen = n

    def _next_execution(self, k, spe):
        """The next ``k`` batches (fewer at the end of the data) and whether the data ran out among them."""
        batches = self._take(k)
        if len(batches) < k:
            self._ran_out(spe)
            return batches, True
        return batches, False

    def _take(self, k):
        if k == 1:
            try:
                return [next(self._current)]
            except StopIteration:
                return []
        return list(itertools.islice(self._current, k))

    def _ran_out(self, spe):
        if self._num_batches is None:
            self._num_batches = self._steps_seen  # now the length is known (Keras counts the step that failed)
        if spe:
            self._warn_ran_out()
        self._current = None

    def _warn_ran_out(self):
        if self._warned:
            return
        self._warned = True
        then = ("The data cannot start again (a one-shot generator or iterator), so training stops after this "
                "epoch." if self.exhausted else "The next epoch starts a new pass over the data.")
        warnings.warn(f"{RAN_OUT} {then}", UserWarning, stacklevel=4)

    # ---- resuming (TrainingState saves and restores through these)

    def state_dict(self):
        """Where the data stands: steps drawn from the current pass and the source's position in it."""
        saver = getattr(self.source, "state_dict", None)
        return {"steps_seen": self._steps_seen, "in_pass": self._current is not None,
                "source": saver() if callable(saver) else None}

    def load_state_dict(self, state):
        """Go back to a :meth:`state_dict` position (a source that cannot seek starts its pass again and
        drops the batches already done)."""
        if "cursor" in state:  # saved before this class existed: the array source's own position
            batch_size = getattr(self.source, "batch_size", 1)
            state = {"source": state, "in_pass": True, "steps_seen": -(-state["cursor"] // batch_size)}
        loader = getattr(self.source, "load_state_dict", None)
        if state.get("source") is not None and callable(loader):
            loader(state["source"])
            self._current = self.source.resume_pass() if state.get("in_pass") else None
            self._steps_seen = int(state.get("steps_seen") or 0)


def epoch_batches(source, skip=0):
    """One epoch of ``source``'s batches, in order, by the EpochIterator that fit would use (kept on the
    source, so that a pass runs on into the next call with ``steps``): what ``source.epoch()`` yields."""
    it = source.__dict__.get("_epoch_iterator")
    if it is None:
        it = source.__dict__["_epoch_iterator"] = EpochIterator(source)
    for _, _, batches in it.epoch(skip):
        yield from batches
