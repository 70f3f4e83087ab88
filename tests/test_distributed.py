"""More than one process (fitkit.distributed): the same fit script under torchrun, DDP and FSDP2.

The launches are shared and run side by side: one ``torchrun --nproc_per_node=2`` runs every scenario
of ``scripts/distributed_checks.py`` with DDP and then with FSDP2 (gloo, on the CPU), each rank writing
what it saw to a JSON file; one elastic launch (a rank SIGKILLed, torchrun restarting the job); one
two-node launch (two torchrun agents over a loopback rendezvous). Meanwhile this process runs the same
scenarios alone for the single-process numbers. The rest checks the arithmetic of the sharding in this
process, without a process group.
"""

import csv
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

import fitkit
from fitkit import data, distributed

SCRIPTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "scripts")
sys.path.insert(0, SCRIPTS)

import distributed_checks as checks  # noqa: E402
import distributed_resume as resume  # noqa: E402

TOL = 1e-5


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(*args):
    """``python -m torch.distributed.run ARGS``: started, not waited for."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(proc, timeout=240):
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail(f"torchrun did not finish in {timeout} s:\n{out[-4000:]}")
    assert proc.returncode == 0, out[-6000:]
    return out


def _ranks(folder, world=2):
    ranks = []
    for r in range(world):
        with open(os.path.join(folder, f"rank{r}.json")) as f:
            ranks.append(json.load(f))
    return ranks


def _close(got, want, what):
    """Every number of ``got`` within TOL of ``want`` (nested lists and dicts of floats)."""
    if isinstance(want, dict):
        assert set(got) == set(want), f"{what}: keys {sorted(got)} != {sorted(want)}"
        for key in want:
            _close(got[key], want[key], f"{what}[{key!r}]")
    elif isinstance(want, (list, tuple)):
        assert len(got) == len(want), f"{what}: {len(got)} items, expected {len(want)}"
        for i, (g, w) in enumerate(zip(got, want)):
            _close(g, w, f"{what}[{i}]")
    elif isinstance(want, float):
        assert abs(got - want) <= TOL, f"{what}: {got} differs from one process's {want} by {abs(got - want):.2e}"
    else:
        assert got == want, f"{what}: {got!r} != {want!r}"


# ----------------------------------------------------------------------------------------- launches

class Launches:
    """Every torchrun launch of this module, started together; each waited for when a test needs it."""

    def __init__(self, folder):
        self.folder = folder
        self.outs = {name: folder / name for name in ("two_ranks", "elastic", "two_nodes")}
        for out in self.outs.values():
            out.mkdir()
        self.procs = {
            "two_ranks": [_torchrun("--nproc_per_node=2", "--rdzv-backend=c10d",
                                    f"--rdzv-endpoint=127.0.0.1:{_free_port()}",
                                    os.path.join(SCRIPTS, "distributed_checks.py"), self.outs["two_ranks"],
                                    "ddp,fsdp")],
            "elastic": [_torchrun("--nproc_per_node=2", "--max-restarts=1", "--rdzv-backend=c10d",
                                  f"--rdzv-endpoint=127.0.0.1:{_free_port()}",
                                  os.path.join(SCRIPTS, "distributed_resume.py"), self.outs["elastic"], 1)],
        }
        endpoint = f"127.0.0.1:{_free_port()}"
        self.procs["two_nodes"] = [_torchrun("--nnodes=2", "--nproc_per_node=1", "--rdzv-backend=c10d",
                                             f"--rdzv-endpoint={endpoint}", "--rdzv-id=fitkit-two-nodes",
                                             os.path.join(SCRIPTS, "distributed_checks.py"), self.outs["two_nodes"],
                                             "ddp", "arrays") for _ in range(2)]
        self.logs = {}

    def result(self, name):
        """``(ranks' JSON results, output folder, log)`` of a launch, once it has finished."""
        if name not in self.logs:
            self.logs[name] = "".join(_finish(proc) for proc in self.procs[name])
        return _ranks(self.outs[name]), self.outs[name], self.logs[name]


@pytest.fixture(scope="module")
def launches(tmp_path_factory):
    runs = Launches(tmp_path_factory.mktemp("launches"))
    yield runs
    for procs in runs.procs.values():
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


@pytest.fixture(scope="module")
def launched(launches):
    """Both ranks' results of every scenario, for "ddp" and "fsdp", from one torchrun of two processes."""
    ranks, out, _ = launches.result("two_ranks")
    return ranks, out


@pytest.fixture(scope="module")
def alone(launches, tmp_path_factory):
    """The same scenarios in this process (while the launches run): what one process gives with the same
    global batch_size."""
    return checks.scenarios(None, str(tmp_path_factory.mktemp("alone")))


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_ranks_match_one_process(launched, alone, strategy):
    """Shuffled arrays, a validation split, an uneven last batch (an empty share on rank 1), sample weights,
    metrics from summed states (AUC, precision), EarlyStopping, evaluate and predict: within 1e-5."""
    ranks, _ = launched
    want = alone["arrays"]
    assert want["stopped_epoch"] == 2 and want["epochs"] == [0, 1, 2]
    for rank in ranks:
        got = rank[strategy]["arrays"]
        _close(got["history"], want["history"], f"{strategy} history")
        _close(got["weights"], want["weights"], f"{strategy} weights")
        _close(got["evaluate"], want["evaluate"], f"{strategy} evaluate")
        assert got["predict_shape"] == want["predict_shape"] == [13, 1]
        _close(got["predict"], want["predict"], f"{strategy} predict")
        # EarlyStopping stopped both ranks on the same epoch, as it stops one process
        assert (got["stopped_epoch"], got["epochs"], got["stop_reason"]) == (2, [0, 1, 2], "early_stopping")


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_several_outputs_and_epochs_auto_match_one_process(launched, alone, strategy):
    """Named outputs (per-output losses and metrics, empty shares of structured batches, a dict from
    predict); epochs="auto" (its EarlyStopping restoring the best weights) and diagnose()'s words."""
    ranks, _ = launched
    assert set(alone["outputs"]["history"]) >= {"loss", "score_loss", "kind_loss", "val_kind_accuracy"}
    assert alone["auto"]["diagnosis"]
    for rank in ranks:
        # summed: a loss with reduction="sum", uneven shares; steps: steps_per_epoch across passes, two fits
        for name in ("outputs", "auto", "summed", "steps"):
            _close(rank[strategy][name], alone[name], f"{strategy} {name}")


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_gradient_accumulation_matches_one_process_and_syncs_on_each_windows_last_batch(launched, alone, strategy):
    """gradient_accumulation_steps=2 (with global_clipnorm): the weights and logs of one process; under DDP
    6 all-reduces for 12 backward passes (no_sync on each window's first batch)."""
    ranks, _ = launched
    for rank in ranks:
        got = rank[strategy]["accumulated"]
        _close(got["history"], alone["accumulated"]["history"], f"{strategy} history")
        _close(got["weights"], alone["accumulated"]["weights"], f"{strategy} weights")
        if strategy == "ddp":
            assert got["syncs"] == 6, got["syncs"]


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_a_users_train_step_calling_self_is_averaged_too(launched, alone, strategy):
    """``self(x)`` in a user's train_step goes through DDP (FSDP2 shards in place), and with
    ``fitkit.distributed.loss_for_backward`` its gradients are one process's; its own logs (a plain dict:
    here the rows of the last batch, 3 and 2 on the two ranks) are averaged over the ranks."""
    ranks, _ = launched
    assert alone["own_step"]["rows"] == [5.0, 5.0]
    for rank in ranks:
        _close(rank[strategy]["own_step"]["weights"], alone["own_step"]["weights"], f"{strategy} weights")
        assert rank[strategy]["own_step"]["rows"] == [2.5, 2.5]


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_each_rank_forward_sees_half_of_each_batch(launched, alone, strategy):
    """Also: the user's own torch optimizer and scheduler (FSDP2 moves the optimizer onto the shards)."""
    ranks, _ = launched
    assert alone["halves"]["forward_sizes"] == [16] * 8
    assert alone["halves"]["history"]["learning_rate"] == [0.1, 0.05]
    for rank in ranks:
        assert rank[strategy]["halves"]["forward_sizes"] == [8] * 8  # 2 epochs of 4 batches of 16
        _close(rank[strategy]["halves"]["weights"], alone["halves"]["weights"], f"{strategy} weights")
        _close(rank[strategy]["halves"]["history"], alone["halves"]["history"], f"{strategy} history")
        _close(rank[strategy]["halves"]["after_train_on_batch"], alone["halves"]["after_train_on_batch"],
               f"{strategy} train_on_batch")


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_time_budget_stops_every_rank_after_the_same_epoch(launched, strategy):
    """Only rank 0 is slow (0.3 s an epoch, 1 s budget): its clock decides for both."""
    ranks, _ = launched
    zero, one = (rank[strategy]["budget"] for rank in ranks)
    assert zero == one
    assert zero["stop_reason"] == "time_budget" and 1 <= len(zero["epochs"]) <= 3


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_dataloader_gets_a_distributed_sampler(launched, alone, strategy):
    """A user's DataLoader and validation DataLoader match one process; predict on a Dataset gives the
    whole output in order; a shuffled loader reads every sample once per epoch over the ranks, in a new
    order each epoch (set_epoch)."""
    ranks, _ = launched
    assert len(alone["loader"]["predict"]) == 13
    for rank in ranks:
        got = rank[strategy]["loader"]
        _close(got["history"], alone["loader"]["history"], f"{strategy} history")
        _close(got["weights"], alone["loader"]["weights"], f"{strategy} weights")
        _close(got["predict"], alone["loader"]["predict"], f"{strategy} predict")
    reads = [rank[strategy]["loader"]["read"] for rank in ranks]
    # fit's checks before the first step read each rank's first batch (4 samples) once, in the order of
    # the first epoch's first batch; then 16 a rank per epoch, 2 epochs
    assert all(r[:4] == r[4:8] for r in reads)
    reads = [r[4:] for r in reads]
    assert [len(r) for r in reads] == [32, 32]
    epochs = [sorted(reads[0][16 * e:16 * (e + 1)] + reads[1][16 * e:16 * (e + 1)]) for e in range(2)]
    assert epochs == [list(range(32))] * 2
    assert reads[0][:16] != reads[0][16:]


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_rank_zero_alone_writes_and_every_rank_finds_the_files(launched, strategy):
    ranks, out = launched
    zero, one = (rank[strategy]["files"] for rank in ranks)
    assert one["writes"] == [], f"rank 1 wrote: {one['writes']}"
    assert any(w.startswith("replace") and w.endswith(".tmp") for w in zero["writes"])  # atomic writes, by rank 0
    for rank in (zero, one):
        assert all(rank["found"].values()), rank["found"]  # after the barrier, on both ranks
        assert rank["reloaded_equal"]  # load_weights of rank 0's file into each rank's (sharded) model
        assert rank["state_keys"] == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]  # no "module." prefix
        lines = rank["summary"].splitlines()  # the user's class and layers, not DistributedDataParallel or FSDPNet
        assert lines[0] == 'Model: "Net"' and lines[4].startswith("fc1 (Linear)") and lines[5].startswith("fc2 (Linear)")
        assert "Total params: 57" in rank["summary"]  # whole parameters, not a rank's shards
    with open(os.path.join(out, strategy, "log.csv"), newline="") as f:
        assert [row["epoch"] for row in csv.DictReader(f)] == ["0", "1"]
    if strategy == "fsdp":  # the default policy shards each child with parameters, then the model
        assert zero["sharded"] == [["", "fc1", "fc2"], [""]]  # and fsdp_policy=lambda m: False only the model


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_saved_files_load_in_one_process(launched, strategy):
    """model.save and save_weights write whole state dicts that a single process loads (FSDP2's gathered)."""
    ranks, out = launched
    want = ranks[0][strategy]["files"]["weights"]
    model = fitkit.load_model(os.path.join(out, strategy, "model.pt"), custom_objects={"Net": checks.Net})
    assert model.compiled and model.training_state.epoch == 2
    _close([w.reshape(-1).tolist() for w in model.get_weights()], want, "load_model weights")
    assert len(model.optimizer.state_dict()["state"]) == 4  # Adam's moments of all four tensors, whole
    plain = checks.Net()
    plain.load_state_dict(torch.load(os.path.join(out, strategy, "weights.pt"), weights_only=True))
    _close([w.reshape(-1).tolist() for w in plain.get_weights()], want, "save_weights")
    model.fit(*checks.binary_data(16), epochs=3, initial_epoch=2, verbose=0)  # and it trains on, alone


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_backup_and_restore_resumes_mid_epoch_on_every_rank(launched, alone, strategy):
    """Rank 0 writes the backup (the epoch's running sums over both ranks, a sharded model's state whole);
    every rank restores it and the resumed fit ends where one process's resumed fit ends."""
    ranks, _ = launched
    assert alone["resumed"]["backup_at"] == [1, 3]
    for rank in ranks:
        _close(rank[strategy]["resumed"], alone["resumed"], f"{strategy} resumed")


