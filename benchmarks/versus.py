"""``python -m benchmarks.versus REF``: fitkit against an earlier fitkit, in one process, pair by pair.

A refactor must change no speed. Fresh-process medians (``python -m benchmarks``) move by 5-10 % between
passes on a shared machine, more than a refactor's effect; this tool removes that noise. It extracts
``fitkit/`` at the git revision ``REF`` into a temporary folder as the package ``fitkit_ref``, imports
both versions into one single-threaded process, and times the same fit with each, alternating which
goes first, ``--pairs`` times. It prints the median of the pairwise ratios (this tree / REF) with their
interquartile range; 1.00 means no change.

    python -m benchmarks.versus f861992                   # article fit (both optimizer forms), evaluate, predict
    python -m benchmarks.versus HEAD~3 --pairs 51 --epochs 30

Imports fitkit and torch only in :func:`main` (the package's parent process rule does not apply: this is
a tool of its own, not a child of ``python -m benchmarks``).
"""

import argparse
import io
import os
import pathlib
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent


def extract(ref, folder):
    """``fitkit/`` of git revision ``ref`` as the package ``fitkit_ref`` inside ``folder``."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "fitkit"], check=True,
                             capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    package = pathlib.Path(folder, "fitkit_ref")
    os.rename(pathlib.Path(folder, "fitkit"), package)
    absolute = re.compile(r"\b(from|import) fitkit\b")
    for path in package.rglob("*.py"):
        text = path.read_text()
        path.write_text(absolute.sub(r"\1 fitkit_ref", text))


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.versus", description=__doc__.split("\n")[0])
    parser.add_argument("ref", help="the git revision to compare with (a commit, tag or branch)")
    parser.add_argument("--pairs", type=int, default=31, help="alternating pairs of fits (default 31)")
    parser.add_argument("--epochs", type=int, default=20, help="epochs of the article workload per fit")
    args = parser.parse_args(argv)

    folder = tempfile.mkdtemp(prefix="fitkit-versus-")
    extract(args.ref, folder)
    sys.path.insert(0, folder)
    sys.path.insert(0, str(ROOT))
    import torch

    torch.set_num_threads(1)
    import fitkit
    import fitkit_ref

    from . import workloads

    workloads.warm_up()
    x, y = workloads.article_data()
    x, y = x.numpy(), y.numpy().astype("float32")
    sizes = workloads.sizes("article")

    def fit_seconds(package, named):
        model = package.wrap(workloads.article_model())
        optimizer = package.optimizers.Adam(learning_rate=sizes["lr"]) if named else \
            torch.optim.Adam(model.parameters(), lr=sizes["lr"])
        model.compile(optimizer=optimizer, loss="binary_crossentropy")
        started = time.process_time()
        model.fit(x, y, batch_size=sizes["batch_size"], epochs=args.epochs, verbose=0)
        return time.process_time() - started

    mlp_x, mlp_y = workloads.mlp_data()
    mlp = {}

    def mlp_seconds(package, what):
        if package not in mlp:
            model = package.Sequential(*workloads.mlp_layers())
            model.compile(optimizer="adam", loss=torch.nn.CrossEntropyLoss())
            mlp[package] = model
        model = mlp[package]
        started = time.process_time()
        if what == "evaluate":
            model.evaluate(mlp_x, mlp_y, batch_size=64, verbose=0)
        else:
            model.predict(mlp_x, batch_size=64, verbose=0)
        return time.process_time() - started

    print(f"this tree ({ROOT}) / {args.ref}: {args.pairs} pairs, one thread, process CPU time")
    rows = [(f"article fit, {args.epochs} epochs, the user's torch.optim.Adam", lambda p: fit_seconds(p, False)),
            (f"article fit, {args.epochs} epochs, fitkit.optimizers.Adam", lambda p: fit_seconds(p, True)),
            ("evaluate, MLP on 20000 samples", lambda p: mlp_seconds(p, "evaluate")),
            ("predict, MLP on 20000 samples", lambda p: mlp_seconds(p, "predict"))]
    for label, measure in rows:
        for package in (fitkit, fitkit_ref):
            measure(package)  # first calls pay their lazy costs outside the figures
        ratios, ours, theirs = [], [], []
        for i in range(args.pairs):
            order = (fitkit, fitkit_ref) if i % 2 else (fitkit_ref, fitkit)
            times = {package: measure(package) for package in order}
            ours.append(times[fitkit])
            theirs.append(times[fitkit_ref])
            ratios.append(times[fitkit] / times[fitkit_ref])
        q = statistics.quantiles(ratios, n=4)
        print(f"  {label:52s} ratio {statistics.median(ratios):.3f} (IQR {q[0]:.3f}-{q[2]:.3f});  "
              f"median {statistics.median(ours):.3f} s vs {statistics.median(theirs):.3f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
