"""EMA / SwapEMAWeights: the average against a hand computation, and the swaps around evaluation."""

import pytest
import torch
from torch import nn

from fitkit.callbacks import EMA, CallbackList, SwapEMAWeights


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 1)
        self.bn = nn.BatchNorm1d(1)
        self.frozen = nn.Parameter(torch.zeros(1), requires_grad=False)


def weights_at(step):
    """The trained weights after training step `step` (made up, but distinct per step)."""
    return torch.tensor([[1.0 * step, -2.0 * step]]), torch.tensor([0.5 * step])


def set_weights(model, step):
    w, b = weights_at(step)
    with torch.no_grad():
        model.lin.weight.copy_(w)
        model.lin.bias.copy_(b)


def hand_ema(decay, steps):
    avg_w, avg_b = weights_at(steps[0])  # the first update copies the weights
    for s in steps[1:]:
        w, b = weights_at(s)
        avg_w, avg_b = decay * avg_w + (1 - decay) * w, decay * avg_b + (1 - decay) * b
    return avg_w, avg_b


def train(cb, model, epochs=2, batches=3, val=True, seen=None):
    """Drive fit's hook order; `seen` gets the weights the validation pass ran with."""
    cbs = CallbackList([cb], model=model, params={"epochs": epochs, "steps": batches, "verbose": 0})
    cbs.on_train_begin()
    step = 0
    for epoch in range(epochs):
        cbs.on_epoch_begin(epoch)
        for b in range(batches):
            step += 1
            set_weights(model, step)
            cbs.on_train_batch_end(b, None)
        if val:
            cbs.on_test_begin()
            if seen is not None:
                seen.append(model.lin.weight.detach().clone())
            cbs.on_test_end({})
        cbs.on_epoch_end(epoch, {})
    cbs.on_train_end()
    return step


def test_average_matches_a_hand_computation_and_validation_uses_it():
    model, seen = Net(), []
    cb = EMA(decay=0.9, use_ema_at_end=False)
    train(cb, model, seen=seen)
    assert torch.allclose(seen[0], hand_ema(0.9, [1, 2, 3])[0])
    assert torch.allclose(seen[1], hand_ema(0.9, [1, 2, 3, 4, 5, 6])[0])
    # use_ema_at_end=False: the trained weights are back at the end, the average kept aside
    assert torch.equal(model.lin.weight, weights_at(6)[0])
    assert torch.allclose(cb.average[0], hand_ema(0.9, range(1, 7))[0])
    assert cb.updates == 6


def test_only_trainable_float_parameters_are_averaged():
    model = Net()
    cb = EMA()
    train(cb, model, epochs=1, batches=1)
    assert len(cb.average) == 4  # lin.weight, lin.bias, bn.weight, bn.bias; not `frozen`


def test_swaps_are_exact_and_training_resumes_on_the_trained_weights():
    model = Net()
    cb = EMA(decay=0.7, swap_on_epoch=False)
    cbs = CallbackList([cb], model=model)
    cbs.on_train_begin()
    cbs.on_epoch_begin(0)
    for b in range(3):
        set_weights(model, b + 1)
        cbs.on_train_batch_end(b)
    trained = [p.detach().clone() for p in model.parameters()]
    cbs.on_test_begin()
    assert not torch.equal(model.lin.weight, trained[0])
    cbs.on_test_end({})
    assert all(torch.equal(p, t) for p, t in zip(model.parameters(), trained))
    cbs.on_epoch_end(0, {})  # swap_on_epoch=False: no swap here
    assert all(torch.equal(p, t) for p, t in zip(model.parameters(), trained))


def test_swap_on_epoch_leaves_the_average_in_between_epochs():
    model = Net()
    cb = EMA(decay=0.5, swap_on_epoch=True)
    cbs = CallbackList([cb], model=model)
    cbs.on_train_begin()
    cbs.on_epoch_begin(0)
    for b in range(2):
        set_weights(model, b + 1)
        cbs.on_train_batch_end(b)
    cbs.on_epoch_end(0, {})
    assert torch.allclose(model.lin.weight, hand_ema(0.5, [1, 2])[0])  # what ModelCheckpoint would save
    cbs.on_epoch_begin(1)
    assert torch.equal(model.lin.weight, weights_at(2)[0])  # back to training on the trained weights


def test_use_ema_at_end_keeps_the_average_in_the_model():
    model = Net()
    cb = EMA(decay=0.8)
    train(cb, model)
    expected = hand_ema(0.8, range(1, 7))
    assert torch.allclose(model.lin.weight, expected[0]) and torch.allclose(model.lin.bias, expected[1])
    assert torch.equal(cb.average[0], model.lin.weight)


def test_predict_and_evaluate_use_the_average_then_swap_back():
    model = Net()
    cb = EMA(decay=0.5, use_ema_at_end=False, swap_on_epoch=False)
    train(cb, model, epochs=1, batches=2, val=False)
    cbs = CallbackList([cb], model=model)
    for begin, end in ((cbs.on_predict_begin, cbs.on_predict_end), (cbs.on_test_begin, cbs.on_test_end)):
        begin()
        assert torch.allclose(model.lin.weight, hand_ema(0.5, [1, 2])[0])
        end({}) if end == cbs.on_test_end else end()
        assert torch.equal(model.lin.weight, weights_at(2)[0])


def test_state_dict_resume_is_exact_even_while_the_average_is_swapped_in():
    whole_model = Net()
    whole = EMA(decay=0.9, use_ema_at_end=False)
    train(whole, whole_model, epochs=3)

    model = Net()
    first = EMA(decay=0.9, use_ema_at_end=False)
    cbs = CallbackList([first], model=model)
    cbs.on_train_begin()
    step = 0
    for epoch in range(2):
        cbs.on_epoch_begin(epoch)
        for b in range(3):
            step += 1
            set_weights(model, step)
            cbs.on_train_batch_end(b)
        cbs.on_epoch_end(epoch, {})
    # A backup taken now: the model holds the average (swap_on_epoch), the trained weights are aside.
    saved_model = {k: v.clone() for k, v in model.state_dict().items()}
    saved_cb = first.state_dict()

    resumed_model = Net()
    resumed_model.load_state_dict(saved_model)
    resumed = EMA(decay=0.9, use_ema_at_end=False)
    resumed.load_state_dict(saved_cb)
    cbs = CallbackList([resumed], model=resumed_model)
    cbs.on_train_begin()
    cbs.on_epoch_begin(2)
    assert torch.equal(resumed_model.lin.weight, weights_at(6)[0])
    for b in range(3):
        step += 1
        set_weights(resumed_model, step)
        cbs.on_train_batch_end(b)
    cbs.on_epoch_end(2, {})
    cbs.on_train_end()
    assert all(torch.equal(a, b) for a, b in zip(resumed.average, whole.average))
    assert torch.equal(resumed_model.lin.weight, whole_model.lin.weight)


def test_keras_name_and_defaults():
    cb = SwapEMAWeights()
    assert isinstance(cb, EMA) and cb.swap_on_epoch is False and cb.decay == 0.99
    assert SwapEMAWeights(swap_on_epoch=True).swap_on_epoch
    with pytest.raises(ValueError, match="decay"):
        EMA(decay=1.0)
