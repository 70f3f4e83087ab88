"""A fit under torchrun made resumable by BackupAndRestore; on torchrun's first attempt one rank kills itself.

    torchrun --nproc_per_node=2 --max-restarts=1 distributed_resume.py OUT [KILL_RANK]

On the first attempt (``TORCHELASTIC_RESTART_COUNT`` 0) rank ``KILL_RANK`` (default 1; -1: nobody)
SIGKILLs itself before batch 4 of epoch 1, after the backup made at batch 3 (``save_freq=3``): torchrun
ends the other rank and starts both again, and the fit resumes mid-epoch from the backup. Each rank of
the attempt that finishes writes ``OUT/rank<r>.json``: its final weights, History and attempt number.
Without torchrun (``run()``, imported by the test) it is the single-process reference, never killed.
"""

import json
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from distributed_checks import Net, binary_data  # noqa: E402

import fitkit  # noqa: E402
from fitkit.callbacks import BackupAndRestore, Callback, EarlyStopping  # noqa: E402


class KillAt(Callback):
    """SIGKILL this process before batch ``batch`` of epoch ``epoch`` (no cleanup, no on_train_end)."""

    def __init__(self, epoch, batch):
        super().__init__()
        self.at = (epoch, batch)

    def on_train_batch_begin(self, batch, logs=None):
        if (self.model.training_state.epoch, batch) == self.at:
            os.kill(os.getpid(), signal.SIGKILL)


def run(backup_dir, kill=False, distribute="auto"):
    """The fit: 45 training samples in batches of 8 (6 batches, the last of 5 split 3 + 2), 4 epochs."""
    x, y = binary_data(60, seed=7)
    fitkit.set_seed(0)
    model = Net()
    model.compile(optimizer=fitkit.optimizers.SGD(learning_rate=0.1, momentum=0.9),
                  loss=fitkit.losses.BinaryCrossentropy(from_logits=True), metrics=["accuracy"], distribute=distribute)
    callbacks = [EarlyStopping(monitor="val_loss", patience=10), BackupAndRestore(backup_dir, save_freq=3)]
    if kill:
        callbacks.append(KillAt(1, 4))
    history = model.fit(x, y, batch_size=8, epochs=4, validation_split=0.25, callbacks=callbacks, verbose=0)
    return {"weights": [w.reshape(-1).tolist() for w in model.get_weights()], "history": history.history}


def main():
    out = sys.argv[1]
    kill_rank = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    rank = int(os.environ["RANK"])
    attempt = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    result = run(os.path.join(out, "backup"), kill=attempt == 0 and rank == kill_rank)
    result.update(attempt=attempt, world=int(os.environ["WORLD_SIZE"]))
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
