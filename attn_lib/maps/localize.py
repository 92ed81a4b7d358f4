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
  This reading decides much in advance: a sharply peaked map (a softmax over 1,024 positions)
  keeps only the few pixels near its peak, however well it ranks the object's pixels.
* ``jaccard_topk``: the map's top ``k`` pixels called object, with ``k`` the object's own area
  in that image (its mask's pixel count), so region and object are the same size and only the
  map's *ranking* of pixels counts. Pixels tied at the cut are drawn at random and the score is
  the exact expectation over that draw (hypergeometric), so a constant map scores exactly the
  chance level.
* ``jaccard_best`` / ``best_fraction`` / ``jaccard_auc``: the same with ``k`` a fixed fraction
  of the image, swept over :data:`TOPK_FRACTIONS`: the best mean Jaccard and the fraction that
  gives it (chosen on the scored images themselves: an optimistic reading), and the area under
  the mean Jaccard-against-fraction curve from 0 to 1 (trapezoids; nothing chosen).

Maps of any resolution are upsampled bilinearly to the image size first (as they are displayed)
and both scores are averaged over images. Maps that are zero everywhere (Grad-CAM with no
positive evidence) carry no location and are scored as uniform. Images with an empty mask are
left out.

Rows of the table (:func:`localization_scores`):

* ``attention``: the learned attention of each level of the model;
* ``gradcam``: Grad-CAM of a model at conv7 / conv10 / conv13 (level 1 / 2 / 3) for the true
  class, for a ``baseline`` (the plain ``vgg``), for the model itself on request, and by default
  for a model that has no attention;
* ``contribution``: each level's contribution map for the true class (:mod:`.contribution`),
  its positive part (where a position argues *for* the class), for an attention model;
* ``uniform``: a constant map: chance for mass in mask and pointing game, and for every top-k
  reading (its top ``k`` pixels are a random region of ``k`` pixels); its half-range Jaccard
  calls the whole image object and is *not* a chance level;
* ``chance``: a random region of the object's area (top-k columns) or of each swept fraction,
  scored by its exact expected Jaccard (hypergeometric, no sampling); mass in mask and pointing
  game as ``uniform``. The row every reading of a map should be read against.

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
from ..models import LEVEL_LAYERS, level_layer_name, split_output
from .contribution import contribution_maps
from .gradcam import gradcam_layers, upsample_maps

#: Grad-CAM layers scored, as attention levels (1 = conv7, 2 = conv10, 3 = conv13).
GRADCAM_LEVELS = (1, 2, 3)
#: Values within this fraction of the maximum below it tie for the maximum: bilinear upsampling
#: (in float32) of a flat region can differ in the last bits.
TIE_TOLERANCE = 1e-5
#: A map (min-max scaled) covers the object where it reaches this fraction of its peak.
JACCARD_THRESHOLD = 0.5
#: Region sizes of the top-k sweep, as fractions of the image: fine where objects are (a few to
#: 20 % of the image), coarse beyond.
TOPK_FRACTIONS = (0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.125, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5,
                  0.6, 0.7, 0.8, 0.9, 1.0)


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
    jaccard_topk: float = math.nan  #: mean Jaccard of the top-k pixels, k = the object's area
    jaccard_best: float = math.nan  #: best mean Jaccard over the swept fixed fractions
    best_fraction: float = math.nan  #: the fraction of the image that gives jaccard_best
    jaccard_auc: float = math.nan  #: area under the mean Jaccard-against-fraction curve
    layer: str = ""  #: the layer the maps come from ("" for uniform and chance)


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


#: Terms of the hypergeometric sums computed at once (each a few float64 numbers).
_EXPECTATION_CHUNK = 2_000_000


def _expected_jaccard(above_in: Tensor, tied: Tensor, tied_in: Tensor, take: Tensor,
                      region: Tensor, area: Tensor) -> Tensor:
    """Expected Jaccard of a region of ``region`` pixels with an object of ``area`` pixels,
    when the region holds ``above_in`` object pixels for sure and ``take`` more drawn at random
    from ``tied`` pixels of which ``tied_in`` are object (hypergeometric), elementwise."""
    top = int(torch.minimum(tied_in, take).max()) if tied_in.numel() else 0
    rows = max(1, _EXPECTATION_CHUNK // ((top + 1) * max(math.prod(tied.shape[1:]), 1)))
    if len(tied) > rows:  # large ties (a constant map on a big image): bound the memory
        return torch.cat([_expected_jaccard(*(t[i:i + rows] for t in (
            above_in, tied, tied_in, take, region, area))) for i in range(0, len(tied), rows)])
    h = torch.arange(top + 1, dtype=torch.float64).view(*([1] * tied.dim()), -1)
    tied, tied_in, take = tied[..., None], tied_in[..., None], take[..., None]
    feasible = (h <= tied_in) & (h <= take) & (take - h <= tied - tied_in)
    log_pmf = (_log_choose(tied_in, h) + _log_choose(tied - tied_in, take - h)
               - _log_choose(tied, take))
    pmf = torch.where(feasible, log_pmf, torch.full_like(log_pmf, -math.inf)).exp()
    inter = above_in[..., None] + h
    union = region[..., None] + area[..., None] - inter
    return (pmf * inter / union.clamp_min(1)).sum(-1)


def _log_choose(n: Tensor, k: Tensor) -> Tensor:
    n, k = torch.broadcast_tensors(n, k)
    k = k.clamp(min=0)
    n = torch.maximum(n, k)
    return torch.lgamma(n + 1) - torch.lgamma(k + 1) - torch.lgamma(n - k + 1)


def _region_sizes(regions: Tensor | None, area: Tensor, pixels: int) -> tuple[Tensor, bool]:
    """Region sizes in pixels as (N, F), rounded (default: each mask's ``area``), and whether
    they came as one per image, (N,)."""
    k = area.clone() if regions is None else torch.as_tensor(regions, dtype=torch.float64)
    if k.dim() not in (1, 2) or len(k) != len(area):
        raise ValueError(f"regions must be (N,) or (N, F) for N = {len(area)} images, "
                         f"got shape {tuple(k.shape)}")
    squeeze = k.dim() == 1
    k = (k[:, None] if squeeze else k).round()
    if ((k < 1) | (k > pixels)).any():
        raise ValueError(f"regions must be between 1 and {pixels} pixels")
    return k, squeeze


def topk_jaccard(maps: Tensor, masks: Tensor, regions: Tensor | None = None) -> Tensor:
    """Expected Jaccard index of each map's top-k pixels with its mask.

    Args:
        maps: non-negative maps (N, 1, h, w) or (N, h, w), upsampled to the masks.
        masks: boolean object masks (N, H, W).
        regions: region sizes in pixels, (N,) or (N, F); default: each mask's own area.

    Returns:
        (N,) or (N, F) scores. Pixels that tie at the cut (within :data:`TIE_TOLERANCE` of each
        other) are drawn at random and the score is the exact expectation over the draw, so a
        constant map scores the chance level of a random region of that size.
    """
    maps, masks = _prepare(maps, masks)
    flat, inside = maps.flatten(1), masks.flatten(1)
    n, pixels = flat.shape
    area = inside.sum(1).double()
    k, squeeze = _region_sizes(regions, area, pixels)
    ordered, order = flat.sort(dim=1, descending=True, stable=True)
    object_sorted = inside.gather(1, order).double()
    # Tie groups: runs of values equal up to TIE_TOLERANCE of the map's peak.
    peak = ordered[:, :1].clamp_min(1e-300)
    key = torch.round(ordered / peak / TIE_TOLERANCE)
    starts = torch.ones_like(key, dtype=torch.bool)
    starts[:, 1:] = key[:, 1:] != key[:, :-1]
    index = torch.arange(pixels).expand(n, -1)
    group_start = torch.where(starts, index, torch.zeros_like(index)).cummax(1).values
    ends = torch.ones_like(starts)
    ends[:, :-1] = starts[:, 1:]
    end_index = torch.where(ends, index + 1, torch.full_like(index, pixels))
    group_end = end_index.flip(1).cummin(1).values.flip(1)
    inside_before = torch.cat([torch.zeros(n, 1, dtype=torch.float64),
                               object_sorted.cumsum(1)], dim=1)  # object pixels in the first j
    last = (k - 1).long()  # the position of the region's last pixel
    a, b = group_start.gather(1, last), group_end.gather(1, last)
    above_in = inside_before.gather(1, a)
    tied_in = inside_before.gather(1, b) - above_in
    score = _expected_jaccard(above_in, (b - a).double(), tied_in, k - a.double(), k,
                              area[:, None].expand_as(k))
    return (score[:, 0] if squeeze else score).float()


def chance_jaccard(masks: Tensor, regions: Tensor | None = None) -> Tensor:
    """Exact expected Jaccard index of a uniformly random region with each mask: over all
    regions of ``regions`` pixels (default: the mask's own area), shape as
    :func:`topk_jaccard`'s. Masks are (N, H, W) or (N, 1, H, W)."""
    inside = masks.detach().cpu().bool().flatten(1)
    pixels = inside.shape[1]
    area = inside.sum(1).double()
    k, squeeze = _region_sizes(regions, area, pixels)
    zeros = torch.zeros_like(k)
    score = _expected_jaccard(zeros, torch.full_like(k, pixels), area[:, None].expand_as(k), k,
                              k, area[:, None].expand_as(k))
    return (score[:, 0] if squeeze else score).float()


def _sweep_regions(masks: Tensor) -> Tensor:
    """(N, F) region sizes in pixels of the swept fractions."""
    pixels = masks.shape[-1] * masks.shape[-2]
    sizes = torch.tensor([max(1, round(f * pixels)) for f in TOPK_FRACTIONS], dtype=torch.float64)
    return sizes.expand(masks.shape[0], -1)


def _normalise(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    from ..data import normalize

    return normalize(images, mean, std)


def _name(model: nn.Module) -> str:
    return str(getattr(model, "name", type(model).__name__))


class _Accumulator:
    """Running sums of every score for one (method, model, level)."""

    def __init__(self) -> None:
        self.mass = 0.0
        self.hits = 0.0
        self.jaccard = 0.0
        self.topk = 0.0
        self.sweep = torch.zeros(len(TOPK_FRACTIONS), dtype=torch.float64)

    def add(self, maps: Tensor, masks: Tensor) -> None:
        self.mass += float(mass_in_mask(maps, masks).double().sum())
        self.hits += float(pointing_game(maps, masks).double().sum())
        self.jaccard += float(jaccard_index(maps, masks).double().sum())
        self.topk += float(topk_jaccard(maps, masks).double().sum())
        self.sweep += topk_jaccard(maps, masks, _sweep_regions(masks)).double().sum(0)

    def add_chance(self, masks: Tensor) -> None:
        """A random region: mass and pointing as a uniform map, Jaccard exactly expected."""
        area = masks.flatten(1).double().mean(1)
        self.mass += float(area.sum())
        self.hits += float(area.sum())
        self.jaccard = math.nan
        self.topk += float(chance_jaccard(masks).double().sum())
        self.sweep += chance_jaccard(masks, _sweep_regions(masks)).double().sum(0)

    def sweep_summary(self, n: int) -> tuple[float, float, float]:
        """Best mean Jaccard, its fraction, and the area under the mean curve (from 0, where
        the empty region scores 0, to 1)."""
        curve = self.sweep / n
        best = int(curve.argmax())
        x = torch.tensor((0.0, *TOPK_FRACTIONS), dtype=torch.float64)
        y = torch.cat([torch.zeros(1, dtype=torch.float64), curve])
        return float(curve[best]), TOPK_FRACTIONS[best], float(torch.trapezoid(y, x))


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
        Rows: one per attention level of ``model``, one contribution row per level (attention
        models), then Grad-CAM rows (levels 1-3) of ``model`` and/or ``baseline``, then the
        ``uniform`` and ``chance`` rows. See the module docstring for the definitions.

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
    levels = tuple(getattr(model, "levels", ()))  # the attention levels; none: no attention
    if gradcam is None:
        gradcam = not levels

    cams = [(model, "model")] if gradcam else []
    if baseline is not None:
        cams.append((baseline, "baseline"))
    models = [model] + ([baseline] if baseline is not None else [])
    modes = [m.training for m in models]
    for m in models:
        m.eval()
    attention_acc: dict[int, _Accumulator] = {}
    contribution_acc: dict[int, _Accumulator] = {}
    cam_acc: dict[tuple[int, int], _Accumulator] = {}
    correct = [0] * len(models)
    uniform, chance = _Accumulator(), _Accumulator()
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
                    for level, maps in zip(levels, attention):
                        attention_acc.setdefault(level, _Accumulator()).add(maps, masks)
            if levels:
                # The true class, as for Grad-CAM; the positive part: evidence *for* it.
                shares = contribution_maps(model, x.to(model_device(model)), y).maps
                for level, maps in zip(levels, shares):
                    contribution_acc.setdefault(level, _Accumulator()).add(
                        maps.float().cpu().clamp_min(0), masks)
            for index, (m, _) in enumerate(cams):
                # Explain the true class: "where is the evidence for what is there?"
                maps = gradcam_layers(m, x, y, GRADCAM_LEVELS, upsample=False)
                for level, level_maps in zip(GRADCAM_LEVELS, maps):
                    cam_acc.setdefault((index, level), _Accumulator()).add(level_maps.cpu(), masks)
            uniform.add(torch.ones(len(masks), 1, 1, 1), masks)
            chance.add_chance(masks)
    finally:
        for m, mode in zip(models, modes):
            m.train(mode)

    def row(method: str, level: int | None, acc: _Accumulator, who: nn.Module | None,
            accuracy: float | None, layer: str = "") -> LocalizationRow:
        best, fraction, auc = acc.sweep_summary(n)
        return LocalizationRow(method, level, acc.mass / n, acc.hits / n,
                               _name(who) if who is not None else "", accuracy, n,
                               acc.jaccard / n, acc.topk / n, best, fraction, auc, layer)

    accuracies = [c / n for c in correct]
    # Attention and contribution levels are the model's own; Grad-CAM's are the VGG's.
    layers = {level: level_layer_name(model, position)
              for position, level in enumerate(levels)}
    rows = [row("attention", level, acc, model, accuracies[0], layers[level])
            for level, acc in sorted(attention_acc.items())]
    rows += [row("contribution", level, acc, model, accuracies[0], layers[level])
             for level, acc in sorted(contribution_acc.items())]
    for index, (m, which) in enumerate(cams):
        accuracy = accuracies[0] if which == "model" else accuracies[1]
        rows += [row("gradcam", level, cam_acc[(index, level)], m, accuracy, LEVEL_LAYERS[level])
                 for level in GRADCAM_LEVELS]
    rows.append(row("chance", None, chance, None, None))
    rows.append(row("uniform", None, uniform, None, None))
    return rows


COLUMNS = ("method", "model", "level", "layer", "mass_in_mask", "pointing_game", "jaccard",
           "jaccard_topk", "jaccard_best", "best_fraction", "jaccard_auc", "accuracy", "images")


def _record(row: LocalizationRow) -> dict[str, Any]:
    return {
        "method": row.method,
        "model": row.model,
        "level": row.level,
        "layer": row.layer,
        "mass_in_mask": row.mass_in_mask,
        "pointing_game": row.pointing_game,
        "jaccard": row.jaccard,
        "jaccard_topk": row.jaccard_topk,
        "jaccard_best": row.jaccard_best,
        "best_fraction": row.best_fraction,
        "jaccard_auc": row.jaccard_auc,
        "accuracy": row.accuracy,
        "images": row.images,
    }


def format_table(rows: Sequence[LocalizationRow]) -> str:
    """The rows as an aligned plain-text table (scores to three decimals, '-' where empty)."""

    def cell(value: Any) -> str:
        if value is None or value == "":
            return "-"
        if isinstance(value, float):
            return f"{value:.3f}"  # "nan" for a score that was not computed
        return str(value)

    table = [list(COLUMNS)] + [[cell(v) for v in _record(r).values()] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
    numeric = set(COLUMNS) - {"method", "model", "layer"}
    lines = []
    for line in table:
        cells = [c.rjust(w) if name in numeric else c.ljust(w)
                 for c, w, name in zip(line, widths, COLUMNS)]
        lines.append("  ".join(cells))  # the last column is right-aligned: no trailing space
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
