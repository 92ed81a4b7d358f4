"""Data-parallel training: sharding, and two CPU processes under torchrun (gloo).

The torchrun tests start real processes: the whole command line as a user types it, a gradient
check in a user's own process group, and a kill and resume.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import attn_lib
from attn_lib.checkpoint import load_checkpoint
from attn_lib.data import DeviceLoader, load_dataset, torch_dataloader
from attn_lib.training import distributed, read_metrics

REPO = Path(__file__).resolve().parents[1]
TIME_KEYS = {"train_time_s", "time_s", "elapsed_s", "images_per_s", "warmup_s"}
#: Two processes on the CPU; no GPU visible, one thread each (the test machine has two cores).
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "ATTN_LIB_SMOKE": "0",
       "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
SETTINGS = ["--preset", "smoke", "--epochs", "4", "--limit-train", "128", "--limit-test", "64",
            "--batch-size", "32", "--seed", "5", "--device", "cpu", "--quiet"]


def torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
            "2", *args]


def _strip(rows):
    return [{k: v for k, v in row.items() if k not in TIME_KEYS} for row in rows]


# --- sharding, in one process ----------------------------------------------------------------


@pytest.mark.parametrize("train", [True, False])
def test_device_loader_shards_are_the_one_process_batches_cut_in_chunks(train):
    data = load_dataset("synthetic", "train", limit=70)  # 70 = 4 x 16 + 6: a ragged last batch
    kw = dict(train=train, seed=2, drop_last=False)
    whole = list(DeviceLoader(data, 16, **kw))
    shards = [list(DeviceLoader(data, 16, rank=r, world_size=3, **kw)) for r in range(3)]
    assert len(whole) == 5 and all(len(s) == 5 for s in shards)
    for i, (x, y) in enumerate(whole):  # the same images, augmented the same way
        assert torch.equal(torch.cat([s[i][0] for s in shards]), x)
        assert torch.equal(torch.cat([s[i][1] for s in shards]), y)
    assert [len(s[-1][1]) for s in shards] == [2, 2, 2]
    with pytest.raises(ValueError, match="rank must be in"):
        DeviceLoader(data, 16, train=True, rank=2, world_size=2)


def test_torch_loader_shards_cut_the_shuffled_batches_of_one_process():
    data = load_dataset("synthetic", "train", limit=40)
    # One rank: exactly the batches of DataLoader(shuffle=True) with the same generator.
    reference = torch.utils.data.DataLoader(list(range(40)), batch_size=8, shuffle=True,
                                            drop_last=True,
                                            generator=torch.Generator().manual_seed(7))
    whole = list(torch_dataloader(data, 8, train=True, num_workers=0, seed=7))
    order = [b.tolist() for b in reference]
    assert [len(y) for _, y in whole] == [8] * 5
    assert [y.tolist() for _, y in whole] == [data.labels[b].tolist() for b in order]
    ranks = [list(torch_dataloader(data, 8, train=True, num_workers=0, seed=7, rank=r,
                                   world_size=2)) for r in range(2)]
    for i, batch in enumerate(order):
        assert ranks[0][i][1].tolist() + ranks[1][i][1].tolist() == data.labels[batch].tolist()


def test_global_batch_must_split_evenly():
    two = distributed.Distributed(rank=0, world_size=2)
    distributed.check_global_batch(32, 100, two)
    with pytest.raises(ValueError, match="global batch.*multiple of 3, e.g. 30 or 33"):
        distributed.check_global_batch(32, 100, two._replace(world_size=3))
    with pytest.raises(ValueError, match="larger than the training set"):
        distributed.check_global_batch(32, 20, two)
    distributed.check_global_batch(33, 20, distributed.SINGLE)  # one process: no rule


def test_sync_batchnorm_round_trip_keeps_layers_and_tensors():
    net = attn_lib.build_model("vgg", num_classes=8, width=0.0625)  # BatchNorm2d and 1d
    kinds, params = [type(m) for m in net.modules()], list(net.parameters())
    state = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(ValueError, match="needs CUDA GPUs"):
        distributed.convert_sync_batchnorm(net, torch.device("cpu"))
    distributed.convert_sync_batchnorm(net, torch.device("cuda"))  # builds no CUDA tensor
    assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in net.modules())
    assert all(a is b for a, b in zip(net.parameters(), params))  # an optimiser's still fit
    distributed.revert_sync_batchnorm(net)
    assert [type(m) for m in net.modules()] == kinds
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in state.items())


# --- two processes under torchrun ------------------------------------------------------------


@pytest.fixture(scope="module")
def unbroken(tmp_path_factory):
    """``torchrun ... -m attn_lib train`` without --out: rank 0 must choose the run folder."""
    cwd = tmp_path_factory.mktemp("ddp")
    proc = subprocess.run(torchrun("-m", "attn_lib", "train", *SETTINGS), cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=600)
    return cwd, proc


def test_torchrun_trains_one_run_with_one_metrics_row_per_epoch(unbroken):
    cwd, proc = unbroken
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = (cwd / "runs").iterdir()  # one run folder, not one per process
    assert {"last.pt", "metrics.jsonl", "config.json"} <= {
        p.name for p in run_dir.iterdir()}
    assert [row["epoch"] for row in read_metrics(run_dir)] == [1, 2, 3, 4]
    config = load_checkpoint(run_dir / "last.pt")["config"]
    assert config["processes"] == 2 and config["sync_bn"] is False
    assert proc.stdout.count("done: 4 epochs") == 1  # rank 0 alone prints


def _workers(agent: int) -> list[int]:
    """The worker processes torchrun (process ``agent``) started."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == agent:
            children.append(int(stat.parent.name))
    return children


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds torchrun's workers in /proc")
def test_kill_and_resume_under_torchrun(unbroken, tmp_path):
    cwd, proc = unbroken
    assert proc.returncode == 0, proc.stderr[-3000:]
    (full,) = (cwd / "runs").iterdir()
    broken = tmp_path / "broken"
    agent = subprocess.Popen(torchrun("-m", "attn_lib", "train", "--out", str(broken),
                                      *SETTINGS), env=ENV, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (broken / "last.pt").exists():
        assert agent.poll() is None, "the run ended before writing a checkpoint"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    for pid in _workers(agent.pid):  # every process of the job dies at once
        os.kill(pid, signal.SIGKILL)
    agent.wait(timeout=120)
    assert agent.returncode != 0
    killed_at = load_checkpoint(broken / "last.pt")["epoch"]
    assert 1 <= killed_at < 4, "the kill came too late to test resuming"

    resumed = subprocess.run(torchrun("-m", "attn_lib", "train", "--out", str(broken),
                                      "--resume", "--device", "cpu", "--quiet"),
                             env=ENV, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _strip(read_metrics(broken)) == _strip(read_metrics(full))
    a, b = load_checkpoint(full / "last.pt"), load_checkpoint(broken / "last.pt")
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key


def test_averaged_gradient_is_the_gradient_of_the_global_batch(tmp_path):
    # tests/ddp_worker.py: two ranks in their own process group compute the first step's
    # DistributedDataParallel gradient of their shards, then call attn_lib.train in it.
    sys.path.insert(0, str(REPO / "tests"))
    try:
        from ddp_worker import GRADIENT_CHECK, first_step_gradient
    finally:
        sys.path.pop(0)
    proc = subprocess.run(torchrun(str(REPO / "tests" / "ddp_worker.py"), str(tmp_path)),
                          env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved = torch.load(tmp_path / "gradient.pt", weights_only=True)
    data = load_dataset("synthetic", "train", limit=GRADIENT_CHECK["limit"])
    x, y = next(iter(DeviceLoader(data, GRADIENT_CHECK["batch_size"], train=True,
                                  seed=GRADIENT_CHECK["seed"])))
    assert torch.equal(saved["x"], x) and torch.equal(saved["y"], y)  # shards = global batch
    single = first_step_gradient(x, y, distributed.SINGLE)
    assert single.keys() == saved["grads"].keys()
    for name, grad in single.items():
        torch.testing.assert_close(saved["grads"][name], grad, rtol=1e-5, atol=1e-7,
                                   msg=name)
    # train() ran in the caller's process group, and left it open (the worker checks).
    assert len(read_metrics(tmp_path / "run")) == 1
