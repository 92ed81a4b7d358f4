"""Datasets by name: ``synthetic`` (offline default), ``cifar10``, ``cifar100``, ``svhn``,
``svhn-extra``, ``cub200`` and ``folder``."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from .._seed import mix_seed
from .base import ArrayDataset, DatasetNotFoundError, check_split, with_training_stats
from .cub import load_cub200
from .folder import default_cache_dir, load_folder
from .synthetic import make_synthetic

DATASETS = ("synthetic", "cifar10", "cifar100", "svhn", "svhn-extra", "cub200", "folder")
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
#: Per-channel statistics of the SVHN training split (73,257 images), in [0, 1] units. These are
#: the values in common use in PyTorch code for SVHN (rounded to 4 digits); they were not
#: recomputed here, as no copy of SVHN was at hand offline. To check them on the real data:
#: ``channel_stats(load_dataset("svhn", "train").images)``. ``svhn-extra`` uses them as well.
SVHN_STATS = ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970))
#: The folder under ``data_dir`` that holds SVHN's ``*_32x32.mat`` files.
SVHN_FOLDER = "svhn"
#: SVHN's classes: the digit shown (torchvision maps the files' label 10 to the digit 0).
SVHN_CLASSES = [str(digit) for digit in range(10)]
SVHN_PAGE = "http://ufldl.stanford.edu/housenumbers/"
DOWNLOAD_TIMEOUT_S = 30


def load_dataset(name: str, split: str = "train", data_dir: str | os.PathLike | None = None,
                 download: bool | None = None, limit: int | None = None, seed: int = 0,
                 image_size: int | None = None) -> ArrayDataset:
    """Load one split of a dataset by name.

    Args:
        name: one of :data:`DATASETS`.
        split: ``"train"`` or ``"test"``.
        data_dir: for ``cifar10``/``cifar100``/``svhn``/``svhn-extra``, the download folder
            (default ``~/.cache/attn-lib/datasets``); for ``cub200``, the folder holding the
            extracted ``CUB_200_2011`` (see :mod:`attn_lib.data.cub`); for ``folder``, the image
            tree (required). Ignored by ``synthetic``.
        download: CIFAR and SVHN only. ``None`` downloads if the files are missing, ``True``
            always checks/downloads, ``False`` never touches the network.
        limit: keep at most this many images (a seeded random draw; synthetic generates only
            ``limit`` images).
        seed: seed of the synthetic images (train and test use different seeds derived from it)
            and of the ``limit`` draw.
        image_size: synthetic, folder and cub200 only: the side of the images (folder and
            cub200 images are resized; cub200 defaults to
            :data:`attn_lib.data.cub.CUB_IMAGE_SIZE`, 96).

    Raises:
        ValueError: unknown name or split, bad ``limit``, ``folder`` without ``data_dir``.
        DatasetNotFoundError: the data is not on disk (and could not be downloaded).
        UnreadableImageError (a ValueError): ``folder``/``cub200`` files that are not images.
        ModuleNotFoundError: ``svhn`` without scipy.
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
    elif name == "cub200":
        ds = load_cub200(split, data_dir, image_size=image_size)
    else:
        if image_size not in (None, 32):
            raise ValueError(f"{name} images are 32x32; image_size={image_size} is not supported")
        if name in ("svhn", "svhn-extra"):
            ds = load_svhn(split, data_dir, download, extra=name == "svhn-extra")
        else:
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


def load_svhn(split: str = "train", data_dir: str | os.PathLike | None = None,
              download: bool | None = None, extra: bool = False) -> ArrayDataset:
    """SVHN (cropped digits) through torchvision, as uint8 (N, 3, 32, 32), labels 0-9.

    Args:
        split: ``"train"`` (73,257 images) or ``"test"`` (26,032).
        data_dir: the folder holding ``train_32x32.mat``, ``test_32x32.mat`` (and
            ``extra_32x32.mat``), or its parent when the folder is called ``svhn``; missing
            files are downloaded there (default ``~/.cache/attn-lib/datasets/svhn``).
        download: as for :func:`load_cifar`.
        extra: add SVHN's 531,131 ``extra`` images to the train split (1.6 GB in memory); the
            test split is unchanged. The dataset name ``svhn-extra`` means this.

    Raises:
        ModuleNotFoundError: scipy is missing (torchvision reads SVHN's .mat files with it).
        DatasetNotFoundError: the files are missing (and could not be downloaded).
    """
    check_split(split)
    _require_scipy()
    from torchvision.datasets import SVHN

    root = _svhn_root(data_dir)
    parts = ["train", "extra"] if split == "train" and extra else [split]
    images, labels = [], []
    for part in parts:
        try:
            tv = _torchvision_svhn(SVHN, root, part, download)
        except (OSError, RuntimeError) as error:
            raise DatasetNotFoundError(_svhn_help(root, part, download, error)) from error
        images.append(torch.from_numpy(tv.data))  # torchvision already gives (N, C, H, W)
        labels.append(torch.from_numpy(tv.labels).to(torch.int64))
    mean, std = SVHN_STATS
    return ArrayDataset(images=torch.cat(images).contiguous(), labels=torch.cat(labels),
                        classes=list(SVHN_CLASSES), mean=mean, std=std,
                        name="svhn-extra" if extra else "svhn")


