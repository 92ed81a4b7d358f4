"""A few real test images shipped with the package, so notebooks and tests show real pictures
offline and in seconds.

``cifar10``: 10 images of each CIFAR-10 class (100 in all, 300 KB), drawn at random (seed 0)
from the 10,000 test images of a JPEG copy of CIFAR-10 (quality 75; Krizhevsky, 2009) and stored
as the decoded uint8 pixels, with the index of each image in that copy's sorted test listing.
JPEG compression changed the pixels slightly (mean absolute error about 5.8/255 against the
original arrays); they are test images, never seen in training by the shipped weights.
"""

from __future__ import annotations

import io
import os
from importlib import resources
from pathlib import Path

import torch

from .._io import atomic_write_bytes
from .base import ArrayDataset

SAMPLES_DIR = "samples"
#: Shipped sample sets: name -> file under ``attn_lib/data/samples``.
SAMPLE_FILES = {"cifar10": "cifar10-test-100.pt"}


def samples_path(name: str = "cifar10") -> Path:
    """Where the shipped sample set ``name`` lives."""
    if name not in SAMPLE_FILES:
        raise ValueError(f"no sample set {name!r}; available: {', '.join(SAMPLE_FILES)}")
    return Path(str(resources.files(__package__).joinpath(SAMPLES_DIR, SAMPLE_FILES[name])))


def load_samples(name: str = "cifar10") -> ArrayDataset:
    """The shipped sample images ``name`` as an :class:`ArrayDataset` (sorted by class), with
    the data set's usual mean/std; ``ds.source_indices`` says which test images they are."""
    path = samples_path(name)
    if not path.is_file():
        raise FileNotFoundError(f"sample images {path} are missing from the installed package; "
                                "reinstall attn-lib")
    data = torch.load(path, map_location="cpu", weights_only=True)
    ds = ArrayDataset(images=data["images"], labels=data["labels"], classes=list(data["classes"]),
                      mean=tuple(data["mean"]), std=tuple(data["std"]), name=f"{name}-samples")
    ds.source_indices = data["indices"]  # type: ignore[attr-defined]
    return ds


def make_samples(test_set: ArrayDataset, per_class: int = 10, seed: int = 0,
                 path: str | os.PathLike | None = None) -> Path:
    """Draw ``per_class`` images of each class of ``test_set`` (seeded) and save them as a
    sample file (default: the package's ``cifar10`` file). Returns the path written."""
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for label in range(len(test_set.classes)):
        candidates = torch.nonzero(test_set.labels == label).flatten()
        if len(candidates) < per_class:
            raise ValueError(f"class {test_set.classes[label]!r} has only {len(candidates)} "
                             f"images, fewer than {per_class}")
        pick = torch.randperm(len(candidates), generator=generator)[:per_class]
        chosen.append(candidates[pick].sort().values)
    indices = torch.cat(chosen)
    payload = {"images": test_set.images[indices].clone(), "labels": test_set.labels[indices],
               "classes": list(test_set.classes), "mean": list(test_set.mean),
               "std": list(test_set.std), "indices": indices}
    target = Path(path) if path is not None else samples_path("cifar10")
    target.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(target, buffer.getvalue())
    return target
