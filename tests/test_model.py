"""fitkit.model: building models, compile, the *_on_batch calls, weights, summary, devices, steps."""

import numpy as np
import pytest
import torch
from torch import nn

import fitkit
from fitkit import optimizers
from conftest import Net, labelled_data


class TwoInputs(fitkit.Model):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(3, 2)
        self.b = nn.Linear(2, 2)

    def forward(self, left, right):
        return self.a(left) + self.b(right)


class TwoHeads(fitkit.Model):
    """One linear layer whose first column and other two columns are two named outputs."""

    def __init__(self, names):
        super().__init__()
        self.names = names
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        h = self.fc(x)
        return {self.names[0]: h[:, :1], self.names[1]: h[:, 1:]}


def test_subclass_is_an_nn_module_and_trains():
    torch.manual_seed(0)
    model = Net()
    assert isinstance(model, nn.Module)
    x, y = labelled_data(200)
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    # A raw linear output through a probability loss would be wrong; use logits the torch way instead.
    model.compile(optimizer=fitkit.optimizers.Adam(learning_rate=0.05), loss=nn.BCEWithLogitsLoss(),
                  metrics=["accuracy"])
    history = model.fit(x, y, epochs=15, batch_size=16, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert history.history["accuracy"][-1] > 0.9
    assert model.history is history


def test_sequential_and_add():
    model = fitkit.Sequential(nn.Linear(4, 3), nn.ReLU())
    model.add(nn.Linear(3, 1))
    assert len(model) == 3 and list(model.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    model.compile(optimizer="sgd", loss="mse")
    x, y = labelled_data(32)
    model.fit(x, y.astype(np.float32), epochs=1, verbose=0)
    with pytest.raises(TypeError, match="module: got int"):
        model.add(3)


def test_wrap_trains_an_existing_module_without_rewriting_it():
    torch.manual_seed(0)
    plain = nn.Sequential(nn.Linear(4, 2))
    model = fitkit.wrap(plain)
    model.compile(optimizer=fitkit.optimizers.SGD(learning_rate=0.5), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    before = plain[0].weight.detach().clone()
    model.fit(*labelled_data(64), epochs=3, verbose=0)
    assert not torch.equal(before, plain[0].weight)  # the original module's weights were trained
    assert fitkit.wrap(model) is model
    with pytest.raises(TypeError, match="module: got str"):
        fitkit.wrap("resnet")


def test_multi_input_list_goes_positional_and_dict_goes_keyword():
    torch.manual_seed(0)
    model = TwoInputs()
    model.compile(optimizer="sgd", loss="mse")
    rng = np.random.default_rng(1)
    left, right = rng.normal(size=(20, 3)), rng.normal(size=(20, 2))
    y = rng.normal(size=(20, 2))
    h1 = model.fit([left, right], y, epochs=1, verbose=0, shuffle=False)
    h2 = model.fit({"left": left, "right": right}, y, epochs=1, verbose=0, shuffle=False)
    assert h1.history["loss"][0] > 0 and h2.history["loss"][0] > 0
    out = model.predict({"left": left, "right": right}, verbose=0)
    assert out.shape == (20, 2) and isinstance(out, np.ndarray)


def test_predict_before_compile_returns_numpy_for_numpy_and_tensors_otherwise():
    torch.manual_seed(0)
    model = Net()
    x, _ = labelled_data(10)
    out = model.predict(x, batch_size=3, verbose=0)
    assert isinstance(out, np.ndarray) and out.shape == (10, 1)
    expected = model(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(out, expected, atol=1e-6)
    out_t = model.predict(torch.from_numpy(x), verbose=0)
    assert isinstance(out_t, torch.Tensor) and out_t.device.type == "cpu"
    assert isinstance(model.predict_on_batch(x), np.ndarray)


def test_predict_with_steps_and_multi_output():
    model = TwoHeads(names=("a", "b"))
    out = model.predict(labelled_data(10)[0], batch_size=4, steps=2, verbose=0)
    assert out["a"].shape == (8, 1) and out["b"].shape == (8, 2)


def test_fit_before_compile_is_a_clear_error():
    with pytest.raises(RuntimeError, match="not compiled"):
        Net().fit(*labelled_data(8), verbose=0)
    with pytest.raises(RuntimeError, match="not compiled"):
        Net().evaluate(*labelled_data(8), verbose=0)


def test_compile_errors_name_the_argument_and_change_nothing():
    model = Net()
    with pytest.raises(ValueError, match="scheduler_interval: got 'batch'"):
        model.compile(loss="mse", scheduler_interval="batch")
    with pytest.raises(ValueError, match="metrics: got 'accuracy'"):
        model.compile(loss="mse", metrics="accuracy")
    with pytest.raises(ValueError, match="device: got 'gpu0'"):
        model.compile(loss="mse", device="gpu0")
    other = torch.optim.SGD(Net().parameters(), lr=0.1)
    with pytest.raises(ValueError, match="scheduler: expected a torch LR scheduler built on the same optimizer"):
        model.compile(optimizer="sgd", loss="mse", scheduler=torch.optim.lr_scheduler.StepLR(other, 1))
    assert not model.compiled


def test_scheduler_factory_and_per_step_interval():
    torch.manual_seed(0)
    model = Net()
    model.compile(optimizer=fitkit.optimizers.SGD(learning_rate=1.0), loss="mse",
                  scheduler=lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5),
                  scheduler_interval="step")
    x, y = labelled_data(64)
    history = model.fit(x, y.astype(np.float32), batch_size=16, epochs=2, verbose=0)
    assert history.history["learning_rate"] == [pytest.approx(0.5 ** 4), pytest.approx(0.5 ** 8)]


def test_reduce_lr_on_plateau_stepped_each_batch_watches_the_batch_loss_as_a_hand_loop_does():
    x, y = labelled_data(64)
    y = y.astype(np.float32)
    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    model.compile(optimizer=opt, loss="mse", scheduler_interval="step",
                  scheduler=torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=0))
    history = model.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0)

    torch.manual_seed(0)
    hand = Net()
    hand_opt = torch.optim.SGD(hand.parameters(), lr=0.5)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(hand_opt, factor=0.5, patience=0)
    lrs = []
    for _ in range(3):
        total, count = 0.0, 0
        for i in range(0, 64, 16):
            xb, yb = torch.from_numpy(x[i:i + 16]), torch.from_numpy(y[i:i + 16])
            loss = nn.functional.mse_loss(hand(xb), yb.unsqueeze(1))
            hand_opt.zero_grad()
            loss.backward()
            hand_opt.step()
            total, count = total + loss.item() * 16, count + 16
            plateau.step(total / count)  # the batch logs' loss: the running mean over the epoch's samples
        lrs.append(hand_opt.param_groups[0]["lr"])  # fit logs the rate at the epoch's end
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), hand.parameters()))
    assert history.history["learning_rate"] == lrs and lrs[-1] < 0.5


