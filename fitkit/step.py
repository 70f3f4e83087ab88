"""The mechanics of a training step: what happens around the forward, and between the loss and the next step.

``Model.train_step`` enters the :class:`StepMechanics` that compile built, and hands it the loss::

    with self._compiled.step as step:
        y_pred, loss = step.forward_and_loss(self, x, y, sample_weight)
        step.backward(loss)

In that order, and each only when compile asked for it:

1. **mixed precision**: the forward and the loss run under ``torch.autocast`` in the dtype policy's
   compute dtype (:mod:`fitkit.mixed_precision`); the backward runs outside it;
2. **jit_compile**: the forward and the loss are one ``torch.compile``\\ d function (:mod:`fitkit.jit`),
   whose backward torch compiles with it;
3. **loss scaling** (``"mixed_float16"``): the loss is multiplied by a ``GradScaler``'s scale before the
   backward; the gradients are unscaled before clipping, and a step whose gradients overflowed is
   skipped (its weights stay, the scale halves), as Keras's ``LossScaleOptimizer`` does;
4. **gradient accumulation** (Keras's ``gradient_accumulation_steps=k``): each batch's loss is divided
   by k and its gradients add up in ``.grad``; the optimizer steps on every k-th batch, with the mean
   of the k batches' gradients, exactly Keras's update. The count goes on across epochs and fit calls
   (Keras counts optimizer iterations, never epochs): batches left over at an epoch's end are the
   first of the next epoch's window, and the count and the partial sums are training state
   (:meth:`fitkit.training_state.TrainingState.state_dict` saves them);
5. **clipping** (Keras's ``clipnorm``, ``global_clipnorm``, ``clipvalue``): on the unscaled, accumulated
   gradients, just before the optimizer steps (:func:`clip_by_norm_` and friends);
6. the optimizer's step, and the gradients cleared before the next window's first backward.

With none of them (float32, k=1, no clipping) a step is what it always was: clear the gradients,
backward, ``optimizer.step()``.
"""

import torch

from . import data, mixed_precision
from .optimizers import clear_grads


