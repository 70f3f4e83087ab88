"""fitkit.data: every x form becomes batches in Keras's form ((x, y), or (x, y, sample_weight) with weights);
validation_split; class weights. Which batches make an epoch is tests/test_epoch_iterator.py's subject."""

import warnings

import numpy as np
import pytest
import torch

from fitkit import data
from fitkit.epoch_iterator import EpochIterator


def _rng():
    return np.random.default_rng(0)


def test_array_source_batches_cover_every_sample_once_with_last_partial_batch():
    x = np.arange(20, dtype=np.float64).reshape(10, 2)
    y = np.arange(10)
    src = data.source(x, y, batch_size=4, shuffle=False)
    batches = list(src.epoch())
    assert [b[0].shape[0] for b in batches] == [4, 4, 2]
    assert batches[0][0].dtype == torch.float32  # float64 NumPy becomes float32, as in Keras
    assert batches[0][1].dtype == torch.int64
    assert torch.equal(torch.cat([b[1] for b in batches]), torch.arange(10))
    assert src.num_steps == 3


def test_shuffled_epochs_use_the_generator_and_differ_between_epochs():
    x = torch.arange(100.0).reshape(50, 2)
    y = torch.arange(50)
    g = torch.Generator().manual_seed(3)
    src = data.source(x, y, batch_size=8, shuffle=True, generator=g)
    first = torch.cat([b[1] for b in src.epoch()])
    second = torch.cat([b[1] for b in src.epoch()])
    assert sorted(first.tolist()) == list(range(50))
    assert not torch.equal(first, second)
    expected = torch.randperm(50, generator=torch.Generator().manual_seed(3))
    assert torch.equal(first, expected)
    # x rows travel with their labels
    for xb, yb in src.epoch():  # (x, y): Keras hands no sample_weight slot when there are no weights
        assert torch.equal(xb[:, 0], yb.float() * 2)


def test_multi_input_list_and_dict_keep_their_structure():
    x1, x2 = np.zeros((6, 3)), np.ones((6, 2))
    src = data.source([x1, x2], np.zeros(6), batch_size=4)
    xb, yb = next(src.epoch())
    assert isinstance(xb, list) and xb[0].shape == (4, 3) and xb[1].shape == (4, 2)
    src = data.source({"a": x1, "b": x2}, np.zeros(6), batch_size=4)
    xb, _ = next(src.epoch())
    assert set(xb) == {"a", "b"}
    only_x = next(data.source([x1, x2], batch_size=4).epoch())
    assert isinstance(only_x, tuple) and len(only_x) == 1 and isinstance(only_x[0], list)  # Keras's (x,)
    assert isinstance(next(data.source(x1, batch_size=4).epoch()), torch.Tensor)  # x alone and xb["b"].shape == (4, 2)


def test_mismatched_sample_counts_name_the_arguments():
    with pytest.raises(ValueError, match=r"x, y and sample_weight.*\[5, 6\]"):
        data.source(np.zeros((5, 2)), np.zeros(6), batch_size=2)


def test_steps_per_epoch_continues_the_pass_into_the_next_epoch_as_keras():
    x = torch.arange(10.0).unsqueeze(1)
    src = data.source(x, torch.arange(10), batch_size=4, steps=2)
    first = [b[1].tolist() for b in src.epoch()]
    with pytest.warns(UserWarning, match="Your input ran out of data; interrupting training"):
        second = [b[1].tolist() for b in src.epoch()]
    third = [b[1].tolist() for b in src.epoch()]
    assert first == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert second == [[8, 9]]  # the pass ended inside the epoch: the epoch ends there
    assert third == [[0, 1, 2, 3], [4, 5, 6, 7]]  # and the next one starts a new pass


def test_validation_split_takes_exactly_the_last_samples_before_shuffling():
    x = np.arange(103)[:, None].astype(np.float32)
    y = np.arange(103)
    (xt, yt, _), (xv, yv, _) = data.split_validation(x, y, None, 0.2)
    split_at = int(np.floor(103 * 0.8))
    assert split_at == 82
    assert yt.tolist() == list(range(82))
    assert yv.tolist() == list(range(82, 103))


