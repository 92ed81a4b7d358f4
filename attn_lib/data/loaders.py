"""Batches for training: a fast on-device loader and the reference-style DataLoader.

:class:`DeviceLoader` keeps the whole uint8 dataset on the accelerator and augments whole
batches there (random crop with 4 px zero padding + horizontal flip, as in the paper's CIFAR
setup), so an epoch of CIFAR costs no host-to-device copies and no worker processes. Its random
numbers come from a CPU generator seeded by ``(seed, epoch)``, so the batches of an epoch are the
same on any device and after a resume.

:func:`torch_dataloader` is the conventional path -- torchvision transforms per image in worker
processes -- kept as the reference the fast path is checked against.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from .._validation import check_choice
from .base import ArrayDataset, mix_seed

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
    """

    def __init__(self, ds: ArrayDataset, batch_size: int, train: bool,
                 device: torch.device | str = "cpu", seed: int = 0,
                 augment: bool | str | None = None,
                 drop_last: bool | None = None, channels_last: bool = False) -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.dataset = ds
        self.batch_size = batch_size
        self.train = train
        self.device = torch.device(device)
        self.seed = seed
        self.augment = _augmentation(train if augment is None else augment)
        self.drop_last = (_default_drop_last(train, len(ds), batch_size) if drop_last is None
                          else drop_last)
        self.channels_last = channels_last
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
        # Draw the whole epoch's randomness up front and copy it to the device once: a small
        # copy per batch would make the host wait for the GPU every step.
        generator = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch))
        self.epoch += 1
        n = len(self.dataset)
        order = torch.randperm(n, generator=generator) if self.train else torch.arange(n)
        offsets, flipped = _draw_crop_flip(n, PAD, True, generator)
        if self.augment == "flip":
            offsets.fill_(PAD)  # the centre crop of the padded image is the image itself
        order, offsets, flipped = (to_device(t, self.device) for t in (order, offsets, flipped))
        for i in range(len(self)):
            batch = slice(i * self.batch_size, (i + 1) * self.batch_size)
            x = self.images[order[batch]]
            if self.augment != "none":
                x = crop_flip(x, offsets[batch], flipped[batch])
            # (x / 255 - mean) / std as one multiply-add on the float copy.
            x = x.float().mul_(self._scale).sub_(self._shift)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, self.labels[order[batch]]


class _TransformDataset(Dataset):
    """Per-image view of an :class:`ArrayDataset` with a torchvision transform."""

    def __init__(self, ds: ArrayDataset, transform: Callable[[Tensor], Tensor]) -> None:
        self.ds = ds
        self.transform = transform

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.transform(self.ds.images[index]), int(self.ds.labels[index])


def reference_transform(ds: ArrayDataset, train: bool) -> Callable[[Tensor], Tensor]:
    """The usual CIFAR transform on uint8 tensors: [RandomCrop(pad 4), flip,] float, Normalize."""
    # Imported here: torchvision adds about a second to every import of attn_lib.data.
    from torchvision import transforms

    steps: list = []
    if train:
        steps += [transforms.RandomCrop(ds.images.shape[-2:], padding=PAD),
                  transforms.RandomHorizontalFlip()]
    steps += [transforms.ConvertImageDtype(torch.float32), transforms.Normalize(ds.mean, ds.std)]
    return transforms.Compose(steps)


def torch_dataloader(ds: ArrayDataset, batch_size: int, train: bool, num_workers: int = 2,
                     seed: int = 0, drop_last: bool | None = None) -> DataLoader:
    """A standard ``DataLoader`` with torchvision CPU transforms and worker processes.

    Shuffles and augments when ``train``; pins memory when CUDA is available so copies to the
    GPU can overlap compute. ``seed`` fixes the shuffle order and the workers' seeds (with
    ``num_workers=0`` the transforms draw from the global torch RNG instead).
    """
    if drop_last is None:
        drop_last = _default_drop_last(train, len(ds), batch_size)
    return DataLoader(
        _TransformDataset(ds, reference_transform(ds, train)),
        batch_size=batch_size,
        shuffle=train,
        num_workers=num_workers,
        pin_memory=torch.cuda.is_available(),
        drop_last=drop_last,
        generator=torch.Generator().manual_seed(seed),
    )
