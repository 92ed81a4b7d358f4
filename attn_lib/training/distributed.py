"""Data-parallel training, as ``torchrun`` runs it: the process group, each rank's device, the
wrapped model and the few collective operations the training loop needs.

``torchrun --standalone --nproc_per_node N -m attn_lib train ...`` starts N processes (ranks)
that each call :func:`attn_lib.train`; together they train one run:

* **process group**: initialised from torchrun's environment -- ``nccl`` for CUDA, ``gloo`` for
  CPU -- unless the caller has initialised one (then it is used as it is and left open);
* **device**: rank ``r`` of a CUDA run uses ``cuda:LOCAL_RANK``;
* **data**: the batch size is the *global* batch. Every epoch's seeded permutation is cut into
  global batches exactly as in one process, and each rank takes a contiguous chunk of every
  global batch (``attn_lib.data.loaders.shard_bounds``), for the device-resident loader and the
  torch DataLoader alike. The chunks are disjoint and make up the one-process batch, and they
  depend only on (seed, epoch), so a resumed run continues identically;
* **model**: wrapped in ``DistributedDataParallel``, which averages the ranks' gradients: for a
  loss that is a mean over the batch, the gradient of the global batch. Batch norm normalises
  each rank's chunk with that chunk's statistics (its running statistics are rank 0's:
  DistributedDataParallel broadcasts them at every step) unless ``sync_bn`` makes the layers
  ``SyncBatchNorm``, which uses the global batch's (GPUs only);
* **evaluation**: sharded as well -- each rank sums loss and hits over its part of the test set
  (with rank 0's batch-norm statistics and EMA buffers, broadcast first) and the sums are
  all-reduced, so every rank holds the metrics of the whole test set;
* **files and output**: rank 0 alone writes checkpoints, metrics, config and figures, and prints;
  the run folder is chosen on rank 0 and announced to the others (:func:`decide_on_main`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

import torch
import torch.distributed as dist
from torch import nn

T = TypeVar("T")


class Distributed(NamedTuple):
    """Where this process stands in a data-parallel run (:data:`SINGLE` when there is none)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  #: :func:`setup` initialised the process group (teardown ends it)

    @property
    def active(self) -> bool:
        """More than one process trains."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """This process writes the run's files and prints (rank 0)."""
        return self.rank == 0


SINGLE = Distributed()


def setup(device_type: str) -> Distributed:
    """Join the data-parallel run this process belongs to, if any.

    An initialised process group (the caller's) is used as it is. Otherwise, when a launcher
    such as torchrun set ``WORLD_SIZE`` > 1, one is initialised from its environment
    (``MASTER_ADDR``, ``MASTER_PORT``, ``RANK``, ``WORLD_SIZE``) with ``nccl`` for CUDA and
    ``gloo`` for CPU, and :func:`teardown` ends it. A lone process gets :data:`SINGLE`.
    """
    if dist.is_available() and dist.is_initialized():
        owns = False
    elif int(os.environ.get("WORLD_SIZE", "1")) > 1:
        if not dist.is_available():
            raise RuntimeError("this PyTorch build has no torch.distributed; start one process")
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
        owns = True
    else:
        return SINGLE
    rank, world = dist.get_rank(), dist.get_world_size()
    count = torch.cuda.device_count() if device_type == "cuda" else 1
    local = int(os.environ.get("LOCAL_RANK", rank % max(1, count)))
    return Distributed(rank=rank, world_size=world, local_rank=local, owns_group=owns)


def teardown(group: Distributed) -> None:
    """End the process group if :func:`setup` initialised it."""
    if group.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def rank_device(device: torch.device, group: Distributed) -> torch.device:
    """This rank's device: ``cuda:LOCAL_RANK`` for a CUDA device given without an index (an
    explicit index is kept), made the current CUDA device."""
    if group.active and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", group.local_rank)
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)
    return device


