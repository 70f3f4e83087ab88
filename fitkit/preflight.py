"""Before the first step of a fit: what the data needs, decided once from the model's first outputs.

A fit on in-memory data looks at the model's outputs for its first batch, computed without training
(evaluation mode, no gradients, every RNG as it was), and reconciles all the targets with the
compiled loss once: integer labels of shape ``(N,)`` become the float ``(N, 1)`` that a binary loss
wants, say, so no step pays that cast and reshape (the values are those each step would make). This
happens only with fitkit's own ``train_step`` and metrics given by name, which read targets of either
form alike: a custom step or metric object sees the targets exactly as the user gave them.
"""

import torch

from . import data


def first_outputs(model, x):
    """The model's outputs for the inputs ``x``, computed without training and without moving any RNG,
    BatchNorm statistic or the model's training mode."""
    was_training = model.training
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    try:
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            model.eval()
            return model._forward(x)
    finally:
        model.train(was_training)


def prepare_targets(model, train, own_train_step):
    """Reconcile the in-memory targets of ``train`` with the compiled loss, once per fit (see above)."""
    compiled = model._compiled
    if not (own_train_step and compiled.loss is not None and compiled.named_metrics_only
            and isinstance(train, data.ArraySource) and isinstance(train.y, torch.Tensor)):
        return
    x, _, _ = train.first_batch()
    y_pred = first_outputs(model, x)
    train.map_targets(lambda y: compiled.loss.prepare_targets(y, y_pred))
