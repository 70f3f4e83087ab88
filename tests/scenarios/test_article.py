"""The seed article's three hand-written loops, written with fit, give the same numbers step for step.

The article trains a logistic regression on 1000 x 10 data with batch 32 (so the last batch holds 8
samples): (1) a fixed number of epochs, (2) early stopping on the validation loss by hand, (3)
ReduceLROnPlateau on the training loss. Here each runs both ways from the same initial weights
without shuffling, and fitkit must match the hand loop within 1e-6, with none of the article's
``.squeeze()`` and ``.float()``.
"""

import copy

import pytest
import torch
from torch import nn

import fitkit
from fitkit.callbacks import Callback


class LogisticRegression(fitkit.Model):
    def __init__(self, input_size=10):
        super().__init__()
        self.linear = nn.Linear(input_size, 1)

    def forward(self, x):
        return torch.sigmoid(self.linear(x))


def _data(n=1000, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 10, generator=g)
    y = (x[:, 0] + 0.5 * torch.randn(n, generator=g) > 0).long()  # integer labels, shape (N,)
    return x, y


def _pair(seed=1):
    torch.manual_seed(seed)
    model = LogisticRegression().to("cpu")
    twin = copy.deepcopy(model)
    return model, twin


def _hand_epoch(twin, optimizer, criterion, x, y, batch_size):
    """The article's inner loop, with the epoch loss as the mean over samples (what fit logs)."""
    total, count = 0.0, 0
    for i in range(0, len(x), batch_size):
        inputs, labels = x[i:i + batch_size], y[i:i + batch_size]
        optimizer.zero_grad()
        outputs = twin(inputs).squeeze()
        loss = criterion(outputs, labels.float())
        loss.backward()
        optimizer.step()
        total += loss.item() * len(inputs)
        count += len(inputs)
    return total / count


def _hand_eval(twin, criterion, x, y, batch_size):
    total = 0.0
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            outputs = twin(x[i:i + batch_size]).squeeze(-1)
            total += criterion(outputs, y[i:i + batch_size].float()).item() * len(outputs)
    return total / len(x)


def _assert_same_weights(a, b, tol=1e-6):
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.allclose(p, q, atol=tol, rtol=0), name


def test_fixed_epochs_matches_the_hand_loop_step_for_step():
    x, y = _data()
    model, twin = _pair()
    model.compile(optimizer=torch.optim.Adam(model.parameters(), lr=0.01), loss=nn.BCELoss())
    history = model.fit(x, y, batch_size=32, epochs=5, shuffle=False, verbose=0)

    optimizer = torch.optim.Adam(twin.parameters(), lr=0.01)
    hand_losses = [_hand_epoch(twin, optimizer, nn.BCELoss(), x, y, 32) for _ in range(5)]

    _assert_same_weights(model, twin)
    assert history.epoch == [0, 1, 2, 3, 4]
    assert history.history["loss"] == pytest.approx(hand_losses, abs=1e-6)
    # The epoch's rate is on the History, not among the logs: Keras logs no learning_rate without a callback.
    assert "learning_rate" not in history.history
    assert history.learning_rates == [0.01] * 5


def test_early_stopping_by_hand_through_a_callback():
    """The article's rule (stop when the count of epochs without improvement exceeds patience)."""
    x, y = _data()
    x_train, y_train, x_val, y_val = x[:800], y[:800], x[800:], y[800:]
    patience = 2

    class ArticleEarlyStopping(Callback):
        def __init__(self):
            super().__init__()
            self.best, self.no_improve = float("inf"), 0

        def on_epoch_end(self, epoch, logs=None):
            if logs["val_loss"] < self.best:
                self.best, self.no_improve = logs["val_loss"], 0
            else:
                self.no_improve += 1
            if self.no_improve > patience:
                self.model.stop_training = True

    model, twin = _pair(seed=2)
    model.compile(optimizer=torch.optim.Adam(model.parameters(), lr=0.5), loss=nn.BCELoss())
    history = model.fit(x_train, y_train, batch_size=32, epochs=100, shuffle=False, verbose=0,
                        validation_data=(x_val, y_val), callbacks=[ArticleEarlyStopping()])

    optimizer = torch.optim.Adam(twin.parameters(), lr=0.5)
    best, no_improve, hand_val = float("inf"), 0, []
    for epoch in range(100):
        _hand_epoch(twin, optimizer, nn.BCELoss(), x_train, y_train, 32)
        val_loss = _hand_eval(twin, nn.BCELoss(), x_val, y_val, 32)
        hand_val.append(val_loss)
        if val_loss < best:
            best, no_improve = val_loss, 0
        else:
            no_improve += 1
        if no_improve > patience:
            break

    assert len(history.epoch) == len(hand_val) < 100
    assert history.history["val_loss"] == pytest.approx(hand_val, abs=1e-6)
    assert history.stop_reason == "stopped"
    _assert_same_weights(model, twin)