def test_a_plateau_scheduler_stepped_each_batch_cannot_watch_validation_logs():
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    with pytest.raises(ValueError, match="scheduler_monitor: got 'val_loss' with scheduler_interval='step'"):
        model.compile(optimizer=opt, loss="mse", scheduler_interval="step", scheduler_monitor="val_loss",
                      scheduler=torch.optim.lr_scheduler.ReduceLROnPlateau(opt))


def test_epoch_scheduler_logs_the_rate_used_during_each_epoch():
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model.compile(optimizer=opt, loss="mse", scheduler=torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.1))
    x, y = labelled_data(16)
    history = model.fit(x, y.astype(np.float32), epochs=3, verbose=0)
    assert history.history["learning_rate"] == pytest.approx([0.1, 0.01, 0.001])


def test_train_test_predict_on_batch():
    torch.manual_seed(0)
    model = Net(d_out=2)
    model.compile(optimizer=fitkit.optimizers.SGD(learning_rate=0.1), loss=nn.CrossEntropyLoss(),
                  metrics=["accuracy"])
    x, y = labelled_data(16)
    with torch.no_grad():
        logits = model(torch.from_numpy(x))
    expected_loss = float(nn.functional.cross_entropy(logits, torch.from_numpy(y)))
    expected_acc = float((logits.argmax(-1) == torch.from_numpy(y)).float().mean())
    loss, acc = model.test_on_batch(x, y)
    assert loss == pytest.approx(expected_loss, abs=1e-6) and acc == pytest.approx(expected_acc)
    assert model.test_on_batch(x, y, return_dict=True) == {"loss": pytest.approx(loss),
                                                             "accuracy": pytest.approx(acc)}
    before = [w.copy() for w in model.get_weights()]
    logs = model.train_on_batch(x, y, return_dict=True)
    assert set(logs) == {"loss", "accuracy"}
    assert logs["loss"] == pytest.approx(loss)  # the loss of the batch before the update
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    assert model.test_on_batch(x, y)[0] < loss
    # class 0 weighted 0: the loss is the class-1 samples' loss times 2, over all 16 samples
    with torch.no_grad():
        per_sample = nn.functional.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(y), reduction="none")
    expected = float((per_sample * torch.from_numpy(y).float() * 2.0).sum() / 16)
    cw = model.train_on_batch(x, y, class_weight={0: 0.0, 1: 2.0}, return_dict=True)
    assert cw["loss"] == pytest.approx(expected, abs=1e-6)


