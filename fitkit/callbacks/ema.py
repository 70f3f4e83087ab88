"""EMA: keep an exponential moving average of the weights and evaluate with it (Polyak averaging)."""

import torch

from .base import Callback


class EMA(Callback):
    """Keeps ``average = decay * average + (1 - decay) * weights`` after every training batch, for
    every floating-point trainable parameter; the first update copies the weights (as Keras's
    optimizer EMA does). Buffers (BatchNorm statistics) are not averaged.

    The update runs on the parameters' device with ``torch._foreach`` ops: no host sync, no copy.
    Validation and ``evaluate``/``predict`` given this callback run with the averaged weights swapped
    in (``on_test_begin``/``on_test_end``), so ``val_`` numbers measure the average. With
    ``swap_on_epoch=True`` the average also stays in the model from the end of each epoch to the
    start of the next, so callbacks after this one at epoch end (ModelCheckpoint, EarlyStopping's
    best weights) see and save the averaged weights. With ``use_ema_at_end=True`` the model keeps
    the averaged weights when training ends (Keras's optimizer EMA does this); otherwise it keeps
    the trained ones.

    Swaps are exact (copies through one temporary tensor at a time, not arithmetic).

    >>> ema = EMA(decay=0.999)
    >>> # model.fit(x, y, validation_split=0.1, callbacks=[ema])  # val_loss from the average
    """

    def __init__(self, decay=0.999, swap_on_epoch=True, use_ema_at_end=True):
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1); got decay={decay!r}.")
        self.decay = decay
        self.swap_on_epoch = swap_on_epoch
        self.use_ema_at_end = use_ema_at_end
        self.average = None  # list of tensors, one per averaged parameter; None before the first batch
        self.updates = 0
        self._ema_in_model = False  # when True, params hold the average and `average` the trained weights
        self._param_list = None

    def _params(self):
        if self._param_list is None:
            self._param_list = [p for p in self.model.parameters()
                                if p.requires_grad and p.is_floating_point()]
        return self._param_list

    def set_model(self, model):
        super().set_model(model)
        self._param_list = None

    def on_train_begin(self, logs=None):
        self._param_list = None  # parameters may have been added or frozen since the last fit
        if self.average is not None and len(self.average) != len(self._params()):
            raise ValueError(
                f"EMA holds an average of {len(self.average)} tensors but the model has "
                f"{len(self._params())} trainable ones; use a new EMA callback for a new model."
            )

    @torch.no_grad()
    def on_train_batch_end(self, batch, logs=None):
        params = self._params()
        if self.average is None:
            self.average = [p.detach().clone() for p in params]
        else:
            torch._foreach_lerp_(self.average, params, 1.0 - self.decay)
        self.updates += 1

    @torch.no_grad()
    def _swap(self):
        for p, a in zip(self._params(), self.average):
            tmp = p.detach().clone()
            p.copy_(a)
            a.copy_(tmp)
        self._ema_in_model = not self._ema_in_model

    def _swap_in(self):
        if self.average is not None and not self._ema_in_model:
            self._swap()

    def _swap_out(self):
        if self._ema_in_model:
            self._swap()

    def on_epoch_begin(self, epoch, logs=None):
        self._swap_out()  # train on the trained weights, never on the average

    def on_epoch_end(self, epoch, logs=None):
        if self.swap_on_epoch:
            self._swap_in()

    def on_test_begin(self, logs=None):
        self._swap_in()

    def on_test_end(self, logs=None):
        self._swap_out()

    def on_predict_begin(self, logs=None):
        self._swap_in()

    def on_predict_end(self, logs=None):
        self._swap_out()

    @torch.no_grad()
    def on_train_end(self, logs=None):
        if self.average is None:
            return
        if self.use_ema_at_end:
            self._swap_in()
            # Both copies now hold the average, so the model keeps it whatever comes next.
            torch._foreach_copy_(self.average, self._params())
            self._ema_in_model = False
        else:
            self._swap_out()

    def state_dict(self):
        """The average, the update count and, while the model holds the average, the trained
        weights (which then live here): with the model's own weights this is everything a resumed
        run needs. Tensors are clones."""
        if self.average is None:
            return {"average": None, "trained": None, "updates": self.updates}
        params = [p.detach().clone() for p in self._params()]
        mine = [t.detach().clone() for t in self.average]
        if self._ema_in_model:
            return {"average": params, "trained": mine, "updates": self.updates}
        return {"average": mine, "trained": None, "updates": self.updates}

    def load_state_dict(self, state):
        """Restore ``state_dict()``'s output. Load the model's weights saved at the same moment too:
        when ``trained`` is given they hold the average, and the next epoch start swaps them back."""
        self.updates = state["updates"]
        if state["average"] is None:
            self.average, self._ema_in_model = None, False
        elif state.get("trained") is not None:
            self.average, self._ema_in_model = [t.clone() for t in state["trained"]], True
        else:
            self.average, self._ema_in_model = [t.clone() for t in state["average"]], False


class SwapEMAWeights(EMA):
    """Keras's ``SwapEMAWeights(swap_on_epoch=False)``: evaluate with the EMA of the weights.

    Keras reads the average from an optimizer built with ``use_ema=True`` (``ema_momentum=0.99``);
    a torch optimizer has none, so this callback keeps the average itself with ``decay=0.99``.
    """

    def __init__(self, swap_on_epoch=False, decay=0.99):
        super().__init__(decay=decay, swap_on_epoch=swap_on_epoch, use_ema_at_end=True)
