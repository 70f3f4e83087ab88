"""The scenarios of tests/test_distributed.py: run under torchrun, or alone as the single-process reference.

Under ``torchrun --nproc_per_node=2 distributed_checks.py OUT [STRATEGY ...]`` each rank runs every
scenario for each strategy ("ddp", "fsdp") and writes what it saw to ``OUT/rank<r>.json``; files the
scenarios save go under ``OUT/<strategy>/``. The test imports :func:`scenarios` and runs them in its own
process (``distribute=None``) for the numbers one process gives, then compares.

Every scenario builds its model and data from fixed seeds, so each rank and the reference start alike.
"""

import builtins
import json
import os
import sys
import time

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import fitkit  # noqa: E402
from fitkit import distributed  # noqa: E402
from fitkit.callbacks import BackupAndRestore, Callback, CSVLogger, EarlyStopping, ModelCheckpoint  # noqa: E402


class Net(fitkit.Model):
    """5 -> 8 -> 1, with plain constructor arguments (model.save stores it by import path)."""

    def __init__(self, d_in=5, hidden=8):
        super().__init__()
        self.fc1 = nn.Linear(d_in, hidden)
        self.fc2 = nn.Linear(hidden, 1)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


class TwoHeads(fitkit.Model):
    """Two outputs by name: a binary score and one of three kinds."""

    def __init__(self):
        super().__init__()
        self.body = nn.Linear(5, 8)
        self.score = nn.Linear(8, 1)
        self.kind = nn.Linear(8, 3)

    def forward(self, x):
        h = torch.relu(self.body(x))
        return {"score": self.score(h), "kind": self.kind(h)}


class OwnStep(Net):
    """A train_step of the user's, Keras style: ``self(x)``, compute_loss, its own backward and step, and
    logs of its own (a plain dict)."""

    def train_step(self, data):
        x, y, sample_weight = fitkit.data.unpack_x_y_sample_weight(data)
        y_pred = self(x)
        loss = self.compute_loss(x, y, y_pred, sample_weight)
        self.optimizer.zero_grad()
        distributed.loss_for_backward(self, loss).backward()  # weighted like fitkit's own step
        self.optimizer.step()
        return {"batch_loss": loss.detach(), "rows": float(x.shape[0])}


def binary_data(n, d=5, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = (x[:, 0] + 0.7 * rng.normal(size=n) > 0).astype(np.float32)
    return x, y


def _model(distribute, optimizer="adam"):
    fitkit.set_seed(0)
    model = Net()
    model.compile(optimizer=optimizer, loss=fitkit.losses.BinaryCrossentropy(from_logits=True),
                  metrics=["accuracy", "auc", "precision"], distribute=distribute)
    return model


def _weights(model):
    return [w.reshape(-1).tolist() for w in model.get_weights()]


def _count_forward(model):
    """The samples each training-mode forward of this rank saw (a hook on the model itself)."""
    seen = []
    model.register_forward_pre_hook(lambda module, args: seen.append(int(args[0].shape[0])) if module.training
                                    else None)
    return seen


def arrays(distribute):
    """Shuffled arrays, a validation split, an uneven last batch of each, sample weights, EarlyStopping,
    then evaluate and predict. 52 samples: 41 to train in batches of 8 (the last of one sample: rank 1's
    share is empty), 11 to validate (the last batch of 3 splits 2 + 1)."""
    x, y = binary_data(52)
    weights = np.linspace(0.5, 1.5, 52).astype(np.float32)
    model = _model(distribute)
    stop = EarlyStopping(monitor="val_loss", min_delta=10.0, patience=2)  # never improves by 10: stops at epoch 2
    history = model.fit(x, y, sample_weight=weights, batch_size=8, epochs=6, validation_split=0.2, shuffle=True,
                        callbacks=[stop], verbose=0)
    evaluated = model.evaluate(x, y, batch_size=8, verbose=0, return_dict=True)
    predicted = model.predict(x[:13], batch_size=4, verbose=0)  # the last batch of 1: an empty share again
    return {"history": history.history, "epochs": history.epoch, "stopped_epoch": stop.stopped_epoch,
            "stop_reason": history.stop_reason, "weights": _weights(model), "evaluate": evaluated,
            "predict": predicted.reshape(-1).tolist(), "predict_shape": list(predicted.shape),
            "device": str(model.device)}


def halves(distribute):
    """64 samples in batches of 16: each rank's forward sees 8 of every batch, 32 of every epoch. The user's
    own torch optimizer and scheduler (FSDP2 rebuilds them on the sharded parameters)."""
    x, y = binary_data(64, seed=1)
    fitkit.set_seed(0)
    model = Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model.compile(optimizer=optimizer, loss=fitkit.losses.BinaryCrossentropy(from_logits=True),
                  scheduler=torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5), distribute=distribute)
    seen = _count_forward(model)
    history = model.fit(x, y, batch_size=16, epochs=2, shuffle=True, verbose=0)
    weights = _weights(model)
    model.train_on_batch(x[:6], y[:6])  # each rank's own batch (the same here): DDP averages, as one process
    return {"forward_sizes": seen[:8], "weights": weights, "history": history.history,
            "after_train_on_batch": _weights(model)}


