"""Trained weights by name, the torchvision way: ``build_model(name, weights="cifar10")``.

Every weights file is listed in ``pretrained/manifest.json`` next to this module with its
SHA-256 and the facts a user needs to use it correctly and to know what it is: the data set, its
normalisation (``mean``, ``std``), the classes, the model's width and options, the test accuracy
it reached and how it was trained (command, epochs, seed, recipe, hardware, date).
:func:`list_weights` returns those entries.

Two kinds of entries, one loader:

* shipped with the package (``"file"``): small models, read from package data; the SHA-256 of
  the file is checked before it is loaded;
* hosted (``"url"``): larger models, downloaded once by ``torch.hub.load_state_dict_from_url``
  into torch hub's cache with its own hash check (the file name carries the first eight hex
  digits of the SHA-256, as torch hub expects: ``NAME-<sha256[:8]>.pt``).

A weights file holds a plain ``state_dict`` (read with ``weights_only=True``: no pickled code),
in float32 or, for the larger models, float16 (``"stored_dtype"``); loading copies it into the
model's float32 parameters.

Names and aliases: ``cifar10-cpu`` are 1/16-width models trained on two CPU cores,
``cifar10-gpu`` width-1/4 models trained on a GPU. ``"cifar10"`` is an alias, like
torchvision's ``DEFAULT``: it resolves to the best shipped CIFAR-10 entry of the model (the gpu
one when there is one, else the cpu one), so code written before the split keeps working.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import io
import json
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._io import atomic_write_bytes

PRETRAINED_DIR = "pretrained"
MANIFEST = "manifest.json"
#: Aliases: a name users pass as ``weights=`` -> the entries it stands for, best first.
ALIASES: dict[str, tuple[str, ...]] = {"cifar10": ("cifar10-gpu", "cifar10-cpu")}
#: The keys every entry has (``file`` or ``url`` besides).
REQUIRED_KEYS = ("model", "weights", "dataset", "classes", "mean", "std", "image_size",
                 "width", "options", "test_acc", "sha256", "trained")


class WeightsError(ValueError):
    """A weights file is missing, corrupt (hash mismatch) or does not fit its model."""


def _pretrained_dir() -> Path:
    return Path(str(resources.files(__package__).joinpath(PRETRAINED_DIR)))


@functools.lru_cache(maxsize=1)
def _manifest() -> tuple[dict[str, Any], ...]:
    path = _pretrained_dir() / MANIFEST
    if not path.is_file():
        return ()
    entries = json.loads(path.read_text(encoding="utf-8"))
    for entry in entries:
        missing = [k for k in REQUIRED_KEYS if k not in entry]
        if missing or not ("file" in entry or "url" in entry):
            raise WeightsError(f"{path}: entry {entry.get('model')}/{entry.get('weights')} "
                               f"lacks {', '.join(missing) or 'file or url'}")
    return tuple(entries)


def list_weights(model: str | None = None) -> list[dict[str, Any]]:
    """The trained weights available, one dict per weights file (optionally for one model).

    Each has at least ``model``, ``weights`` (its name for ``build_model(..., weights=)``),
    ``dataset``, ``classes``, ``mean``, ``std`` (normalise inputs with these), ``image_size``,
    ``width``, ``options``, ``test_acc`` (a fraction, on the data set's full test split, no
    test-time augmentation), ``sha256`` and ``trained`` (``command``, ``epochs``, ``seed``,
    ``recipe``, ``hardware``, ``date``, ``data``). An entry that an alias resolves to lists
    it in ``aliases`` (e.g. ``["cifar10"]``).
    """
    entries = [copy.deepcopy(e) for e in _manifest()]
    for entry in entries:
        names = {e["weights"] for e in entries if e["model"] == entry["model"]}
        entry["aliases"] = [alias for alias in ALIASES
                            if _resolve(alias, names) == entry["weights"]]
    return [e for e in entries if model is None or e["model"] == model]


def _resolve(weights: str, names: set[str]) -> str:
    """The weights name ``weights`` stands for among ``names`` (itself if not an alias)."""
    if weights in names or weights not in ALIASES:
        return weights
    return next((t for t in ALIASES[weights] if t in names), weights)


def get_weights(model: str, weights: str) -> dict[str, Any]:
    """The entry of ``weights`` for ``model``: a name, an alias of :data:`ALIASES` (resolved to
    the model's best entry it stands for) or ``"DEFAULT"`` (the first entry an alias resolves
    to, else the model's first entry).

    Raises:
        ValueError: no such weights for this model (the message lists the ones there are).
    """
    available = list_weights(model)
    if weights == "DEFAULT" and available:
        return next((e for e in available if e["aliases"]), available[0])
    name = _resolve(weights, {e["weights"] for e in available})
    for entry in available:
        if entry["weights"] == name:
            return entry
    names = ", ".join(repr(e["weights"]) + "".join(f" (alias {a!r})" for a in e["aliases"])
                      for e in available)
    others = sorted({e["model"] for e in list_weights()})
    hint = (f"weights for {model!r}: {names}" if names else
            f"no trained weights for {model!r}; models with weights: {', '.join(others)}")
    raise ValueError(f"unknown weights {weights!r} for model {model!r}; {hint} "
                     "(see attn_lib.list_weights())")


def shipped_path(entry: dict[str, Any]) -> Path:
    """Where the file of a shipped entry (one with ``"file"``) lives in the package."""
    return _pretrained_dir() / entry["file"]


def sha256_of(path: str | Path) -> str:
    """The SHA-256 of a file, as hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_state_dict(entry: dict[str, Any], progress: bool = True) -> dict[str, torch.Tensor]:
    """Read the state dict of a weights entry: a shipped file after checking its SHA-256, or
    a hosted one through ``torch.hub.load_state_dict_from_url`` with ``check_hash=True``.

    Raises:
        WeightsError: the file is missing or its hash differs from the manifest's.
    """
    if entry.get("file"):
        path = shipped_path(entry)
        if not path.is_file():
            raise WeightsError(f"weights file {path} is missing from the installed package; "
                               "reinstall attn-lib")
        actual = sha256_of(path)
        if actual != entry["sha256"]:
            raise WeightsError(
                f"weights file {path} has SHA-256 {actual[:16]}..., not the {entry['sha256'][:16]}"
                "... its manifest lists: the file is corrupt or was replaced; reinstall attn-lib"
            )
        return torch.load(path, map_location="cpu", weights_only=True)
    url = entry["url"]
    try:
        return torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=progress,
                                                  check_hash=True, weights_only=True)
    except RuntimeError as exc:
        if "hash" in str(exc):
            raise WeightsError(f"the weights downloaded from {url} do not match their hash "
                               f"({exc}); the download was discarded, try again") from None
        raise


