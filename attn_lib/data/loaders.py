"""Batches for training: a fast on-device loader and the reference-style DataLoader.

:class:`DeviceLoader` keeps the whole uint8 dataset on the accelerator and augments whole
batches there (random crop with 4 px zero padding + horizontal flip, as in the paper's CIFAR
setup), so an epoch of CIFAR costs no host-to-device copies and no worker processes. Its random
numbers come from a CPU generator seeded by ``(seed, epoch)``, so the batches of an epoch are the
same on any device and after a resume.

:func:`torch_dataloader` is the conventional path -- torchvision transforms per image in worker
processes -- kept as the reference the fast path is checked against.

Both can serve one process of a data-parallel run (``rank`` of ``world_size``): the batch size
is then the *global* batch, every epoch's seeded permutation is cut into global batches exactly
as in one process, and each rank yields its contiguous chunk of every global batch
(:func:`shard_bounds`). The chunks of all ranks are disjoint and together make up the
one-process batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from .._seed import mix_seed
from .._validation import check_choice
from .base import ArrayDataset

PAD = 4
#: Training augmentations of :class:`DeviceLoader`: random crop (pad 4) + flip, flip only, none.
AUGMENTATIONS = ("crop-flip", "flip", "none")


def random_crop_flip(images: Tensor, generator: torch.Generator, pad: int = PAD,
                     flip: bool = True) -> Tensor:
    """Randomly crop (after zero-padding by ``pad``) and horizontally flip a batch, vectorised.

    Equivalent per image to ``RandomCrop(size, padding=pad)`` then ``RandomHorizontalFlip()``,
    but done with one gather for the whole batch. The random offsets and flips are drawn from
    ``generator`` (a CPU generator, so results do not depend on the device of ``images``).

    Args:
        images: (N, C, H, W) tensor of any dtype, on any device.
        generator: CPU ``torch.Generator`` supplying the randomness.
        pad: zero padding on each side; offsets are uniform in ``[0, 2 * pad]``.
        flip: also flip each image left-right with probability 1/2.

    Returns:
        A new tensor with the shape, dtype and device of ``images``.
    """
    offsets, flipped = _draw_crop_flip(images.shape[0], pad, flip, generator)
    return crop_flip(images, offsets.to(images.device), flipped.to(images.device), pad)


def _draw_crop_flip(n: int, pad: int, flip: bool, generator: torch.Generator
                    ) -> tuple[Tensor, Tensor]:
    offsets = torch.randint(0, 2 * pad + 1, (n, 2), generator=generator)
    flipped = torch.rand(n, generator=generator) < 0.5
    return offsets, flipped & flip


def crop_flip(images: Tensor, offsets: Tensor, flipped: Tensor, pad: int = PAD) -> Tensor:
    """Crop each image of the zero-padded batch at ``offsets`` (N, 2: row, column) in
    ``[0, 2 * pad]`` and mirror those with ``flipped`` (N,) set; all on ``images.device``."""
    n, c, h, w = images.shape
    device = images.device
    cols = torch.arange(w, device=device).view(1, -1)
    # A flip of the crop reads the crop's columns right to left: fold it into the gather.
    cols = torch.where(flipped.view(-1, 1), w - 1 - cols, cols) + offsets[:, 1:]
    rows = torch.arange(h, device=device).view(1, -1) + offsets[:, :1]
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
    batch = torch.arange(n, device=device).view(n, 1, 1, 1)
    channel = torch.arange(c, device=device).view(1, c, 1, 1)
    return padded[batch, channel, rows.view(n, 1, h, 1), cols.view(n, 1, 1, w)]


def _augmentation(augment: bool | str) -> str:
    if isinstance(augment, bool):
        return "crop-flip" if augment else "none"
    check_choice("augment", augment, AUGMENTATIONS)
    return augment


def _default_drop_last(train: bool, size: int, batch_size: int) -> bool:
    # Drop the ragged last batch when training (a batch of 1 breaks batch norm), unless that
    # would leave no batch at all on a tiny dataset.
    return train and size >= batch_size


def shard_bounds(length: int, rank: int, world_size: int) -> tuple[int, int]:
    """``[start, stop)`` of rank ``rank``'s contiguous chunk when a batch of ``length`` items is
    split over ``world_size`` ranks (chunk sizes differ by at most one)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    return length * rank // world_size, length * (rank + 1) // world_size