def summed(distribute):
    """A loss summed over samples (reduction="sum"): 21 samples in batches of 8, the last of 5 split 3 + 2."""
    x, y = binary_data(21, seed=11)
    fitkit.set_seed(0)
    model = Net()
    model.compile(optimizer=fitkit.optimizers.SGD(learning_rate=0.01),
                  loss=fitkit.losses.BinaryCrossentropy(from_logits=True, reduction="sum"), distribute=distribute)
    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    return {"history": history.history, "weights": _weights(model)}


def own_step(distribute):
    """A user's train_step: its self(x) goes through DDP, so its gradients are averaged; 21 samples in
    batches of 8 (the last of 5 split 3 + 2); its own logs are averaged over the ranks."""
    x, y = binary_data(21, seed=12)
    fitkit.set_seed(0)
    model = OwnStep()
    model.compile(optimizer=fitkit.optimizers.SGD(learning_rate=0.1), distribute=distribute,
                  loss=fitkit.losses.BinaryCrossentropy(from_logits=True))
    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    return {"weights": _weights(model), "rows": history.history["rows"]}


def steps(distribute):
    """steps_per_epoch across passes: arrays (20 samples, batches of 8, 4 steps an epoch over passes of 3
    batches), then a DataLoader (13 samples, batches of 4, 3 steps an epoch over passes of 4); a second
    fit goes on as one longer fit would."""
    x, y = binary_data(20, seed=13)
    model = _model(distribute, optimizer="sgd")
    first = model.fit(x, y, batch_size=8, epochs=2, steps_per_epoch=4, verbose=0)
    second = model.fit(x, y, batch_size=8, epochs=3, initial_epoch=2, steps_per_epoch=4, verbose=0)
    xl, yl = binary_data(13, seed=14)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.as_tensor(xl), torch.as_tensor(yl)),
                                         batch_size=4)
    third = model.fit(loader, epochs=3, steps_per_epoch=3, verbose=0)
    return {"history": [first.history, second.history, third.history], "weights": _weights(model)}


def outputs(distribute):
    """Two named outputs with their own losses, weights and metrics; 28 samples: 21 to train in batches of
    6 (the last of 3 splits 2 + 1), 7 to validate (the last of 1: an empty share); predict gives a dict."""
    x, score = binary_data(28, seed=8)
    kind = (np.abs(x[:, 1] * 2).astype(np.int64) % 3)
    fitkit.set_seed(0)
    model = TwoHeads()
    model.compile(optimizer="adam", loss={"score": fitkit.losses.BinaryCrossentropy(from_logits=True),
                                          "kind": fitkit.losses.SparseCategoricalCrossentropy(from_logits=True)},
                  loss_weights={"score": 1.0, "kind": 0.5}, metrics={"score": ["accuracy"], "kind": ["accuracy"]},
                  distribute=distribute)
    history = model.fit(x, {"score": score, "kind": kind}, batch_size=6, epochs=2, validation_split=0.25, verbose=0)
    predicted = model.predict(x[:5], batch_size=2, verbose=0)
    return {"history": history.history, "weights": _weights(model),
            "predict": {k: v.reshape(-1).tolist() for k, v in predicted.items()}}


def auto(distribute):
    """epochs="auto": EarlyStopping with a patience scaled to the data, the best weights restored; diagnose()
    says the same."""
    x, y = binary_data(40, seed=9)
    model = _model(distribute)
    history = model.fit(x, y, batch_size=8, epochs="auto", max_epochs=7, validation_split=0.2, verbose=0)
    return {"history": history.history, "weights": _weights(model), "diagnosis": str(history.diagnose())}