def test_elastic_restart_after_a_rank_is_killed(launches, tmp_path):
    """torchrun --max-restarts=1: rank 1 SIGKILLs itself mid-epoch on the first attempt; the job comes back
    from BackupAndRestore's mid-epoch backup and ends with the weights of a run never killed."""
    want = resume.run(str(tmp_path / "alone"), distribute=None)
    ranks, out, log = launches.result("elastic")
    assert "exitcode: -9" in log  # torchrun saw the SIGKILL, then restarted the job
    for rank in ranks:
        assert rank["attempt"] == 1 and rank["world"] == 2
        _close(rank["weights"], want["weights"], "weights after the restart")
        _close(rank["history"], want["history"], "History after the restart")
    assert not os.path.exists(out / "backup" / "latest.pt")  # deleted when training finished


def test_two_nodes_over_a_loopback_rendezvous(launches, alone):
    """--nnodes=2: two torchrun agents of one process each meet at a c10d rendezvous on 127.0.0.1."""
    ranks, _, _ = launches.result("two_nodes")
    for rank in ranks:
        assert rank["world"] == 2
        _close(rank["ddp"]["arrays"]["weights"], alone["arrays"]["weights"], "weights")
        _close(rank["ddp"]["arrays"]["history"], alone["arrays"]["history"], "history")


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA devices: DDP and FSDP2 over nccl")
def test_nccl_on_two_gpus_matches_one_process(tmp_path, alone):
    """The same scenarios with nccl on cuda:0 and cuda:1 (each rank's device is cuda:LOCAL_RANK)."""
    proc = _torchrun("--nproc_per_node=2", "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{_free_port()}",
                     os.path.join(SCRIPTS, "distributed_checks.py"), tmp_path, "ddp,fsdp", "arrays,halves,loader")
    _finish(proc)
    for rank in _ranks(tmp_path):
        for strategy in ("ddp", "fsdp"):
            got = rank[strategy]
            assert got["arrays"]["device"] == f"cuda:{rank['rank']}"
            # Other kernels than the CPU's: the same arithmetic up to float32 rounding.
            for key in ("history", "weights"):
                np.testing.assert_allclose(np.concatenate([np.ravel(v) for v in _leaves(got["arrays"][key])]),
                                           np.concatenate([np.ravel(v) for v in _leaves(alone["arrays"][key])]),
                                           atol=1e-4)
            assert got["halves"]["forward_sizes"] == [8] * 8