def export_weights(model: nn.Module, weights: str, facts: dict[str, Any],
                   directory: str | Path | None = None,
                   dtype: torch.dtype = torch.float32) -> dict[str, Any]:
    """Write ``model``'s state dict as a shippable weights file and list it in the manifest.

    The file is named ``<model>-<weights>-<sha256[:8]>.pt`` (torch hub's convention); an
    existing entry of the same model and weights name is replaced (its old file removed).

    Args:
        model: a model of :func:`attn_lib.build_model` (its ``name`` and ``options`` are
            recorded).
        weights: the name users pass as ``weights=``.
        facts: the rest of the entry: ``dataset``, ``classes``, ``mean``, ``std``,
            ``image_size``, ``test_acc``, ``trained`` and any further facts.
        directory: where the files and ``manifest.json`` live (default: the package's).
        dtype: the floating-point type the file stores (``torch.float16`` halves its size;
            integer buffers such as batch norm's step count keep theirs).

    Returns:
        The manifest entry written.
    """
    folder = Path(directory) if directory is not None else _pretrained_dir()
    folder.mkdir(parents=True, exist_ok=True)
    options = {k: v for k, v in model.options.items() if k not in ("num_classes", "width")}
    if weights in ALIASES:
        raise ValueError(f"{weights!r} is an alias of {', '.join(ALIASES[weights])}; export "
                         "under one of those names")
    data = state_dict_bytes(model, dtype)
    digest = hashlib.sha256(data).hexdigest()
    file = f"{model.name}-{weights}-{digest[:8]}.pt"
    entry = {"model": model.name, "weights": weights, **facts,
             "width": model.options["width"], "options": options, "file": file, "sha256": digest}
    if dtype != torch.float32:
        entry["stored_dtype"] = str(dtype).removeprefix("torch.")
    missing = [k for k in REQUIRED_KEYS if k not in entry]
    if missing:
        raise ValueError(f"facts lack {', '.join(missing)}")
    manifest_path = folder / MANIFEST
    entries = json.loads(manifest_path.read_text()) if manifest_path.is_file() else []
    for old in [e for e in entries if (e["model"], e["weights"]) == (model.name, weights)]:
        if old.get("file") and old["file"] != file:
            (folder / old["file"]).unlink(missing_ok=True)
        entries.remove(old)
    atomic_write_bytes(folder / file, data)
    entries.append(entry)
    entries.sort(key=lambda e: (e["model"], e["weights"]))
    atomic_write_bytes(manifest_path, (json.dumps(entries, indent=1) + "\n").encode())
    _manifest.cache_clear()
    return entry


def state_dict_bytes(model: nn.Module, dtype: torch.dtype = torch.float32) -> bytes:
    """``model``'s state dict as the bytes of a weights file, floating tensors as ``dtype``."""

    state = {k: (v.detach().cpu().to(dtype) if v.is_floating_point() else v.detach().cpu())
             .clone() for k, v in model.state_dict().items()}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()
