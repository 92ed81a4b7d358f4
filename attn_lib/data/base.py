"""The in-memory dataset every loader returns, its errors and the normalisation helpers.

All datasets are small enough to hold as one uint8 tensor (CIFAR-10 is 150 MB), which is what
lets :class:`attn_lib.data.DeviceLoader` keep a whole training set on the GPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

SPLITS = ("train", "test")


class DatasetNotFoundError(FileNotFoundError):
    """The files of a dataset are not where we looked; the message says how to get them."""


class UnreadableImageError(ValueError):
    """Files of a dataset that are not decodable images (corrupt, truncated, not images).

    Attributes:
        problems: ``(path, reason)`` for every such file.
    """

    #: Files named in the message; the rest are counted.
    SHOWN = 5

    def __init__(self, problems: Sequence[tuple[str, str]]) -> None:
        self.problems = list(problems)
        shown = "; ".join(f"{path} ({reason})" for path, reason in self.problems[:self.SHOWN])
        more = len(self.problems) - self.SHOWN
        count = len(self.problems)
        super().__init__(
            f"{count} file{'s' if count > 1 else ''} could not be read as an image: {shown}"
            + (f"; and {more} more" if more > 0 else "")
            + ". Delete or replace (copy or download again) "
            + ("these files" if count > 1 else "this file")
            + ", then load the data again; nothing was cached from this attempt."
        )


@dataclass
class ArrayDataset:
    """A labelled image set held in memory.

    Attributes:
        images: uint8 (N, 3, H, W) CPU tensor.
        labels: int64 (N,) class indices into ``classes``.
        classes: class names.
        mean, std: per-channel statistics in [0, 1] units, used to normalise model inputs.
        masks: bool (N, H, W) ground-truth object masks, or None (synthetic data has them, and
            cub200 its bounding boxes).
        name: the dataset's name, e.g. ``"cifar10"``.
    """

    images: Tensor
    labels: Tensor
    classes: list[str]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    masks: Tensor | None = None
    name: str = ""

    def __post_init__(self) -> None:
        # Fail here, with the shapes, rather than deep inside a training loop.
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(
                f"images must be a uint8 (N, C, H, W) tensor, got {self.images.dtype} "
                f"{tuple(self.images.shape)}"
            )
        n = self.images.shape[0]
        if self.labels.dtype != torch.int64 or tuple(self.labels.shape) != (n,):
            raise ValueError(
                f"labels must be int64 of shape ({n},), got {self.labels.dtype} "
                f"{tuple(self.labels.shape)}"
            )
        if self.masks is not None and (
            self.masks.dtype != torch.bool
            or tuple(self.masks.shape) != (n, *self.images.shape[2:])
        ):
            raise ValueError(
                f"masks must be bool of shape ({n}, H, W) matching the images, got "
                f"{self.masks.dtype} {tuple(self.masks.shape)}"
            )
        self.mean = tuple(float(m) for m in self.mean)  # type: ignore[assignment]
        self.std = tuple(float(s) for s in self.std)  # type: ignore[assignment]

    def __len__(self) -> int:
        return self.images.shape[0]

    def __repr__(self) -> str:
        return (
            f"ArrayDataset(name={self.name!r}, images={tuple(self.images.shape)}, "
            f"classes={len(self.classes)}, masks={self.masks is not None})"
        )

    @property
    def image_size(self) -> int:
        """Side of the (square) images in pixels."""
        h, w = self.images.shape[-2:]
        if h != w:
            raise ValueError(f"images are {h}x{w}, not square; read ds.images.shape instead")
        return int(h)

    def subset(self, n_or_indices: int | Sequence[int] | Tensor, seed: int = 0) -> ArrayDataset:
        """A dataset of ``n`` images drawn at random (seeded, order kept) or of given indices.

        A random draw rather than the first ``n`` because folder datasets are sorted by class.
        Draws for the same ``seed`` are nested: ``subset(100)`` is contained in ``subset(200)``.
        """
        if isinstance(n_or_indices, int):
            if n_or_indices < 1:
                raise ValueError(f"subset size must be a positive integer, got {n_or_indices}")
            if n_or_indices >= len(self):
                return self
            generator = torch.Generator().manual_seed(seed)
            perm = torch.randperm(len(self), generator=generator)
            indices = perm[:n_or_indices].sort().values
        else:
            indices = torch.as_tensor(n_or_indices, dtype=torch.int64)
        return replace(
            self,
            images=self.images[indices],
            labels=self.labels[indices],
            masks=None if self.masks is None else self.masks[indices],
        )


def _stats(values: Sequence[float], like: Tensor) -> Tensor:
    return torch.as_tensor(values, dtype=torch.float32, device=like.device).view(-1, 1, 1)


def normalize(x: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """Map uint8 images (..., 3, H, W) (or floats in [0, 1]) to ``(x / 255 - mean) / std``."""
    x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
    return (x - _stats(mean, x)) / _stats(std, x)


def denormalize(x: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """Undo :func:`normalize`: float images in [0, 1] (clamped), e.g. for display."""
    return (x.float() * _stats(std, x) + _stats(mean, x)).clamp(0, 1)


def check_split(split: str) -> str:
    """Return ``split`` if it is one of :data:`SPLITS`, else raise ``ValueError`` listing them."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; accepted: {', '.join(SPLITS)}")
    return split


def one_per_class(labels: Tensor, count: int) -> list[int]:
    """Indices of the first image of each class, for the first ``count`` classes present.

    For figures: a test split stored class by class (an image folder) would otherwise show
    ``count`` images of its first class.
    """
    first: dict[int, int] = {}
    for index, label in enumerate(labels.tolist()):
        first.setdefault(int(label), index)
    return [first[c] for c in sorted(first)][:count]


def with_training_stats(dataset: ArrayDataset, data_info: dict[str, Any]) -> ArrayDataset:
    """``dataset`` normalised with the statistics a model was trained with (a checkpoint's
    ``data``), whatever the data set's own: what the model saw is what it must see again."""
    if data_info.get("mean") is None or data_info.get("std") is None:
        return dataset
    return replace(dataset, mean=tuple(data_info["mean"]), std=tuple(data_info["std"]))