def _leaves(value):
    if isinstance(value, dict):
        return [leaf for key in sorted(value) for leaf in _leaves(value[key])]
    if isinstance(value, list) and value and isinstance(value[0], list):
        return [leaf for item in value for leaf in _leaves(item)]
    return [value]


# ----------------------------------------------------------------------------------------- in this process

def test_shard_splits_each_batch_into_contiguous_shares():
    shards = [distributed.Shard(r, 3) for r in range(3)]
    assert [s.split(10, 17) for s in shards] == [(10, 13), (13, 15), (15, 17)]
    assert [(s.local, s.total) for s in shards] == [(3, 7), (2, 7), (2, 7)]
    assert [s.split(0, 2) for s in shards] == [(0, 1), (1, 2), (2, 2)]  # rank 2's share is empty
    # A rank's positions of a pass, batch after batch: its shares of 4 batches of 5 and a last one of 2.
    assert shards[1].positions(22, 5).tolist() == [2, 3, 7, 8, 12, 13, 17, 18, 21]
    together = torch.cat([s.positions(22, 5) for s in shards])
    assert sorted(together.tolist()) == list(range(22))


def test_array_source_shards_every_batch_of_the_same_permutation():
    """Each rank's batches are its shares of the batches one process draws (same generator seed)."""
    x = torch.arange(23, dtype=torch.float32).unsqueeze(1)

    def batches(shard):
        source = data.ArraySource(x, x, batch_size=6, shuffle=True, generator=torch.Generator().manual_seed(5),
                                  shard=shard)
        out = []
        for item in source.epoch():
            # A rank's batch travels with its share sizes (the epoch iterator may draw several before a step).
            sizes = None if shard is None else (item.local, item.total)
            xb, _ = item if shard is None else item.batch
            out.append((xb.reshape(-1).tolist(), sizes))
        return out

    one = batches(None)
    ranks = [batches(distributed.Shard(r, 4)) for r in range(4)]
    for k, (whole, _) in enumerate(one):
        counted = [b for rank in ranks for b, (local, total) in [rank[k]] if local]
        assert sum(counted, []) == whole  # the shares, in rank order, make up the batch
        assert all(total == len(whole) for rank in ranks for _, (_, total) in [rank[k]])
    # the last batch of 5 over 4 ranks: shares 2, 1, 1, 1; all full batches of 6: 2, 2, 1, 1
    assert [rank[-1][1][0] for rank in ranks] == [2, 1, 1, 1]


