"""LambdaCallback: the functions given are hooks; hooks not given cost nothing."""

import pytest

from fitkit.callbacks import Callback, CallbackList, LambdaCallback


def test_only_given_hooks_are_seen_and_called():
    calls = []
    cb = LambdaCallback(on_epoch_end=lambda epoch, logs: calls.append(("end", epoch, logs)),
                        on_train_batch_begin=lambda batch, logs: calls.append(("batch", batch)))
    cbs = CallbackList([cb])
    assert cbs.has("on_epoch_end") and cbs.has("on_train_batch_begin")
    for hook in ("on_epoch_begin", "on_train_begin", "on_train_end", "on_train_batch_end",
                 "on_test_begin", "on_predict_batch_end"):
        assert not cbs.has(hook), hook
    cbs.on_train_batch_begin(3)
    cbs.on_epoch_end(1, {"loss": 0.5})
    cbs.on_epoch_begin(2)
    assert calls == [("batch", 3), ("end", 1, {"loss": 0.5})]


def test_all_named_hooks_and_other_hooks_by_keyword():
    calls = []
    cb = LambdaCallback(
        on_epoch_begin=lambda e, logs: calls.append("epoch_begin"),
        on_epoch_end=lambda e, logs: calls.append("epoch_end"),
        on_train_begin=lambda logs: calls.append("train_begin"),
        on_train_end=lambda logs: calls.append("train_end"),
        on_train_batch_begin=lambda b, logs: calls.append("batch_begin"),
        on_train_batch_end=lambda b, logs: calls.append("batch_end"),
        on_test_end=lambda logs: calls.append("test_end"),
    )
    cbs = CallbackList([cb])
    cbs.on_train_begin()
    cbs.on_epoch_begin(0)
    cbs.on_train_batch_begin(0)
    cbs.on_train_batch_end(0)
    cbs.on_test_end({})
    cbs.on_epoch_end(0, {})
    cbs.on_train_end()
    assert calls == ["train_begin", "epoch_begin", "batch_begin", "batch_end", "test_end",
                     "epoch_end", "train_end"]


def test_extra_keyword_arguments_are_kept_as_attributes_as_in_keras():
    log = []
    cb = LambdaCallback(on_epoch_end=lambda epoch, logs: cb.sink.append(epoch), sink=log, every=2)
    assert cb.sink is log and cb.every == 2
    cbs = CallbackList([cb])
    assert not cbs.has("on_epoch_begin")  # an attribute is not a hook
    cbs.on_epoch_end(4, {})
    assert log == [4]


def test_a_hook_name_typo_is_kept_but_warned_about_naming_the_hook():
    with pytest.warns(UserWarning, match="'on_epoch_ends' is not a callback hook.*did you mean 'on_epoch_end'"):
        cb = LambdaCallback(on_epoch_ends=print)
    assert cb.on_epoch_ends is print and not CallbackList([cb]).has("on_epoch_end")


def test_non_callable_hooks_are_refused():
    with pytest.raises(TypeError, match="on_epoch_end must be callable"):
        LambdaCallback(on_epoch_end=3)
    with pytest.raises(TypeError, match="on_test_end must be callable"):
        LambdaCallback(on_test_end="print")


def test_hooks_set_on_any_callback_instance_count():
    cb = Callback()
    cb.on_epoch_end = lambda epoch, logs: None
    cbs = CallbackList([cb])
    assert cbs.has("on_epoch_end") and not cbs.has("on_epoch_begin")