def test_reduce_lr_on_plateau_through_compile_scheduler():
    x, y = _data()
    model, twin = _pair(seed=3)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    model.compile(optimizer=optimizer, loss=nn.BCELoss(),
                  scheduler=torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=0.5,
                                                                       patience=1),
                  scheduler_monitor="loss")
    history = model.fit(x, y, batch_size=32, epochs=12, shuffle=False, verbose=0)

    hand_opt = torch.optim.Adam(twin.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(hand_opt, mode="min", factor=0.5, patience=1)
    lrs = []
    for _ in range(12):
        lrs.append(hand_opt.param_groups[0]["lr"])
        train_loss = _hand_epoch(twin, hand_opt, nn.BCELoss(), x, y, 32)
        scheduler.step(train_loss)

    assert history.history["learning_rate"] == pytest.approx(lrs)
    assert min(lrs) < 0.1, "the schedule must have reduced the rate at least once for this test to mean something"
    _assert_same_weights(model, twin)


def test_keras_loss_name_with_integer_labels_of_shape_n_trains_like_the_squeezed_float_loop():
    """(N,) integer labels against (N, 1) outputs: no squeeze, no float, and no silent broadcast."""
    x, y = _data(n=200)
    model, twin = _pair(seed=4)
    model.compile(optimizer=torch.optim.SGD(model.parameters(), lr=0.1), loss=nn.functional.mse_loss)
    model.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0)
    optimizer = torch.optim.SGD(twin.parameters(), lr=0.1)
    for _ in range(2):
        _hand_epoch(twin, optimizer, nn.MSELoss(), x, y, 32)
    _assert_same_weights(model, twin)


def test_shuffled_fit_matches_a_hand_loop_using_the_same_generator():
    x, y = _data(n=300)
    model, twin = _pair(seed=5)
    fitkit.set_seed(11)
    model.compile(optimizer=torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9), loss=nn.BCELoss())
    model.fit(x, y, batch_size=32, epochs=3, verbose=0)

    g = torch.Generator().manual_seed(11)
    optimizer = torch.optim.SGD(twin.parameters(), lr=0.05, momentum=0.9)
    for _ in range(3):
        perm = torch.randperm(len(x), generator=g)
        _hand_epoch(twin, optimizer, nn.BCELoss(), x[perm], y[perm], 32)
    _assert_same_weights(model, twin)


def test_every_step_matches_the_hand_loop_including_the_last_partial_batch():
    x, y = _data()
    model, twin = _pair(seed=6)
    fit_steps = []

    class EveryStep(Callback):
        def on_train_batch_end(self, batch, logs=None):
            fit_steps.append([p.detach().clone() for p in self.model.parameters()])

    model.compile(optimizer=torch.optim.Adam(model.parameters(), lr=0.01), loss=nn.BCELoss())
    model.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0, callbacks=[EveryStep()])

    optimizer = torch.optim.Adam(twin.parameters(), lr=0.01)
    hand_steps, sizes = [], []
    for _ in range(2):
        for i in range(0, len(x), 32):
            optimizer.zero_grad()
            loss = nn.BCELoss()(twin(x[i:i + 32]).squeeze(), y[i:i + 32].float())
            loss.backward()
            optimizer.step()
            hand_steps.append([p.detach().clone() for p in twin.parameters()])
            sizes.append(len(x[i:i + 32]))
    assert len(fit_steps) == len(hand_steps) == 64 and sizes[31] == 8
    for step, (a, b) in enumerate(zip(fit_steps, hand_steps)):
        for p, q in zip(a, b):
            assert torch.allclose(p, q, atol=1e-6, rtol=0), f"step {step}"