def test_validation_split_needs_arrays_and_two_non_empty_parts():
    with pytest.raises(ValueError, match="validation_split: only works with arrays"):
        data.split_validation(iter([]), None, None, 0.2)
    with pytest.raises(ValueError, match="validation_split: 0.95 of 10 samples leaves 0 for training"):
        data.split_validation(np.zeros((10, 1)), np.zeros(10), None, 0.95)


def test_class_weight_becomes_per_sample_weights():
    y = np.array([0, 1, 1, 2])
    src = data.source(np.zeros((4, 1)), y, batch_size=4, class_weight={0: 1.0, 1: 3.0})
    _, _, w = next(src.epoch())
    assert w.tolist() == [1.0, 3.0, 3.0, 1.0]  # class 2 is not listed: weight 1
    onehot = np.eye(3)[y]
    src = data.source(np.zeros((4, 1)), onehot, batch_size=4, class_weight={2: 5.0})
    assert next(src.epoch())[2].tolist() == [1.0, 1.0, 1.0, 5.0]
    binary = np.array([[0.0], [1.0], [1.0], [0.0]])
    src = data.source(np.zeros((4, 1)), binary, batch_size=4, class_weight={1: 2.0})
    assert next(src.epoch())[2].tolist() == [1.0, 2.0, 2.0, 1.0]


def test_class_weight_with_sample_weight_is_refused_as_in_keras():
    with pytest.raises(ValueError, match="class_weight: given together with sample_weight"):
        data.source(np.zeros((2, 1)), np.zeros(2), np.ones(2), batch_size=2, class_weight={0: 2.0})


def test_class_weight_errors_name_the_argument():
    with pytest.raises(ValueError, match="class_weight: got"):
        data.source(np.zeros((2, 1)), np.zeros(2), batch_size=2, class_weight=[1, 2])
    with pytest.raises(ValueError, match="class_weight: got the key -1"):
        data.source(np.zeros((2, 1)), np.zeros(2), batch_size=2, class_weight={-1: 2.0})


def test_tensor_dataset_takes_the_in_memory_path():
    ds = torch.utils.data.TensorDataset(torch.zeros(7, 2), torch.ones(7))
    src = data.source(ds, batch_size=3)
    assert isinstance(src, data.ArraySource)
    assert [b[0].shape[0] for b in src.epoch()] == [3, 3, 1]


class _Squares(torch.utils.data.Dataset):
    def __len__(self):
        return 5

    def __getitem__(self, i):
        return torch.tensor([float(i)]), torch.tensor(float(i * i))


def test_dataset_and_dataloader_and_generators():
    src = data.source(_Squares(), batch_size=2)
    assert [b[1].tolist() for b in src.epoch()] == [[0.0, 1.0], [4.0, 9.0], [16.0]]
    loader = torch.utils.data.DataLoader(_Squares(), batch_size=5)
    src = data.source(loader)
    assert src.num_steps == 1 and next(src.epoch())[1].shape == (5,)

    def gen():
        for i in range(3):
            yield np.full((2, 1), i, dtype=np.float64), np.zeros(2), np.ones(2)
    src = data.source(gen())
    batches = list(src.epoch())
    assert len(batches) == 3 and batches[2][0].dtype == torch.float32 and batches[0][2].tolist() == [1.0, 1.0]


def test_one_shot_generator_that_runs_out_warns_and_marks_exhausted():
    def gen():
        for _ in range(3):
            yield np.zeros((2, 1)), np.zeros(2)
    src = data.source(gen(), steps=2)
    assert len(list(src.epoch())) == 2 and not src.exhausted
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert len(list(src.epoch())) == 1
    assert src.exhausted
    assert [str(w.message) for w in caught] == [
        "Your input ran out of data; interrupting training. Make sure that your dataset or generator can "
        "generate at least `steps_per_epoch * epochs` batches. The data cannot start again (a one-shot "
        "generator or iterator), so training stops after this epoch."]


def test_endless_generator_with_steps_keeps_its_iterator_across_epochs():
    def endless():
        i = 0
        while True:
            yield np.full((1, 1), i), np.zeros(1)
            i += 1
    src = data.source(endless(), steps=3)
    assert [int(b[0]) for b in src.epoch()] == [0, 1, 2]
    assert [int(b[0]) for b in src.epoch()] == [3, 4, 5]


