"""The README's two commands are what CI runs, and the README's example is real code."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _bash_blocks(text):
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


def test_ci_runs_exactly_the_readme_commands():
    readme = (ROOT / "README.md").read_text()
    blocks = _bash_blocks(readme)
    assert len(blocks) >= 2, "the README must give an install command and a test command"
    install, test = blocks[0], blocks[1]
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert install in ci_lines
    assert test in ci_lines
    assert "-c constraints.txt" in install and "fitkit.demo" in install
    assert "pytest" in test


def test_constraints_pin_the_cpu_torch_and_the_package_asks_for_a_range():
    constraints = (ROOT / "constraints.txt").read_text()
    assert re.search(r"^torch==2\.13\.0$", constraints, flags=re.M)
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'"torch>=\d', pyproject)
    assert '"torch==' not in pyproject


def test_the_first_example_runs_as_pasted(capsys):
    readme = (ROOT / "README.md").read_text()
    example = re.findall(r"```python\n(.*?)```", readme, flags=re.S)[0]
    scope = {}
    exec(compile(example.replace("history = model.fit(x, y,", "history = model.fit(x, y, verbose=0,"),
                 "README.md", "exec"), scope)
    history = scope["history"]
    assert 1 < len(history.epoch) < 100 and history.stop_reason == "early_stopping"
    assert history.history["val_accuracy"][history.best_epoch()] > 0.75
    assert "epoch" in capsys.readouterr().out.lower()  # print(history.diagnose()) wrote its report
