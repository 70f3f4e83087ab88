"""The peers on the same workloads: Keras 3 (torch backend), PyTorch Lightning, Poutyne, skorch.

Optional: ``pip install -e '.[bench]'`` installs them (or point ``--peer-python`` at an interpreter
that has them); a peer that is not installed is skipped with a note. Each runner is written the way
that library's documentation trains on in-memory tensors, with the same data, the same initial
weights, the same loss, optimizer, batch size, epochs and shuffling, and its own epoch-loss logging
(Keras's ``loss``, Lightning's ``self.log(..., on_epoch=True)``, Poutyne's and skorch's history).
Lightning has no in-memory path, so it gets a ``DataLoader`` over a ``TensorDataset``, as its docs do.

Each function does the set-up (building the model, its data in the peer's form), untimed, and
returns the part to time: a function that trains and returns ``(final epoch loss, None)``.
"""

import torch
from torch import nn

from . import workloads as w


def version(peer):
    """The installed version of ``peer``'s package."""
    module = {"keras": "keras", "lightning": "pytorch_lightning", "poutyne": "poutyne", "skorch": "skorch"}[peer]
    return f"{peer} {__import__(module).__version__}"


def _article_net():
    return w.article_model()


def _mlp_net():
    return nn.Sequential(*w.mlp_layers())


def _split_mlp(x, y):
    cut = w.split(len(x), w.MLP["validation_split"])
    return x[:cut], y[:cut], x[cut:], y[cut:]


# ----------------------------------------------------------------------------------------- Keras

def _keras_dense_weights(net):
    """The torch Linear layers' weights in Keras's Dense layout (kernel transposed)."""
    out = []
    for layer in net.modules():
        if isinstance(layer, nn.Linear):
            out += [layer.weight.detach().T.numpy().copy(), layer.bias.detach().numpy().copy()]
    return out


def keras_article(x, y, epochs, device="cpu"):
    import keras

    s = w.ARTICLE
    model = keras.Sequential([keras.Input((s["features"],)), keras.layers.Dense(1, activation="sigmoid")])
    model.set_weights(_keras_dense_weights(_article_net()))
    x, y = x.numpy(), y.numpy()

    def run():
        model.compile(optimizer=keras.optimizers.Adam(learning_rate=s["lr"]), loss="binary_crossentropy")
        history = model.fit(x, y, batch_size=s["batch_size"], epochs=epochs, verbose=0, shuffle=True)
        return history.history["loss"][-1], None
    return run


def keras_mlp(x, y, epochs, device="cpu"):
    import keras

    s = w.MLP
    model = keras.Sequential([keras.Input((s["features"],)), keras.layers.Dense(s["hidden"], activation="relu"),
                              keras.layers.Dense(s["hidden"], activation="relu"), keras.layers.Dense(s["classes"])])
    model.set_weights(_keras_dense_weights(_mlp_net()))
    x, y = x.numpy(), y.numpy()

    def run():
        model.compile(optimizer=keras.optimizers.Adam(learning_rate=s["lr"]),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        history = model.fit(x, y, batch_size=s["batch_size"], epochs=epochs, verbose=0,
                            validation_split=s["validation_split"], shuffle=True)
        return history.history["loss"][-1], None
    return run


# ----------------------------------------------------------------------------------------- Lightning

def _lightning_fit(net, loss_fn, lr, train, val, epochs):
    import pytorch_lightning as pl

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = net

        def training_step(self, batch, batch_idx):
            xb, yb = batch
            loss = loss_fn(self.net(xb), yb)
            self.log("loss", loss, on_step=False, on_epoch=True)
            return loss

        def validation_step(self, batch, batch_idx):
            xb, yb = batch
            self.log("val_loss", loss_fn(self.net(xb), yb), on_step=False, on_epoch=True)

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=lr)

    module = Module()

    def run():
        trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False,
                             enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                             num_sanity_val_steps=0)
        trainer.fit(module, train, val)
        return float(trainer.callback_metrics["loss"]), None
    return run


def _loader(x, y, batch_size, shuffle):
    generator = torch.Generator().manual_seed(w.ORDER_SEED) if shuffle else None
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch_size,
                                       shuffle=shuffle, generator=generator)


def lightning_article(x, y, epochs, device="cpu"):
    s = w.ARTICLE
    train = _loader(x, y.float().unsqueeze(1), s["batch_size"], True)
    return _lightning_fit(_article_net(), nn.BCELoss(), s["lr"], train, None, epochs)


def lightning_mlp(x, y, epochs, device="cpu"):
    s = w.MLP
    x_train, y_train, x_val, y_val = _split_mlp(x, y)
    return _lightning_fit(_mlp_net(), nn.CrossEntropyLoss(), s["lr"],
                          _loader(x_train, y_train, s["batch_size"], True),
                          _loader(x_val, y_val, s["batch_size"], False), epochs)


# ----------------------------------------------------------------------------------------- Poutyne

def poutyne_article(x, y, epochs, device="cpu"):
    import poutyne

    s = w.ARTICLE
    net = _article_net()
    y = y.float().unsqueeze(1)

    def run():
        model = poutyne.Model(net, torch.optim.Adam(net.parameters(), lr=s["lr"]), nn.BCELoss())
        logs = model.fit(x, y, batch_size=s["batch_size"], epochs=epochs, verbose=False)
        return logs[-1]["loss"], None
    return run


def poutyne_mlp(x, y, epochs, device="cpu"):
    import poutyne

    s = w.MLP
    net = _mlp_net()
    x_train, y_train, x_val, y_val = _split_mlp(x, y)

    def run():
        model = poutyne.Model(net, torch.optim.Adam(net.parameters(), lr=s["lr"]), nn.CrossEntropyLoss())
        logs = model.fit(x_train, y_train, validation_data=(x_val, y_val), batch_size=s["batch_size"],
                         epochs=epochs, verbose=False)
        return logs[-1]["loss"], None
    return run


# ----------------------------------------------------------------------------------------- skorch

def skorch_article(x, y, epochs, device="cpu"):
    import skorch

    s = w.ARTICLE
    module, y = _article_net(), y.float().unsqueeze(1)

    def run():
        net = skorch.NeuralNet(module, criterion=nn.BCELoss, optimizer=torch.optim.Adam, lr=s["lr"],
                               batch_size=s["batch_size"], max_epochs=epochs, train_split=None, verbose=0,
                               iterator_train__shuffle=True, device=device)
        net.fit(x, y)
        return net.history[-1, "train_loss"], None
    return run


def skorch_mlp(x, y, epochs, device="cpu"):
    import skorch
    from skorch.helper import predefined_split

    s = w.MLP
    x_train, y_train, x_val, y_val = _split_mlp(x, y)
    module = _mlp_net()

    def run():
        net = skorch.NeuralNet(module, criterion=nn.CrossEntropyLoss, optimizer=torch.optim.Adam, lr=s["lr"],
                               batch_size=s["batch_size"], max_epochs=epochs, verbose=0,
                               iterator_train__shuffle=True,
                               train_split=predefined_split(skorch.dataset.Dataset(x_val, y_val)), device=device)
        net.fit(x_train, y_train)
        return net.history[-1, "train_loss"], None
    return run
