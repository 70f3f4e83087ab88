"""The resumable state of a run, with one owner: :class:`TrainingState`.

Everything that decides the next training step lives here or is reached from here: the epoch and the
batches done in it, the model's data-order generator, the position in the training data, the running
loss and metric sums of an unfinished epoch (through the compiled state), and, for a full snapshot,
the weights, the optimizer and scheduler states and every global RNG state. ``model.save``,
``BackupAndRestore`` and any user checkpoint go through :meth:`TrainingState.state_dict` and
:meth:`TrainingState.load_state_dict`; nothing else saves or restores run state.

>>> checkpoint.save(model.training_state.state_dict(), "state.pt")            # doctest: +SKIP
>>> other.training_state.load_state_dict(checkpoint.read("state.pt"))         # doctest: +SKIP
"""

from . import checkpoint, distributed, model_file, seed


class TrainingState:
    """What decides the next step of a model's training and carries over between fit calls.

    ``epoch`` is the epoch running now, or the next one between fit calls; ``step`` the batches of the
    current epoch already done; ``source`` the running fit's training batches; ``resume_epoch`` is set
    by a callback restoring a backup (``BackupAndRestore``) to move the start of the fit.
    """

    def __init__(self, model=None):
        self.model = model
        self._generator = None
        self.epoch = 0
        self.step = 0
        self.resume_epoch = None
        self.source = None
        self._running = None  # saved sums of an unfinished epoch, put back when that epoch starts again

    def __setstate__(self, state):
        # A model file pickled before this class had its room holds its old attribute names.
        renamed = {"skip_batches": "step", "train_source": "source"}
        self.__init__()
        self.__dict__.update({renamed.get(k, k): v for k, v in state.items() if renamed.get(k, k) in self.__dict__})

    @property
    def generator(self):
        """The model's own data-order RNG, created on first use (see :func:`fitkit.seed.new_generator`)."""
        if self._generator is None:
            self._generator = seed.new_generator()
        return self._generator

    def begin_fit(self):
        """A fit starts at a batch boundary; only a restored backup moves it into an epoch."""
        self.step = 0
        self._running = None

    def take_running(self):
        """The running sums to put back at the start of a resumed epoch (once), or None."""
        running, self._running = self._running, None
        return running

    # ---- saving and restoring

    def state_dict(self, model_state=True):
        """The run state as tensors and plain data (``torch.load(weights_only=True)`` reads it back).

        ``epoch``, ``step``, ``generator``, ``source`` (the position in the training data while a fit
        runs), ``running`` (the loss and metric sums of an unfinished epoch), ``accumulation`` (the batch
        count and gradient sums of an unfinished gradient-accumulation window) and ``grad_scaler`` (the
        loss scale of "mixed_float16"); with ``model_state`` also
        ``weights``, ``optimizer``, ``scheduler`` and ``rng`` (Python's, NumPy's, torch's and CUDA's).
        """
        model = self.model
        compiled = getattr(model, "_compiled", None)
        source = self.source
        state = {
            "epoch": int(self.epoch),
            "step": int(self.step),
            # Never created here: drawing a new generator's seed would move torch's global RNG.
            "generator": self._generator.get_state() if self._generator is not None else None,
            "source": source.state_dict() if callable(getattr(source, "state_dict", None)) else None,
            # More than one process: the sums over every rank (a collective: every rank calls state_dict).
            "running": distributed.running_sums(compiled) if compiled is not None and self.step else None,
        }
        # The step's own state (fitkit/step.py): an unfinished gradient-accumulation window (its batch count
        # and gradient sums) and the loss scaler of "mixed_float16"; part of every save, like the epoch.
        step = getattr(compiled, "step", None)
        state.update(step.state_dict() if step is not None else {"accumulation": None, "grad_scaler": None})
        if model_state:
            state.update({
                # Whole tensors, also from a model sharded with FSDP2 (gathered: a collective, rank 0 gets them).
                "weights": distributed.full_state_dict(model),
                "optimizer": distributed.full_optimizer_state(model, compiled.optimizer) if compiled is not None
                else None,
                "scheduler": compiled.scheduler.state_dict()
                if compiled is not None and compiled.scheduler is not None else None,
                # What check() compares before loading: another class would load half-way, or silently.
                "optimizer_class": checkpoint.class_path(compiled.optimizer) if compiled is not None else None,
                "scheduler_class": checkpoint.class_path(compiled.scheduler)
                if compiled is not None and compiled.scheduler is not None else None,
                "rng": checkpoint.get_rng_state(),
            })
        return state

    def check(self, state, what="state", where="the training state",
              remedy="Build and compile the model as the saved one was."):
        """Every mismatch between ``state`` and this model, raised before anything changes; the errors
        name the argument ``what``, the file ``where`` and what to do (``remedy``)."""
        model = self.model
        compiled = getattr(model, "_compiled", None)
        if "weights" in state:
            checkpoint.check_weights(model, state["weights"], where, what=what, remedy=remedy)
        if getattr(compiled, "step", None) is not None:
            compiled.step.check(state, what, remedy)
        if "optimizer" in state:
            optimizer = compiled.optimizer if compiled is not None else None
            scheduler = compiled.scheduler if compiled is not None else None
            if (state["optimizer"] is None) != (optimizer is None) or \
                    ("scheduler" in state and (state["scheduler"] is None) != (scheduler is None)):
                saved = [name for name in ("optimizer", "scheduler") if state.get(name) is not None]
                here = [name for name, obj in (("optimizer", optimizer), ("scheduler", scheduler)) if obj is not None]
                raise ValueError(f"{what}: the saved optimizer/scheduler do not match this model's compile: the "
                                 f"saved state has {' and '.join(saved) or 'no optimizer'}, this model has "
                                 f"{' and '.join(here) or 'no optimizer'}. {remedy}")
            if optimizer is not None:
                model_file.check_optimizer_state(optimizer, state["optimizer"], state.get("optimizer_class"),
                                                 what=what, remedy=remedy)
            if scheduler is not None and state.get("scheduler") is not None:
                model_file.check_scheduler_state(scheduler, state["scheduler"], state.get("scheduler_class"),
                                                 what=what, remedy=remedy)

    def load_state_dict(self, state, rng=True, checked=False):
        """Put back what :meth:`state_dict` returned, into a model built and compiled as the saved one.

        Mismatches are raised before anything changes (``checked=True``: the caller ran :meth:`check`).
        ``rng=False`` leaves the global RNGs alone (the model's own generator is restored either way).
        The running sums of an unfinished epoch are put back when fit starts that epoch again.
        """
        if not checked:
            self.check(state)
        model, compiled = self.model, getattr(self.model, "_compiled", None)
        if "weights" in state:
            distributed.load_full_state_dict(model, state["weights"])
        if state.get("optimizer") is not None:
            distributed.load_optimizer_state(model, compiled.optimizer, state["optimizer"])
        if state.get("scheduler") is not None:
            compiled.scheduler.load_state_dict(state["scheduler"])
        if state.get("generator") is not None:
            self.generator.set_state(state["generator"])
        if getattr(compiled, "step", None) is not None:
            compiled.step.load_state_dict(state)
        self.epoch = int(state.get("epoch", self.epoch))
        self.step = int(state.get("step") or 0)
        # The saved sums of an unfinished epoch are over every rank: rank 0 alone adds them back.
        self._running = state.get("running") if self.step and distributed.takes_running(model) else None
        source = self.source
        if state.get("source") is not None and callable(getattr(source, "load_state_dict", None)):
            source.load_state_dict(state["source"])
        if rng and state.get("rng") is not None:
            checkpoint.set_rng_state(state["rng"])
