"""The README's History picture is what docs/make_history_plot.py draws, and the README links the notebooks.

Pixels differ from one matplotlib version or machine to the next, so the test compares what the
picture was drawn from: the script keeps its History's numbers in the PNG, and the test trains again
and compares them, and checks the picture's size in pixels.
"""

import importlib.util
import json
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _script():
    spec = importlib.util.spec_from_file_location("make_history_plot", ROOT / "docs" / "make_history_plot.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_readme_picture_is_what_the_script_draws_from_its_fit():
    pytest.importorskip("matplotlib")
    pytest.importorskip("sklearn")
    from PIL import Image  # matplotlib's own dependency

    script = _script()
    with Image.open(script.PNG) as image:
        size, text = image.size, dict(image.text)
    assert size == script.SIZE
    assert text.get("Software") == "fitkit docs/make_history_plot.py"
    drawn = json.loads(text[script.KEY])
    fresh = script.numbers(script.train())
    # What decides the picture's shape exactly; the curves to float32 round-off.
    for key in ("epoch", "stop_reason", "restored_epoch", "stop_monitor", "epochs_before", "logged_at", "params"):
        assert fresh[key] == drawn[key], key
    assert fresh["history"].keys() == drawn["history"].keys()
    for key, values in fresh["history"].items():
        assert values == pytest.approx(drawn["history"][key], rel=1e-5, abs=1e-7), key
    assert fresh["last_learning_rate"] == pytest.approx(drawn["last_learning_rate"])


def test_the_readme_shows_the_picture_and_links_every_notebook():
    readme = (ROOT / "README.md").read_text()
    assert "![" in readme and "(docs/history.png)" in readme
    assert "docs/make_history_plot.py" in readme
    linked = set(re.findall(r"\((notebooks/[^)]+\.ipynb)\)", readme))
    assert linked == {f"notebooks/{p.name}" for p in (ROOT / "notebooks").glob("*.ipynb")}
