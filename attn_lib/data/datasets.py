"""Datasets by name: ``synthetic`` (offline default), ``cifar10``, ``cifar100``, ``folder``."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from .base import ArrayDataset, DatasetNotFoundError, check_split, mix_seed
from .folder import default_cache_dir, load_folder
from .synthetic import make_synthetic

DATASETS = ("synthetic", "cifar10", "cifar100", "folder")
#: Images per split of the synthetic dataset (``limit`` generates fewer).
SYNTHETIC_SIZES = {"train": 10_000, "test": 2_000}
#: Mixed into the seed so that each split of the synthetic set has its own images.
SPLIT_CODES = {"train": 1, "test": 2}
#: Per-channel statistics of the CIFAR training sets (in [0, 1] units).
CIFAR_STATS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
#: torchvision dataset class names; torchvision is imported only when CIFAR is loaded (it adds
#: about a second to every process that imports attn_lib.data).
_CIFAR_CLASSES = {"cifar10": "CIFAR10", "cifar100": "CIFAR100"}
DOWNLOAD_TIMEOUT_S = 30


def load_dataset(name: str, split: str = "train", data_dir: str | os.PathLike | None = None,
                 download: bool | None = None, limit: int | None = None, seed: int = 0,
                 image_size: int | None = None) -> ArrayDataset:
    """Load one split of a dataset by name.

    Args:
        name: one of :data:`DATASETS`.
        split: ``"train"`` or ``"test"``.
        data_dir: for ``cifar10``/``cifar100``, the download folder (default
            ``~/.cache/attn-lib/datasets``); for ``folder``, the image tree (required).
            Ignored by ``synthetic``.
        download: CIFAR only. ``None`` downloads if the files are missing, ``True`` always
            checks/downloads, ``False`` never touches the network.
        limit: keep at most this many images (a seeded random draw; synthetic generates only
            ``limit`` images).
        seed: seed of the synthetic images (train and test use different seeds derived from it)
            and of the ``limit`` draw.
        image_size: synthetic and folder only: the side of the images (folder images are resized).

    Raises:
        ValueError: unknown name or split, bad ``limit``, ``folder`` without ``data_dir``.
        DatasetNotFoundError: the data is not on disk (and could not be downloaded).
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; accepted: {', '.join(DATASETS)}")
    check_split(split)
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive integer or None, got {limit!r}")
    if name == "synthetic":
        # Derived seeds: the test split is never a copy of the train split.
        count = SYNTHETIC_SIZES[split] if limit is None else min(limit, SYNTHETIC_SIZES[split])
        return make_synthetic(count, image_size or 32, mix_seed(seed, SPLIT_CODES[split]))
    if name == "folder":
        if data_dir is None:
            raise ValueError(
                "dataset 'folder' needs data_dir (--data-dir): a folder with "
                "train/<class>/<image> and test/<class>/<image>"
            )
        ds = load_folder(data_dir, split, image_size=image_size)
    else:
        if image_size not in (None, 32):
            raise ValueError(f"{name} images are 32x32; image_size={image_size} is not supported")
        ds = load_cifar(name, split, data_dir, download)
    return ds if limit is None else ds.subset(limit, seed=seed)



def load_cifar(name: str, split: str = "train", data_dir: str | os.PathLike | None = None,
               download: bool | None = None) -> ArrayDataset:
    """CIFAR-10/100 through torchvision, as uint8 (N, 3, 32, 32).

    ``data_dir`` may be the folder holding ``cifar-10-batches-py`` (or ``cifar-100-python``),
    that folder itself, or an image tree ``train/<class>/*.png`` of the same data (loaded with
    :func:`load_folder` and CIFAR's statistics).
    """
    if name not in _CIFAR_CLASSES:
        raise ValueError(f"unknown CIFAR dataset {name!r}; accepted: {', '.join(_CIFAR_CLASSES)}")
    check_split(split)
    from torchvision import datasets as tv_datasets

    cls = getattr(tv_datasets, _CIFAR_CLASSES[name])
    root = Path(data_dir).expanduser() if data_dir else default_cache_dir() / "datasets"
    if root.name == cls.base_folder:
        root = root.parent  # the user pointed at the extracted folder itself
    mean, std = CIFAR_STATS[name]
    if not (root / cls.base_folder).is_dir() and (root / "train").is_dir():
        return load_folder(root, split, mean=mean, std=std, name=name)
    try:
        tv = _torchvision_cifar(cls, root, split, download)
    except (OSError, RuntimeError) as error:
        raise DatasetNotFoundError(_cifar_help(name, root, cls, download, error)) from error
    images = torch.from_numpy(tv.data).permute(0, 3, 1, 2).contiguous()  # NHWC -> NCHW
    return ArrayDataset(images=images, labels=torch.tensor(tv.targets, dtype=torch.int64),
                        classes=list(tv.classes), mean=mean, std=std, name=name)


def _torchvision_cifar(cls: type, root: Path, split: str, download: bool | None):
    train = split == "train"
    if download is False or (download is None and (root / cls.base_folder).is_dir()):
        return cls(str(root), train=train, download=False)
    with _socket_timeout(DOWNLOAD_TIMEOUT_S):  # a stalled connection must not hang training
        return cls(str(root), train=train, download=True)


@contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds if previous is None else previous)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _cifar_help(name: str, root: Path, cls: type, download: bool | None,
                error: BaseException) -> str:
    tried = " (download=False)" if download is False else " and downloading it failed"
    return (
        f"{name} not found in {root / cls.base_folder}{tried}: {type(error).__name__}: {error}. "
        f"With internet it is downloaded there by default (download=None or True); otherwise "
        f"download {cls.url}, extract it and pass the folder holding {cls.base_folder} as "
        f"data_dir (--data-dir); an image tree DIR/train/<class>/*.png, DIR/test/<class>/*.png "
        f"works too. No data at all? Use the offline dataset 'synthetic'."
    )
