"""The teaching notebooks run top to bottom on the CPU, and their key cells say what their text claims.

Each notebook is executed on a copy (the committed file, outputs and all, is never rewritten) with
``notebooks/refresh.py``'s ``execute``, the function ``python notebooks/refresh.py`` uses to refresh
the committed outputs. nbclient (not nbmake) runs them: the test reads the outputs of the cells it
names by tag, which nbmake's pass/fail per notebook cannot do.
"""

import importlib.util
import json
import pathlib
import shutil

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"

# tag of a cell -> what its output must say (whitespace-insensitive): the numbers and words the
# notebook's text relies on.
CLAIMS = {
    "01_how_many_fit_calls.ipynb": {
        "lr-finder": ["suggestion=", "the loss diverged"],
        "diagnose-too-few": ["still improving: yes", "Advice: Train longer"],
        "diagnose-too-many": ["best val_loss: 0.3019 at epoch 26", "overfitting: began after epoch 26",
                              "weights: those of the last epoch (150), not of the best (26)"],
        "loop-map": ["EarlyStopping decides whether to stop: after 20 epochs without val_loss improving",
                     "EarlyStopping puts back the weights of the best epoch"],
        "diagnose-early-stopping": ["best val_loss: 0.3019 at epoch 26",
                                    "weights: restored to those of epoch 26 by EarlyStopping"],
        "too-early": ["stopped after 7 epochs at val_loss 0.319; the patient run reached 0.302"],
        "plateau": ["Epoch 10: ReduceLROnPlateau reducing learning rate"],
        "diagnose-plateau": ["best val_loss: 0.3104 at epoch 17", "first at the end of epoch 10"],
        "diagnose-auto": ["weights: restored to those of epoch 26 by EarlyStopping"],
        "plot-histories": [],
        "fit-several-times": ["same weights: True"],
        "diagnose-third-call": ["started from a model trained for 20 epochs in earlier fit calls",
                                "Train for about 26 epochs in all (20 before this fit call and 6 in it)"],
        "initial-epoch": ["epochs of the last call: [21, 22, 23, 24, 25, 26, 27, 28, 29, 30]", "same weights: True"],
    },
    "02_from_keras.ipynb": {
        "twin": ["epochs run: 89, test accuracy: 0.951"],
        "history": ["['accuracy', 'learning_rate', 'loss', 'val_accuracy', 'val_loss']",
                    "weights: restored to those of epoch 79"],
        "logits": ["test accuracy: 0.951"],
        "device": ["model.device: cpu", "predict returned: ndarray float32 (143, 1)"],
        "state-dict": ["0.weight (64, 30)", "loaded model predicts the same: True"],
    },
    "03_from_a_pytorch_loop.ipynb": {
        "loop-map": ["train_step(data): forward pass, loss, gradients cleared, backward pass, optimizer.step()"],
        "fit-1": ["same epoch losses: True", "same weights: True"],
        "fit-2": ["epochs run: hand loop 14, fit 14 (early_stopping)", "same validation losses: True",
                  "same weights: True"],
        "diagnose-2": ["weights: those of the last epoch (14), not of the best (3)"],
        "fit-3": ["same cuts: True", "same weights: True", "(49, 0.0125, 0.00625)"],
    },
}
# Cells whose output is a picture.
PICTURES = {
    "01_how_many_fit_calls.ipynb": ["lr-finder", "plot-histories"],
    "02_from_keras.ipynb": [],
    "03_from_a_pytorch_loop.ipynb": [],
}
MAX_BYTES = 400_000


def _refresh_module():
    spec = importlib.util.spec_from_file_location("notebooks_refresh", NOTEBOOKS / "refresh.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _text(cell):
    """A cell's outputs as text, whitespace folded (the reports wrap their lines)."""
    parts = []
    for output in cell.get("outputs", []):
        text = output.get("text", "") if output.get("output_type") == "stream" else \
            output.get("data", {}).get("text/plain", "")
        parts.append(text if isinstance(text, str) else "".join(text))  # a file on disk holds lists of lines
    return " ".join(" ".join(parts).split())


def _cells_by_tag(cells):
    found = {}
    for cell in cells:
        for tag in cell.get("metadata", {}).get("tags", []):
            found[tag] = cell
    return found


def _check(cells, name):
    by_tag = _cells_by_tag(cells)
    for tag, claims in CLAIMS[name].items():
        assert tag in by_tag, f"{name}: no cell tagged {tag!r}"
        text = _text(by_tag[tag])
        for claim in claims:
            assert " ".join(claim.split()) in text, f"{name}, cell {tag!r}: expected {claim!r} in {text[:2000]!r}"
    for tag in PICTURES[name]:
        assert any("image/png" in o.get("data", {}) for o in by_tag[tag]["outputs"]), f"{name}: {tag} drew nothing"


def test_the_notebooks_are_the_three_of_the_course():
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == sorted(CLAIMS)
    assert [pathlib.Path(p).name for p in _refresh_module().notebooks()] == sorted(CLAIMS)


@pytest.mark.parametrize("name", sorted(CLAIMS))
def test_a_notebook_runs_on_the_cpu_and_its_cells_say_what_its_text_claims(name, tmp_path):
    pytest.importorskip("nbclient")
    committed = (NOTEBOOKS / name).read_bytes()
    copy = tmp_path / name
    shutil.copy(NOTEBOOKS / name, copy)
    nb = _refresh_module().execute(copy)
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"{name}: {errors[0]['ename']}: {errors[0]['evalue']}"
    _check(nb.cells, name)
    assert (NOTEBOOKS / name).read_bytes() == committed  # run on a copy: the committed file is untouched


@pytest.mark.parametrize("name", sorted(CLAIMS))
def test_a_committed_notebook_reads_well_without_running_it(name):
    path = NOTEBOOKS / name
    assert path.stat().st_size < MAX_BYTES, f"{name} is {path.stat().st_size} bytes"
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code and all(c["execution_count"] is not None for c in code), f"{name}: run it with notebooks/refresh.py"
    assert [c["execution_count"] for c in code] == list(range(1, len(code) + 1))  # top to bottom, once
    assert not any(o.get("output_type") == "error" for c in code for o in c["outputs"])
    _check(nb["cells"], name)
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
