"""The training loop shown: the order of events in ``fit`` and which callbacks act at each, in words.

``model.show_training_loop(callbacks=[...])`` prints a student's map of ``fit``: every hook in the order
fit calls it, and under each hook the callbacks that act there. Which callbacks act where is read from
the callbacks themselves (the hooks they override, as fit's own dispatch decides whom to call); the
words for fitkit's callbacks say what each does at that hook, from its settings ("EarlyStopping decides
whether to stop: ..."). A callback of your own is listed at the hooks it overrides.

>>> model.show_training_loop(callbacks=[EarlyStopping(patience=3), ReduceLROnPlateau()])   # doctest: +SKIP
"""

import textwrap

from . import arguments
from .callbacks.backup_and_restore import BackupAndRestore
from .callbacks.base import _overrides
from .callbacks.csv_logger import CSVLogger
from .callbacks.early_stopping import EarlyStopping
from .callbacks.ema import EMA
from .callbacks.lambda_callback import LambdaCallback
from .callbacks.learning_rate_scheduler import LearningRateScheduler
from .callbacks.model_checkpoint import ModelCheckpoint
from .callbacks.progbar_logger import ProgbarLogger
from .callbacks.reduce_lr_on_plateau import ReduceLROnPlateau
from .callbacks.tensorboard import TensorBoard
from .callbacks.terminate_on_nan import TerminateOnNaN
from .history import History


# The width the callbacks' words are folded at.
_WIDTH = 110


def _epochs_word(n):
    return f"{n} epoch" + ("" if n == 1 else "s")


def _es_epoch_end(cb):
    words = (f"decides whether to stop: after {_epochs_word(cb.patience)} without {cb.monitor} improving it sets "
             "model.stop_training = True")
    return words + ("; keeps a copy of the best epoch's weights" if cb.restore_best_weights else "")


def _ckpt_epoch_end(cb):
    if cb.save_freq != "epoch":
        return f"nothing here (it saves every {cb.save_freq} batches)"
    what = "the weights" if cb.save_weights_only else "the model"
    when = f", when {cb.monitor} improves (save_best_only=True)" if cb.save_best_only else ""
    return f"writes a file: {what} to {cb.filepath}{when}"


def _ckpt_batch_end(cb):
    if cb.save_freq == "epoch":
        return "nothing here (save_freq='epoch': it saves at the epoch's end)"
    what = "the weights" if cb.save_weights_only else "the model"
    return f"writes a file every {cb.save_freq} training batches: {what} to {cb.filepath}"


def _backup_batch_end(cb):
    if isinstance(cb.save_freq, int) and not isinstance(cb.save_freq, bool):
        return f"backs up the whole training state every {cb.save_freq} training batches"
    return "counts the batches done (for a backup on Ctrl-C)"


