"""model.show_training_loop: the map of fit, checked against the order a real fit calls its hooks."""

import re

import pytest
import torch
from torch import nn

import fitkit
from conftest import regression_data
from fitkit.callbacks import (Callback, EarlyStopping, LambdaCallback, ModelCheckpoint, ReduceLROnPlateau,
                              TerminateOnNaN)

FIT_HOOKS = ("on_train_begin", "on_epoch_begin", "on_train_batch_begin", "on_train_batch_end", "on_test_begin",
             "on_test_batch_begin", "on_test_batch_end", "on_test_end", "on_epoch_end", "on_train_end")


def _model(scheduler=None):
    fitkit.set_seed(0)
    model = fitkit.Sequential(nn.Linear(6, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    model.compile(optimizer=opt, loss="mse", scheduler=scheduler(opt) if scheduler else None)
    return model


def _hook_lines(text):
    """The hooks of the map, in the order it shows them."""
    return [m.group(1) for m in re.finditer(r"^\s*(on_\w+)\(", text, flags=re.M)]


def _indent(line):
    return len(line) - len(line.lstrip())


def _under(text, hook):
    """The callback names listed under ``hook`` in the map (one level deeper; folded words go deeper still)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith(hook + "("))
    depth = _indent(lines[start])
    names = []
    for line in lines[start + 1:]:
        if _indent(line) <= depth:
            break
        if _indent(line) == depth + 4:
            names.append(line.split()[0])
    return names


def test_the_map_follows_the_order_of_a_real_fit():
    calls = []

    class Record(Callback):
        pass

    record = Record()
    for hook in FIT_HOOKS:
        setattr(record, hook, lambda *args, hook=hook: calls.append(hook))
    x, y = regression_data(n=40)
    model = _model()
    model.fit(x, y, epochs=1, batch_size=20, validation_split=0.5, verbose=0, callbacks=[record])
    order = list(dict.fromkeys(calls))  # first time each hook is called
    text = model.show_training_loop(callbacks=[record], print_fn=lambda s: None)
    assert _hook_lines(text) == order == list(FIT_HOOKS)
    for hook in FIT_HOOKS:
        assert _under(text, hook)[0] == "Record", hook  # an instance's own functions are hooks too


def test_each_callback_is_listed_where_it_acts_in_words():
    class OnlyValidation(Callback):
        def on_test_end(self, logs=None):
            pass

    callbacks = [EarlyStopping(monitor="val_loss", patience=3, restore_best_weights=True),
                 ReduceLROnPlateau(factor=0.5, patience=2), ModelCheckpoint("best.pt", save_best_only=True),
                 TerminateOnNaN(), OnlyValidation(), LambdaCallback(on_epoch_begin=lambda epoch, logs: None)]
    printed = []
    text = _model().show_training_loop(callbacks=callbacks, print_fn=printed.append)
    assert printed == [text]
    assert text.startswith("What model.fit(...) does, in order, with callbacks=[EarlyStopping, ReduceLROnPlateau, "
                           "ModelCheckpoint, TerminateOnNaN, OnlyValidation, LambdaCallback]")
    assert "fit adds: History (what fit returns); ProgbarLogger" in text
    assert _under(text, "on_epoch_end") == ["EarlyStopping", "ReduceLROnPlateau", "ModelCheckpoint", "History",
                                            "ProgbarLogger"]
    assert _under(text, "on_test_end") == ["OnlyValidation", "ProgbarLogger"]
    assert _under(text, "on_epoch_begin") == ["ModelCheckpoint", "LambdaCallback", "ProgbarLogger"]
    assert _under(text, "on_train_batch_end") == ["ModelCheckpoint", "TerminateOnNaN", "ProgbarLogger"]
    assert _under(text, "on_train_end") == ["EarlyStopping", "History", "ProgbarLogger"]
    flat = " ".join(text.split())
    assert "EarlyStopping decides whether to stop: after 3 epochs without val_loss improving it sets " \
           "model.stop_training = True; keeps a copy of the best epoch's weights" in flat
    assert "ReduceLROnPlateau may cut the learning rate: times 0.5 after 2 epochs without val_loss improving" in flat
    assert "ModelCheckpoint writes a file: the model to best.pt, when val_loss improves" in flat
    assert "EarlyStopping puts back the weights of the best epoch (restore_best_weights=True)" in flat
    assert "OnlyValidation runs OnlyValidation.on_test_end (your code)" in flat
    assert "LambdaCallback calls your on_epoch_begin function" in flat
    assert "TerminateOnNaN stops training if the batch loss is NaN or infinite" in flat


def test_a_subclass_that_changes_a_hook_is_called_your_code():
    class Patient(EarlyStopping):
        def on_epoch_end(self, epoch, logs=None):
            super().on_epoch_end(epoch, logs)

    flat = " ".join(_model().show_training_loop(callbacks=[Patient()], print_fn=lambda s: None).split())
    assert "Patient runs Patient.on_epoch_end (your code)" in flat
    assert "Patient resets its count of epochs without improvement" in flat  # inherited: EarlyStopping's words


def test_options_change_the_map():
    quiet = _model().show_training_loop(verbose=0, validation=False, print_fn=lambda s: None)
    assert "ProgbarLogger" not in quiet and "on_test_begin" not in quiet
    assert "no validation: pass validation_split=... or validation_data=..." in quiet
    assert quiet.startswith("What model.fit(...) does, in order, with no callbacks")
    auto = " ".join(_model().show_training_loop(epochs="auto", print_fn=lambda s: None).split())
    assert "fit adds: EarlyStopping(monitor='val_loss', restore_best_weights=True), for epochs='auto'" in auto
    assert "after `patience` epochs without val_loss improving (about 1000 optimizer steps' worth" in auto
    mine = EarlyStopping(patience=7)
    assert "fit adds: EarlyStopping" not in _model().show_training_loop(callbacks=[mine], epochs="auto",
                                                                        print_fn=lambda s: None)


def test_the_compiled_scheduler_and_a_custom_train_step_are_shown():
    per_epoch = _model(lambda opt: torch.optim.lr_scheduler.StepLR(opt, 2)).show_training_loop(print_fn=lambda s: None)
    lines = [line.strip() for line in per_epoch.splitlines()]
    at = lines.index("StepLR.step()    (the scheduler given to compile, once per epoch)")
    assert lines[at + 1].startswith("on_epoch_end(")  # stepped after validation, before on_epoch_end

    class Custom(fitkit.Model):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(6, 1)

        def forward(self, x):
            return self.fc(x)

        def train_step(self, data):
            return super().train_step(data)

    model = Custom()
    model.compile(optimizer="sgd", loss="mse")
    assert "Custom.train_step(data), your own" in model.show_training_loop(print_fn=lambda s: None)


def test_bad_arguments():
    model = _model()
    with pytest.raises(TypeError, match="callbacks: got dict; expected a list of Callback instances"):
        model.show_training_loop(callbacks={"a": 1})
    with pytest.raises(TypeError, match="callbacks: got 3; expected fitkit.callbacks.Callback instances"):
        model.show_training_loop(callbacks=[3])
    with pytest.raises(ValueError, match="epochs: got 10; expected None or 'auto'"):
        model.show_training_loop(epochs=10)
    with pytest.raises(ValueError, match="validation: got 'yes'"):
        model.show_training_loop(validation="yes")