def _require_scipy() -> None:
    try:
        import scipy.io  # noqa: F401
    except ImportError as error:
        raise ModuleNotFoundError(
            "svhn needs scipy (torchvision reads SVHN's MATLAB .mat files with scipy.io), which "
            "is not installed: pip install scipy (or pip install 'attn-lib[svhn]')",
            name="scipy",
        ) from error


def _svhn_root(data_dir: str | os.PathLike | None) -> Path:
    if data_dir is None:
        return default_cache_dir() / "datasets" / SVHN_FOLDER
    root = Path(data_dir).expanduser()
    from torchvision.datasets import SVHN

    holds_files = any((root / entry[1]).is_file() for entry in SVHN.split_list.values())
    # Like CIFAR's folder: DIR/svhn/*.mat when DIR is a shared data folder.
    return root if holds_files or root.name == SVHN_FOLDER else root / SVHN_FOLDER


def _torchvision_svhn(cls: type, root: Path, part: str, download: bool | None):
    present = (root / cls.split_list[part][1]).is_file()
    if download is False or (download is None and present):
        return cls(str(root), split=part, download=False)
    with _socket_timeout(DOWNLOAD_TIMEOUT_S):  # a stalled connection must not hang training
        return cls(str(root), split=part, download=True)


def _svhn_help(root: Path, part: str, download: bool | None, error: BaseException) -> str:
    from torchvision.datasets import SVHN

    url, file_name, _md5 = SVHN.split_list[part]
    tried = " (download=False)" if download is False else " and downloading it failed"
    return (
        f"svhn {part} split not found in {root / file_name}{tried}: "
        f"{type(error).__name__}: {error}. With internet it is downloaded there by default "
        f"(download=None or True); otherwise download {url} (the other files are on "
        f"{SVHN_PAGE}: train_32x32.mat, test_32x32.mat, extra_32x32.mat for svhn-extra) into "
        f"a folder DIR/{SVHN_FOLDER} and pass DIR (or DIR/{SVHN_FOLDER}) as data_dir "
        f"(--data-dir). No data at all? Use the offline dataset 'synthetic'."
    )


def load_checkpoint_data(ckpt: dict[str, Any], path: str | os.PathLike, *,
                         dataset: str | None = None,
                         data_dir: str | os.PathLike | None = None, split: str = "test",
                         limit: int | None = None) -> tuple[str, ArrayDataset]:
    """The data a checkpoint's model is used on: ``(name, data set)``. ``ckpt`` is a loaded
    checkpoint dict (:func:`attn_lib.checkpoint.load_checkpoint`); only its ``data``,
    ``config`` and ``model_options`` are read, so the data layer needs no checkpoint code.

    ``dataset`` defaults to the one it was trained on, ``data_dir`` to the folder it was
    trained from (when it is that data set). The images are normalised with the training
    statistics; a class count or image size that does not fit the model is an error naming
    both.
    """
    info = ckpt["data"]
    name = dataset or info.get("dataset") or "synthetic"
    if data_dir is None and name == info.get("dataset"):
        data_dir = (ckpt.get("config") or {}).get("data_dir")
    data = load_dataset(name, split=split, data_dir=data_dir, limit=limit)
    classes = ckpt["model_options"].get("num_classes")
    if classes is not None and classes != len(data.classes):
        raise ValueError(f"{path} classifies {classes} classes, but {name!r} has "
                         f"{len(data.classes)}")
    size = info.get("image_size")
    if size is not None and int(size) != data.image_size:
        raise ValueError(f"{path} was trained on {size}x{size} images, the {name!r} {split} "
                         f"split has {data.image_size}x{data.image_size}")
    return name, with_training_stats(data, info)