# What fitkit's callbacks do at each hook they override, in words made from their settings.
_WORDS = {
    EarlyStopping: {
        "on_train_begin": lambda cb: "resets its count of epochs without improvement (each fit starts afresh)",
        "on_epoch_end": _es_epoch_end,
        "on_train_end": lambda cb: ("puts back the weights of the best epoch (restore_best_weights=True)"
                                    if cb.restore_best_weights else
                                    "leaves the last epoch's weights (restore_best_weights=False)"),
    },
    ReduceLROnPlateau: {
        "on_train_begin": lambda cb: "resets its count of epochs without improvement",
        "on_epoch_end": lambda cb: (f"may cut the learning rate: times {cb.factor:g} after "
                                    f"{_epochs_word(cb.patience)} without {cb.monitor} improving "
                                    f"(never below min_lr={cb.min_lr:g})"),
    },
    ModelCheckpoint: {
        "on_epoch_begin": lambda cb: "notes the epoch number (for the file name)",
        "on_train_batch_end": _ckpt_batch_end,
        "on_epoch_end": _ckpt_epoch_end,
    },
    LearningRateScheduler: {
        "on_epoch_begin": lambda cb: "sets the learning rate to schedule(epoch, lr) for this epoch",
        "on_epoch_end": lambda cb: "puts the epoch's learning rate into the logs",
    },
    TerminateOnNaN: {
        "on_train_batch_end": lambda cb: ("stops training if the batch loss is NaN or infinite (it reads the "
                                          "loss every batch: a device sync per step)"),
    },
    CSVLogger: {
        "on_train_begin": lambda cb: f"opens {cb.filename}",
        "on_epoch_end": lambda cb: "appends a row with the epoch's logs",
        "on_train_end": lambda cb: "closes the file",
    },
    TensorBoard: {
        "on_train_begin": lambda cb: f"starts writing TensorBoard events to {cb.log_dir}",
        "on_train_batch_end": lambda cb: ("nothing here (update_freq='epoch')" if cb.update_freq == "epoch" else
                                          f"writes the batch logs every {cb.update_freq} batches"),
        "on_test_end": lambda cb: "writes the validation logs",
        "on_epoch_end": lambda cb: "writes the epoch's logs (and weight histograms when histogram_freq is set)",
        "on_train_end": lambda cb: "closes its event files",
    },
    BackupAndRestore: {
        "restore_training": lambda cb: (f"loads the last backup in {cb.backup_dir}, if there is one, so that "
                                        "training goes on where a killed run stopped"),
        "on_train_begin": lambda cb: "after a restore, puts every RNG back as the backup had it",
        "on_epoch_begin": lambda cb: "notes the RNG states of the epoch's start",
        "on_train_batch_begin": lambda cb: "after a restore in the middle of an epoch, puts the RNGs back",
        "on_train_batch_end": _backup_batch_end,
        "on_epoch_end": lambda cb: (f"backs up the whole training state to {cb.backup_dir}" if cb.save_freq == "epoch"
                                    else "backs up a save due at the epoch's last batch"),
        "on_train_end": lambda cb: ("deletes the backup when training is over" if cb.delete_checkpoint
                                    else "keeps the backup"),
    },
    EMA: {
        "on_train_begin": lambda cb: "checks its average matches the model's parameters",
        "on_train_batch_end": lambda cb: f"updates the moving average of the weights (decay={cb.decay:g})",
        "on_epoch_begin": lambda cb: "swaps the trained weights back in for training",
        "on_epoch_end": lambda cb: ("leaves the averaged weights in the model for the callbacks after it"
                                    if cb.swap_on_epoch else "nothing to swap (swap_on_epoch=False)"),
        "on_test_begin": lambda cb: "swaps the averaged weights in: validation measures the average",
        "on_test_end": lambda cb: "swaps the trained weights back",
        "on_train_end": lambda cb: ("leaves the averaged weights in the model" if cb.use_ema_at_end
                                    else "leaves the trained weights in the model"),
    },
    ProgbarLogger: {
        "on_train_begin": lambda cb: "notes that fit is running",
        "on_epoch_begin": lambda cb: "starts the epoch's progress bar (\"Epoch 1/10\" is epoch 0)",
        "on_train_batch_end": lambda cb: "moves the progress bar (the running loss, redrawn at its own pace)",
        "on_test_begin": lambda cb: "nothing inside fit (it draws for evaluate alone)",
        "on_test_batch_end": lambda cb: "nothing inside fit (it draws for evaluate alone)",
        "on_test_end": lambda cb: "nothing inside fit (it draws for evaluate alone)",
        "on_epoch_end": lambda cb: "finishes the epoch's line with the epoch's logs",
        "on_train_end": lambda cb: "closes the progress bar",
    },
    History: {
        "on_train_begin": lambda cb: "starts this fit's record (and notes the epochs the model trained before)",
        "on_epoch_end": lambda cb: "records the epoch's logs in history.history",
        "on_train_end": lambda cb: "notes the learning rate left after the last epoch",
    },
}


def _words(callback, hook):
    """What ``callback`` does at ``hook``: fitkit's words when the method is fitkit's, else a plain name."""
    if isinstance(callback, LambdaCallback) or hook in getattr(callback, "__dict__", ()):
        return f"calls your {hook} function"
    for cls in type(callback).__mro__:
        if hook in vars(cls):
            words = _WORDS.get(cls, {}).get(hook)
            if words is not None:
                return words(callback)
            break
    return f"runs {type(callback).__name__}.{hook} (your code)"


def _acts(callbacks, hook, aliases=(), special=None):
    """``(name, words)`` for each callback that does something at ``hook``, in fit's order; ``special``
    maps ``(id(callback), hook)`` to words that replace the usual ones."""
    rows = []
    for cb in callbacks:
        for name in (hook,) + tuple(aliases):
            if _overrides(cb, name):
                words = (special or {}).get((id(cb), name)) or _words(cb, name)
                rows.append((type(cb).__name__, words))
    return rows


