"""A training run made resumable by BackupAndRestore; tests kill it with SIGKILL and start it again.

Environment:
    FITKIT_BACKUP_DIR  the backup folder
    FITKIT_OUT         where the final weights, optimizer state and History go (torch.save)
    FITKIT_SAVE_FREQ   "epoch" or a number of batches
    FITKIT_KILL_AT     "" (run to the end), "epoch:E" (SIGKILL at the start of epoch E, just after
                       epoch E-1's backup) or "batch:E:B" (SIGKILL before batch B of epoch E)
    FITKIT_DOUBLE      "1" for double_checkpoint=True
"""

import os
import signal
import sys

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import fitkit  # noqa: E402
from fitkit.callbacks import BackupAndRestore, Callback, EarlyStopping  # noqa: E402


class KillAt(Callback):
    """Kills this process outright (no cleanup, no on_train_end) at a given point."""

    def __init__(self, spec):
        super().__init__()
        parts = spec.split(":")
        self.kind, self.at = parts[0], tuple(int(p) for p in parts[1:])

    def on_epoch_begin(self, epoch, logs=None):
        if self.kind == "epoch" and (epoch,) == self.at:
            os.kill(os.getpid(), signal.SIGKILL)

    def on_train_batch_begin(self, batch, logs=None):
        if self.kind == "batch" and (self.model.training_state.epoch, batch) == self.at:
            os.kill(os.getpid(), signal.SIGKILL)


def main():
    torch.set_num_threads(1)
    fitkit.set_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(180, 8)).astype(np.float32)
    y = (x[:, 0] + 0.5 * rng.normal(size=180) > 0).astype(np.float32)
    model = fitkit.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 1))
    model.compile(optimizer=fitkit.optimizers.SGD(learning_rate=0.05, momentum=0.9), loss=nn.BCEWithLogitsLoss(),
                  metrics=["accuracy"], scheduler=lambda opt: torch.optim.lr_scheduler.ExponentialLR(opt, 0.9))
    save_freq = os.environ.get("FITKIT_SAVE_FREQ", "epoch")
    save_freq = save_freq if save_freq == "epoch" else int(save_freq)
    callbacks = [
        EarlyStopping(monitor="val_loss", patience=20),
        BackupAndRestore(os.environ["FITKIT_BACKUP_DIR"], save_freq=save_freq,
                         double_checkpoint=os.environ.get("FITKIT_DOUBLE") == "1"),
    ]
    if os.environ.get("FITKIT_KILL_AT"):
        callbacks.append(KillAt(os.environ["FITKIT_KILL_AT"]))
    # 144 training samples in batches of 16: 9 batches per epoch
    history = model.fit(x, y, batch_size=16, epochs=4, validation_split=0.2, verbose=0, callbacks=callbacks)
    torch.save({"weights": model.state_dict(), "optimizer": model.optimizer.state_dict(),
                "history": history.history, "epoch": history.epoch,
                "backup_left": os.path.exists(os.environ["FITKIT_BACKUP_DIR"])}, os.environ["FITKIT_OUT"])


if __name__ == "__main__":
    main()