def test_get_and_set_weights_round_trip_and_check_shapes_first():
    torch.manual_seed(0)
    a, b = Net(), Net()
    weights = a.get_weights()
    assert [w.shape for w in weights] == [(8, 4), (8,), (1, 8), (1,)]
    b.set_weights(weights)
    x = torch.randn(5, 4)
    assert torch.equal(a(x), b(x))
    bad = [w.copy() for w in weights]
    bad[2] = np.zeros((8, 1))
    untouched = b.get_weights()
    with pytest.raises(ValueError, match=r"weights: fc2.weight has shape \(1, 8\); got an array of shape \(8, 1\)"):
        b.set_weights(bad)
    assert all(np.array_equal(u, v) for u, v in zip(untouched, b.get_weights()))
    with pytest.raises(ValueError, match="weights: got 3 arrays; expected a list of 4"):
        b.set_weights(weights[:3])


def test_get_weights_includes_buffers_like_keras_non_trainable_weights():
    model = fitkit.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    shapes = [w.shape for w in model.get_weights()]
    assert (4,) in shapes and () in shapes  # running stats and num_batches_tracked


def test_summary_counts_parameters_and_shows_output_shapes_after_a_call():
    model = fitkit.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2), nn.BatchNorm1d(2))
    for p in model[3].parameters():
        p.requires_grad_(False)
    lines = []
    text = model.summary(print_fn=lines.append)
    assert lines == [text]
    assert "Total params: 62" in text  # 40 + 18 + 4
    assert "Trainable params: 58" in text and "Non-trainable params: 4" in text
    assert "0 (Linear)" in text and "?" in text
    model.predict(np.zeros((3, 4), dtype=np.float32), verbose=0)
    text = model.summary(print_fn=lambda s: None)
    assert "(None, 8)" in text and "(None, 2)" in text and "?" not in text


def test_summary_with_an_input_example_before_any_fit():
    text = Net().summary(print_fn=lambda s: None, input_example=torch.zeros(2, 4))
    assert "fc1 (Linear)" in text and "(None, 8)" in text and "(None, 1)" in text