def training_loop(model, callbacks=None, validation=True, epochs=None, verbose="auto", custom_train_step=False):
    """The text of :meth:`fitkit.Model.show_training_loop`; ``custom_train_step``: the model overrides
    ``train_step``."""
    user = arguments.callbacks_list(callbacks)
    if validation not in (True, False):
        raise ValueError(f"validation: got {validation!r}; expected True (fit gets validation data) or False")
    arguments.check_verbose(verbose)  # the same values fit takes
    if epochs is not None and epochs != "auto":
        raise ValueError(f"epochs: got {epochs!r}; expected None or 'auto' (which adds an EarlyStopping)")
    added, special = [], {}
    ordered = list(user)
    if epochs == "auto" and not any(isinstance(cb, EarlyStopping) for cb in user):
        auto = EarlyStopping(monitor="val_loss", restore_best_weights=True)
        special[(id(auto), "on_epoch_end")] = (
            "decides whether to stop: after `patience` epochs without val_loss improving (about 1000 optimizer "
            "steps' worth, 5 to 50) it sets model.stop_training = True; keeps a copy of the best epoch's weights")
        ordered.append(auto)
        added.append("EarlyStopping(monitor='val_loss', restore_best_weights=True), for epochs='auto' (its "
                     "patience scaled to the data)")
    if not any(isinstance(cb, History) for cb in user):
        ordered.append(History())
        added.append("History (what fit returns)")
    if verbose and not any(isinstance(cb, ProgbarLogger) for cb in user):
        ordered.append(ProgbarLogger())
        added.append("ProgbarLogger (the progress bar, verbose=1 or 2)")
    # BackupAndRestore moves itself to the end when fit starts, so that a backup holds what the others did.
    ordered = [cb for cb in ordered if not isinstance(cb, BackupAndRestore)] + \
              [cb for cb in ordered if isinstance(cb, BackupAndRestore)]

    scheduler = getattr(model, "scheduler", None)
    interval = getattr(model, "scheduler_interval", "epoch")
    lines = []

    def say(indent, text):
        lines.append("    " * indent + text)

    def hook(indent, call, name, aliases=()):
        say(indent, call)
        rows = _acts(ordered, name, aliases, special)
        width = max((len(n) for n, _ in rows), default=0)
        for who, words in rows:
            first = "    " * (indent + 1) + f"{who:<{width}}  "
            lines.append(textwrap.fill(words, _WIDTH, initial_indent=first, subsequent_indent=" " * len(first),
                                       break_on_hyphens=False, break_long_words=False))

    names = "callbacks=[" + ", ".join(type(cb).__name__ for cb in user) + "]" if user else "no callbacks"
    say(0, f"What model.fit(...) does, in order, with {names}")
    if added:
        say(0, "fit adds: " + "; ".join(added))
    say(0, "")
    say(0, "fit checks its arguments, splits off the validation data (validation_split takes the last samples)")
    say(0, "and, for in-memory data, looks at the model's outputs for the first batch (no training) to match the")
    say(0, "targets to the loss once")
    if any(_overrides(cb, "restore_training") for cb in ordered):
        hook(0, "restore_training (before any callback starts; not a Keras hook)", "restore_training")
    hook(0, "on_train_begin()", "on_train_begin")
    say(0, "for epoch in range(initial_epoch, epochs):          (from 0; the progress bar prints epoch + 1)")
    hook(1, "on_epoch_begin(epoch)", "on_epoch_begin")
    say(1, "for batch, data in enumerate(training batches):      (shuffled by the model's own generator)")
    hook(2, "on_train_batch_begin(batch)", "on_train_batch_begin", ("on_batch_begin",))
    step = f"{type(model).__name__}.train_step(data), your own" if custom_train_step else \
        "train_step(data): forward pass, loss, gradients cleared, backward pass, optimizer.step()"
    say(2, step)
    if scheduler is not None and interval == "step":
        say(2, f"{type(scheduler).__name__}.step()    (the scheduler given to compile, scheduler_interval='step')")
    hook(2, "on_train_batch_end(batch, logs)     logs: the epoch's running mean loss and metrics so far",
         "on_train_batch_end", ("on_batch_end",))
    say(2, "the epoch ends early if model.stop_training was set")
    if validation:
        say(1, "validation (every validation_freq epochs): the model in eval mode, no gradients")
        hook(2, "on_test_begin()", "on_test_begin")
        say(2, "for batch, data in enumerate(validation batches):")
        hook(3, "on_test_batch_begin(batch)", "on_test_batch_begin")
        say(3, "test_step(data): forward pass, loss and metrics, no training")
        hook(3, "on_test_batch_end(batch, logs)", "on_test_batch_end")
        hook(2, "on_test_end(logs)", "on_test_end")
    else:
        say(1, "no validation: pass validation_split=... or validation_data=... to get val_ logs")
    if scheduler is not None and interval == "epoch":
        monitor = " with the monitored value" if type(scheduler).__name__ == "ReduceLROnPlateau" else ""
        say(1, f"{type(scheduler).__name__}.step(){monitor}    (the scheduler given to compile, once per epoch)")
    keys = "the epoch's loss and metrics" + (", and their val_ twins" if validation else "")
    hook(1, f"on_epoch_end(epoch, logs)           logs: {keys}", "on_epoch_end")
    say(1, "stop here if model.stop_training is True (set by EarlyStopping, TerminateOnNaN or your callback)")
    hook(0, "on_train_end(logs)", "on_train_end")
    say(0, "fit returns the History (also model.history)")
    return "\n".join(lines)
