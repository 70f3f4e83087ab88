"""The demo the README's first command runs: one fit, done right, on data fitkit generates.

``python -m fitkit.demo`` trains a small classifier with a validation split, early stopping and a
learning-rate schedule, shows the progress bar, then prints what the History says about how many
epochs were worth training. ``--epochs`` and ``--verbose`` change the run; ``--plot FILE`` saves the
training curves (needs the ``plot`` extra).
"""

import argparse

import torch
from torch import nn

import fitkit
from fitkit.callbacks import EarlyStopping, ReduceLROnPlateau


def make_data(n=2000, features=10, seed=0):
    """A learnable binary task: a noisy linear rule on Gaussian features (NumPy-free, reproducible)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, features, generator=g)
    w = torch.randn(features, generator=g)
    y = ((x @ w + 0.5 * torch.randn(n, generator=g)) > 0).long()
    return x, y


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2))
    parser.add_argument("--plot", default=None, help="save the training curves to this PNG file")
    args = parser.parse_args(argv)

    fitkit.set_seed(0)
    x, y = make_data()
    model = fitkit.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 1))
    model.compile(optimizer="adam", loss=nn.BCEWithLogitsLoss(), metrics=["accuracy"])
    history = model.fit(x, y, epochs=args.epochs, batch_size=32, validation_split=0.2, verbose=args.verbose,
                        callbacks=[EarlyStopping(patience=5, restore_best_weights=True),
                                   ReduceLROnPlateau(factor=0.5, patience=2)])
    print()
    print(history.diagnose())
    if args.plot:
        history.plot(args.plot)
        print(f"Training curves saved to {args.plot}")
    return history


if __name__ == "__main__":
    main()