def test_device_defaults_to_where_the_user_put_the_model(monkeypatch):
    model = Net().to("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    model.compile(loss="mse")
    assert model.device == torch.device("cpu")  # placed by the user: stays


def test_a_model_left_on_the_cpu_goes_to_cuda_when_present(monkeypatch):
    from fitkit import compiled
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert compiled.resolve_device(None, Net()) == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert compiled.resolve_device(None, Net()) == torch.device("mps")
    assert compiled.resolve_device("cpu", Net()) == torch.device("cpu")


def test_custom_train_step_is_used_and_its_logs_are_the_epoch_logs():
    class Custom(Net):
        calls = 0

        def train_step(self, data):
            x, y = data  # Keras passes (x, y) when there are no sample weights
            Custom.calls += 1
            loss = ((self(x).squeeze(-1) - y.float()) ** 2).mean()
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            return {"loss": loss.detach(), "calls": torch.tensor(float(Custom.calls))}

    model = Custom()
    model.compile(optimizer="sgd")
    history = model.fit(*labelled_data(40), batch_size=10, epochs=2, verbose=0)
    assert Custom.calls == 8
    assert history.history["calls"] == [4.0, 8.0]  # Keras: an epoch's logs are its last step's


def test_multi_output_with_dict_losses_and_loss_weights():
    torch.manual_seed(0)
    model = TwoHeads(names=("reg", "cls"))
    x, y = labelled_data(30)
    targets = {"reg": x[:, 1], "cls": y}
    model.compile(optimizer="sgd", loss={"reg": "mse", "cls": nn.CrossEntropyLoss()},
                  loss_weights={"reg": 0.5, "cls": 2.0}, metrics={"cls": ["accuracy"]})
    logs = model.evaluate(x, targets, return_dict=True, verbose=0)
    with torch.no_grad():
        out = model(torch.from_numpy(x))
        mse = ((out["reg"].squeeze(-1) - torch.from_numpy(x[:, 1])) ** 2).mean()
        ce = nn.functional.cross_entropy(out["cls"], torch.from_numpy(y))
    assert logs["loss"] == pytest.approx(float(0.5 * mse + 2.0 * ce), abs=1e-5)
    assert logs["reg_loss"] == pytest.approx(float(mse), abs=1e-5)
    assert logs["cls_loss"] == pytest.approx(float(ce), abs=1e-5)
    assert any(key.endswith("accuracy") for key in logs)
    history = model.fit(x, targets, epochs=2, verbose=0)
    assert {"loss", "reg_loss", "cls_loss"} <= set(history.history)


# ------------------------------------------------------------------------------- the step's fast paths

def test_clear_grads_is_zero_grad_and_respects_an_optimizer_of_its_own():
    from fitkit.optimizers import clear_grads

    model = Net()
    model(torch.randn(2, 4)).sum().backward()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    clear_grads(opt)
    assert all(p.grad is None for p in model.parameters())

    class Counting(torch.optim.SGD):
        calls = 0

        def zero_grad(self, set_to_none=True):
            Counting.calls += 1
            super().zero_grad(set_to_none=set_to_none)

    x, y = labelled_data()
    model.compile(optimizer=Counting(model.parameters(), lr=0.1), loss=nn.BCEWithLogitsLoss())
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert Counting.calls == 4


# ------------------------------------------------------------------------------- Keras behaviours

class Doubling(fitkit.Model):
    """Parameter-free (at module level, so that save can rebuild it by import path)."""

    def forward(self, x):
        return 2 * x


def test_a_model_without_trainable_parameters_compiles_fits_evaluates_predicts_saves_and_loads(tmp_path):
    x = np.arange(12, dtype=np.float32).reshape(6, 2)
    y = 2 * x + 1
    model = Doubling()
    model.compile(optimizer="adam", loss="mse", metrics=["mae"])
    with pytest.warns(UserWarning, match="does not have any trainable weights") as caught:
        history = model.fit(x, y, batch_size=2, epochs=2, verbose=0)
    assert len([w for w in caught if "trainable weights" in str(w.message)]) == 1  # one warning, not one a step
    assert history.history["loss"] == pytest.approx([1.0, 1.0]) and history.history["mae"] == pytest.approx([1.0] * 2)
    assert model.evaluate(x, y, verbose=0) == pytest.approx([1.0, 1.0])
    np.testing.assert_array_equal(model.predict(x, verbose=0), 2 * x)
    assert model.optimizer.learning_rate == pytest.approx(0.001)
    model.save(tmp_path / "m.pt")
    again = fitkit.load_model(tmp_path / "m.pt")
    assert again.evaluate(x, y, verbose=0) == pytest.approx([1.0, 1.0])

    torch.manual_seed(0)
    frozen = Net()
    for p in frozen.parameters():
        p.requires_grad_(False)
    before = [p.clone() for p in frozen.parameters()]
    frozen.compile(optimizer="sgd", loss="mse")
    with pytest.warns(UserWarning, match="does not have any trainable weights"):
        frozen.fit(*labelled_data(16), epochs=1, verbose=0)
    assert all(torch.equal(a, b) for a, b in zip(before, frozen.parameters()))


@pytest.mark.parametrize("given", ["named", "torch", "fused"])
def test_optimizer_learning_rate_reads_and_assigns_every_group(given):
    torch.manual_seed(0)
    model = Net()
    groups = [{"params": model.fc1.parameters()}, {"params": model.fc2.parameters(), "lr": 0.5}]
    if given == "named":
        model.compile(optimizer=fitkit.optimizers.SGD(learning_rate=0.1), loss="mse")
    elif given == "torch":
        opt = torch.optim.SGD(groups, lr=0.1, momentum=0.9)
        model.compile(optimizer=opt, loss="mse")
        assert model.optimizer is opt and type(opt) is torch.optim.SGD  # the torch object as it is
    else:
        model.compile(optimizer=torch.optim.Adam(groups, lr=torch.tensor(0.1), fused=True), loss="mse")
    assert model.optimizer.learning_rate == pytest.approx(0.1)
    model.optimizer.learning_rate = 0.01  # Keras's idiom; it used to be silently ignored
    assert [optimizers.group_lr(g) for g in model.optimizer.param_groups] == pytest.approx(
        [0.01] * len(model.optimizer.param_groups))
    if given == "fused":
        assert isinstance(model.optimizer.param_groups[0]["lr"], torch.Tensor)  # a tensor lr stays a tensor
    x, y = labelled_data(32)
    history = model.fit(x, y.astype(np.float32), batch_size=8, epochs=1, verbose=0)
    assert history.learning_rates == pytest.approx([0.01])
    assert model.optimizer.iterations == 4
    state = model.optimizer.state_dict()
    assert "learning_rate" not in state["param_groups"][0]
    with pytest.raises(ValueError, match="learning_rate: got 'fast'"):
        model.optimizer.learning_rate = "fast"
