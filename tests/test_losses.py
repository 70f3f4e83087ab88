"""fitkit.losses: Keras names and math, torch modules in torch order, target reconciliation, weighting."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fitkit import losses
from fitkit.compiled import LossContainer
from fitkit.losses import get

EPS = 1e-7
N = 6


# ------------------------------------------------------------------ data and numpy references (float64)

def _data(kind, n=N, d=3, seed=0):
    """(y_true, y_pred) as float64 numpy arrays suited to a loss of this kind."""
    rng = np.random.default_rng(seed)
    if kind == "reg":
        return rng.normal(size=(n, d)), rng.normal(size=(n, d))
    if kind == "pos":  # predictions that must be positive (poisson) and targets that are counts
        return rng.poisson(2.0, size=(n, d)).astype(float), rng.uniform(0.1, 3.0, size=(n, d))
    if kind == "bin":
        return rng.integers(0, 2, size=(n, d)).astype(float), rng.uniform(0.02, 0.98, size=(n, d))
    if kind == "logit":
        return rng.integers(0, 2, size=(n, d)).astype(float), rng.normal(scale=2.0, size=(n, d))
    if kind == "cat":
        p = rng.uniform(0.05, 1.0, size=(n, d))
        return np.eye(d)[rng.integers(0, d, size=n)], p / p.sum(-1, keepdims=True)
    if kind == "catlogit":
        return np.eye(d)[rng.integers(0, d, size=n)], rng.normal(scale=2.0, size=(n, d))
    if kind == "dist":  # two distributions (kld)
        y, p = rng.uniform(0.0, 1.0, size=(n, d)), rng.uniform(0.05, 1.0, size=(n, d))
        return y / y.sum(-1, keepdims=True), p / p.sum(-1, keepdims=True)
    if kind == "sparse":
        p = rng.uniform(0.05, 1.0, size=(n, d))
        return rng.integers(0, d, size=n).astype(float), p / p.sum(-1, keepdims=True)
    if kind == "sparselogit":
        return rng.integers(0, d, size=n).astype(float), rng.normal(scale=2.0, size=(n, d))
    if kind == "sparselogp":
        return rng.integers(0, d, size=n).astype(float), _log_softmax(rng.normal(size=(n, d)))
    raise AssertionError(kind)


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _bce(y, p):
    p = np.clip(p, EPS, 1 - EPS)
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def _bce_logits(y, z):
    return np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))


def _cce(y, p):
    p = np.clip(p / p.sum(-1, keepdims=True), EPS, 1 - EPS)
    return -(y * np.log(p)).sum(-1)


def _hinge_y(y):
    return 2 * y - 1 if np.isin(y, [0, 1]).all() else y


def _huber(y, p, delta=1.0):
    e = np.abs(p - y)
    return np.where(e <= delta, 0.5 * e ** 2, delta * e - 0.5 * delta ** 2)


def _normalize(x):
    return x / np.maximum(np.sqrt((x ** 2).sum(-1, keepdims=True)), EPS)


def _pick(p, labels):
    return p[np.arange(len(labels)), labels.astype(int)]


# name -> (data kind, per-sample numpy reference); every name `get` accepts is here.
REFERENCE = {
    "mean_squared_error": ("reg", lambda y, p: ((p - y) ** 2).mean(-1)),
    "mean_absolute_error": ("reg", lambda y, p: np.abs(p - y).mean(-1)),
    "mean_absolute_percentage_error": ("reg", lambda y, p: 100 * np.abs((y - p) / np.maximum(np.abs(y), EPS)).mean(-1)),
    "mean_squared_logarithmic_error": (
        "reg", lambda y, p: ((np.log(np.maximum(p, EPS) + 1) - np.log(np.maximum(y, EPS) + 1)) ** 2).mean(-1)),
    "binary_crossentropy": ("bin", lambda y, p: _bce(y, p).mean(-1)),
    "binary_focal_crossentropy": (
        "bin", lambda y, p: ((1 - (y * p + (1 - y) * (1 - p))) ** 2 * _bce(y, p)).mean(-1)),
    "categorical_crossentropy": ("cat", _cce),
    "sparse_categorical_crossentropy": (
        "sparse", lambda y, p: -np.log(np.clip(_pick(p / p.sum(-1, keepdims=True), y), EPS, 1 - EPS))),
    "huber": ("reg", lambda y, p: _huber(y, p).mean(-1)),
    "log_cosh": ("reg", lambda y, p: np.log(np.cosh(p - y)).mean(-1)),
    "kl_divergence": (
        "dist", lambda y, p: (np.clip(y, EPS, 1) * np.log(np.clip(y, EPS, 1) / np.clip(p, EPS, 1))).sum(-1)),
    "poisson": ("pos", lambda y, p: (p - y * np.log(p + EPS)).mean(-1)),
    "hinge": ("bin", lambda y, p: np.maximum(1 - _hinge_y(y) * p, 0).mean(-1)),
    "squared_hinge": ("bin", lambda y, p: (np.maximum(1 - _hinge_y(y) * p, 0) ** 2).mean(-1)),
    "categorical_hinge": (
        "cat", lambda y, p: np.maximum(((1 - y) * p).max(-1) - (y * p).sum(-1) + 1, 0)),
    "cosine_similarity": ("reg", lambda y, p: -(_normalize(y) * _normalize(p)).sum(-1)),
    # torch-style names: torch semantics (logits, log-probabilities)
    "cross_entropy": ("sparselogit", lambda y, z: -_pick(_log_softmax(z), y)),
    "bce_with_logits": ("logit", lambda y, z: _bce_logits(y, z).mean(-1)),
    "nll": ("sparselogp", lambda y, lp: -_pick(lp, y)),
    "l1": ("reg", lambda y, p: np.abs(p - y).mean(-1)),
    "smooth_l1": ("reg", lambda y, p: _huber(y, p).mean(-1)),
}
TORCH_NAMES = ("cross_entropy", "bce_with_logits", "nll", "l1", "smooth_l1")
_BY_CLASS = {type(get(k)): k for k in REFERENCE if k not in TORCH_NAMES}


def _canonical(name):
    """The REFERENCE key of any name `get` accepts (aliases and class names resolve through the class)."""
    return name if name in TORCH_NAMES else _BY_CLASS[type(get(name))]


ALL_NAMES = losses.names()


def _expected(name, y, p, sw=None):
    kind, fn = REFERENCE[_canonical(name)]
    per_sample = fn(y, p)
    if sw is None:
        return per_sample.mean()
    return (per_sample * sw).sum() / per_sample.size  # sum_over_batch_size: not divided by sum(sw)


def _t(a, dtype=torch.float64):
    return torch.as_tensor(np.asarray(a), dtype=dtype)


# ----------------------------------------------------------------------------- names against numpy

def test_names_include_keras_aliases_and_torch_names():
    expected = {"mse", "mean_squared_error", "mae", "mape", "msle", "binary_crossentropy", "bce",
                "categorical_crossentropy", "sparse_categorical_crossentropy", "huber", "log_cosh", "logcosh",
                "kl_divergence", "kld", "kullback_leibler_divergence", "poisson", "hinge", "squared_hinge",
                "categorical_hinge", "cosine_similarity", "MeanSquaredError", "BinaryCrossentropy", *TORCH_NAMES}
    assert expected <= set(ALL_NAMES)
    assert {_canonical(n) for n in ALL_NAMES} == set(REFERENCE)  # every name is checked against numpy


@pytest.mark.parametrize("name", ALL_NAMES)
def test_name_matches_numpy(name):
    kind = REFERENCE[_canonical(name)][0]
    y, p = _data(kind)
    loss = get(name)
    out = loss(_t(y), _t(p))
    assert out.dim() == 0
    assert out.item() == pytest.approx(_expected(name, y, p), rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_name_matches_numpy_with_sample_weight(name):
    kind = REFERENCE[_canonical(name)][0]
    y, p = _data(kind, seed=1)
    sw = np.random.default_rng(2).uniform(0.0, 3.0, size=N)
    sw[0] = 0.0
    out = get(name)(_t(y), _t(p), sample_weight=_t(sw))
    assert out.item() == pytest.approx(_expected(name, y, p, sw), rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_y_of_shape_n_against_pred_n_1_for_every_loss(name):
    kind = REFERENCE[_canonical(name)][0]
    y, p = _data(kind, d=1, seed=3)
    if kind.startswith("sparse"):
        y = np.zeros(N)  # the only class there is
    y_col = y.reshape(N, 1)
    sw = np.linspace(0.5, 2.0, N)
    loss = get(name)
    ref = _expected(name, y if kind.startswith("sparse") else y_col, p)
    ref_w = _expected(name, y if kind.startswith("sparse") else y_col, p, sw)
    for y_in in (y.reshape(N), y_col):
        assert loss(_t(y_in), _t(p)).item() == pytest.approx(ref, rel=1e-9, abs=1e-9)
        assert loss(_t(y_in), _t(p), _t(sw)).item() == pytest.approx(ref_w, rel=1e-9, abs=1e-9)
        assert loss(_t(y_in), _t(p), _t(sw.reshape(N, 1))).item() == pytest.approx(ref_w, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("name", ["mse", "mae", "binary_crossentropy", "huber", "poisson", "hinge", "bce_with_logits"])
def test_pred_of_shape_n_is_one_value_per_sample(name):
    kind = REFERENCE[_canonical(name)][0]
    y, p = _data(kind, d=1, seed=4)
    sw = np.linspace(0.0, 2.0, N)
    ref_w = _expected(name, y, p, sw)
    out = get(name)(_t(y), _t(p.reshape(N)), _t(sw))
    assert out.item() == pytest.approx(ref_w, rel=1e-9)


@pytest.mark.parametrize("name", ["mse", "bce", "cross_entropy", "sparse_categorical_crossentropy"])
def test_gradients_flow(name):
    kind = REFERENCE[_canonical(name)][0]
    y, p = _data(kind, seed=5)
    pred = _t(p).requires_grad_()
    get(name)(_t(y), pred, _t(np.ones(N))).backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all()


# ------------------------------------------------------------------------- Keras's own numbers

# Computed once with Keras 3.15.1 (KERAS_BACKEND=torch, /work/kvenv/bin/python) on the float32 arrays below,
# e.g. keras.losses.BinaryCrossentropy()(YB, PB) -> 0.29900115728378296.
YB = [[0], [1], [1], [0]]
PB = [[0.1], [0.8], [0.6], [0.3]]
LB = [[-1.2], [0.5], [2.0], [0.3]]
YC = [[1, 0, 0], [0, 0, 1], [0, 1, 0], [0, 0, 1]]
PC = [[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.25, 0.5, 0.25], [0.8, 0.15, 0.05]]
LC = [[2.0, -1.0, 0.5], [0.1, 0.2, 0.3], [-0.5, 1.5, 0.0], [3.0, 0.0, -2.0]]
YS = [0, 2, 1, 2]
YR = [[1.0, 2.0], [0.5, -1.0], [3.0, 0.2]]
PR = [[1.5, 1.0], [0.1, -0.5], [2.0, 0.5]]
YP = [[1.0, 2.0], [0.5, 0.0], [3.0, 0.2]]
PP = [[1.5, 1.0], [0.1, 0.5], [2.0, 0.5]]
YH = [[1, 0], [0, 1], [1, 1]]
SW4 = [0.5, 2.0, 1.0, 0.0]
SW3 = [0.5, 2.0, 1.0]
L = losses
KERAS_CASES = [
    ("bce", L.BinaryCrossentropy(), YB, PB, None, 0.29900115728378296),
    ("bce_sw", L.BinaryCrossentropy(), YB, PB, SW4, 0.2524482309818268),
    ("bce_logits_ls", L.BinaryCrossentropy(from_logits=True, label_smoothing=0.1), YB, LB, None, 0.472160667181015),
    ("focal", L.BinaryFocalCrossentropy(), YB, PB, None, 0.030953042209148407),
    ("focal_bal_logits", L.BinaryFocalCrossentropy(apply_class_balancing=True, from_logits=True, gamma=1.5),
     YB, LB, None, 0.08244206011295319),
    ("cce", L.CategoricalCrossentropy(), YC, PC, None, 1.1390950679779053),
    ("cce_logits_ls_sw", L.CategoricalCrossentropy(from_logits=True, label_smoothing=0.2), YC, LC, SW4,
     0.7135576009750366),
    ("scce", L.SparseCategoricalCrossentropy(), YS, PC, None, 1.1390950679779053),
    ("scce_logits_sw", L.SparseCategoricalCrossentropy(from_logits=True), [[c] for c in YS], LC, SW4,
     0.6077243089675903),
    ("scce_ignore", L.SparseCategoricalCrossentropy(from_logits=True, ignore_class=2), YS, LC, None,
     0.2738335132598877),
    ("mse", L.MeanSquaredError(), YR, PR, None, 0.4583333432674408),
    ("mse_sw", L.MeanSquaredError(), YR, PR, SW3, 0.42250001430511475),
    ("mae", L.MeanAbsoluteError(), YR, PR, None, 0.6166666746139526),
    ("mape", L.MeanAbsolutePercentageError(), YR, PR, None, 68.8888931274414),
    ("msle", L.MeanSquaredLogarithmicError(), YR, PR, None, 0.07382417470216751),
    ("huber", L.Huber(delta=0.6), YR, PR, None, 0.20250000059604645),
    ("log_cosh", L.LogCosh(), YR, PR, None, 0.205014169216156),
    ("poisson", L.Poisson(), YP, PP, None, 0.734169065952301),
    ("kld", L.KLDivergence(), YC, PC, None, 1.1390920877456665),
    ("hinge", L.Hinge(), YH, PR, None, 0.8499999642372131),
    ("squared_hinge", L.SquaredHinge(), YH, PR, SW3, 1.528333306312561),
    ("categorical_hinge", L.CategoricalHinge(), YC, LC, None, 1.725000023841858),
    ("cosine_similarity", L.CosineSimilarity(), YR, PR, None, -0.9390446543693542),
]


@pytest.mark.parametrize("case", KERAS_CASES, ids=[c[0] for c in KERAS_CASES])
def test_matches_keras(case):
    _, loss, y, p, sw, expected = case
    sw = None if sw is None else torch.tensor(sw)
    out = loss(torch.tensor(y), torch.tensor(p, dtype=torch.float32), sw)
    assert out.dtype == torch.float32
    assert out.item() == pytest.approx(expected, rel=1e-6, abs=1e-6)


# ---------------------------------------------------------------------- targets and Keras options

def test_int_and_bool_targets_with_bce():
    y, p = _data("bin", d=1, seed=6)
    ref = _expected("binary_crossentropy", y, p)
    bce = get("binary_crossentropy")
    pred = _t(p)
    for y_in in (torch.as_tensor(y.reshape(N), dtype=torch.long), torch.as_tensor(y, dtype=torch.int32),
                 torch.as_tensor(y.reshape(N)).bool()):
        assert bce(y_in, pred).item() == pytest.approx(ref, rel=1e-9)
    # nn.BCELoss given int labels works too (torch alone raises on the dtype)
    assert get(nn.BCELoss())(torch.as_tensor(y.reshape(N), dtype=torch.long), pred).item() == pytest.approx(
        np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p))), rel=1e-9)


def test_sparse_labels_any_shape_and_dtype():
    y, p = _data("sparse", seed=7)
    ref = _expected("sparse_categorical_crossentropy", y, p)
    scce = get("sparse_categorical_crossentropy")
    for y_in in (_t(y), _t(y.reshape(N, 1)), torch.as_tensor(y, dtype=torch.long),
                 torch.as_tensor(y.reshape(N, 1), dtype=torch.int32), torch.as_tensor(y, dtype=torch.float32)):
        assert scce(y_in, _t(p)).item() == pytest.approx(ref, rel=1e-9)


def test_from_logits_variants_agree_with_probabilities():
    torch.manual_seed(0)
    z = torch.randn(N, 4, dtype=torch.float64)
    labels = torch.randint(0, 4, (N,))
    onehot = F.one_hot(labels, 4).double()
    scce = losses.SparseCategoricalCrossentropy
    cce = losses.CategoricalCrossentropy
    ref = F.cross_entropy(z, labels).item()
    assert scce(from_logits=True)(labels, z).item() == pytest.approx(ref, rel=1e-9)
    assert scce()(labels, z.softmax(-1)).item() == pytest.approx(ref, rel=1e-9)
    assert cce(from_logits=True)(onehot, z).item() == pytest.approx(ref, rel=1e-9)
    assert cce()(onehot, z.softmax(-1)).item() == pytest.approx(ref, rel=1e-9)
    yb = torch.randint(0, 2, (N, 1))
    zb = torch.randn(N, 1, dtype=torch.float64)
    refb = F.binary_cross_entropy_with_logits(zb, yb.double()).item()
    assert losses.BinaryCrossentropy(from_logits=True)(yb, zb).item() == pytest.approx(refb, rel=1e-9)
    assert losses.BinaryCrossentropy()(yb, zb.sigmoid()).item() == pytest.approx(refb, rel=1e-9)
    assert get("bce_with_logits")(yb, zb).item() == pytest.approx(refb, rel=1e-9)


def test_label_smoothing():
    y, p = _data("bin", seed=8)
    ys = y * 0.8 + 0.1  # label_smoothing=0.2 squeezes towards 0.5
    assert losses.BinaryCrossentropy(label_smoothing=0.2)(_t(y), _t(p)).item() == pytest.approx(
        _bce(ys, p).mean(), rel=1e-9)
    y, p = _data("cat", d=4, seed=8)
    ys = y * 0.7 + 0.3 / 4
    assert losses.CategoricalCrossentropy(label_smoothing=0.3)(_t(y), _t(p)).item() == pytest.approx(
        _cce(ys, p).mean(), rel=1e-9)


def test_ignore_class_averages_over_the_kept_labels():
    torch.manual_seed(1)
    z = torch.randn(8, 5, dtype=torch.float64)
    labels = torch.tensor([0, 255, 3, 255, 1, 4, 255, 2])
    keep = labels != 255
    ref = F.cross_entropy(z[keep], labels[keep]).item()
    loss = losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=255)
    assert loss(labels, z).item() == pytest.approx(ref, rel=1e-9)
    sw = torch.linspace(0.5, 2.0, 8, dtype=torch.float64)
    ref_w = (F.cross_entropy(z, labels.clamp_max(4), reduction="none") * sw)[keep].sum() / keep.sum()
    assert loss(labels, z, sw).item() == pytest.approx(ref_w.item(), rel=1e-9)
    assert loss(torch.full((8,), 255), z).item() == 0.0


def test_hinge_keeps_minus_one_one_labels():
    y = torch.tensor([[-1.0], [1.0], [1.0]])
    p = torch.tensor([[0.3], [0.2], [-0.5]])
    assert get("hinge")(y, p).item() == pytest.approx(np.mean([1.3, 0.8, 1.5]), rel=1e-6)
    assert get("hinge")((y + 1) / 2, p).item() == pytest.approx(np.mean([1.3, 0.8, 1.5]), rel=1e-6)


def test_per_timestep_sample_weight():
    torch.manual_seed(2)
    y, p = torch.randn(4, 5, 3, dtype=torch.float64), torch.randn(4, 5, 3, dtype=torch.float64)
    sw = torch.rand(4, 5, dtype=torch.float64)
    per_step = ((p - y) ** 2).mean(-1)
    assert get("mse")(y, p, sw).item() == pytest.approx(((per_step * sw).sum() / 20).item(), rel=1e-9)
    sw1 = torch.rand(4, dtype=torch.float64)  # one weight per sequence covers every timestep
    assert get("mse")(y, p, sw1).item() == pytest.approx(((per_step * sw1[:, None]).sum() / 20).item(), rel=1e-9)


def test_other_keras_reductions():
    y, p = torch.zeros(4, 1), torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    sw = torch.tensor([1.0, 0.0, 1.0, 0.0])
    assert losses.MeanAbsoluteError(reduction="sum")(y, p).item() == 10.0
    assert losses.MeanAbsoluteError(reduction="mean_with_sample_weight")(y, p, sw).item() == 2.0
    assert losses.MeanAbsoluteError(reduction="none")(y, p, sw).tolist() == [1.0, 0.0, 3.0, 0.0]
    with pytest.raises(ValueError, match="reduction"):
        losses.MeanAbsoluteError(reduction="avg")


# ----------------------------------------------------------------------------------- torch losses

def test_mse_module_and_functional_never_broadcast():
    torch.manual_seed(3)
    y, p = torch.randn(N, dtype=torch.float64), torch.randn(N, 1, dtype=torch.float64)
    right = ((p.squeeze(1) - y) ** 2).mean().item()
    wrong = ((p - y) ** 2).mean().item()  # the (N, N) broadcast torch does on its own
    assert right != pytest.approx(wrong)
    for fn in (nn.MSELoss(), F.mse_loss):
        assert get(fn)(y, p).item() == pytest.approx(right, rel=1e-9)
        assert get(fn)(y.reshape(N, 1), p.reshape(N)).item() == pytest.approx(right, rel=1e-9)


def test_cross_entropy_module_with_label_column_and_float_labels():
    torch.manual_seed(4)
    z, labels = torch.randn(N, 3), torch.randint(0, 3, (N,))
    ref = F.cross_entropy(z, labels).item()
    ce = get(nn.CrossEntropyLoss())
    for y_in in (labels, labels[:, None], labels[:, None].float(), labels.int()):
        assert ce(y_in, z).item() == pytest.approx(ref, rel=1e-6)
    # probability targets shaped like the logits stay probabilities, as torch allows
    probs = torch.softmax(torch.randn(N, 3), -1)
    assert ce(probs, z).item() == pytest.approx(F.cross_entropy(z, probs).item(), rel=1e-6)


def test_torch_module_with_sample_weight_uses_one_unreduced_copy():
    torch.manual_seed(5)
    module = nn.CrossEntropyLoss(label_smoothing=0.1)
    loss = get(module)
    z, labels = torch.randn(N, 4, dtype=torch.float64), torch.randint(0, 4, (N,))
    sw = torch.rand(N, dtype=torch.float64)
    ref = (F.cross_entropy(z, labels, reduction="none", label_smoothing=0.1) * sw).sum() / N
    first = loss._unreduced
    assert loss(labels, z, sw).item() == pytest.approx(ref.item(), rel=1e-9)
    assert loss(labels, z, sw).item() == pytest.approx(ref.item(), rel=1e-9)
    assert loss._unreduced is first and first is not module and first.reduction == "none"
    assert module.reduction == "mean"  # the user's module is untouched
    assert loss(labels, z).item() == pytest.approx(F.cross_entropy(z, labels, label_smoothing=0.1).item())


def test_torch_module_buffers_follow_the_users_module():
    pos_weight = torch.tensor([3.0])
    module = nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    loss = get(module)
    module.double()  # the unreduced copy shares the buffers, so it sees the converted pos_weight
    y, z = torch.tensor([1, 0, 1, 1]), torch.tensor([[0.2], [-1.0], [1.5], [-0.3]], dtype=torch.float64)
    sw = torch.tensor([1.0, 2.0, 0.0, 1.0], dtype=torch.float64)
    per = F.binary_cross_entropy_with_logits(z, y[:, None].double(), pos_weight=pos_weight.double(),
                                             reduction="none").squeeze(1)
    assert loss(y, z, sw).item() == pytest.approx(((per * sw).sum() / 4).item(), rel=1e-9)
    assert loss._unreduced.pos_weight.dtype == torch.float64


def test_torch_module_multi_dim_outputs_mean_over_non_batch_axes():
    torch.manual_seed(6)
    y, p = torch.randn(N, 3, dtype=torch.float64), torch.randn(N, 3, dtype=torch.float64)
    sw = torch.rand(N, dtype=torch.float64)
    ref = (((p - y) ** 2).mean(1) * sw).sum() / N
    assert get(nn.MSELoss())(y, p, sw).item() == pytest.approx(ref.item(), rel=1e-9)
    assert get(F.mse_loss)(y, p, sw).item() == pytest.approx(ref.item(), rel=1e-9)
    # sequence cross-entropy (N, C, T) with per-timestep weights (N, T)
    z, labels, swt = torch.randn(N, 4, 5, dtype=torch.float64), torch.randint(0, 4, (N, 5)), torch.rand(N, 5)
    ref = (F.cross_entropy(z, labels, reduction="none") * swt.double()).sum() / (N * 5)
    assert get(nn.CrossEntropyLoss())(labels, z, swt).item() == pytest.approx(ref.item(), rel=1e-9)


def test_torch_reduction_sum_and_none():
    y, p = torch.zeros(4, 1), torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    summed = get(nn.L1Loss(reduction="sum"))
    assert summed(y, p).item() == 10.0  # without weights the module runs exactly as given
    with pytest.raises(ValueError, match="sample_weight.*reduction='sum'"):
        summed(y, p, torch.ones(4))
    unreduced = get(nn.L1Loss(reduction="none"))
    assert unreduced(y, p).item() == 2.5
    assert unreduced(y, p, torch.tensor([1.0, 1.0, 0.0, 0.0])).item() == 0.75


def test_torch_functionals_and_partials():
    import functools
    torch.manual_seed(7)
    z, labels = torch.randn(N, 3, dtype=torch.float64), torch.randint(0, 3, (N, 1))
    sw = torch.rand(N, dtype=torch.float64)
    fn = functools.partial(F.cross_entropy, label_smoothing=0.2)
    loss = get(fn)
    assert (loss.kind, loss.from_logits, loss.name) == ("sparse_categorical", True, "cross_entropy")
    per = F.cross_entropy(z, labels[:, 0], reduction="none", label_smoothing=0.2)
    assert loss(labels, z).item() == pytest.approx(per.mean().item(), rel=1e-9)
    assert loss(labels, z, sw).item() == pytest.approx(((per * sw).sum() / N).item(), rel=1e-9)


def test_custom_module_without_reduction():
    class Abs(nn.Module):
        def forward(self, pred, target):
            return (pred - target).abs()

    loss = get(Abs())
    y, p = torch.zeros(4), torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    assert loss(y, p).item() == 2.5
    assert loss(y, p, torch.tensor([0.0, 0.0, 1.0, 1.0])).item() == 1.75


# ----------------------------------------------------------------------- get, kinds, callables

@pytest.mark.parametrize("identifier,kind,from_logits,name", [
    ("binary_crossentropy", "binary", False, "binary_crossentropy"),
    ("bce", "binary", False, "binary_crossentropy"),
    ("categorical_crossentropy", "categorical", False, "categorical_crossentropy"),
    ("sparse_categorical_crossentropy", "sparse_categorical", False, "sparse_categorical_crossentropy"),
    ("mse", "regression", False, "mean_squared_error"),
    ("huber", "regression", False, "huber_loss"),
    ("kld", "categorical", False, "kl_divergence"),
    ("cross_entropy", "sparse_categorical", True, "cross_entropy"),
    ("bce_with_logits", "binary", True, "bce_with_logits"),
    (losses.BinaryCrossentropy(from_logits=True), "binary", True, "binary_crossentropy"),
    (nn.BCEWithLogitsLoss(pos_weight=torch.tensor([2.0])), "binary", True, "BCEWithLogitsLoss"),
    (nn.BCELoss(), "binary", False, "BCELoss"),
    (nn.CrossEntropyLoss(), "sparse_categorical", True, "CrossEntropyLoss"),
    (nn.NLLLoss(), "sparse_categorical", True, "NLLLoss"),
    (nn.MSELoss(), "regression", False, "MSELoss"),
    (nn.MSELoss, "regression", False, "MSELoss"),
    (F.mse_loss, "regression", False, "mse_loss"),
    (F.cross_entropy, "sparse_categorical", True, "cross_entropy"),
    (F.binary_cross_entropy_with_logits, "binary", True, "binary_cross_entropy_with_logits"),
    (losses.Huber, "regression", False, "huber_loss"),
])
def test_kind_from_logits_and_name(identifier, kind, from_logits, name):
    loss = get(identifier)
    assert isinstance(loss, losses.Loss)
    assert (loss.kind, loss.from_logits, loss.name) == (kind, from_logits, name)


@pytest.mark.parametrize("name", ["bce", "binary_focal_crossentropy", "mse", "sparse_categorical_crossentropy"])
def test_low_precision_predictions_computed_in_float32_also_under_autocast(name):
    kind = REFERENCE[_canonical(name)][0]
    y, p = _data(kind, seed=9)
    p16 = torch.as_tensor(p, dtype=torch.bfloat16)
    ref = get(name)(_t(y, torch.float32), p16.float())
    out = get(name)(_t(y, torch.float32), p16)
    assert out.dtype == torch.float32 and out.item() == pytest.approx(ref.item(), rel=1e-6)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the branch that avoids F.binary_cross_entropy
        out = get(name)(_t(y, torch.float32), p16)
    assert out.dtype == torch.float32 and out.item() == pytest.approx(ref.item(), rel=1e-5)


def test_numpy_and_list_inputs():
    y, p = np.array([0, 1, 1, 0]), np.array([[0.2], [0.7], [0.9], [0.4]], dtype=np.float32)
    ref = _bce(y.reshape(4, 1), p.astype(np.float64)).mean()
    assert get("bce")(y, p, [1.0, 1.0, 1.0, 1.0]).item() == pytest.approx(ref, rel=1e-6)
    assert get(nn.BCELoss())(y.tolist(), torch.from_numpy(p)).item() == pytest.approx(ref, rel=1e-6)


def test_get_returns_loss_objects_as_is_and_none_as_none():
    obj = losses.Huber(delta=2.0)
    assert get(obj) is obj
    assert get(None) is None


def test_keras_order_callable():
    def my_loss(y_true, y_pred):
        assert y_true.dtype == y_pred.dtype and y_true.shape == y_pred.shape  # reconciled before the call
        return ((y_pred - y_true) ** 2).sum(-1)

    loss = get(my_loss)
    assert (loss.name, loss.kind, loss.from_logits) == ("my_loss", None, None)
    y, p = torch.tensor([1, 2, 3, 4]), torch.zeros(4, 1)
    assert loss(y, p).item() == 7.5
    assert loss(y, p, torch.tensor([1.0, 1.0, 0.0, 0.0])).item() == 1.25
    assert get(lambda t, q: (q - t).abs().mean())(y, p).item() == 2.5  # a scalar is fine too


def test_loss_subclass_keras_style():
    class Cubed(losses.Loss):
        def call(self, y_true, y_pred):
            return (y_pred - y_true).abs().pow(3).mean(-1)

    loss = Cubed()
    assert loss.name == "cubed"
    assert loss(torch.zeros(2, 1), torch.full((2, 1), 2.0), torch.tensor([1.0, 0.0])).item() == 4.0


# -------------------------------------------------------------------------------------- errors

def test_unknown_name_error_lists_names():
    with pytest.raises(ValueError, match=r"`loss`.*'mean_sqared_error'.*mean_squared_error"):
        get("mean_sqared_error")


@pytest.mark.parametrize("bad", [3, 2.5, [1, 2]])
def test_wrong_type_error(bad):
    with pytest.raises(TypeError, match=r"`loss`.*" + type(bad).__name__):
        get(bad)


def test_shape_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"^y: got targets of shape \(2,\) .*\(2, 3\).*'sparse_categorical_cro"):
        get("categorical_crossentropy")(torch.tensor([0, 1]), torch.rand(2, 3))
    with pytest.raises(ValueError, match=r"^y: got labels of shape \(3, 3\).*'categorical_crossentropy'"):
        get("sparse_categorical_crossentropy")(torch.eye(3), torch.rand(3, 3))
    with pytest.raises(ValueError, match=r"^sample_weight: got shape \(5,\)"):
        get("mse")(torch.zeros(4), torch.zeros(4, 1), torch.ones(5))


# ------------------------------------------------------------------------------- prepare_targets

def test_prepare_targets_does_once_what_every_call_does_to_a_batch():
    y = torch.tensor([0, 1, 1, 0, 1, 0])
    y_pred = torch.rand(4, 1)  # one batch
    for loss in (nn.BCELoss(), "binary_crossentropy", "mse", F.mse_loss):
        container = LossContainer(loss)
        ready = container.prepare_targets(y, y_pred)
        assert ready.dtype == torch.float32 and ready.shape == (N, 1), loss
        batch = torch.rand(N, 1)
        assert torch.equal(container(ready, batch)[0], container(y, batch)[0]), loss
        assert container.prepare_targets(ready, y_pred) is None  # already prepared: nothing to do


def test_prepare_targets_leaves_what_it_cannot_do_ahead():
    labels = torch.tensor([[1], [2], [0]])
    assert LossContainer(nn.CrossEntropyLoss()).prepare_targets(labels, torch.rand(2, 3)).shape == (3,)
    # class probabilities for CrossEntropyLoss: already float, shaped like the prediction
    assert LossContainer(nn.CrossEntropyLoss()).prepare_targets(torch.rand(5, 3), torch.rand(2, 3)) is None
    # a loss that masks entries reconciles in its own way
    masked = losses.SparseCategoricalCrossentropy(ignore_class=0)
    assert masked.prepare_targets(labels, torch.rand(2, 3)) is None

    class Own(losses.Loss):
        def _prepare(self, y_true, y_pred):
            return y_true.float() * 2, y_pred

        def call(self, y_true, y_pred):
            return (y_true - y_pred).abs().mean(-1)

    assert Own().prepare_targets(labels, torch.rand(2, 1)) is None
    # several outputs, or targets that are not one tensor
    assert LossContainer(["mse", "mse"]).prepare_targets(labels, [torch.rand(2, 1)] * 2) is None
    assert LossContainer("mse").prepare_targets([labels], torch.rand(2, 1)) is None


# --------------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("typo, suggestion", [
    ("msee", "'mse'"), ("mean_sqared_error", "'mean_squared_error'"), ("binary_crossentropy_loss",
     "'binary_crossentropy'"), ("BinaryCrossEntropy", "'binary_crossentropy'"),
    ("CrossEntropyLoss", r"the torch module nn\.CrossEntropyLoss\(\)\? pass an instance"),
])
def test_an_unknown_loss_name_suggests_the_closest_one(typo, suggestion):
    with pytest.raises(ValueError, match=r"`loss`: '" + typo + r"' \(did you mean " + suggestion):
        get(typo)
    with pytest.raises(ValueError, match=r"'zzzz'\. Expected one of"):  # nothing close: no guess
        get("zzzz")


@pytest.mark.parametrize("loss, y_true, y_pred, ok", [
    ("mse", (8,), (8, 1), True), ("mse", (8, 3), (8, 1), False), ("mse", (8,), (8, 4, 1), False),
    ("mse", (1, 1), (8, 1), False), ("binary_crossentropy", (8, 2), (8, 2), True),
    ("categorical_crossentropy", (8,), (8, 3), False), ("sparse_categorical_crossentropy", (8, 1), (8, 3), True),
    ("sparse_categorical_crossentropy", (8, 3), (8, 3), False), (nn.CrossEntropyLoss(), (8,), (8, 3), True),
    (nn.CrossEntropyLoss(), (8, 3), (8, 3), True), (nn.CrossEntropyLoss(), (8, 2), (8, 3), False),
    (nn.CrossEntropyLoss(), (8, 5), (8, 3, 5), True), (nn.MSELoss(), (8, 3), (8, 1), False),
    (F.l1_loss, (8, 1), (8,), True), (lambda t, p: p - t, (8,), (8, 3), True),  # labels against scores
    (lambda t, p: p - t, (8, 3), (8, 1), False), (lambda t, p: p - t, (4, 1), (8, 1), False),
    (nn.CosineEmbeddingLoss(), (8, 3), (8, 1), False),  # a torch loss fitkit has no entry for
])
def test_every_loss_refuses_targets_that_cannot_meet_its_outputs(loss, y_true, y_pred, ok):
    fn = get(loss)
    if ok:
        fn.check_targets(torch.zeros(y_true), torch.zeros(y_pred))
        return
    with pytest.raises(ValueError, match=r"^y: got (targets|labels) (of shape|for)"):
        fn.check_targets(torch.zeros(y_true), torch.zeros(y_pred))
    with pytest.raises(ValueError, match=r"^y: got"):  # each call checks as well: no silent broadcast
        fn(torch.zeros(y_true), torch.zeros(y_pred))


def test_a_loss_subclass_cannot_broadcast_either():
    class Cubed(losses.Loss):
        def call(self, y_true, y_pred):
            return ((y_pred - y_true) ** 3).abs().mean(-1)

    with pytest.raises(ValueError, match=r"^y: got targets of shape \(4,\) for model outputs of shape \(4, 1\)"):
        Cubed()(torch.zeros(4), torch.ones(4, 1))
    assert Cubed()(torch.zeros(4, 1), torch.ones(4, 1)).item() == 1.0
