"""Data for attn-lib: datasets as in-memory uint8 arrays, and fast batch loaders.

    >>> from attn_lib.data import load_dataset, DeviceLoader
    >>> train = load_dataset("synthetic", "train")          # offline, deterministic
    >>> loader = DeviceLoader(train, batch_size=128, train=True, device="cuda")
    >>> for x, y in loader: ...                            # normalised, augmented on the GPU

Datasets: ``synthetic`` (the offline default: a shape to find in clutter, with object masks),
``cifar10``, ``cifar100``, ``svhn`` and ``svhn-extra`` (torchvision download), ``cub200``
(CUB-200-2011 from its archive, bounding boxes as object masks) and ``folder`` (your own
``DIR/{train,test}/<class>/<image>`` tree, decoded once and cached).
"""

from .base import (
    SPLITS,
    ArrayDataset,
    DatasetNotFoundError,
    UnreadableImageError,
    denormalize,
    normalize,
    one_per_class,
    with_training_stats,
)
from .cub import CUB_IMAGE_SIZE, load_cub200
from .datasets import (
    CIFAR_STATS,
    DATASETS,
    SVHN_STATS,
    SYNTHETIC_SIZES,
    load_checkpoint_data,
    load_cifar,
    load_dataset,
    load_svhn,
)
from .folder import channel_stats, default_cache_dir, load_folder
from .loaders import (
    DeviceLoader,
    crop_flip,
    random_crop_flip,
    reference_transform,
    torch_dataloader,
)
from .samples import load_samples, make_samples
from .synthetic import CLASSES as SYNTHETIC_CLASSES
from .synthetic import make_synthetic

__all__ = [
    "load_checkpoint_data",
    "with_training_stats",
    "CIFAR_STATS",
    "CUB_IMAGE_SIZE",
    "DATASETS",
    "SPLITS",
    "SVHN_STATS",
    "SYNTHETIC_CLASSES",
    "SYNTHETIC_SIZES",
    "ArrayDataset",
    "DatasetNotFoundError",
    "DeviceLoader",
    "UnreadableImageError",
    "channel_stats",
    "crop_flip",
    "default_cache_dir",
    "denormalize",
    "load_cifar",
    "load_cub200",
    "load_dataset",
    "load_folder",
    "load_samples",
    "load_svhn",
    "make_samples",
    "make_synthetic",
    "normalize",
    "one_per_class",
    "random_crop_flip",
    "reference_transform",
    "torch_dataloader",
]