def test_shard_sampler_reads_each_sample_once_and_keeps_the_global_batches():
    """ShardSampler (DistributedSampler without its padding): the k-th batches of the ranks together are the
    k-th batch of one loader of world * batch_size over the same order; a short rank runs an empty share."""
    dataset = torch.utils.data.TensorDataset(torch.arange(13))
    world, per_rank = 3, 2
    orders = []
    for r in range(world):
        sampler = data.ShardSampler(dataset, world, r, shuffle=True, seed=4)
        sampler.set_epoch(1)
        assert isinstance(sampler, torch.utils.data.DistributedSampler)
        orders.append(list(sampler))
    assert [len(order) for order in orders] == [5, 4, 4]
    assert sorted(sum(orders, [])) == list(range(13))  # no padding: every sample once
    whole = torch.randperm(13, generator=torch.Generator().manual_seed(5)).tolist()  # seed + epoch
    layouts = [data.LoaderLayout(13, world, r, per_rank) for r in range(world)]
    assert {layout.steps for layout in layouts} == {3}  # rank 0's batches: ceil(5 / 2)
    for k in range(3):
        batch = sorted(sum((orders[r][k * per_rank:(k + 1) * per_rank] for r in range(world)), []))
        assert batch == sorted(whole[k * world * per_rank:(k + 1) * world * per_rank])
        assert all(layout.total(k) == len(batch) for layout in layouts)
        assert sum(layout.local(k) for layout in layouts) == len(batch)
    assert [layout.local(2) for layout in layouts] == [1, 0, 0]  # 1 sample left: ranks 1 and 2 have none