def test_bad_inputs_have_clear_errors():
    with pytest.raises(ValueError, match="y: got a value together with x of type DataLoader"):
        data.source(torch.utils.data.DataLoader(_Squares()), np.zeros(5))
    with pytest.raises(ValueError, match="batch_size: got 8 with a DataLoader"):
        data.source(torch.utils.data.DataLoader(_Squares()), batch_size=8)
    with pytest.raises(ValueError, match="x: got a int"):
        data.source(3)
    with pytest.raises(TypeError, match="dtype <U1"):
        data.source(np.array([["a"], ["b"]]), np.zeros(2))
    with pytest.raises(ValueError, match=r"an iterable yielded a tuple of 4 items"):
        list(data.source(iter([(np.zeros(1),) * 4])).epoch())


def test_resume_position_redraws_the_same_permutation():
    x = torch.arange(30.0).unsqueeze(1)
    g = torch.Generator().manual_seed(1)
    epochs = EpochIterator(data.source(x, torch.arange(30), batch_size=4, shuffle=True, generator=g))
    it = epochs.epoch()
    seen = [next(it)[2][0][1] for _ in range(3)]
    state = epochs.state_dict()
    rest = [b[1] for _, _, batches in it for b in batches]
    assert len(seen) + len(rest) == 8
    for saved in (state, state["source"]):  # also a position saved before the epoch iterator: the source's own
        again = EpochIterator(data.source(x, torch.arange(30), batch_size=4, shuffle=True,
                                          generator=torch.Generator()))
        again.load_state_dict(saved)
        steps = [(first, b[1]) for first, _, batches in again.epoch(skip=3) for b in batches]
        assert [first for first, _ in steps] == [3, 4, 5, 6, 7]
        assert all(torch.equal(a, b) for a, (_, b) in zip(rest, steps)) and len(steps) == len(rest)


def test_is_numpy_input():
    assert data.is_numpy_input(np.zeros(3))
    assert data.is_numpy_input([np.zeros(3), np.zeros(3)])
    assert not data.is_numpy_input(torch.zeros(3))


def test_gathered_pass_and_per_batch_index_select_give_the_same_batches(monkeypatch):
    """Small data is gathered once per pass and sliced; large data is gathered per batch: same batches."""
    x, y = torch.randn(50, 3), torch.arange(50)

    def batches():
        src = data.source(x, y, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(4))
        return [b for _ in range(2) for b in src.epoch()]

    gathered = batches()
    monkeypatch.setattr(data.arrays, "GATHER_PASS_BYTES", 0)
    per_batch = batches()
    assert len(gathered) == len(per_batch) == 14
    for a, b in zip(gathered, per_batch):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and len(a) == len(b) == 2


def test_map_targets_replaces_y_in_the_data_and_in_the_running_pass():
    x, y = torch.randn(10, 2), torch.arange(10)
    src = data.source(x, y, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(0))
    it = src.epoch()
    first = next(it)
    src.map_targets(lambda t: t.float().unsqueeze(1))
    rest = list(it)
    assert first[1].dtype == torch.int64
    assert all(b[1].dtype == torch.float32 and b[1].dim() == 2 for b in rest)
    seen = torch.cat([first[1].float(), torch.cat([b[1].squeeze(1) for b in rest])])
    assert sorted(seen.tolist()) == list(range(10))  # still every sample once, in the pass's order
    src.map_targets(lambda t: None)  # None leaves them as they are
    assert next(src.epoch())[1].dtype == torch.float32


def test_a_dataloader_is_not_iterated_to_find_out_what_it_is():
    """A probe iter() would draw from the loader's generator and change the user's shuffling order."""
    g = torch.Generator().manual_seed(0)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.arange(10.0)), batch_size=5,
                                         shuffle=True, generator=g)
    before = g.get_state()
    src = data.source(loader)
    assert torch.equal(g.get_state(), before)
    assert not src.one_shot
    assert data.source(iter([(torch.zeros(1), torch.zeros(1))])).one_shot


# ------------------------------------------------------------------------------------------ bad input