class Slow(Callback):
    """Makes every epoch of this rank last at least ``seconds``."""

    def __init__(self, seconds):
        super().__init__()
        self.seconds = seconds

    def on_epoch_end(self, epoch, logs=None):
        time.sleep(self.seconds)


def budget(distribute):
    """time_budget: rank 0's clock decides, and every rank stops after the same epoch."""
    x, y = binary_data(16, seed=10)
    model = _model(distribute)
    slow = [Slow(0.3)] if distributed.rank() == 0 else []
    history = model.fit(x, y, batch_size=8, epochs=50, time_budget=1.0, callbacks=slow, verbose=0)
    return {"epochs": history.epoch, "stop_reason": history.stop_reason}


class Recorded(torch.utils.data.Dataset):
    """A dataset that remembers which samples were read (by this process)."""

    def __init__(self, x, y):
        self.x, self.y = torch.as_tensor(x), torch.as_tensor(y)
        self.read = []

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        self.read.append(int(i))
        return self.x[i], self.y[i]


def loader(distribute):
    """A user's DataLoader (33 samples, batch 8, not shuffled: rank 1's share of the last batch is empty),
    with a validation DataLoader; then a shuffled one whose order changes each epoch."""
    x, y = binary_data(33, seed=2)
    xv, yv = binary_data(13, seed=3)
    model = _model(distribute)
    train = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.as_tensor(x), torch.as_tensor(y)),
                                        batch_size=8)
    val = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.as_tensor(xv), torch.as_tensor(yv)),
                                      batch_size=8)
    history = model.fit(train, epochs=3, validation_data=val, verbose=0)
    weights = _weights(model)
    # predict on a Dataset: every 2nd sample on each rank (7 and 6, in batches of 2), joined in order
    predicted = model.predict(Recorded(*binary_data(13, seed=3)), batch_size=4, verbose=0)
    shuffled = Recorded(*binary_data(32, seed=4))
    model.fit(torch.utils.data.DataLoader(shuffled, batch_size=8, shuffle=True), epochs=2, verbose=0)
    return {"history": history.history, "weights": weights, "read": shuffled.read,
            "predict": predicted.reshape(-1).tolist()}


class Spy:
    """Records every attempt of this process to write a file or make a folder."""

    def __init__(self):
        self.writes = []
        self._saved = {}

    def __enter__(self):
        def wrap(owner, name, check):
            original = getattr(owner, name)
            self._saved[(owner, name)] = original

            def spy(*args, **kwargs):
                if check(*args, **kwargs):
                    self.writes.append(f"{name} {args[1] if name == 'save' else args[0]}")
                return original(*args, **kwargs)
            setattr(owner, name, spy)

        wrap(builtins, "open", lambda f, mode="r", *a, **k: any(c in mode for c in "wax+"))
        for name in ("replace", "rename", "makedirs", "mkdir", "remove"):
            wrap(os, name, lambda *a, **k: True)
        wrap(torch, "save", lambda *a, **k: True)
        return self

    def __exit__(self, *exc):
        for (owner, name), original in self._saved.items():
            setattr(owner, name, original)
        return False


def files(distribute, out):
    """ModelCheckpoint, CSVLogger, model.save and save_weights: rank 0 writes, every rank finds the files."""
    x, y = binary_data(40, seed=5)
    folder = os.path.join(out, str(distribute))
    model = _model(distribute)
    with Spy() as spy:
        model.fit(x, y, batch_size=8, epochs=2, validation_split=0.25, verbose=0,
                  callbacks=[ModelCheckpoint(os.path.join(folder, "ckpt", "{epoch:02d}.pt")),
                             CSVLogger(os.path.join(folder, "log.csv"))])
        model.save(os.path.join(folder, "model.pt"))
        model.save_weights(os.path.join(folder, "weights.pt"))
    names = ["ckpt/01.pt", "ckpt/02.pt", "log.csv", "model.pt", "weights.pt"]
    found = {name: os.path.exists(os.path.join(folder, name)) for name in names}
    # Every rank loads the file rank 0 wrote back into its (sharded) model.
    before = _weights(model)
    model.set_weights([np.zeros_like(w) for w in model.get_weights()])
    model.load_weights(os.path.join(folder, "weights.pt"))
    text = []
    model.summary(print_fn=text.append)
    sharded = [name for name, module in model.named_modules() if distributed.is_sharded(module)]
    if distribute == "fsdp":  # a policy of the user's: no submodule of its own, only the model
        other = Net()
        other.compile(optimizer="sgd", loss="mse", distribute="fsdp", fsdp_policy=lambda module: False)
        sharded = [sharded, [name for name, module in other.named_modules() if distributed.is_sharded(module)]]
    return {"writes": spy.writes, "found": found, "reloaded_equal": _weights(model) == before,
            "state_keys": list(model.state_dict()), "summary": text[0], "weights": before, "sharded": sharded}