def check_global_batch(batch_size: int, train_size: int, group: Distributed) -> None:
    """The global batch must split evenly over the ranks (equal chunks: the average of their
    gradients is then the global batch's), and every epoch needs a full batch."""
    if not group.active:
        return
    if batch_size % group.world_size:
        lower = batch_size - batch_size % group.world_size
        raise ValueError(
            f"the batch size {batch_size} is the global batch, split evenly over "
            f"{group.world_size} processes; choose a multiple of {group.world_size}, e.g. "
            f"{lower or group.world_size} or {lower + group.world_size}")
    if train_size < batch_size:
        raise ValueError(f"the batch size {batch_size} is larger than the training set "
                         f"({train_size} images)")


def decide_on_main(group: Distributed, decide: Callable[[], T]) -> T:
    """Run ``decide`` on rank 0 and hand its result -- or its exception -- to every rank, so
    that all ranks take the same decision (a run folder, an error) and none waits forever."""
    if not group.active:
        return decide()
    box: list[Any] = [None]
    if group.is_main:
        try:
            box[0] = ("ok", decide())
        except Exception as exc:  # raised again on every rank, below
            box[0] = ("error", exc)
    dist.broadcast_object_list(box, src=0)
    kind, value = box[0]
    if kind == "error":
        raise value
    return value


def convert_sync_batchnorm(net: nn.Module, device: torch.device) -> nn.Module:
    """``net`` with its batch-norm layers replaced, in place, by ``SyncBatchNorm`` layers
    holding the same tensors (statistics over the global batch; CUDA only). Each remembers
    its original class for :func:`revert_sync_batchnorm`."""
    check_sync_bn(device)
    return _swap_batchnorm(net, to_sync=True)


def check_sync_bn(device: torch.device) -> None:
    """``SyncBatchNorm`` trains on GPUs only: raise ``ValueError`` for another device."""
    if device.type != "cuda":
        raise ValueError("--sync-bn (sync_bn=True) needs CUDA GPUs: PyTorch's SyncBatchNorm "
                         "does not run on CPUs; train without it")


def revert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Undo :func:`convert_sync_batchnorm` in place (same tensors), so that a trained model
    runs outside a process group."""
    return _swap_batchnorm(module, to_sync=False)


def _swap_batchnorm(module: nn.Module, to_sync: bool) -> nn.Module:
    for name, child in module.named_children():
        is_sync = isinstance(child, nn.SyncBatchNorm)
        if to_sync and isinstance(child, nn.modules.batchnorm._BatchNorm) and not is_sync:
            kind = nn.SyncBatchNorm
        elif not to_sync and is_sync:
            kind = getattr(child, "plain_type", nn.BatchNorm2d)
        else:
            _swap_batchnorm(child, to_sync)
            continue
        swapped = kind(child.num_features, child.eps, child.momentum, child.affine,
                       child.track_running_stats)
        swapped.load_state_dict(child.state_dict(keep_vars=True), assign=True)
        swapped.train(child.training)
        if to_sync:
            swapped.plain_type = type(child)
        setattr(module, name, swapped)
    return module


def wrap(net: nn.Module, device: torch.device, group: Distributed) -> nn.Module:
    """``net`` as the training step calls it: in ``DistributedDataParallel`` when several
    ranks train (it averages their gradients in the backward pass), else ``net`` itself."""
    if not group.active:
        return net
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(net, device_ids=ids)


def all_reduce_sum(tensor: torch.Tensor, group: Distributed) -> torch.Tensor:
    """``tensor`` summed over the ranks, in place (unchanged in a lone process)."""
    if group.active:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_min(tensor: torch.Tensor, group: Distributed) -> torch.Tensor:
    """``tensor``'s minimum over the ranks, in place (unchanged in a lone process)."""
    if group.active:
        dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
    return tensor


@torch.no_grad()
def broadcast_buffers(module: nn.Module, group: Distributed) -> None:
    """Give every rank rank 0's buffers of ``module`` (batch-norm statistics): the ranks'
    own differ by the statistics of their last chunk."""
    if group.active:
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)