def test_loss_for_backward_weighs_the_ranks_share_of_the_global_batch():
    loss = torch.tensor(2.0)

    class Compiled:
        shard = distributed.Shard(1, 2)

    class Model:
        _compiled = Compiled()

    model, shard = Model(), Compiled.shard
    assert distributed.loss_for_backward(model, loss) is loss  # no batch in flight (train_on_batch)
    shard.split(0, 5)  # rank 1 holds 2 of 5: its mean weighs 2 * 2 / 5
    assert float(distributed.loss_for_backward(model, loss)) == pytest.approx(2.0 * 4 / 5)
    shard.split(0, 1)  # an empty share
    assert float(distributed.loss_for_backward(model, loss)) == 0.0
    shard.sum_reduction = True  # a loss summed over samples: the mean over 2 ranks needs x2
    shard.split(0, 6)
    assert float(distributed.loss_for_backward(model, loss)) == 4.0


def test_one_process_is_untouched_by_the_distributed_machinery():
    """Without torchrun: distribute="auto" trains alone, writes, prints; no process group is made."""
    x, y = checks.binary_data(20)
    model = checks.Net()
    model.compile(optimizer="sgd", loss="mse")
    compiled = model._compiled
    assert (compiled.strategy, compiled.wrapper, compiled.shard) == (None, None, None)
    assert distributed.is_writer(model) and not distributed.initialized()
    with distributed.no_sync(model):  # a no-op context alone, so gradient accumulation can always use it
        model.fit(x, y, epochs=1, verbose=0)
    assert not distributed.initialized()


