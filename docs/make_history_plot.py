"""Draw ``docs/history.png``, the History plot the README shows, from a real fit.

    python docs/make_history_plot.py            # needs the dev extra (scikit-learn, matplotlib)

The run: a small network on scikit-learn's breast-cancer data (569 samples, no download), trained
with early stopping that restores the best weights and a ReduceLROnPlateau, as the README's example.
The PNG carries the numbers it was drawn from (``History.to_dict()`` as JSON in its ``fitkit-history``
text chunk); ``tests/test_docs.py`` trains again and checks that they are the same, so the picture
cannot drift away from the code that makes it. Pixels are not compared: matplotlib draws them a little
differently from one version or machine to the next.
"""

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
PNG = os.path.join(HERE, "history.png")
# The figure's size in pixels: History.plot's 2 x 2 panels at 100 dpi.
SIZE = (1280, 800)
KEY = "fitkit-history"


def train():
    """The README's fit, seeded: returns its History."""
    import numpy as np
    import torch
    from sklearn.datasets import load_breast_cancer
    from torch import nn

    import fitkit
    from fitkit.callbacks import EarlyStopping, ReduceLROnPlateau

    torch.set_num_threads(1)  # the same sums in the same order on every machine
    data = load_breast_cancer()
    x = data.data.astype(np.float32)
    x = (x - x.mean(0)) / x.std(0)  # standardised features
    y = data.target.astype(np.float32)
    fitkit.set_seed(0)
    model = fitkit.Sequential(nn.Linear(30, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1))
    model.compile(optimizer=fitkit.optimizers.Adam(1e-3), loss=nn.BCEWithLogitsLoss(), metrics=["accuracy"])
    return model.fit(x, y, epochs=100, batch_size=32, validation_split=0.2, verbose=0,
                     callbacks=[EarlyStopping(patience=20, restore_best_weights=True),
                                ReduceLROnPlateau(factor=0.5, patience=6)])


def numbers(history):
    """What the picture is drawn from, as plain JSON-able data."""
    return json.loads(json.dumps(history.to_dict()))


def main(path=PNG):
    history = train()
    fig = history.plot(show=False)
    fig.set_size_inches(SIZE[0] / 100, SIZE[1] / 100)
    fig.savefig(path, dpi=100, metadata={KEY: json.dumps(numbers(history)),
                                         "Software": "fitkit docs/make_history_plot.py"})
    print(f"wrote {path}: {len(history.epoch)} epochs, stopped by {history.stop_reason}")
    print(history.diagnose())
    return history


if __name__ == "__main__":
    main(*sys.argv[1:])
