"""CSVLogger: the file holds exactly the logs given, in Keras's layout."""

import csv

from fitkit.callbacks import CallbackList, CSVLogger


def run(cb, logs_per_epoch, check_each=None):
    cbs = CallbackList([cb])
    cbs.on_train_begin()
    for epoch, logs in enumerate(logs_per_epoch):
        cbs.on_epoch_end(epoch, dict(logs))
        if check_each:
            check_each(epoch)
    cbs.on_train_end()


def rows(path, sep=","):
    with open(path, newline="") as f:
        return list(csv.reader(f, delimiter=sep))


LOGS = [
    {"loss": 0.5, "accuracy": 0.75, "val_loss": 0.625, "val_accuracy": 0.5},
    {"loss": 0.25, "accuracy": 0.875, "val_loss": 0.375, "val_accuracy": 0.8125},
]


def test_header_is_epoch_then_sorted_keys_and_rows_equal_the_logs(tmp_path):
    path = tmp_path / "log.csv"
    run(CSVLogger(path), LOGS)
    table = rows(path)
    assert table[0] == ["epoch", "accuracy", "loss", "val_accuracy", "val_loss"]
    for epoch, (row, logs) in enumerate(zip(table[1:], LOGS)):
        got = dict(zip(table[0], row))
        assert int(got.pop("epoch")) == epoch
        assert {k: float(v) for k, v in got.items()} == logs
    assert path.read_bytes().count(b"\r\n") == 3  # the csv module's excel dialect, as Keras


def test_rows_are_flushed_every_epoch(tmp_path):
    path = tmp_path / "log.csv"
    lines = []
    run(CSVLogger(path), LOGS, check_each=lambda epoch: lines.append(len(rows(path))))
    assert lines == [2, 3]


def test_without_val_keys_val_columns_are_added_and_read_na(tmp_path):
    path = tmp_path / "log.csv"
    run(CSVLogger(path), [{"loss": 1.0}, {"loss": 0.5, "val_loss": 0.75}])
    assert rows(path) == [["epoch", "loss", "val_loss"], ["0", "1.0", "NA"], ["1", "0.5", "0.75"]]


def test_separator_and_list_values(tmp_path):
    path = tmp_path / "log.tsv"
    run(CSVLogger(path, separator="\t"), [{"loss": 1.0, "val_loss": 2.0, "per_class": [1, 2]}])
    assert rows(path, sep="\t")[1] == ["0", "1.0", '"[1, 2]"', "2.0"]


def test_append_does_not_repeat_the_header(tmp_path):
    path = tmp_path / "log.csv"
    run(CSVLogger(path), LOGS[:1])
    run(CSVLogger(path, append=True), LOGS[1:])
    table = rows(path)
    assert len(table) == 3 and table[0][0] == "epoch" and table[2][2] == "0.25"


def test_append_to_a_new_file_writes_the_header_and_overwrite_starts_over(tmp_path):
    path = tmp_path / "sub" / "log.csv"
    run(CSVLogger(path, append=True), LOGS[:1])
    assert rows(path)[0][0] == "epoch"
    run(CSVLogger(path), LOGS[1:])
    assert len(rows(path)) == 2