def to_device(tensor: Tensor, device: torch.device) -> Tensor:
    """Copy a CPU tensor to ``device``; to a GPU from pinned memory without blocking the host
    (the caching host allocator keeps the pinned buffer until the copy has run)."""
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


class DeviceLoader:
    """Iterate over an :class:`ArrayDataset` held entirely on ``device``.

    Yields ``(x, y)``: ``x`` float (B, 3, H, W) normalised with the dataset's mean/std, ``y``
    int64 (B,), both on ``device``. With ``train=True`` the order is shuffled and (by default)
    each batch is augmented by :func:`random_crop_flip`.

    Each pass uses the loader's current epoch and then advances it, so consecutive passes differ
    even if :meth:`set_epoch` is never called; ``set_epoch(e)`` makes the next pass exactly the
    one an uninterrupted run sees in epoch ``e`` (shuffle and augmentation depend only on
    ``(seed, e)``).

    Args:
        ds: the dataset (its uint8 images are copied to ``device`` once).
        batch_size: images per batch.
        train: shuffle (and augment, unless ``augment=False``); else keep order.
        device: where batches live, e.g. ``"cuda"`` or ``"cpu"``.
        seed: seed of the shuffle and augmentation.
        augment: one of :data:`AUGMENTATIONS` (``True`` = ``"crop-flip"``, ``False`` =
            ``"none"``); defaults to ``"crop-flip"`` when ``train``, else ``"none"``.
        drop_last: drop the last incomplete batch; defaults to ``train`` (if a full batch exists).
        channels_last: yield ``x`` in channels-last memory format (faster convs with AMP).
        rank, world_size: yield only this rank's chunk of every (global) batch of
            ``batch_size`` images (see the module docstring); ``len()`` still counts the global
            batches, and a rank whose chunk of the last, incomplete batch is empty skips it.
    """

    def __init__(self, ds: ArrayDataset, batch_size: int, train: bool,
                 device: torch.device | str = "cpu", seed: int = 0,
                 augment: bool | str | None = None,
                 drop_last: bool | None = None, channels_last: bool = False,
                 rank: int = 0, world_size: int = 1) -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        shard_bounds(batch_size, rank, world_size)  # validates rank and world_size
        self.dataset = ds
        self.batch_size = batch_size
        self.train = train
        self.device = torch.device(device)
        self.seed = seed
        self.augment = _augmentation(train if augment is None else augment)
        self.drop_last = (_default_drop_last(train, len(ds), batch_size) if drop_last is None
                          else drop_last)
        self.channels_last = channels_last
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.images = ds.images.to(self.device)
        self.labels = ds.labels.to(self.device)
        self.mean, self.std = ds.mean, ds.std
        mean = torch.tensor(ds.mean, device=self.device).view(1, -1, 1, 1)
        std = torch.tensor(ds.std, device=self.device).view(1, -1, 1, 1)
        self._scale, self._shift = 1 / (255 * std), mean / std

    def set_epoch(self, epoch: int) -> None:
        """Make the next pass the one of epoch ``epoch`` (for resuming)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        # Draw the whole epoch's randomness up front (every rank the same) and copy it to the
        # device once: a small copy per batch would make the host wait for the GPU every step.
        generator = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch))
        self.epoch += 1
        n = len(self.dataset)
        order = torch.randperm(n, generator=generator) if self.train else torch.arange(n)
        offsets, flipped = _draw_crop_flip(n, PAD, True, generator)
        if self.augment == "flip":
            offsets.fill_(PAD)  # the centre crop of the padded image is the image itself
        order, offsets, flipped = (to_device(t, self.device) for t in (order, offsets, flipped))
        for batch in self._local_batches(n):
            x = self.images[order[batch]]
            if self.augment != "none":
                x = crop_flip(x, offsets[batch], flipped[batch])
            # (x / 255 - mean) / std as one multiply-add on the float copy.
            x = x.float().mul_(self._scale).sub_(self._shift)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, self.labels[order[batch]]

    def _local_batches(self, n: int) -> Iterator[slice]:
        """This rank's positions in the epoch's order, one slice per global batch."""
        for i in range(len(self)):
            start = i * self.batch_size
            length = min(self.batch_size, n - start)
            lo, hi = shard_bounds(length, self.rank, self.world_size)
            if hi > lo:
                yield slice(start + lo, start + hi)


class _TransformDataset(Dataset):
    """Per-image view of an :class:`ArrayDataset` with a torchvision transform."""

    def __init__(self, ds: ArrayDataset, transform: Callable[[Tensor], Tensor]) -> None:
        self.ds = ds
        self.transform = transform

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.transform(self.ds.images[index]), int(self.ds.labels[index])


def reference_transform(ds: ArrayDataset, train: bool,
                        augment: bool | str | None = None) -> Callable[[Tensor], Tensor]:
    """The usual CIFAR transform on uint8 tensors: [RandomCrop(pad 4),] [flip,] float,
    Normalize. ``augment`` as :class:`DeviceLoader` takes it: one of :data:`AUGMENTATIONS`;
    ``None`` = crop + flip when ``train``, nothing otherwise."""
    # Imported here: torchvision adds about a second to every import of attn_lib.data.
    from torchvision import transforms

    augment = _augmentation(train if augment is None else augment)
    steps: list = []
    if augment == "crop-flip":
        steps.append(transforms.RandomCrop(ds.images.shape[-2:], padding=PAD))
    if augment in ("crop-flip", "flip"):
        steps.append(transforms.RandomHorizontalFlip())
    steps += [transforms.ConvertImageDtype(torch.float32), transforms.Normalize(ds.mean, ds.std)]
    return transforms.Compose(steps)


class ShardedBatchSampler:
    """Batches of a seeded random permutation, as ``DataLoader(shuffle=True)`` draws them, of
    which this rank keeps its chunk of each (see the module docstring).

    The permutation is drawn from ``generator`` when iteration starts, as ``RandomSampler``
    does, so with one rank the batches are exactly those of ``shuffle=True`` with the same
    generator.
    """

    def __init__(self, size: int, batch_size: int, drop_last: bool,
                 generator: torch.Generator, rank: int = 0, world_size: int = 1) -> None:
        shard_bounds(batch_size, rank, world_size)  # validates rank and world_size
        self.size, self.batch_size, self.drop_last = size, batch_size, drop_last
        self.generator, self.rank, self.world_size = generator, rank, world_size

    def __len__(self) -> int:
        full, rest = divmod(self.size, self.batch_size)
        return full if self.drop_last or rest == 0 else full + 1

    def __iter__(self) -> Iterator[list[int]]:
        order = torch.randperm(self.size, generator=self.generator).tolist()
        for i in range(len(self)):
            batch = order[i * self.batch_size:(i + 1) * self.batch_size]
            lo, hi = shard_bounds(len(batch), self.rank, self.world_size)
            if hi > lo:
                yield batch[lo:hi]


def torch_dataloader(ds: ArrayDataset, batch_size: int, train: bool, num_workers: int = 2,
                     seed: int = 0, drop_last: bool | None = None, rank: int = 0,
                     world_size: int = 1, augment: bool | str | None = None) -> DataLoader:
    """A standard ``DataLoader`` with torchvision CPU transforms and worker processes.

    Shuffles and augments when ``train`` (``augment``: one of :data:`AUGMENTATIONS`, as for
    :class:`DeviceLoader`; default crop + flip); pins memory when CUDA is available so copies to the
    GPU can overlap compute. ``seed`` fixes the shuffle order and the workers' seeds (with
    ``num_workers=0`` the transforms draw from the global torch RNG instead). With ``rank`` and
    ``world_size`` a training loader yields this rank's chunk of every global batch of
    ``batch_size`` (see the module docstring); its workers' seeds differ per rank.
    """
    if drop_last is None:
        drop_last = _default_drop_last(train, len(ds), batch_size)
    dataset = _TransformDataset(ds, reference_transform(ds, train, augment))
    generator = torch.Generator().manual_seed(seed)
    pin = torch.cuda.is_available()
    if not train:
        return DataLoader(dataset, batch_size=batch_size, shuffle=False,
                          num_workers=num_workers, pin_memory=pin, drop_last=drop_last,
                          generator=generator)
    sampler = ShardedBatchSampler(len(ds), batch_size, drop_last, generator, rank, world_size)
    return DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers, pin_memory=pin,
                      generator=generator,
                      worker_init_fn=_RankSeed(rank) if world_size > 1 else None)


class _RankSeed:
    """Worker initialiser: mix the rank into the worker's seed, so that the ranks' workers
    (which share the loader's base seed) augment their images independently."""

    def __init__(self, rank: int) -> None:
        self.rank = rank

    def __call__(self, worker_id: int) -> None:
        import random

        seed = mix_seed(torch.initial_seed(), self.rank)
        torch.manual_seed(seed)
        random.seed(seed)