def test_class_weight_gives_an_unlisted_or_negative_label_weight_1_and_builds_no_table():
    y = np.array([0, 1, 2, -1, 7])
    w = next(data.source(np.zeros((5, 1)), y, batch_size=5, class_weight={1: 3.0, 2: 0.5}).epoch())[2]
    assert w.tolist() == [1.0, 3.0, 0.5, 1.0, 1.0]  # -1 once read the table from its end: 0.5
    huge = data.class_weight_table({0: 2.0, 10**15: 4.0})  # a dense table would need petabytes
    assert huge.keys.numel() == 2
    assert huge.lookup(torch.tensor([10**15, 5, 0, 10**15 + 1])).tolist() == [4.0, 1.0, 2.0, 1.0]
    with pytest.raises(ValueError, match=r"^class_weight: got the key -2; expected non-negative"):
        data.class_weight_table({-2: 1.0})


@pytest.mark.parametrize("path", ["train.csv", __import__("pathlib").Path("data/train.npy")])
def test_a_file_path_given_as_data_blames_that_argument(path):
    # A ValueError, as Keras raises for data it does not recognise.
    with pytest.raises(ValueError, match=r"^x: got a (str|path) '.*train\.(csv|npy)'.*load it first, e\.g\. np\.load"):
        data.source(path)
    with pytest.raises(ValueError, match=r"^x: got a (str|path) .*load it first"):
        data.adapt(path, None, validation_split=0.2)
    with pytest.raises(ValueError, match=r"^y: got a (str|path) .*load it first"):
        data.source(np.zeros((3, 2)), path)
    with pytest.raises(ValueError, match=r"^validation_data: got a (str|path)"):
        data.adapt(np.zeros((3, 2)), np.zeros(3), validation_data=path)


def test_batch_lengths_that_differ_in_an_iterable_are_named():
    src = data.source(iter([(torch.zeros(8, 2), torch.zeros(8)), (torch.zeros(8, 2), torch.zeros(6))]))
    batches = src.epoch()
    next(batches)
    with pytest.raises(ValueError, match=r"^x: a batch holds different numbers of samples \(8 in x, 6 in y\)"):
        next(batches)
    with pytest.raises(ValueError, match=r"\(4 in x, 4 in y, 5 in sample_weight\)"):
        data.check_batch_samples(torch.zeros(4, 2), torch.zeros(4), torch.zeros(5))
    with pytest.raises(ValueError, match=r"^validation_data: a batch holds 0 samples"):
        data.check_batch_samples([torch.zeros(0, 2)], torch.zeros(0), None, "validation_data")
    data.check_batch_samples({"a": torch.zeros(3, 2), "b": torch.zeros(3)}, [torch.zeros(3)], None)


def test_peek_keeps_a_generators_first_batch_and_leaves_a_dataloader_and_the_rngs_as_they_were():
    gen = ((torch.full((2, 1), float(i)), torch.zeros(2)) for i in range(3))
    src = data.source(gen)
    assert src.peek()[0].flatten().tolist() == [0.0, 0.0]
    assert [b[0][0, 0].item() for b in src.epoch()] == [0.0, 1.0, 2.0]  # no batch lost

    ds = torch.utils.data.TensorDataset(torch.arange(20.0).reshape(10, 2), torch.arange(10))
    for loader in (torch.utils.data.DataLoader(ds, batch_size=4, shuffle=True),  # the global RNG
                   torch.utils.data.DataLoader(ds, batch_size=4, shuffle=True, generator=torch.Generator()),
                   torch.utils.data.DataLoader(ds, batch_size=4, sampler=torch.utils.data.SubsetRandomSampler(
                       range(10), generator=torch.Generator().manual_seed(1)))):
        torch.manual_seed(5)
        rng = torch.get_rng_state()
        states = [g.get_state() for g in data.iterables._generators_of(loader)]
        first = data.source(loader).peek()
        assert first[0].shape[1] == 2 and torch.equal(rng, torch.get_rng_state())
        assert all(torch.equal(a, g.get_state()) for a, g in zip(states, data.iterables._generators_of(loader)))
    plain = torch.utils.data.DataLoader(ds, batch_size=4)
    assert data.source(plain).peek()[1].tolist() == [0, 1, 2, 3]


def test_sources_release_the_data_they_hold():
    import weakref

    x = np.zeros((10, 2), np.float32)
    ref = weakref.ref(x)
    src = data.source(x, np.zeros(10), batch_size=4, shuffle=True, generator=torch.Generator())
    next(src.epoch())
    example = src.example
    src.release()
    del x
    assert ref() is None and example.shape == (1, 2)  # the example is a copy
