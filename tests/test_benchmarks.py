"""The benchmark command runs: a smoke run on tiny sizes prints the table with its ratios.

No timing is asserted here (the figures live in the README's "Speed" section); this only keeps
``python -m benchmarks`` working as the code around it changes.
"""

import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _run(*args):
    return subprocess.run([sys.executable, "-m", "benchmarks", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def test_quick_run_prints_the_table_with_ratios():
    proc = _run("--quick", "--only", "article", "--peer-python", sys.executable)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "fitkit / hand-written PyTorch" in out
    row = next(line for line in out.splitlines() if line.startswith("article "))
    hand, fk, ratio = row.split()[1:4]
    assert float(hand) > 0 and float(fk) > 0
    hand, fk, ratio = float(hand), float(fk), float(ratio)
    # The times are printed to 3 decimals, so fk / hand recomputed from them is only that exact.
    rounding = (fk / hand) * (0.0005 / hand + 0.0005 / fk) + 1e-3
    assert ratio == pytest.approx(fk / hand, abs=rounding)
    assert re.search(r"<= 1\.10\s+(yes|NO)", row)
    assert "same" in row, "fitkit and its twin must end on the same loss (the same work)"
    # A peer that is not installed is skipped with a note, never an error.
    for peer in ("keras", "lightning", "poutyne", "skorch"):
        assert f"note: {peer} skipped" in out or re.search(rf"^article\s+{peer}\b", out, flags=re.M)


def test_unknown_workload_is_an_error_naming_the_choices():
    proc = _run("--only", "nope")
    assert proc.returncode != 0
    assert "unknown workload 'nope'" in proc.stderr and "article" in proc.stderr


def test_versus_compares_this_tree_with_a_git_revision_in_one_process():
    proc = subprocess.run([sys.executable, "-m", "benchmarks.versus", "HEAD", "--pairs", "2", "--epochs", "1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = re.findall(r"ratio (\d+\.\d+) \(IQR (\d+\.\d+)-(\d+\.\d+)\)", proc.stdout)
    assert len(rows) == 4 and all(float(r) > 0 and float(lo) <= float(hi) for r, lo, hi in rows)


def test_quick_run_of_a_row_at_torchs_default_thread_count():
    proc = _run("--quick", "--only", "article-threads", "--no-peers")
    assert proc.returncode == 0, proc.stderr
    row = next(line for line in proc.stdout.splitlines() if line.startswith("article-threads "))
    assert re.search(r"<= 0\.50\s+(yes|NO)\s+same weights; wall time, torch's \d+ threads", row)
