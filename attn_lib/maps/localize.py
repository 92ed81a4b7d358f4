"""Weakly-supervised localisation, made measurable: do the maps point at the object?

The paper's claim (Sec. 5.2) is that attention trained only with class labels lands on the
object. On the synthetic dataset every image comes with the object's mask, so it can be scored:

* ``mass_in_mask``: the share of a map's total mass that falls inside the mask,
  ``sum(a * mask) / sum(a)``. 1.0 = all attention on the object; a uniform map scores the mask's
  area fraction.
* ``pointing_game`` (Zhang et al., ECCV 2016, without their 15-pixel tolerance): a hit when the
  map's maximum lies inside the mask. When several pixels share the maximum the hit counts as the
  fraction of them inside the mask, i.e. the expected hit rate if the tie were broken at random.
  This is what makes chance well defined: a uniform map (every pixel ties) scores the mask's
  area fraction, and a map equal to the mask scores 1.
* ``jaccard``: the paper's object-discovery measure (Sec. 5.2): the map, min-max scaled to
  [0, 1] as it is displayed, is binarised at :data:`JACCARD_THRESHOLD` (half its peak) and
  compared with the mask, ``|B & M| / |B | M|``. The paper's threshold is not confirmed here;
  half the peak is a common choice for weakly supervised boxes and masks. A constant map has no
  peak: it is binarised as all-object, which scores the mask's area fraction.

Maps of any resolution are upsampled bilinearly to the image size first (as they are displayed)
and both scores are averaged over images. Maps that are zero everywhere (Grad-CAM with no
positive evidence) carry no location and are scored as uniform. Images with an empty mask are
left out.

Rows of the table (:func:`localization_scores`):

* ``attention``: the learned attention of each level of the model;
* ``gradcam``: Grad-CAM of a model at conv7 / conv10 / conv13 (level 1 / 2 / 3) for the true
  class, for a ``baseline`` (the plain ``vgg``), for the model itself on request, and by default
  for a model that has no attention;
* ``uniform``: a constant map, the chance level.

Command line: ``python -m attn_lib localize --checkpoint RUN_FOLDER [--baseline vgg.pt]``
(:mod:`attn_lib.cli`).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from .._device import model_device
from ..models import LEVEL_LAYERS, split_output
from .gradcam import gradcam_layers, upsample_maps

#: Grad-CAM layers scored, as attention levels (1 = conv7, 2 = conv10, 3 = conv13).
GRADCAM_LEVELS = (1, 2, 3)
#: Values within this fraction of the maximum below it tie for the maximum: bilinear upsampling
#: (in float32) of a flat region can differ in the last bits.
TIE_TOLERANCE = 1e-5
#: A map (min-max scaled) covers the object where it reaches this fraction of its peak.
JACCARD_THRESHOLD = 0.5


class LocalizationRow(NamedTuple):
    """One row of the localisation table."""

    method: str  #: "attention", "gradcam" or "uniform"
    level: int | None  #: 1 = conv7, 2 = conv10, 3 = conv13; None for "uniform"
    mass_in_mask: float  #: mean share of the map's mass inside the object mask
    pointing_game: float  #: mean hit rate of the map's maximum (ties: expected hit rate)
    model: str = ""  #: the model the maps come from ("" for uniform)
    accuracy: float | None = None  #: that model's accuracy on the scored images
    images: int = 0  #: number of images scored
    jaccard: float = math.nan  #: mean Jaccard index of the binarised map with the mask


def _prepare(maps: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
    if maps.dim() == 3:
        maps = maps[:, None]
    if maps.dim() != 4 or maps.shape[1] != 1:
        raise ValueError(f"maps must be (N, 1, h, w) or (N, h, w), got {tuple(maps.shape)}")
    if masks.dim() == 4 and masks.shape[1] == 1:
        masks = masks[:, 0]
    if masks.dim() != 3 or masks.shape[0] != maps.shape[0]:
        raise ValueError(
            f"masks must be (N, H, W) matching {maps.shape[0]} maps, got {tuple(masks.shape)}"
        )
    maps = upsample_maps(maps.detach().cpu(), tuple(masks.shape[-2:]))[:, 0].double()
    if not torch.isfinite(maps).all():
        raise ValueError("maps contain NaN or infinite values")
    if maps.numel() and float(maps.min()) < -1e-6 * max(float(maps.abs().max()), 1.0):
        raise ValueError("maps must be non-negative (attention weights or ReLU'd Grad-CAM)")
    return maps.clamp_min(0.0), masks.detach().cpu().bool()


def mass_in_mask(maps: Tensor, masks: Tensor) -> Tensor:
    """Share of each map's mass inside its mask, shape (N,); maps are upsampled to the masks.

    Args:
        maps: non-negative maps (N, 1, h, w) or (N, h, w), any resolution.
        masks: boolean object masks (N, H, W).
    """
    maps, masks = _prepare(maps, masks)
    inside = (maps * masks).flatten(1).sum(1)
    total = maps.flatten(1).sum(1)
    area = masks.flatten(1).double().mean(1)
    # An all-zero map says nothing about where: score it like a uniform map.
    return torch.where(total > 0, inside / total.clamp_min(1e-300), area).float()


def pointing_game(maps: Tensor, masks: Tensor) -> Tensor:
    """Pointing-game hit of each map, shape (N,): is its maximum inside the mask?

    Ties for the maximum count as the fraction of tied pixels inside the mask (the expected hit
    under random tie-breaking), so a constant map scores the mask's area fraction.
    """
    maps, masks = _prepare(maps, masks)
    flat, inside = maps.flatten(1), masks.flatten(1)
    top = flat.max(1, keepdim=True).values
    ties = flat >= top * (1 - TIE_TOLERANCE)  # maps are non-negative; all-zero: all tie
    return ((ties & inside).sum(1).double() / ties.sum(1).double()).float()


def jaccard_index(maps: Tensor, masks: Tensor, threshold: float = JACCARD_THRESHOLD) -> Tensor:
    """Jaccard index of each binarised map with its mask, shape (N,).

    Each map is upsampled to the mask, min-max scaled to [0, 1] and set to "object" where it
    is at least ``threshold``; the score is ``|B & M| / |B | M|`` (1 = the same region). A
    constant map is all "object" (it scores the mask's area fraction).
    """
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    maps, masks = _prepare(maps, masks)
    flat, inside = maps.flatten(1), masks.flatten(1)
    low = flat.min(1, keepdim=True).values
    span = flat.max(1, keepdim=True).values - low
    scaled = torch.where(span > 0, (flat - low) / span.clamp_min(1e-300),
                         torch.ones_like(flat))
    binary = scaled >= threshold * (1 - TIE_TOLERANCE)
    union = (binary | inside).sum(1).double()
    return ((binary & inside).sum(1).double() / union.clamp_min(1)).float()


def _normalise(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    from ..data import normalize

    return normalize(images, mean, std)


def _name(model: nn.Module) -> str:
    return str(getattr(model, "name", type(model).__name__))


class _Accumulator:
    """Running sums of both scores for one (method, model, level)."""

    def __init__(self) -> None:
        self.mass = 0.0
        self.hits = 0.0
        self.jaccard = 0.0

    def add(self, maps: Tensor, masks: Tensor) -> None:
        self.mass += float(mass_in_mask(maps, masks).double().sum())
        self.hits += float(pointing_game(maps, masks).double().sum())
        self.jaccard += float(jaccard_index(maps, masks).double().sum())


@torch.no_grad()
def _attention_maps(model: nn.Module, x: Tensor) -> tuple[Tensor, tuple[Tensor, ...]]:
    logits, attention = split_output(model(x))
    return logits.argmax(1).cpu(), tuple(a.float().cpu() for a in attention)


def localization_scores(
    model: nn.Module,
    dataset: Any,
    *,
    baseline: nn.Module | None = None,
    gradcam: bool | None = None,
    batch_size: int = 100,
    limit: int | None = None,
) -> list[LocalizationRow]:
    """Score where the maps of ``model`` (and optionally a baseline's Grad-CAM) point.

    Args:
        model: a trained model of :func:`attn_lib.build_model`; run in eval mode (its mode is
            restored afterwards) on the device its parameters are on.
        dataset: an :class:`attn_lib.data.ArrayDataset` with ``masks`` (the synthetic set):
            uint8 images, normalised here with ``dataset.mean``/``dataset.std``, which must be
            the statistics the models were trained with.
        baseline: a second model (e.g. the plain ``vgg``) whose Grad-CAM is scored too.
        gradcam: also score Grad-CAM of ``model`` itself; default: only when it has no
            attention.
        batch_size: images per forward pass.
        limit: score only the first ``limit`` images.

    Returns:
        Rows: one per attention level of ``model``, then Grad-CAM rows (levels 1-3) of
        ``model`` and/or ``baseline``, then the ``uniform`` chance row. See the module docstring
        for the definitions.

    Raises:
        ValueError: the dataset has no masks, or bad arguments.
    """
    masks_all = getattr(dataset, "masks", None)
    if masks_all is None:
        raise ValueError(
            f"dataset {getattr(dataset, 'name', '')!r} has no object masks; localisation needs "
            "a dataset with masks, e.g. load_dataset('synthetic', split='test') or 'cub200'"
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    images_all, labels_all = dataset.images, torch.as_tensor(dataset.labels)
    if limit is not None:
        images_all, labels_all, masks_all = (
            images_all[:limit], labels_all[:limit], masks_all[:limit])
    masks_all = torch.as_tensor(masks_all).bool()
    keep = masks_all.flatten(1).any(1)  # an image without an object cannot be scored
    images_all, labels_all, masks_all = images_all[keep], labels_all[keep], masks_all[keep]
    n = len(images_all)
    if n == 0:
        raise ValueError("no images with a non-empty object mask to score")
    if gradcam is None:
        gradcam = not getattr(model, "levels", ())

    cams = [(model, "model")] if gradcam else []
    if baseline is not None:
        cams.append((baseline, "baseline"))
    models = [model] + ([baseline] if baseline is not None else [])
    modes = [m.training for m in models]
    for m in models:
        m.eval()
    attention_acc: dict[int, _Accumulator] = {}
    cam_acc: dict[tuple[int, int], _Accumulator] = {}
    correct = [0] * len(models)
    uniform = _Accumulator()
    try:
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            x = _normalise(images_all[start:stop], dataset.mean, dataset.std)
            y = labels_all[start:stop].long()
            masks = masks_all[start:stop]
            for index, m in enumerate(models):
                preds, attention = _attention_maps(m, x.to(model_device(m)))
                correct[index] += int((preds == y).sum())
                if index == 0:
                    for level, maps in zip(getattr(m, "levels", ()), attention):
                        attention_acc.setdefault(level, _Accumulator()).add(maps, masks)
            for index, (m, _) in enumerate(cams):
                # Explain the true class: "where is the evidence for what is there?"
                maps = gradcam_layers(m, x, y, GRADCAM_LEVELS, upsample=False)
                for level, level_maps in zip(GRADCAM_LEVELS, maps):
                    cam_acc.setdefault((index, level), _Accumulator()).add(level_maps.cpu(), masks)
            uniform.add(torch.ones(len(masks), 1, 1, 1), masks)
    finally:
        for m, mode in zip(models, modes):
            m.train(mode)

    def row(method: str, level: int | None, acc: _Accumulator, who: nn.Module | None,
            accuracy: float | None) -> LocalizationRow:
        return LocalizationRow(method, level, acc.mass / n, acc.hits / n,
                               _name(who) if who is not None else "", accuracy, n,
                               acc.jaccard / n)

    accuracies = [c / n for c in correct]
    rows = [row("attention", level, acc, model, accuracies[0])
            for level, acc in sorted(attention_acc.items())]
    for index, (m, which) in enumerate(cams):
        accuracy = accuracies[0] if which == "model" else accuracies[1]
        rows += [row("gradcam", level, cam_acc[(index, level)], m, accuracy)
                 for level in GRADCAM_LEVELS]
    rows.append(row("uniform", None, uniform, None, None))
    return rows


COLUMNS = ("method", "model", "level", "layer", "mass_in_mask", "pointing_game", "jaccard",
           "accuracy", "images")


def _record(row: LocalizationRow) -> dict[str, Any]:
    return {
        "method": row.method,
        "model": row.model,
        "level": row.level,
        "layer": LEVEL_LAYERS.get(row.level, "") if row.level is not None else "",
        "mass_in_mask": row.mass_in_mask,
        "pointing_game": row.pointing_game,
        "jaccard": row.jaccard,
        "accuracy": row.accuracy,
        "images": row.images,
    }


def format_table(rows: Sequence[LocalizationRow]) -> str:
    """The rows as an aligned plain-text table (scores to three decimals, '-' where empty)."""

    def cell(value: Any) -> str:
        if value is None or value == "":
            return "-"
        if isinstance(value, float):
            return "nan" if math.isnan(value) else f"{value:.3f}"
        return str(value)

    table = [list(COLUMNS)] + [[cell(v) for v in _record(r).values()] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
    numeric = {"level", "mass_in_mask", "pointing_game", "jaccard", "accuracy", "images"}
    lines = []
    for line in table:
        cells = [c.rjust(w) if name in numeric else c.ljust(w)
                 for c, w, name in zip(line, widths, COLUMNS)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


#: The output formats of :func:`format_rows` (and ``localize --format``).
FORMATS = ("table", "csv", "json")


def format_rows(rows: Sequence[LocalizationRow], fmt: str = "table") -> str:
    """The rows as ``table`` (aligned text), ``csv`` or ``json`` (a list of objects)."""
    if fmt == "table":
        return format_table(rows)
    records = [_record(r) for r in rows]
    if fmt == "json":
        return json.dumps(records, indent=2)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(records)
        return out.getvalue().rstrip("\n")
    raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
