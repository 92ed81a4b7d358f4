"""Attention maps on images: overlays and per-level grids, with matplotlib only (no OpenCV).

The conventions, made explicit because they are where overlay helpers usually go wrong:

* **RGB, never BGR.** Images are red-green-blue in channel order; nothing here calls OpenCV.
* **CHW or HWC.** One image may come channels-first (PyTorch) or channels-last (matplotlib,
  PIL, NumPy); the layout is read from the shape (see :func:`to_rgb_image`).
* **Range.** Float images must be in [0, 1], uint8 images in [0, 255]. Normalised model inputs
  are un-normalised with the dataset's ``mean``/``std``; a float image outside [0, 1] without
  them is an error (it almost always means "forgot to un-normalise"), not something to clip.
* **Maps.** An attention map (h, w) of any resolution is upsampled bilinearly to the image size,
  then min-max scaled for display: softmax maps sum to one, so their raw values (~1/(h*w)) say
  nothing visible on their own.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple, Union

import matplotlib
import numpy as np
import torch
from matplotlib.colors import Colormap
from matplotlib.figure import Figure
from torch import Tensor, nn

from .._device import model_device
from ..models import level_layer_name, level_number, split_output
from .gradcam import gradcam as _gradcam
from .gradcam import upsample_maps

ArrayLike = Union[Tensor, np.ndarray]

#: Float images may overshoot [0, 1] by this much (JPEG decoding, float round-off of
#: un-normalising) before it counts as a range error; the overshoot is clipped.
RANGE_TOLERANCE = 1e-3
#: Colormap of signed maps (contribution maps): red for the class, blue against, white at 0.
SIGNED_CMAP = "RdBu_r"


def _to_numpy(x: Any, what: str) -> np.ndarray:
    if isinstance(x, Tensor):
        return x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        return x
    raise ValueError(f"{what} must be a torch.Tensor or a numpy.ndarray, got {type(x).__name__}")


def _stats(values: Any, name: str, channels: int) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.size == 1:
        arr = np.repeat(arr, channels)
    if arr.size != channels:
        raise ValueError(
            f"{name} must have 1 or {channels} values (one per channel), got {arr.size}"
        )
    if name == "std" and np.any(arr <= 0):
        raise ValueError(f"std must be positive, got {arr.tolist()}")
    return arr


def to_rgb_image(
    image: ArrayLike,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> np.ndarray:
    """Turn one image into an RGB float32 array (H, W, 3) in [0, 1], ready for ``imshow``.

    Args:
        image: one image as a tensor or array, shaped (3, H, W) / (1, H, W) (channels-first),
            (H, W, 3) / (H, W, 1) (channels-last) or (H, W) (grey). When both the first and the
            last axis could be channels (e.g. 3x32x3), tensors are read channels-first (the
            PyTorch convention) and arrays channels-last (the NumPy/matplotlib one).
            uint8 values are in [0, 255]; float values in [0, 1], or normalised when ``mean``
            and ``std`` are given.
        mean, std: per-channel statistics (in [0, 1] units, e.g. ``dataset.mean``) the image was
            normalised with; given, the image is un-normalised as ``x * std + mean``.

    Raises:
        ValueError: wrong type, shape or value range, naming the fix.
    """
    is_tensor = isinstance(image, Tensor)
    arr = _to_numpy(image, "image")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    elif arr.ndim == 3:
        first, last = arr.shape[0] in (1, 3), arr.shape[-1] in (1, 3)
        if first and (not last or is_tensor):
            arr = np.moveaxis(arr, 0, -1)
        elif not last:
            raise ValueError(
                f"image of shape {arr.shape} has no channel axis of size 1 or 3 at either end; "
                "expected (3, H, W) or (H, W, 3) RGB"
            )
    else:
        hint = "; pick one image, e.g. images[0]" if arr.ndim == 4 else ""
        raise ValueError(
            f"expected one image of shape (3, H, W) or (H, W, 3), got shape {arr.shape}{hint}"
        )
    if arr.dtype == np.bool_ or not (np.issubdtype(arr.dtype, np.number)):
        raise ValueError(f"image must hold numbers, got dtype {arr.dtype}")
    if arr.dtype == np.uint8:
        if mean is not None or std is not None:
            raise ValueError("a uint8 image is raw pixels, not normalised: drop mean/std")
        rgb = arr.astype(np.float32) / 255.0
    else:
        rgb = arr.astype(np.float32)
        if (mean is None) != (std is None):
            raise ValueError("give both mean and std (the ones the image was normalised with)")
        if mean is not None:
            c = rgb.shape[-1]
            rgb = rgb * _stats(std, "std", c).astype(np.float32) + _stats(mean, "mean", c).astype(
                np.float32
            )
    if not np.all(np.isfinite(rgb)):
        raise ValueError("image contains NaN or infinite values")
    lo, hi = float(rgb.min()), float(rgb.max())
    if lo < -RANGE_TOLERANCE or hi > 1 + RANGE_TOLERANCE:
        if mean is not None:
            hint = "the mean/std given are probably not the ones the image was normalised with"
        elif hi > 1.5 and lo >= 0:
            hint = "it looks like 0-255 pixels: pass a uint8 image or divide by 255"
        else:
            hint = ("it looks normalised: pass the dataset's mean= and std= "
                    "(e.g. dataset.mean, dataset.std) to un-normalise it")
        raise ValueError(f"image values span [{lo:.3g}, {hi:.3g}], outside [0, 1]; {hint}")
    rgb = np.clip(rgb, 0.0, 1.0)
    if rgb.shape[-1] == 1:
        rgb = np.repeat(rgb, 3, axis=-1)
    return rgb


def _map_2d(attention: ArrayLike) -> Tensor:
    """One map as a float tensor (h, w), accepting (h, w), (1, h, w) and (1, 1, h, w)."""
    arr = attention
    if isinstance(arr, np.ndarray):
        arr = torch.from_numpy(np.asarray(arr, dtype=np.float32))
    elif not isinstance(arr, Tensor):
        raise ValueError(
            f"attention must be a torch.Tensor or a numpy.ndarray, got {type(attention).__name__}"
        )
    arr = arr.detach().cpu().float()
    shape = tuple(arr.shape)
    while arr.dim() > 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.dim() != 2:
        raise ValueError(
            f"expected one attention map of shape (h, w), (1, h, w) or (1, 1, h, w), got {shape}; "
            "pick one image and level, e.g. out.attention[level_index][i]"
        )
    if not torch.isfinite(arr).all():
        raise ValueError("attention map contains NaN or infinite values")
    return arr


def _rescale(m: np.ndarray) -> np.ndarray:
    lo, hi = float(m.min()), float(m.max())
    # A constant map carries no "where": show it flat at zero rather than dividing by zero.
    return (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)


def _colormap(cmap: str | Colormap) -> Colormap:
    if isinstance(cmap, Colormap):
        return cmap
    try:
        return matplotlib.colormaps[cmap]
    except KeyError:
        raise ValueError(
            f"unknown colormap {cmap!r}; use a matplotlib name such as 'jet', 'viridis', 'inferno'"
        ) from None


def attention_heatmap(attention: ArrayLike, size: tuple[int, int]) -> np.ndarray:
    """One map upsampled (bilinear) to ``size`` = (H, W) and min-max scaled to [0, 1]."""
    up = upsample_maps(_map_2d(attention)[None, None], size)[0, 0].numpy()
    return _rescale(up)


def overlay_attention(
    image: ArrayLike,
    attention: ArrayLike,
    alpha: float = 0.5,
    cmap: str | Colormap = "jet",
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> np.ndarray:
    """Blend a coloured attention map over an image.

    Args:
        image: one RGB image, CHW or HWC, tensor or array (see :func:`to_rgb_image`).
        attention: one map (h, w), (1, h, w) or (1, 1, h, w), any resolution.
        alpha: opacity of the heatmap, in [0, 1] (0 = the image only).
        cmap: matplotlib colormap name or object; high attention gets its top colour.
        mean, std: statistics to un-normalise a normalised image with.

    Returns:
        float32 array (H, W, 3), RGB in [0, 1]: ``(1 - alpha) * image + alpha * cmap(map)``.

    Raises:
        ValueError: bad shapes, ranges, colormap or alpha, with the reason.
    """
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    colormap = _colormap(cmap)
    rgb = to_rgb_image(image, mean, std)
    heat = attention_heatmap(attention, rgb.shape[:2])
    colours = colormap(heat)[..., :3]  # drop matplotlib's alpha channel
    return ((1.0 - alpha) * rgb + alpha * colours).astype(np.float32)


@torch.no_grad()
def predict(model: nn.Module, images: Tensor) -> tuple[Tensor, tuple[Tensor, ...]]:
    """Softmax probabilities (N, K) and attention maps of ``model`` in eval mode, on the CPU.

    The model's train/eval mode is restored afterwards.
    """
    was_training = model.training
    model.eval()
    try:
        out = model(images.to(model_device(model)))
    finally:
        model.train(was_training)
    logits, attention = split_output(out)
    return logits.float().softmax(dim=1).cpu(), tuple(a.float().cpu() for a in attention)


def _class_name(index: int, classes: Sequence[str] | None) -> str:
    return str(classes[index]) if classes is not None and index < len(classes) else str(index)


def _level_title(model: nn.Module, position: int, attention: Tensor) -> str:
    level = level_number(model, position)
    h, w = attention.shape[-2:]
    layer = level_layer_name(model, position)
    return f"attention {level}\n{layer} {h}x{w}" if layer else f"attention {level}\n{h}x{w}"


def _check_batch(images: Tensor, labels: Any) -> Tensor | None:
    if not isinstance(images, Tensor) or images.dim() != 4:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(
            f"images must be a normalised float batch (N, 3, H, W), got {shape}; "
            "use images.unsqueeze(0) for one image"
        )
    if labels is None:
        return None
    labels = torch.as_tensor(labels).reshape(-1).long().cpu()
    if len(labels) != len(images):
        raise ValueError(f"got {len(images)} images but {len(labels)} labels")
    return labels


def plot_attention_grid(
    model: nn.Module,
    images: Tensor,
    labels: Sequence[int] | Tensor | None = None,
    classes: Sequence[str] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    save_path: str | Path | None = None,
    alpha: float = 0.5,
    *,
    gradcam: bool = False,
    baseline: nn.Module | None = None,
    cmap: str | Colormap = "jet",
) -> Figure:
    """A grid of attention overlays: one row per image, one column per attention level.

    Columns: the input (titled with the true class, the prediction and its confidence), then
    one overlay per attention level of ``model``, then optionally Grad-CAM of ``model``
    (``gradcam=True``) and Grad-CAM of a ``baseline`` model (e.g. the plain ``vgg``) with that
    model's own prediction. For a model without attention (``vgg``) the grid is the input and
    prediction, plus Grad-CAM when asked.

    Args:
        model: a model of :func:`attn_lib.build_model` (or any returning logits, maps).
        images: normalised float batch (N, 3, H, W), as the model takes it.
        labels: true classes (N,), or None to show predictions only.
        classes: class names, indexed by label.
        mean, std: the normalisation statistics, to show the images in true colour.
        save_path: if given, the figure is also written there (PNG by the suffix).
        alpha: heatmap opacity.
        gradcam: add a Grad-CAM column for ``model`` (conv13; for the true class when
            ``labels`` are given, else for the prediction).
        baseline: add a Grad-CAM column for this model (same input normalisation), titled
            with its own prediction.
        cmap: matplotlib colormap of the heatmaps.

    Returns:
        The matplotlib :class:`~matplotlib.figure.Figure` (made without pyplot, so it is not
        shown twice in notebooks nor kept alive by pyplot; display it as the cell's value or
        save it).
    """
    labels_t = _check_batch(images, labels)
    images = images.detach().float()
    probs, attention = predict(model, images)
    columns: list[tuple[str, Tensor, list[str]]] = []
    for position, maps in enumerate(attention):
        columns.append((_level_title(model, position, maps), maps, []))
    # Grad-CAM explains the true class when it is known, else (target None) each model's own
    # prediction.
    if gradcam:
        columns.append(("Grad-CAM\nconv13", _gradcam(model, images, labels_t).cpu(), []))
    if baseline is not None:
        base_probs, _ = predict(baseline, images)
        notes = [
            f"{_class_name(int(p.argmax()), classes)} {float(p.max()):.0%}" for p in base_probs
        ]
        name = getattr(baseline, "name", "baseline")
        maps = _gradcam(baseline, images, labels_t).cpu()
        columns.append((f"Grad-CAM {name}\nconv13", maps, notes))

    n, ncols = len(images), 1 + len(columns)
    fig = Figure(figsize=(2.1 * ncols, 2.35 * n + 0.3), layout="constrained")
    axes = np.asarray(fig.subplots(n, ncols, squeeze=False))
    for i in range(n):
        rgb = to_rgb_image(images[i], mean, std)
        pred = int(probs[i].argmax())
        title = f"pred: {_class_name(pred, classes)} {float(probs[i, pred]):.0%}"
        colour = "black"
        if labels_t is not None:
            truth = int(labels_t[i])
            title = f"true: {_class_name(truth, classes)}\n{title}"
            colour = "tab:green" if truth == pred else "tab:red"
        _show(axes[i, 0], rgb, title, colour)
        for j, (header, maps, notes) in enumerate(columns, start=1):
            overlay = overlay_attention(rgb, maps[i], alpha=alpha, cmap=cmap)
            text = header if i == 0 else ""
            if notes:
                text = f"{text}\npred: {notes[i]}" if text else f"pred: {notes[i]}"
            _show(axes[i, j], overlay, text, "black")
    if save_path is not None:
        fig.savefig(save_path, dpi=120)
    return fig


class MapColumn(NamedTuple):
    """One column of :func:`plot_map_columns`: a title and one map per image.

    ``signed`` maps (contribution maps) are drawn red where positive and blue where negative,
    on a scale symmetric about zero; the others (attention, Grad-CAM) min-max scaled with the
    heatmap colormap.
    """

    title: str
    maps: Tensor
    signed: bool = False


def plot_map_columns(
    images: Tensor,
    columns: Sequence[MapColumn | tuple],
    row_titles: Sequence[str] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    alpha: float = 0.5,
    *,
    cmap: str | Colormap = "jet",
) -> Figure:
    """Several kinds of map side by side: one row per image, the image, then one panel per
    column, every map scaled on its own.

    Args:
        images: normalised float batch (N, 3, H, W) (or already in [0, 1] without mean/std).
        columns: :class:`MapColumn` (or ``(title, maps[, signed])`` tuples), ``maps`` of shape
            (N, 1, h, w) or (N, h, w) at any resolution; the title is shown on the first row.
        row_titles: one title per image (e.g. its class), shown over the image.
        mean, std: the normalisation statistics, to show the images in true colour.
        alpha: opacity of an unsigned heatmap.
        cmap: colormap of the unsigned heatmaps.

    Returns:
        The :class:`~matplotlib.figure.Figure` (made without pyplot). An unsigned map with no
        positive value (possible for Grad-CAM, which keeps only positive evidence) is drawn as
        the bare image marked "all zero", since min-max scaling would invent a picture.

    Raises:
        ValueError: a column or title list whose length is not the number of images.
    """
    cols = [MapColumn(*c) for c in columns]
    n = len(images)
    for col in cols:
        if len(col.maps) != n:
            raise ValueError(f"column {col.title!r} has {len(col.maps)} maps for {n} images; "
                             "pass one map per image")
    if row_titles is not None and len(row_titles) != n:
        raise ValueError(f"{len(row_titles)} row titles for {n} images; pass one per image")
    fig = Figure(figsize=(1.9 * (1 + len(cols)), 2.1 * n), layout="constrained")
    axes = np.asarray(fig.subplots(n, 1 + len(cols), squeeze=False))
    for i in range(n):
        rgb = to_rgb_image(images[i], mean, std)
        _show(axes[i, 0], rgb, row_titles[i] if row_titles else "", "black", 8)
        for ax, col in zip(axes[i, 1:], cols):
            single = _map_2d(col.maps[i])
            if col.signed:
                _draw_signed(ax, rgb, single)
            elif single.max() > 0:
                ax.imshow(overlay_attention(rgb, single, alpha=alpha, cmap=cmap),
                          interpolation="nearest")
            else:
                ax.imshow(rgb, interpolation="nearest")
                ax.text(0.5, 0.5, "all zero", ha="center", va="center", color="white",
                        transform=ax.transAxes, fontsize=9, weight="bold")
            _frame(ax, col.title if i == 0 else "")
    return fig


def signed_limit(values: Tensor) -> float:
    """Half-width of a signed map's colour scale, symmetric so that white stays at 0."""
    return max(float(values.abs().max()), 1e-12)  # an all-zero map still gets a scale


def _draw_signed(ax: Any, rgb: np.ndarray, single: Tensor) -> None:
    """A signed map upsampled to the image, red for, blue against, over the image in grey."""
    up = upsample_maps(single[None, None], rgb.shape[:2])[0, 0]
    limit = signed_limit(up)
    ax.imshow(rgb.mean(-1), cmap="gray", alpha=0.6, vmin=0.0, vmax=1.0)
    ax.imshow(up.numpy(), cmap=SIGNED_CMAP, vmin=-limit, vmax=limit, alpha=0.7)


def _frame(ax: Any, title: str, colour: str = "black", fontsize: int = 8) -> None:
    """A panel without ticks or frame, titled."""
    ax.set_title(title, fontsize=fontsize, color=colour)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def _show(ax: Any, rgb: np.ndarray, title: str, colour: str, fontsize: int = 9) -> None:
    ax.imshow(rgb, interpolation="nearest")
    _frame(ax, title, colour, fontsize)