class StepMechanics:
    """The per-model step machinery compile builds (``model._compiled.step``); see the module docstring.

    ``no_sync``: the seam for data-parallel training (issue 14): a callable returning a context
    manager, such as ``DistributedDataParallel.no_sync``, entered around the forward and the backward
    of every batch that is not the last of an accumulation window, so gradients are synchronised only
    on the batch whose optimizer step uses them. None (the default) enters nothing.
    """

    def __init__(self, optimizer, device, policy, scaler=None, clipnorm=None, clipvalue=None, global_clipnorm=None,
                 gradient_accumulation_steps=None, jit=None):
        self.optimizer = optimizer
        self.device = torch.device(device)
        self.policy = policy
        self.scaler = scaler
        self.clipnorm, self.clipvalue, self.global_clipnorm = clipnorm, clipvalue, global_clipnorm
        self.accumulation_steps = gradient_accumulation_steps or 1
        self.accumulated = 0  # batches whose gradients are in .grad, waiting for the window's optimizer step
        self.jit = jit
        self.no_sync = None
        self._autocast_dtype = policy.autocast_dtype
        self._clips = bool(clipnorm or clipvalue or global_clipnorm)  # 0 means no clipping, as in Keras
        self._plain = scaler is None and not self._clips and self.accumulation_steps == 1
        self._autocast = None
        self._sync = None

    @property
    def params(self):
        """The tensors the optimizer updates, in its param-group order."""
        return [p for group in self.optimizer.param_groups for p in group["params"]]

    # ---- the step

    def __enter__(self):
        if self.no_sync is not None and self.accumulated + 1 < self.accumulation_steps:
            self._sync = self.no_sync()
            self._sync.__enter__()
        if self._autocast_dtype is not None:
            self._autocast = torch.autocast(self.device.type, dtype=self._autocast_dtype)
            self._autocast.__enter__()
        return self

    def __exit__(self, *exc):
        self._leave_autocast()
        sync, self._sync = self._sync, None
        if sync is not None:
            sync.__exit__(*exc)
        return False

    def _leave_autocast(self):
        autocast, self._autocast = self._autocast, None
        if autocast is not None:
            autocast.__exit__(None, None, None)

    def autocast(self):
        """The context a forward runs in outside training (evaluate, predict): the policy's autocast."""
        return mixed_precision.autocast(self.policy, self.device)

    def forward_and_loss(self, model, x, y, sample_weight):
        """``(y_pred, loss)`` of a batch: ``model._forward`` then ``model.compute_loss`` (which records each
        output's loss; the step adds the total to the tracker), through the compiled function when
        jit_compile is on."""
        if self.jit is not None and self.jit.active and y is not None:
            return self.jit(model, x, y, sample_weight)
        y_pred = model._forward(x)
        return y_pred, model._compute_loss(x, y, y_pred, sample_weight, training=True)

    def backward(self, loss):
        """Backward of ``loss``; on the last batch of an accumulation window (every batch when k=1) unscale,
        clip, step the optimizer (skipped when scaled gradients overflowed) and update the loss scale."""
        self._leave_autocast()
        optimizer = self.optimizer
        if self._plain:
            clear_grads(optimizer)  # optimizer.zero_grad(set_to_none=True), only faster
            loss.backward()
            optimizer.step()
            return
        if self.accumulated == 0:
            clear_grads(optimizer)
        if self.accumulation_steps > 1:
            loss = loss / self.accumulation_steps  # the window's gradient is the mean of its batches'
        if self.scaler is not None:
            loss = self.scaler.scale(loss)
        loss.backward()
        self.accumulated += 1
        if self.accumulated < self.accumulation_steps:
            return
        self.accumulated = 0
        scaler = self.scaler
        if scaler is None:
            self._clip()
            optimizer.step()
            return
        if self._clips:
            scaler.unscale_(optimizer)  # clipping thresholds are in the gradients' true units
            self._clip()
        # With a fused optimizer (fitkit's named Adam/AdamW/SGD on CUDA) the overflow check and the skip
        # happen on the device; other optimizers make GradScaler read the overflow flag on the host.
        scaler.step(optimizer)
        scaler.update()

    def _clip(self):
        if not self._clips:
            return
        grads = [p.grad for p in self.params if p.grad is not None]
        if not grads:
            return
        if self.clipnorm:
            clip_by_norm_(grads, self.clipnorm)
        elif self.global_clipnorm:
            clip_by_global_norm_(grads, self.global_clipnorm)
        else:
            clip_by_value_(grads, self.clipvalue)

    def carry_over(self, previous):
        """Take from ``previous``, the step of an earlier compile on the same optimizer, what Keras keeps on
        the optimizer object when it is compiled again: an open accumulation window (its gradient sums
        are still in ``.grad``) when it fits this step's, and the loss scale."""
        if previous.accumulated < self.accumulation_steps:
            self.accumulated = previous.accumulated
        if previous.scaler is not None and self.scaler is not None:
            self.scaler.load_state_dict(previous.scaler.state_dict())

    # ---- training state (TrainingState.state_dict holds these; see training_state.py)

    def state_dict(self):
        """``{"accumulation": {"count", "gradients"} or None, "grad_scaler": ... or None}``: the batches of
        an unfinished accumulation window with their gradient sums, and the loss scaler's state."""
        accumulation = None
        if self.accumulated:
            accumulation = {"count": int(self.accumulated),
                            "gradients": [None if p.grad is None else p.grad.detach() for p in self.params]}
        return {"accumulation": accumulation,
                "grad_scaler": self.scaler.state_dict() if self.scaler is not None else None}

    def check(self, state, what, remedy):
        """Every mismatch between a saved :meth:`state_dict` and this step, raised before anything changes."""
        accumulation = state.get("accumulation")
        if accumulation is not None:
            count = accumulation["count"]
            if count >= self.accumulation_steps:
                raise ValueError(f"{what}: the saved run had accumulated {count} batches' gradients, but this model "
                                 f"is compiled with gradient_accumulation_steps="
                                 f"{self.accumulation_steps if self.accumulation_steps > 1 else None}. {remedy}")
            params = self.params
            grads = accumulation["gradients"]
            if len(grads) != len(params) or any(g is not None and tuple(g.shape) != tuple(p.shape)
                                                for g, p in zip(grads, params)):
                raise ValueError(f"{what}: the saved accumulated gradients do not fit this model's parameters. "
                                 f"{remedy}")
        if state.get("grad_scaler") and self.scaler is None:
            raise ValueError(f"{what}: the saved run scaled its loss (dtype_policy 'mixed_float16'); this model "
                             f"is compiled with dtype_policy {self.policy.name!r}. {remedy}")

    def load_state_dict(self, state):
        """Put back what :meth:`state_dict` returned (checked with :meth:`check` first)."""
        accumulation = state.get("accumulation")
        self.accumulated = 0
        if accumulation is not None:
            self.accumulated = int(accumulation["count"])
            for p, g in zip(self.params, accumulation["gradients"]):
                p.grad = None if g is None else g.to(device=p.device, dtype=p.dtype).clone()
        if state.get("grad_scaler") and self.scaler is not None:
            self.scaler.load_state_dict(state["grad_scaler"])


