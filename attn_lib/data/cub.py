"""CUB-200-2011 (Caltech-UCSD Birds): 200 bird species, 5,994 train and 5,794 test photographs,
each with one bounding box, read from the official archive's layout.

Getting it: ``CUB_200_2011.tgz`` (1.2 GB) from :data:`CUB_PAGE` (CaltechDATA, :data:`CUB_DOI`),
extracted with ``tar xzf CUB_200_2011.tgz -C DIR``; then ``data_dir=DIR`` (``--data-dir DIR``)
or ``DIR/CUB_200_2011``. Only these files are read (:data:`CUB_FILES`)::

    DIR/CUB_200_2011/images/<class>/<file>.jpg
    DIR/CUB_200_2011/images.txt              <image_id> <class>/<file>.jpg
    DIR/CUB_200_2011/train_test_split.txt    <image_id> <1 = train, 0 = test>
    DIR/CUB_200_2011/image_class_labels.txt  <image_id> <class_id>
    DIR/CUB_200_2011/classes.txt             <class_id> <class name>
    DIR/CUB_200_2011/bounding_boxes.txt      <image_id> <x> <y> <width> <height>

**Image size.** Every photograph is resized, whole, to a square of :data:`CUB_IMAGE_SIZE` = 96
pixels (``image_size=`` chooses another). The authors' CUB baseline is built for 80x80 inputs
(models_CUBS200/vgg_bn_drop.lua:41) and the reproduction report crops each image to its box and
resizes it to 80x80 (CUB200_preprocess.py:15-22); this library's models need a multiple of 32.
96 is the smallest multiple of 32 that keeps all of the 80x80 input's detail (64 would lose a
third of each side); it costs 1.44 times the pixels of 80x80. The image is not cropped to the
box, unlike the reproduction: the box is what localisation is scored against, and a crop would
make it the whole image. The aspect ratio is not kept (photographs are about 4:3): the whole
bird stays in the picture, which a centre crop would not guarantee.

**Masks.** Each box, given in the original photograph's pixels from its top-left corner, is
scaled with the image; a pixel of the resized image is in the mask when its centre lies inside
the scaled box (what resizing a full-resolution box mask with nearest neighbours gives), and a
box smaller than a pixel still marks the pixel holding its centre. So ``python -m attn_lib
localize`` and the study's localisation scores work on real photographs.

Decoding the ~12,000 JPEGs (about 500x375 each) takes minutes on two CPU cores, so each split
is decoded once, resized as it is decoded (the full-size photographs never sit in memory), and
cached like a :func:`~attn_lib.data.load_folder` tree (in ``CUB_200_2011/.attn_lib_cache`` or,
when that is read-only, ``~/.cache/attn-lib/folders``), with the mean/std of the train split.
At 96x96 the two splits take 326 MB as uint8, their masks 109 MB.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor

from . import folder
from .base import ArrayDataset, DatasetNotFoundError, check_split

#: The side of the square images (a multiple of 32, see the module docstring).
CUB_IMAGE_SIZE = 96
CUB_FOLDER = "CUB_200_2011"
#: The annotation files read, all in ``CUB_200_2011/`` beside ``images/``.
CUB_FILES = ("images.txt", "train_test_split.txt", "image_class_labels.txt", "classes.txt",
             "bounding_boxes.txt")
CUB_PAGE = "https://www.vision.caltech.edu/datasets/cub_200_2011/"
CUB_DOI = "https://doi.org/10.22002/D1.20098"


class CubAnnotations(NamedTuple):
    """The annotations of every image, in the order of ``images.txt`` sorted by image id."""

    files: list[str]  #: paths of the images
    labels: Tensor  #: int64 (N,) class index (0-based, in the order of classes.txt)
    is_train: Tensor  #: bool (N,)
    boxes: Tensor  #: float64 (N, 4) x, y, width, height in the original image's pixels
    classes: list[str]  #: class names as in classes.txt, e.g. "001.Black_footed_Albatross"


def load_cub200(split: str = "train", data_dir: str | os.PathLike | None = None,
                image_size: int | None = None, cache: bool = True) -> ArrayDataset:
    """One split of CUB-200-2011 as an :class:`ArrayDataset` with the boxes as object masks.

    Args:
        split: ``"train"`` or ``"test"`` (the official ``train_test_split.txt``).
        data_dir: the folder holding ``CUB_200_2011/``, or that folder itself (default
            ``~/.cache/attn-lib/datasets``).
        image_size: side of the square images (default :data:`CUB_IMAGE_SIZE`).
        cache: read/write the decoded images in the cache (see the module docstring).

    Returns:
        uint8 images (N, 3, S, S), labels 0-199, the 200 class names, bool masks (N, S, S) and
        the per-channel mean/std of the train split at this size.

    Raises:
        DatasetNotFoundError: the folder, an annotation file or an image is missing.
        ValueError: malformed annotation files, or a bad ``image_size``.
        UnreadableImageError: images that cannot be decoded (named in the message).
    """
    check_split(split)
    size = CUB_IMAGE_SIZE if image_size is None else image_size
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
    root = cub_root(data_dir)
    notes = read_annotations(root)
    want_train = split == "train"
    chosen = [i for i, flag in enumerate(notes.is_train.tolist()) if flag == want_train]
    if not chosen:
        raise ValueError(f"{root / 'train_test_split.txt'} puts no image in the {split} split")
    images, sizes = _decode_split(root, [notes.files[i] for i in chosen], split, size, cache)
    index = torch.tensor(chosen, dtype=torch.int64)
    masks = box_masks(notes.boxes[index], sizes, size)
    mean, std = _train_stats(root, notes, size, cache, images if want_train else None)
    return ArrayDataset(images=images, labels=notes.labels[index], classes=list(notes.classes),
                        mean=mean, std=std, masks=masks, name="cub200")


def box_masks(boxes: Tensor, sizes: Tensor, size: int) -> Tensor:
    """Boolean masks (N, size, size) of boxes scaled from each image's own size to the square.

    Args:
        boxes: (N, 4) ``x, y, width, height`` in the original pixels, origin at the top-left.
        sizes: (N, 2) original ``height, width`` of each image.
        size: side of the resized square images.
    """
    boxes = boxes.double()
    scale_x = size / sizes[:, 1].double()
    scale_y = size / sizes[:, 0].double()
    cols = _inside(boxes[:, 0] * scale_x, (boxes[:, 0] + boxes[:, 2]) * scale_x, size)
    rows = _inside(boxes[:, 1] * scale_y, (boxes[:, 1] + boxes[:, 3]) * scale_y, size)
    return rows[:, :, None] & cols[:, None, :]


def _inside(start: Tensor, stop: Tensor, size: int) -> Tensor:
    """(N, size): which pixel centres lie in [start, stop); at least the pixel of the middle."""
    centres = torch.arange(size, dtype=torch.float64) + 0.5
    inside = (centres >= start[:, None]) & (centres < stop[:, None])
    middle = ((start + stop) / 2).floor().clamp(0, size - 1).long()
    inside[torch.arange(len(start)), middle] = True
    return inside


def cub_root(data_dir: str | os.PathLike | None) -> Path:
    """The ``CUB_200_2011`` folder for ``data_dir``, checked to hold the annotation files."""
    given = Path(data_dir).expanduser() if data_dir else folder.default_cache_dir() / "datasets"
    root = given if (given / "images.txt").is_file() else given / CUB_FOLDER
    if not root.is_dir():
        raise DatasetNotFoundError(cub_help(f"no {CUB_FOLDER} folder in {given}"))
    missing = [name for name in CUB_FILES if not (root / name).is_file()]
    if not (root / "images").is_dir():
        missing.append("images/")
    if missing:
        raise DatasetNotFoundError(cub_help(f"{root} lacks {', '.join(missing)}"))
    return root


def cub_help(problem: str) -> str:
    """The message of a missing CUB-200-2011: the problem, where to get it and the layout."""
    return (
        f"CUB-200-2011 not found: {problem}. It is not downloaded automatically: get "
        f"CUB_200_2011.tgz (1.2 GB) from {CUB_PAGE} (CaltechDATA, {CUB_DOI}), extract it with "
        f"'tar xzf CUB_200_2011.tgz -C DIR' and pass DIR (or DIR/{CUB_FOLDER}) as data_dir "
        f"(--data-dir). Expected layout: DIR/{CUB_FOLDER}/images/<class>/<file>.jpg and "
        f"DIR/{CUB_FOLDER}/{{{','.join(CUB_FILES)}}}. No data at all? Use the offline dataset "
        f"'synthetic'."
    )


def read_annotations(root: Path) -> CubAnnotations:
    """Parse the annotation files of :data:`CUB_FILES` in ``root`` (a ``CUB_200_2011`` folder)."""
    paths = _table(root, "images.txt", 1, str)
    splits = _table(root, "train_test_split.txt", 1, int)
    class_of = _table(root, "image_class_labels.txt", 1, int)
    boxes = _table(root, "bounding_boxes.txt", 4, float)
    class_names = _table(root, "classes.txt", 1, str)
    ids = sorted(paths)
    for name, table in (("train_test_split.txt", splits), ("image_class_labels.txt", class_of),
                        ("bounding_boxes.txt", boxes)):
        absent = [i for i in ids if i not in table]
        if absent:
            raise ValueError(f"{root / name} has no line for image id(s) "
                             f"{', '.join(map(str, absent[:5]))} of images.txt")
    class_ids = sorted(class_names)
    index_of = {class_id: index for index, class_id in enumerate(class_ids)}
    unknown = sorted({class_of[i][0] for i in ids} - set(index_of))
    if unknown:
        raise ValueError(f"{root / 'image_class_labels.txt'} uses class id(s) "
                         f"{', '.join(map(str, unknown[:5]))} that classes.txt does not list")
    files = [str(root / "images" / paths[i][0]) for i in ids]
    absent_files = [f for f in files if not os.path.isfile(f)]
    if absent_files:
        raise DatasetNotFoundError(cub_help(
            f"{len(absent_files)} image(s) of images.txt are missing, e.g. {absent_files[0]} "
            "(an incomplete extraction?)"))
    return CubAnnotations(
        files=files,
        labels=torch.tensor([index_of[class_of[i][0]] for i in ids], dtype=torch.int64),
        is_train=torch.tensor([splits[i][0] == 1 for i in ids], dtype=torch.bool),
        boxes=torch.tensor([boxes[i] for i in ids], dtype=torch.float64).view(-1, 4),
        classes=[class_names[c][0] for c in class_ids],
    )


def _table(root: Path, name: str, columns: int, kind: type) -> dict[int, list]:
    """``{id: [value, ...]}`` from a file of lines ``<id> <value> ...``."""
    table: dict[int, list] = {}
    path = root / name
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split(maxsplit=columns) if kind is str else line.split()
        try:
            if len(fields) != columns + 1:
                raise ValueError(f"expected {columns + 1} fields, got {len(fields)}")
            table[int(fields[0])] = [kind(v) for v in fields[1:]]
        except ValueError as error:
            raise ValueError(f"{path}:{number}: malformed line {line!r} ({error})") from None
    return table


def _decode_split(root: Path, files: list[str], split: str, size: int, cache: bool
                  ) -> tuple[Tensor, Tensor]:
    """Images (N, 3, size, size) and original sizes (N, 2), from the cache or decoded."""
    key = folder.cache_key(f"cub200-{split}", [str(root), split, str(size)], files)
    arrays = folder.load_cached_arrays(root, key, ("images", "sizes")) if cache else None
    if arrays is not None:
        return arrays["images"], arrays["sizes"]
    images, sizes = folder.decode_images_and_sizes(files, size)
    if cache:
        folder.save_cached_arrays(root, key, {"images": images, "sizes": sizes})
    return images, sizes


def _train_stats(root: Path, notes: CubAnnotations, size: int, cache: bool,
                 train_images: Tensor | None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    train_files = [f for f, flag in zip(notes.files, notes.is_train.tolist()) if flag]
    key = "stats-" + folder.cache_key("cub200-train", [str(root), "train", str(size)],
                                      train_files)

    def images() -> Tensor:
        if train_images is not None:
            return train_images
        return _decode_split(root, train_files, "train", size, cache)[0]

    return folder.cached_stats(root, key, images, cache)
