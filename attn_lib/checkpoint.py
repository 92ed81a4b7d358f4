"""Checkpoints: atomic writes, safe loading, and rebuilding a model from a file.

A checkpoint is a ``torch.save`` dict that ``torch.load(weights_only=True)`` can read (tensors,
numbers, strings, lists, dicts only -- no pickled code), with::

    format="attn-lib/checkpoint", version, model_name, model_options, state_dict, epoch,
    history, data (dataset, classes, mean, std, image_size), config (the run's settings),
    train_state (optimizer, schedule, scaler, EMA, RNG states; only in ``last.pt``)

Files are written atomically (:func:`attn_lib._io.atomic_write`): a crash at any moment leaves
either the old or the new checkpoint, never a torn one.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Union

import torch

from ._io import atomic_write_bytes
from ._validation import first_line
from .models import build_model

FORMAT = "attn-lib/checkpoint"
#: 2: ``vgg`` became the paper's baseline (vgg_bn_drop); version-1 files named ``vgg`` hold the
#: network now called ``vgg-noatt`` and are read as such.
VERSION = 2
#: Model names that changed meaning, by the version that changed them: (old name, new name).
RENAMED = {2: ("vgg", "vgg-noatt")}
LAST = "last.pt"
BEST = "best.pt"
REQUIRED_KEYS = ("model_name", "model_options", "state_dict", "epoch", "history", "data")

PathLike = Union[str, Path]


class CheckpointError(ValueError):
    """A checkpoint file is unreadable, foreign, or of another model than expected."""


def save_checkpoint(path: PathLike, payload: dict[str, Any]) -> None:
    """Atomically save a checkpoint dict (``format`` and ``version`` are filled in)."""
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, "version": VERSION, **payload}, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def resolve_checkpoint_path(path: PathLike) -> Path:
    """A checkpoint file, or the ``best.pt`` (else ``last.pt``) of a run folder."""
    path = Path(path)
    if path.is_dir():
        for name in (BEST, LAST):
            if (path / name).is_file():
                return path / name
        raise FileNotFoundError(f"no checkpoint ({BEST} or {LAST}) in folder {path}")
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    return path


def load_checkpoint(path: PathLike, map_location: Any = "cpu",
                    expect_model: str | None = None) -> dict[str, Any]:
    """Load and validate a checkpoint with ``torch.load(weights_only=True)``.

    Args:
        path: a ``.pt`` file or a run folder (its ``best.pt``).
        map_location: passed to ``torch.load``.
        expect_model: if given, the model name the checkpoint must hold.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: truncated/corrupt file, not an attn-lib checkpoint, a newer format
            version, or a model other than ``expect_model``. The message names the file.
    """
    path = resolve_checkpoint_path(path)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for a torn or foreign file
        raise CheckpointError(
            f"{path}: cannot read the checkpoint (truncated, corrupt or not a PyTorch file): "
            f"{first_line(exc)}"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: not an attn-lib checkpoint (no format={FORMAT!r} marker); "
            "it may be a plain state_dict or a file of another program"
        )
    if not isinstance(ckpt.get("version"), int) or ckpt["version"] > VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {ckpt.get('version')!r} is newer than this "
            f"attn-lib understands ({VERSION}); upgrade attn-lib"
        )
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {', '.join(missing)}")
    _upgrade(ckpt)
    if expect_model is not None and ckpt["model_name"] != expect_model:
        raise CheckpointError(
            f"{path}: checkpoint holds model {ckpt['model_name']!r}, not the requested "
            f"{expect_model!r}; pass --model {ckpt['model_name']} or another checkpoint"
        )
    return ckpt


def _upgrade(ckpt: dict[str, Any]) -> None:
    """Bring an older checkpoint's names up to :data:`VERSION`, in place."""
    for version, (old, new) in sorted(RENAMED.items()):
        if ckpt["version"] < version and ckpt["model_name"] == old:
            ckpt["model_name"] = new
            if isinstance(ckpt.get("config"), dict) and ckpt["config"].get("model") == old:
                ckpt["config"]["model"] = new
    ckpt["version"] = VERSION


def model_from_checkpoint(ckpt: dict[str, Any], path: PathLike = "checkpoint"):
    """Rebuild the model a loaded checkpoint describes and load its weights (eval mode)."""
    options = dict(ckpt["model_options"])
    num_classes = options.pop("num_classes", 10)
    try:
        model = build_model(ckpt["model_name"], num_classes=num_classes, **options)
        model.load_state_dict(ckpt["state_dict"])
    except (ValueError, RuntimeError, TypeError) as exc:
        raise CheckpointError(f"{path}: weights do not fit model {ckpt['model_name']!r}: "
                              f"{first_line(exc)}") from None
    return model.eval()


def load_model(path: PathLike, map_location: Any = "cpu", expect_model: str | None = None):
    """Load a trained model from a checkpoint file or run folder.

    Returns:
        ``(model, data_info)``: the model in eval mode on ``map_location``, and a dict with
        ``dataset``, ``classes``, ``mean``, ``std``, ``image_size`` of its training data.
    """
    path = resolve_checkpoint_path(path)
    ckpt = load_checkpoint(path, map_location=map_location, expect_model=expect_model)
    model = model_from_checkpoint(ckpt, path)
    if isinstance(map_location, (str, torch.device)):
        model = model.to(map_location)
    return model, dict(ckpt["data"])