# ----------------------------------------------------------------------------------------- clipping (Keras's)

def clip_by_norm_(grads, clipnorm):
    """Keras's ``clipnorm``, in place: each gradient on its own scaled to a norm of at most ``clipnorm``,
    ``g * clipnorm / max(||g||, clipnorm)``. (torch's ``clip_grad_norm_`` clips all of them by their
    joint norm, which is Keras's ``global_clipnorm``; per gradient it divides by ``||g|| + 1e-6``.)

    >>> g = [torch.tensor([3.0, 4.0])]
    >>> clip_by_norm_(g, 1.0); g[0]
    tensor([0.6000, 0.8000])
    """
    for g, norm in zip(grads, torch._foreach_norm(grads)):
        g.mul_(clipnorm / norm.clamp_min(clipnorm))


def clip_by_global_norm_(grads, clipnorm):
    """Keras's ``global_clipnorm``, in place: all gradients scaled by ``min(1, clipnorm / n)`` where n is
    their joint norm; a non-finite n makes every gradient NaN, as in Keras (torch's
    ``clip_grad_norm_(max_norm=clipnorm)`` divides by ``n + 1e-6`` instead)."""
    device = grads[0].device
    norms = torch._foreach_norm(grads)
    total = torch.linalg.vector_norm(torch.stack([n.to(device) for n in norms]))
    scale = clipnorm / total.clamp_min(clipnorm) + (total - total)  # (total - total): NaN unless finite
    if all(g.device == device for g in grads):
        torch._foreach_mul_(grads, scale)
    else:
        for g in grads:
            g.mul_(scale.to(g.device))


def clip_by_value_(grads, clipvalue):
    """Keras's ``clipvalue``, in place: every element into ``[-clipvalue, clipvalue]`` (torch's
    ``clip_grad_value_``)."""
    torch._foreach_clamp_min_(grads, -clipvalue)
    torch._foreach_clamp_max_(grads, clipvalue)


# ----------------------------------------------------------------------------------------- helpers

def batch_size(y_pred, x):
    """The number of samples of a batch, as the loss tracker counts them (outputs first, else inputs)."""
    leaf = y_pred if isinstance(y_pred, torch.Tensor) else (data.flatten(y_pred) or data.flatten(x))[0]
    return leaf.shape[0] if leaf.dim() else 1