def test_distribute_argument_errors_name_what_was_given():
    model = checks.Net()
    with pytest.raises(ValueError, match=r"distribute: got 'dp'; expected 'auto'"):
        model.compile(optimizer="sgd", loss="mse", distribute="dp")
    with pytest.raises(ValueError, match=r"distribute: got 'ddp', but this process was not started by torchrun"):
        model.compile(optimizer="sgd", loss="mse", distribute="ddp")
    with pytest.raises(ValueError, match=r"fsdp_policy: given with distribute='auto', which resolves to None"):
        model.compile(optimizer="sgd", loss="mse", fsdp_policy={torch.nn.Linear})
    with pytest.raises(ValueError, match=r"fsdp_policy: got 3; expected a function module -> bool"):
        distributed.check_fsdp_policy(3)
    policy = distributed.check_fsdp_policy({torch.nn.Linear})
    assert policy(torch.nn.Linear(1, 1)) and not policy(torch.nn.ReLU())
    assert not model.compiled  # nothing changed


def test_each_batch_carries_its_share_to_its_step_also_when_an_execution_draws_several():
    """steps_per_execution=4 draws four batches before their steps run: each step still weighs its own."""
    import types

    from fitkit.epoch_iterator import EpochIterator

    x = torch.arange(23, dtype=torch.float32).unsqueeze(1)
    shard = distributed.Shard(1, 4)
    source = data.ArraySource(x, x, batch_size=6, shuffle=True, generator=torch.Generator().manual_seed(5),
                              shard=shard)
    model = types.SimpleNamespace(_compiled=types.SimpleNamespace(shard=shard, wrapper=None, routing=False))
    seen = []
    step = distributed.routed(model, lambda batch: seen.append((len(batch[0]), shard.local, shard.total)))
    for _, _, batches in EpochIterator(source, steps_per_execution=4).epoch():
        for batch in batches:
            step(batch)
    # rank 1 of 4: batches of 6 give shares of 2 (ranks 0 and 1) and 1; the last batch of 5 gives it 1
    assert seen == [(2, 2, 6), (2, 2, 6), (2, 2, 6), (1, 1, 5)]
