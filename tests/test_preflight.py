"""fitkit.preflight: in-memory targets reconciled with the loss once per fit, before the first step."""

import numpy as np
import torch
from torch import nn

import fitkit
from conftest import Net, labelled_data
from fitkit import preflight


def test_the_first_outputs_move_no_rng_no_statistics_and_no_training_mode():
    torch.manual_seed(0)
    model = fitkit.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Dropout(0.5), nn.Linear(8, 2))
    model.train()
    stats = [t.clone() for t in model.state_dict().values()]
    x = torch.randn(6, 4)
    rng = torch.get_rng_state()
    out = preflight.first_outputs(model, x)
    assert out.shape == (6, 2) and not out.requires_grad
    assert torch.equal(rng, torch.get_rng_state()) and model.training
    assert all(torch.equal(a, b) for a, b in zip(stats, model.state_dict().values()))


class _TargetsSeen(fitkit.callbacks.Callback):
    """Records the dtype and shape of the targets fit holds after each batch."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def on_train_batch_end(self, batch, logs=None):
        source = self.model.training_state.source.source  # the epoch iterator's data source
        y = source._leaves[1]
        self.seen.append((y.dtype, tuple(y.shape)))


def test_fit_reconciles_in_memory_targets_with_the_loss_once():
    x, y = labelled_data()
    torch.manual_seed(0)
    model = Net()
    model.compile(optimizer="sgd", loss=nn.BCEWithLogitsLoss(), metrics=["accuracy"])
    seen = _TargetsSeen()
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[seen])
    assert seen.seen[0] == (torch.float32, (64, 1))  # from the first step on: (N,) int64 -> float (N, 1)
    assert set(seen.seen) == {(torch.float32, (64, 1))}

    torch.manual_seed(0)
    twin = Net()
    twin.compile(optimizer="sgd", loss=nn.BCEWithLogitsLoss(), metrics=["accuracy"])
    twin.fit(x, y.astype(np.float32).reshape(-1, 1), batch_size=16, epochs=2, verbose=0)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), twin.parameters()))
    assert model.history.history == twin.history.history


def test_targets_are_reconciled_where_the_data_is_prepared_not_by_compute_loss():
    x, y = labelled_data()

    class Penalised(Net):  # a compute_loss override that knows nothing of target preparation
        def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
            return super().compute_loss(x, y, y_pred, sample_weight, training) + 0.0 * y_pred.sum()

    class BeforeFirstStep(fitkit.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if batch == 0:
                y = self.model.training_state.source.source._leaves[1]
                self.seen = (y.dtype, tuple(y.shape))

    torch.manual_seed(0)
    model = Penalised()
    model.compile(optimizer="sgd", loss=nn.BCEWithLogitsLoss(), metrics=["accuracy"])
    seen = BeforeFirstStep()
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[seen])
    assert seen.seen == (torch.float32, (64, 1))
    torch.manual_seed(0)
    twin = Net()
    twin.compile(optimizer="sgd", loss=nn.BCEWithLogitsLoss(), metrics=["accuracy"])
    twin.fit(x, y.astype(np.float32).reshape(-1, 1), batch_size=16, epochs=1, verbose=0)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), twin.parameters()))


def test_a_custom_train_step_or_metric_object_sees_the_targets_as_given():
    x, y = labelled_data()

    class Custom(Net):
        def train_step(self, data):
            self.dtypes.append(data[1].dtype)
            return super().train_step(data)

    model = Custom()
    model.dtypes = []
    model.compile(optimizer="sgd", loss=nn.BCEWithLogitsLoss())
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert model.dtypes == [torch.int64] * 4

    model = Net()
    model.compile(optimizer="sgd", loss=nn.BCEWithLogitsLoss(), metrics=[fitkit.metrics.BinaryAccuracy()])
    seen = _TargetsSeen()
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[seen])
    assert set(seen.seen) == {(torch.int64, (64,))}


# ------------------------------------------------------------------------------------------ bad input
# Each case: the error (or warning) names the argument, what was given and what was expected, and
# comes before any weight, optimizer state or file changes.

import functools  # noqa: E402
import warnings  # noqa: E402

import pytest  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from conftest import same_optimizer, same_weights  # noqa: E402


def _snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}, model.optimizer.state_dict()


def _unchanged(model, snapshot, tmp_path=None):
    weights, optimizer = snapshot
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in weights.items())
    assert model.optimizer.state_dict() == optimizer and model.training_state.epoch == 0
    if tmp_path is not None:
        assert list(tmp_path.iterdir()) == []


def _fit_refused(model, x, y=None, match=None, error=ValueError, tmp_path=None, **kw):
    """fit raises ``error`` matching ``match`` and changes nothing: weights, optimizer, files."""
    snapshot = _snapshot(model)
    callbacks = [fitkit.callbacks.CSVLogger(tmp_path / "log.csv")] if tmp_path is not None else []
    with pytest.raises(error, match=match):
        model.fit(x, y, verbose=0, callbacks=callbacks, **kw)
    _unchanged(model, snapshot, tmp_path)


def _compiled(out_units, loss, layers=()):
    torch.manual_seed(0)
    model = fitkit.Sequential(nn.Linear(5, out_units), *layers)
    model.compile(optimizer="adam", loss=loss)
    return model


def _xy(n=40, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 5)).astype(np.float32), rng


def _forms(x, y, batch_size=8):
    """The same data as arrays, a TensorDataset, a Dataset, a DataLoader and a generator."""
    tx, ty = torch.as_tensor(x), torch.as_tensor(y)
    pairs = torch.utils.data.TensorDataset(tx, ty)

    class Plain(torch.utils.data.Dataset):
        def __len__(self):
            return len(tx)

        def __getitem__(self, i):
            return tx[i], ty[i]

    batches = [(tx[i:i + batch_size], ty[i:i + batch_size]) for i in range(0, len(tx), batch_size)]
    return {"arrays": ((x, y), {"batch_size": batch_size}), "tensor_dataset": ((pairs,), {"batch_size": batch_size}),
            "dataset": ((Plain(),), {"batch_size": batch_size}),
            "dataloader": ((torch.utils.data.DataLoader(pairs, batch_size=batch_size),), {}),
            "generator": ((iter(batches),), {})}


FORMS = ["arrays", "tensor_dataset", "dataset", "dataloader", "generator"]
DENSE_LOSSES = {"mse": "mse", "MSELoss": nn.MSELoss(), "F.mse_loss": F.mse_loss,
                "callable": lambda t, p: (p - t).abs(), "bce": "binary_crossentropy",
                "BCEWithLogits": nn.BCEWithLogitsLoss(), "huber": nn.HuberLoss()}


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("loss", DENSE_LOSSES, ids=list(DENSE_LOSSES))
def test_targets_that_would_broadcast_are_refused_for_every_loss_and_input_form(loss, form, tmp_path):
    x, rng = _xy()
    y = rng.integers(0, 2, size=(40, 3)).astype(np.float32)  # (N, 3) targets against (N, 1) outputs
    args, kw = _forms(x, y)[form]
    model = _compiled(1, DENSE_LOSSES[loss])
    _fit_refused(model, *args, match=r"^y: got targets of shape \(8, 3\) for model outputs of shape \(8, 1\)",
                 tmp_path=tmp_path, **kw)


@pytest.mark.parametrize("form", FORMS)
def test_n_targets_against_n_by_4_by_1_outputs_are_refused(form):
    x, rng = _xy()
    args, kw = _forms(x, rng.normal(size=40).astype(np.float32))[form]
    model = _compiled(4, nn.MSELoss(), [nn.Unflatten(1, (4, 1))])
    _fit_refused(model, *args, match=r"^y: got targets of shape \(8,\) for model outputs of shape \(8, 4, 1\).*"
                                     r"broadcast them to \(8, 4, 8\)", **kw)


def test_a_generator_batch_whose_y_has_one_row_is_refused():
    x, _ = _xy()
    model = _compiled(1, "mse")
    batches = iter([(torch.as_tensor(x[:8]), torch.zeros(1, 1))])
    _fit_refused(model, batches, match=r"^x: a batch holds different numbers of samples \(8 in x, 1 in y\)")


def test_the_check_also_runs_in_every_loss_call_so_later_batches_are_caught_before_their_step():
    x, _ = _xy()
    good = [(torch.as_tensor(x[i:i + 8]), torch.zeros(8, 1)) for i in (0, 8)]
    model = _compiled(1, "mse")
    with pytest.raises(ValueError, match=r"^y: got targets of shape \(8, 3\)"):
        model.fit(iter(good + [(torch.as_tensor(x[16:24]), torch.zeros(8, 3))]), verbose=0)
    twin = _compiled(1, "mse")
    twin.fit(iter(good), verbose=0)
    assert same_weights(model, twin) and same_optimizer(model.optimizer, twin.optimizer)  # two steps, not three


# labels ---------------------------------------------------------------------------------------------

LABEL_CASES = {
    "fractional float labels, torch": (3, nn.CrossEntropyLoss(), lambda r: r.uniform(0, 2, size=40),
                                       r"^y: got fractional labels \(such as 0\.\d+\) .*'CrossEntropyLoss'.*\[0, 3\)"),
    "fractional float labels, Keras": (3, fitkit.losses.SparseCategoricalCrossentropy(from_logits=True),
                                       lambda r: np.full(40, 0.5), r"^y: got fractional labels \(such as 0\.5\)"),
    "a label too large": (3, nn.CrossEntropyLoss(), lambda r: np.r_[5, r.integers(0, 3, size=39)],
                          r"^y: got labels from 0 to 5 .*3 classes.*last layer 6 units"),
    "a negative label": (3, fitkit.losses.SparseCategoricalCrossentropy(from_logits=True),
                         lambda r: np.r_[-1, r.integers(0, 3, size=39)], r"^y: got labels from -1 to 2 .*\[0, 3\)"),
    "binary labels 0, 1, 2": (1, nn.BCEWithLogitsLoss(), lambda r: np.r_[2, r.integers(0, 2, size=39)],
                              r"^y: got targets from 0 to 2 .*'BCEWithLogitsLoss', which needs values in \[0, 1\]"),
    "binary labels -1/1": (1, fitkit.losses.BinaryCrossentropy(from_logits=True), lambda r: r.choice([-1, 1], size=40),
                           r"^y: got targets from -1 to 1 .*map them to 0/1"),
    "one output unit, multi-class loss": (1, nn.CrossEntropyLoss(), lambda r: r.integers(0, 2, size=40),
                                          r"^loss: 'CrossEntropyLoss' is a multi-class loss, but the model has 1 "
                                          r"output unit"),
    "one output unit, categorical": (1, "categorical_crossentropy", lambda r: np.ones((40, 1)),
                                     r"^loss: 'categorical_crossentropy' is a multi-class loss"),
}


@pytest.mark.parametrize("form", ["arrays", "dataloader", "generator"])
@pytest.mark.parametrize("case", LABEL_CASES)
def test_labels_that_do_not_fit_the_loss_are_refused_before_the_first_step(case, form, tmp_path):
    units, loss, make, match = LABEL_CASES[case]
    x, rng = _xy()
    args, kw = _forms(x, make(rng))[form]
    _fit_refused(_compiled(units, loss), *args, match=match, tmp_path=tmp_path, **kw)


@pytest.mark.parametrize("form", ["arrays", "tensor_dataset", "dataloader", "dataset", "generator"])
def test_a_bad_label_in_the_last_batch_is_caught_before_its_step(form):
    x, rng = _xy()
    y = np.r_[rng.integers(0, 3, size=39), 3]
    args, kw = _forms(x, y)[form]
    model = _compiled(3, nn.CrossEntropyLoss())
    with pytest.raises(ValueError, match=r"^y: got labels from 0 to 3 .*3 classes"):
        model.fit(*args, verbose=0, shuffle=False, **kw)
    # In memory (a DataLoader over a TensorDataset too): all labels are checked once, before the first
    # step. Other Datasets' and generators' batches are checked as they come: the four good ones stepped,
    # the bad one did not.
    steps = model.optimizer.state_dict()["state"].get(0, {}).get("step")
    assert (steps is None) if form not in ("dataset", "generator") else float(steps) == 4


def test_labels_the_loss_ignores_and_hinge_labels_are_accepted():
    x, rng = _xy()
    y = np.r_[rng.integers(0, 3, size=36), [-100] * 4]
    _compiled(3, nn.CrossEntropyLoss()).fit(x, y, verbose=0)  # torch's ignore_index=-100
    _compiled(3, functools.partial(F.cross_entropy, ignore_index=-1)).fit(x, np.r_[y[:36], [-1] * 4], verbose=0)
    keras = fitkit.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=255)
    _compiled(3, keras).fit(x, np.r_[y[:36], [255] * 4], verbose=0)
    _compiled(1, "hinge").fit(x, rng.choice([-1, 1], size=40), verbose=0)
    with pytest.raises(ValueError, match=r"^y: got labels from -100 to 2"):
        _compiled(3, nn.CrossEntropyLoss(ignore_index=0)).fit(x, y, verbose=0)


def test_labels_arriving_on_a_device_are_summed_there_and_read_once_per_epoch():
    x, rng = _xy()
    model = _compiled(3, nn.CrossEntropyLoss())
    y = torch.as_tensor(np.r_[rng.integers(0, 3, size=32), [7] * 8])
    rule = preflight._label_rule(model.compiled_loss.single, lambda t: t, y, torch.zeros(8, 3), None)
    check = preflight.BatchLabels([rule])
    for i in range(0, 40, 8):
        check._accumulate(0, rule, y[i:i + 8])  # what a batch on an accelerator does: no read, no check yet
    with pytest.raises(ValueError, match=r"^y: got labels from 0 to 7 .*3 classes"):
        check.end_epoch()
    check._accumulate(0, rule, y[:8])
    check.end_epoch()  # a clean epoch reads and passes


# probabilities and logits -----------------------------------------------------------------------------

def _warnings_of(fn):
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        fn()
    return [str(w.message) for w in seen if issubclass(w.category, UserWarning)]


@pytest.mark.parametrize("layers, units, loss, match", [
    ([nn.Sigmoid()], 1, nn.BCEWithLogitsLoss(), r"^loss: the model's outputs come from a sigmoid.*'BCEWithLogitsLoss' "
                                                r"takes logits.*remove the final sigmoid"),
    ([nn.Softmax(-1)], 3, nn.CrossEntropyLoss(), r"^loss: .*come from a softmax.*'CrossEntropyLoss' takes logits"),
    ([nn.Softmax(-1)], 3, nn.NLLLoss(), r"^loss: .*'NLLLoss' takes log-probabilities.*log_softmax"),
    ([], 1, "binary_crossentropy", r"^loss: the model's outputs on the first batch range from .* like logits"),
    ([], 3, "sparse_categorical_crossentropy", r"^loss: .* are not probabilities .*from_logits=True"),
])
def test_probabilities_given_to_a_logits_loss_or_logits_to_a_probability_loss_warn_once(layers, units, loss, match):
    x, rng = _xy()
    y = rng.integers(0, 2 if units == 1 else 3, size=40)
    model = _compiled(units, loss, layers)
    first = _warnings_of(lambda: model.fit(x, y, epochs=1, verbose=0))
    assert len(first) == 1 and __import__("re").search(match, first[0]), first
    assert _warnings_of(lambda: model.fit(x, y, epochs=1, verbose=0)) == []  # once per compile


@pytest.mark.parametrize("layers, units, loss", [
    ([], 1, nn.BCEWithLogitsLoss()), ([nn.Sigmoid()], 1, nn.BCELoss()), ([nn.Sigmoid()], 1, "binary_crossentropy"),
    ([], 3, nn.CrossEntropyLoss()), ([nn.Softmax(-1)], 3, "sparse_categorical_crossentropy"),
    ([nn.LogSoftmax(-1)], 3, nn.NLLLoss()), ([], 1, "mse"),
])
def test_matching_outputs_and_losses_do_not_warn(layers, units, loss):
    x, rng = _xy()
    y = rng.integers(0, 2 if units == 1 else 3, size=40)
    model = _compiled(units, loss, layers)
    with torch.no_grad():  # logits all inside (0, 1), as an untrained model's may be: still logits
        model[0].weight.mul_(0.01)
        model[0].bias.fill_(0.5)
    assert _warnings_of(lambda: model.fit(x, y, epochs=1, verbose=0)) == []


def test_logits_given_to_nn_bceloss_are_an_error_before_the_step_fails():
    x, rng = _xy()
    _fit_refused(_compiled(1, nn.BCELoss()), x, rng.integers(0, 2, size=40),
                 match=r"^loss: .*'BCELoss' takes probabilities in \[0, 1\].*end the model with a sigmoid")


# empty data, NaN, the forward pass ----------------------------------------------------------------------

@pytest.mark.parametrize("empty, match", [
    (lambda: (np.zeros((0, 5), np.float32), np.zeros(0)), r"^x: got arrays of 0 samples"),
    (lambda: (torch.utils.data.TensorDataset(torch.zeros(0, 5), torch.zeros(0, 1)),), r"^x: got arrays of 0"),
    (lambda: (torch.utils.data.Subset(torch.utils.data.TensorDataset(torch.zeros(4, 5)), []),),
     r"^x: got an empty Subset \(len 0\)"),
    (lambda: (torch.utils.data.DataLoader(torch.utils.data.Subset(torch.utils.data.TensorDataset(
        torch.zeros(4, 5)), [])),), r"^x: got a DataLoader over an empty Subset"),
    (lambda: (torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.zeros(5, 5), torch.zeros(5, 1)),
                                          batch_size=8, drop_last=True),),
     r"^x: got a DataLoader that yields no batches \(drop_last=True with 5 samples and batch_size=8\)"),
    (lambda: (iter([]),), r"^x: the list_iterator yielded no batches"),
    (lambda: ((b for b in []),), r"^x: the generator yielded no batches"),
    (lambda: (iter([(torch.zeros(0, 5), torch.zeros(0, 1))]),), r"^x: a batch holds 0 samples"),
])
def test_empty_training_data_is_an_error(empty, match, tmp_path):
    _fit_refused(_compiled(1, "mse"), *empty(), match=match, tmp_path=tmp_path)


def test_empty_validation_data_is_an_error():
    x, _ = _xy()
    model = _compiled(1, "mse")
    _fit_refused(model, x, x[:, :1], match=r"^validation_data: got arrays of 0 samples",
                 validation_data=(x[:0], x[:0, :1]))
    _fit_refused(model, x, x[:, :1], match=r"^validation_data: the generator yielded no batches",
                 validation_data=(b for b in []))


def test_nan_or_inf_in_in_memory_data_warns_before_training():
    x, rng = _xy()
    y = x[:, :1].copy()
    x[3, 2], y[7, 0] = np.nan, np.inf
    seen = _warnings_of(lambda: _compiled(1, "mse").fit(x, y, verbose=0))
    assert any(s.startswith("x: 1 of the 200 values in x (shape (40, 5)) are NaN or infinite") for s in seen)
    assert any(s.startswith("y: 1 of the 40 values in y") for s in seen)
    seen = _warnings_of(lambda: _compiled(1, "mse").fit(x[:8], y[:8], validation_data=(x, y), verbose=0))
    assert any(s.startswith("validation_data: 1 of the 200 values in validation_data's x") for s in seen)
    assert _warnings_of(lambda: _compiled(1, "mse").fit(x[8:], y[8:], verbose=0)) == []


def test_a_forward_pass_that_fails_on_the_first_batch_says_what_fit_passed():
    x, _ = _xy()
    model = fitkit.Sequential(nn.Linear(6, 1))
    model.compile(optimizer="sgd", loss="mse")
    snapshot = _snapshot(model)
    with pytest.raises(RuntimeError, match="mat1 and mat2") as info:  # torch's own error, its type kept
        model.fit(x, x[:, :1], batch_size=8, verbose=0)
    assert "forward(x) with x = a float32 tensor of shape (8, 5) on cpu" in "\n".join(info.value.__notes__)
    assert "the first batch of the training data" in info.value.__notes__[0]
    _unchanged(model, snapshot)

    class TwoInputs(fitkit.Model):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(5, 1)

        def forward(self, a, b):
            return self.fc(torch.cat([a, b], 1))

    model = TwoInputs()
    model.compile(optimizer="sgd", loss="mse")
    with pytest.raises(RuntimeError) as info:
        model.fit({"a": x, "b": np.zeros((40, 2), np.float32)}, x[:, :1], batch_size=8, verbose=0)
    assert "forward(**x) with a=a float32 tensor of shape (8, 5) on cpu, b=a float32 tensor of shape (8, 2)" \
        in info.value.__notes__[0]


# validation data -------------------------------------------------------------------------------------------

def test_validation_data_is_checked_before_the_first_step(tmp_path):
    x, _ = _xy()
    model = _compiled(1, "mse")
    _fit_refused(model, x, x[:, :1], validation_data=(x, x[:, :3]), tmp_path=tmp_path,
                 match=r"^validation_data: got targets of shape \(32, 3\) for model outputs of shape \(32, 1\)")
    _fit_refused(model, x, x[:, :1], validation_data=(x[:, :4], x[:, :1]), error=RuntimeError, match="mat1")
    _fit_refused(model, x, x[:, :1], validation_data=(x,), match=r"^validation_data: got a tuple of 1 items")
    _fit_refused(model, x, x[:, :1], validation_data=(x, x[:30, :1]),
                 match=r"^validation_data: the arrays have different numbers of samples \[30, 40\]")
    _fit_refused(model, x, x[:, :1], validation_data=iter([(torch.as_tensor(x[:8]), torch.zeros(8, 2))]),
                 match=r"^validation_data: got targets of shape \(8, 2\)")
    labels = _compiled(3, nn.CrossEntropyLoss())
    _fit_refused(labels, x, np.zeros(40, np.int64), validation_data=(x, np.full(40, 3)),
                 match=r"^validation_data: got labels from 3 to 3 .*3 classes")


def test_a_custom_train_step_gets_no_loss_checks_but_every_loss_call_still_checks_shapes():
    x, _ = _xy()

    class OwnTargets(fitkit.Model):  # uses y in its own way: column 0 of a (N, 3) target
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(5, 1)
            self.forwards = 0

        def forward(self, x):
            self.forwards += 1
            return self.fc(x)

        def train_step(self, data):
            x, y, _ = fitkit.utils.unpack_x_y_sample_weight(data)
            return super().train_step((x, y[:, :1], None))

    model = OwnTargets()
    model.compile(optimizer="sgd", loss="mse")
    model.fit(x, np.zeros((40, 3), np.float32), batch_size=8, verbose=0)
    assert model.forwards == 5  # no forward pass of fit's own before the steps
    with pytest.raises(ValueError, match=r"^y: got targets of shape \(8, 3\)"):
        fitkit.Model.train_step(model, (torch.as_tensor(x[:8]), torch.zeros(8, 3), None))


def test_each_output_of_a_model_with_several_is_checked_against_its_loss():
    class Two(fitkit.Model):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(5, 3), nn.Linear(5, 1)

        def forward(self, x):
            return {"cls": self.a(x), "reg": self.b(x)}

    x, _ = _xy(20)
    model = Two()
    model.compile(optimizer="sgd", loss={"cls": nn.CrossEntropyLoss(), "reg": "mse"})
    good = {"cls": np.zeros(20, np.int64), "reg": np.zeros((20, 1), np.float32)}
    _fit_refused(model, x, {**good, "cls": np.r_[5, np.zeros(19, np.int64)]},
                 match=r"^y: got labels from 0 to 5 for output 'cls' for the loss 'CrossEntropyLoss'")
    _fit_refused(model, x, {**good, "reg": np.zeros((20, 3), np.float32)},
                 match=r"^y: for output 'reg', got targets of shape \(20, 3\) for model outputs of shape \(20, 1\)")
    model.fit(x, good, verbose=0)
