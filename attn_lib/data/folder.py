"""The user's own images: an ImageFolder-style tree ``DIR/{train,test}/<class>/<image>``.

Every image is decoded once into one uint8 tensor. Decoding tens of thousands of small JPEGs
takes long, so the result is cached in ``DIR/.attn_lib_cache/`` (or ``~/.cache/attn-lib`` when
``DIR`` is read-only), keyed by the folder, the image size and the name, size and modification
time of every file: adding, removing or editing an image gives a new key and a fresh decode.

A file that is not a readable image (corrupt, truncated, or no image at all under an image
name) stops the load with :class:`UnreadableImageError`, which names every such file and the fix
(delete or replace it). The file is not skipped: skipping would silently change which images a
split holds, and so the numbers measured on it, while one rerun after the fix costs little.
Nothing is cached from a load that failed, so the fixed folder is decoded afresh.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from .._io import atomic_write
from .base import ArrayDataset, DatasetNotFoundError, UnreadableImageError, check_split

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
CACHE_DIRNAME = ".attn_lib_cache"
_CACHE_VERSION = 1
_DECODE_THREADS = min(8, os.cpu_count() or 1)
LAYOUT = (
    "expected layout: DIR/train/<class>/<image> and DIR/test/<class>/<image> (or DIR/val/...), "
    "one sub-folder per class, the same class names in both splits"
)


def default_cache_dir() -> Path:
    """Where attn-lib keeps downloads and caches by default: ``~/.cache/attn-lib``."""
    return Path.home() / ".cache" / "attn-lib"


def load_folder(root: str | os.PathLike, split: str = "train", image_size: int | None = None,
                mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                cache: bool = True, name: str = "folder") -> ArrayDataset:
    """Load one split of an image-folder tree as an :class:`ArrayDataset`.

    Args:
        root: the folder holding ``train/`` and ``test/`` (see :data:`LAYOUT`).
        split: ``"train"`` or ``"test"`` (``test/`` or, failing that, ``val/``).
        image_size: resize every image to this square size; needed when sizes differ.
        mean, std: normalisation statistics; by default computed on the train split (so the
            test split gets the train statistics, like CIFAR's constants).
        cache: read/write the decoded arrays in the cache (see module docstring).
        name: the ``name`` of the returned dataset.

    Raises:
        DatasetNotFoundError: ``root`` or the split folder is missing or holds no images.
        UnreadableImageError: files that are not readable images (see module docstring).
        ValueError: images of different sizes and no ``image_size``.
    """
    root = Path(root).expanduser().resolve()
    check_split(split)
    classes = _class_names(root)
    listing = _list_images(root, split, classes, image_size)
    images = _load_cached(root, listing.key) if cache else None
    if images is None:
        images = decode_images(listing.files, image_size)
        if cache:
            _save_cached(root, listing.key, images)
    if mean is None or std is None:
        train = listing if split == "train" else _list_images(root, "train", classes, image_size)
        mean, std = _train_stats(root, train, image_size, cache,
                                 images if split == "train" else None)
    return ArrayDataset(images=images, labels=torch.tensor(listing.labels, dtype=torch.int64),
                        classes=classes, mean=tuple(mean), std=tuple(std), name=name)


class _Listing(NamedTuple):
    files: list[str]
    labels: list[int]
    key: str  # names the cache entry: changes when any file is added, removed or modified


def _missing(message: str) -> DatasetNotFoundError:
    return DatasetNotFoundError(f"{message}; {LAYOUT}. Point --data-dir (data_dir=) at DIR.")


def _split_dir(root: Path, split: str) -> Path:
    candidates = ["train"] if split == "train" else ["test", "val"]
    for candidate in candidates:
        if (root / candidate).is_dir():
            return root / candidate
    if not root.is_dir():
        raise _missing(f"image folder {root} does not exist")
    raise _missing(f"no {' or '.join(candidates)}/ folder in {root}")


def _class_names(root: Path) -> list[str]:
    # Class indices come from train/ for every split, so labels agree between splits.
    train = _split_dir(root, "train")
    classes = sorted(p.name for p in train.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise _missing(f"{train} has no class sub-folders")
    return classes


def _list_images(root: Path, split: str, classes: list[str], image_size: int | None
                 ) -> _Listing:
    split_dir = _split_dir(root, split)
    extra = sorted(p.name for p in split_dir.iterdir()
                   if p.is_dir() and not p.name.startswith(".") and p.name not in classes)
    if extra:
        raise ValueError(f"{split_dir} has class folders not in train/: {', '.join(extra)}")
    files: list[str] = []
    labels: list[int] = []
    digest = hashlib.sha1(f"{_CACHE_VERSION}|{root}|{split}|{image_size}".encode())
    for index, name in enumerate(classes):
        folder = split_dir / name
        if not folder.is_dir():
            continue  # a class may be absent from the test split
        # os.scandir and plain strings: pathlib costs seconds on 50,000 files.
        with os.scandir(folder) as scan:
            entries = sorted((e for e in scan if e.name.lower().endswith(IMAGE_EXTENSIONS)),
                             key=lambda e: e.name)
        for entry in entries:
            stat = entry.stat()
            digest.update(f"|{name}/{entry.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
            files.append(entry.path)
        labels += [index] * len(entries)
    if not files:
        raise _missing(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {split_dir}")
    return _Listing(files, labels, f"{split}-{len(files)}-{digest.hexdigest()[:16]}")


def decode_images(files: Sequence[str | os.PathLike], image_size: int | None = None) -> Tensor:
    """Decode image files into one uint8 (N, 3, H, W) tensor (RGB; resized if asked).

    Raises:
        UnreadableImageError: some files are not decodable images (all of them are named).
        ValueError: images of different sizes and no ``image_size``.
    """
    return decode_images_and_sizes(files, image_size)[0]


def decode_images_and_sizes(files: Sequence[str | os.PathLike], image_size: int | None = None
                            ) -> tuple[Tensor, Tensor]:
    """Like :func:`decode_images`, also returning each file's own (height, width), int64 (N, 2),
    for annotations given in the original pixels (bounding boxes)."""
    # torchvision is imported here, not at module level: it adds about a second to every
    # process that imports attn_lib.data, most of which never decode a folder.
    from torchvision.transforms.functional import resize

    def decode(path: str | os.PathLike) -> tuple[Tensor, tuple[int, int]] | str:
        image = _decode(path)
        if isinstance(image, str):
            return image
        size = (int(image.shape[1]), int(image.shape[2]))
        if image_size is not None and size != (image_size, image_size):
            # Resized in the worker: a split of full-size photographs never sits in memory.
            image = resize(image, [image_size, image_size], antialias=True)
        return image, size

    with warnings.catch_warnings(), ThreadPoolExecutor(_DECODE_THREADS) as pool:
        # torchvision >= 0.29 deprecates its decoders (for TorchCodec); they are still twice
        # as fast as PIL on small JPEGs, so use them while they exist, quietly.
        warnings.simplefilter("ignore", DeprecationWarning)
        # The decoders release the GIL: threads overlap file reads and decoding.
        results = list(pool.map(decode, files))
    problems = [(str(path), r) for path, r in zip(files, results) if isinstance(r, str)]
    if problems:
        raise UnreadableImageError(problems)
    images = [r[0] for r in results]  # type: ignore[index]
    if image_size is None:
        first = images[0].shape if images else None
        for path, image in zip(files, images):
            if image.shape != first:
                raise ValueError(
                    f"images differ in size: {files[0]} is {tuple(first[1:])}, "
                    f"{path} is {tuple(image.shape[1:])}; pass image_size= to resize them all"
                )
    sizes = torch.tensor([r[1] for r in results], dtype=torch.int64).view(-1, 2)  # type: ignore[index]
    return torch.stack(images), sizes


@functools.lru_cache(maxsize=1)
def _torchvision_decoder() -> Callable[[str], Tensor] | None:
    """torchvision's fast RGB decoder, or None for a torchvision without image decoding."""
    try:
        from torchvision.io import ImageReadMode, decode_image, read_file
    except ImportError:
        return None
    return lambda path: decode_image(read_file(path), mode=ImageReadMode.RGB)


#: What PIL raises for a file that is not an image it can read: UnidentifiedImageError (an
#: OSError) for an unknown format or an empty file, OSError for a truncated one, SyntaxError
#: or ValueError for some broken headers, DecompressionBombError for absurd sizes.
_PIL_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def _decode(path: str | os.PathLike) -> Tensor | str:
    """The RGB pixels (3, H, W) of one file, or a one-line reason why it is not an image."""
    decoder = _torchvision_decoder()
    if decoder is not None:
        try:
            return decoder(str(path))
        except RuntimeError:
            # A format torchvision cannot decode (BMP, TIFF), or a broken file: PIL decides.
            pass
    try:
        with Image.open(path) as pil:
            array = np.asarray(pil.convert("RGB"))
    except _PIL_ERRORS as error:
        return f"{type(error).__name__}: {error}"
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def _cache_dirs(root: Path) -> list[Path]:
    # Next to the data first (it survives Colab sessions when DIR is on Drive), then home.
    return [root / CACHE_DIRNAME, default_cache_dir() / "folders"]


def _load_cached(root: Path, key: str) -> Tensor | None:
    arrays = load_cached_arrays(root, key, ("images",))
    return None if arrays is None else arrays["images"]


def _save_cached(root: Path, key: str, images: Tensor) -> None:
    save_cached_arrays(root, key, {"images": images})


def load_cached_arrays(root: Path, key: str, names: Sequence[str]) -> dict[str, Tensor] | None:
    """The tensors cached under ``key`` for the data in ``root`` (see :func:`cache_key`), or
    None when there is no readable entry holding all of ``names``."""
    for folder in _cache_dirs(root):
        path = folder / f"{key}.pt"
        if path.is_file():
            try:
                arrays = torch.load(path, map_location="cpu", weights_only=True)
                return {name: arrays[name] for name in names}
            except (OSError, RuntimeError, KeyError, EOFError):
                continue  # unreadable cache: decode again (and overwrite it)
    return None


def save_cached_arrays(root: Path, key: str, arrays: dict[str, Tensor]) -> None:
    """Cache ``arrays`` under ``key``: next to the data, else in the home folder, else not at
    all (no cache is not an error). Written atomically: a killed process leaves no half file."""
    for folder in _cache_dirs(root):
        try:
            atomic_write(folder / f"{key}.pt", lambda f: torch.save(arrays, f))
            return
        except OSError:
            continue  # read-only data folder: try the next place


def cache_key(prefix: str, parts: Sequence[str], files: Sequence[str]) -> str:
    """A cache key that changes when any of ``files`` is added, removed or modified (name, size
    and modification time), or any of ``parts`` (the folder, the image size...) changes."""
    digest = hashlib.sha1("|".join([str(_CACHE_VERSION), *parts]).encode())
    for path in files:
        stat = os.stat(path)
        digest.update(f"|{path}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return f"{prefix}-{len(files)}-{digest.hexdigest()[:16]}"


def cached_stats(root: Path, key: str, images: Callable[[], Tensor], cache: bool = True
                 ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean/std (:func:`channel_stats`) of ``images()``, kept in a small JSON file
    under ``key``: the test split needs the train statistics without decoding the train split."""
    if cache:
        for folder in _cache_dirs(root):
            try:
                stats = json.loads((folder / f"{key}.json").read_text())
                return tuple(stats["mean"]), tuple(stats["std"])
            except (OSError, ValueError, KeyError):
                continue
    mean, std = channel_stats(images())
    if cache:
        text = json.dumps({"mean": mean, "std": std}).encode()
        for folder in _cache_dirs(root):
            try:
                atomic_write(folder / f"{key}.json", lambda f: f.write(text))
                break
            except OSError:
                continue
    return mean, std


def channel_stats(images: Tensor, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images, in [0, 1] units (chunked: no big float copy)."""
    total = torch.zeros(3, dtype=torch.float64)
    squares = torch.zeros(3, dtype=torch.float64)
    for start in range(0, images.shape[0], chunk):
        x = images[start:start + chunk].double() / 255
        total += x.sum(dim=(0, 2, 3))
        squares += (x * x).sum(dim=(0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    std = (squares / count - mean**2).clamp_min(0).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())


def _train_stats(root: Path, train: _Listing, image_size: int | None, cache: bool,
                 train_images: Tensor | None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean/std of the train split, from a small JSON cache or by loading the train split."""
    def images() -> Tensor:
        if train_images is not None:
            return train_images
        return load_folder(root, "train", image_size, (0, 0, 0), (1, 1, 1), cache).images

    return cached_stats(root, f"stats-{train.key}", images, cache)