class Crash(Exception):
    pass


class CrashAt(Callback):
    """Raises at the end of batch ``batch`` of epoch ``epoch`` (on every rank: each leaves fit there)."""

    def __init__(self, epoch, batch):
        super().__init__()
        self.at = (epoch, batch)

    def on_train_batch_end(self, batch, logs=None):
        if (self.model.training_state.epoch, batch) == self.at:
            raise Crash()


def resumed(distribute, out):
    """BackupAndRestore mid-epoch: a fit stops at batch 5 of epoch 1 (the backup of batch 3 on disk); a new
    model's fit resumes it. The backup holds EarlyStopping's best weights (gathered whole under FSDP2)."""
    x, y = binary_data(60, seed=7)
    folder = os.path.join(out, f"backup-{distribute}")

    def run(crash):
        fitkit.set_seed(0)
        model = Net()
        model.compile(optimizer=fitkit.optimizers.SGD(learning_rate=0.1, momentum=0.9),
                      loss=fitkit.losses.BinaryCrossentropy(from_logits=True), metrics=["accuracy"],
                      distribute=distribute)
        callbacks = [EarlyStopping(monitor="val_loss", patience=10, restore_best_weights=True),
                     BackupAndRestore(folder, save_freq=3)] + ([CrashAt(1, 4)] if crash else [])
        return model, model.fit(x, y, batch_size=8, epochs=4, validation_split=0.25, callbacks=callbacks, verbose=0)

    try:
        run(crash=True)
    except Crash:
        pass
    saved = fitkit.checkpoint.read(os.path.join(folder, "latest.pt"), what="backup")["state"]
    model, history = run(crash=False)
    return {"backup_at": [saved["epoch"], saved["step"]], "weights": _weights(model), "history": history.history}


def accumulated(distribute):
    """gradient_accumulation_steps=2 with clipping: 21 samples in batches of 4 (the last of 1: rank 1's share
    is empty), 12 batches over 2 epochs, 6 optimizer steps. Under DDP the gradients are all-reduced on each
    window's last batch only (a comm hook counts the all-reduces)."""
    x, y = binary_data(21, seed=5)
    fitkit.set_seed(0)
    model = Net()
    model.compile(optimizer=fitkit.optimizers.SGD(learning_rate=0.05, momentum=0.9, gradient_accumulation_steps=2,
                                                  global_clipnorm=1.0),
                  loss=fitkit.losses.BinaryCrossentropy(from_logits=True), distribute=distribute)
    syncs = None
    wrapper = model._compiled.wrapper
    if wrapper is not None:
        from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

        syncs = []

        def counting(state, bucket):
            syncs.append(1)
            return allreduce_hook(state, bucket)

        wrapper.register_comm_hook(None, counting)
    history = model.fit(x, y, batch_size=4, epochs=2, shuffle=True, verbose=0)
    return {"history": history.history, "weights": _weights(model), "syncs": None if syncs is None else len(syncs)}


SCENARIOS = {"accumulated": accumulated, "arrays": arrays, "halves": halves, "summed": summed, "own_step": own_step, "steps": steps,
             "outputs": outputs, "auto": auto, "loader": loader, "files": files,
             "resumed": resumed, "budget": budget}


def scenarios(distribute, out, only=None):
    """Every scenario's results for one ``distribute`` setting (None: the single-process reference)."""
    results = {}
    for name, run in SCENARIOS.items():
        if only and name not in only:
            continue
        results[name] = run(distribute, out) if name in ("files", "resumed") else run(distribute)
    return results


def main():
    out = sys.argv[1]
    strategies = sys.argv[2].split(",") if len(sys.argv) > 2 else ["ddp", "fsdp"]
    only = sys.argv[3].split(",") if len(sys.argv) > 3 else None
    rank = int(os.environ["RANK"])
    report = {"world": int(os.environ["WORLD_SIZE"]), "rank": rank}
    for strategy in strategies:
        report[strategy] = scenarios(strategy, out, only)
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump(report, f)


if __name__ == "__main__":
    main()
