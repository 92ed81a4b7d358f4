"""An interactive attention explorer for notebooks (ipywidgets), static when there is no kernel.

Controls: image index, attention level (or Grad-CAM), heatmap opacity, and a class filter that
restricts the index slider to images of one true class. Each redraw renders a matplotlib figure
to PNG (without pyplot) into an ``ipywidgets.Image``, so it works with any matplotlib backend,
including ``Agg``, and leaves no figures behind.
"""

from __future__ import annotations

import io
from typing import Any

import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from .viz import (
    LEVEL_LAYERS,
    _class_name,
    _show,
    overlay_attention,
    plot_attention_grid,
    predict,
    to_rgb_image,
)

GRADCAM = "Grad-CAM (conv13)"


def _in_kernel() -> bool:
    """True inside a Jupyter/Colab kernel, where widgets can be displayed."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def _normalised(dataset: Any, indices: list[int]) -> Tensor:
    from ..data import normalize

    return normalize(dataset.images[indices], dataset.mean, dataset.std)


class _Explorer:
    """State and drawing of one explorer; the widgets only call :meth:`figure`."""

    def __init__(self, model: nn.Module, dataset: Any, gradcam: bool, cmap: str) -> None:
        self.model, self.dataset, self.cmap = model, dataset, cmap
        self.labels = torch.as_tensor(dataset.labels).long()
        self.classes = list(getattr(dataset, "classes", None) or [])
        self.views: list[tuple[str, int | None]] = [
            (f"level {level} ({LEVEL_LAYERS.get(level, '?')})", position)
            for position, level in enumerate(getattr(model, "levels", ()))
        ]
        if gradcam or not self.views:
            self.views.append((GRADCAM, None))

    def indices(self, label: int | None) -> list[int]:
        if label is None:
            return list(range(len(self.labels)))
        return torch.nonzero(self.labels == label).flatten().tolist()

    def figure(self, index: int, view: int, alpha: float) -> Figure:
        from .gradcam import gradcam

        x = _normalised(self.dataset, [index])
        probs, attention = predict(self.model, x)
        title, position = self.views[view]
        label = int(self.labels[index])
        if position is None:
            maps = gradcam(self.model, x, label)
        else:
            maps = attention[position]
        pred = int(probs[0].argmax())
        mean, std = self.dataset.mean, self.dataset.std
        fig = Figure(figsize=(6.6, 2.6), layout="constrained")
        axes = fig.subplots(1, 3)
        image = x[0]
        names = self.classes or None
        head = (f"#{index} true: {_class_name(label, names)}\n"
                f"pred: {_class_name(pred, names)} {float(probs[0, pred]):.0%}")
        _show(axes[0], to_rgb_image(image, mean, std), head,
              "tab:green" if pred == label else "tab:red")
        h, w = maps.shape[-2:]
        _show(axes[1], overlay_attention(image, maps[0], alpha, self.cmap, mean, std),
              f"{title}\n{h}x{w} map", "black")
        raw = maps[0, 0].numpy()
        axes[2].imshow(raw, cmap=self.cmap, interpolation="nearest")
        axes[2].set_title("map alone (no upsampling)", fontsize=9)
        axes[2].set_xticks([])
        axes[2].set_yticks([])
        return fig


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def attention_explorer(
    model: nn.Module,
    dataset: Any,
    *,
    gradcam: bool = False,
    cmap: str = "jet",
    interactive: bool | None = None,
    static_images: int = 4,
) -> Any:
    """Browse a dataset's attention maps with sliders.

    Args:
        model: a model of :func:`attn_lib.build_model`, trained on ``dataset``'s statistics.
        dataset: an :class:`attn_lib.data.ArrayDataset` (uint8 images, labels, classes,
            mean, std).
        gradcam: offer Grad-CAM (conv13, true class) as a view too; always on for ``vgg``.
        cmap: matplotlib colormap of the heatmaps.
        interactive: ``None`` (default) builds the widget inside a notebook kernel and the
            static figure elsewhere (scripts, tests, headless CI); True/False force it.
        static_images: how many images the static figure shows.

    Returns:
        An ``ipywidgets.VBox`` (controls + image), or, when not interactive or ipywidgets is
        missing, the static :func:`attn_lib.maps.viz.plot_attention_grid` figure of the first
        images.
    """
    if len(dataset) == 0:
        raise ValueError("the dataset is empty")
    explorer = _Explorer(model, dataset, gradcam, cmap)
    if interactive is None:
        interactive = _in_kernel()
    widgets = None
    if interactive:
        try:
            import ipywidgets as widgets
        except ImportError:
            widgets = None
    if widgets is None:
        count = min(static_images, len(dataset))
        indices = list(range(count))
        return plot_attention_grid(
            model, _normalised(dataset, indices), explorer.labels[indices],
            explorer.classes or None, dataset.mean, dataset.std,
            gradcam=any(p is None for _, p in explorer.views), cmap=cmap,
        )
    return _widget(explorer, widgets)


def _widget(explorer: _Explorer, widgets: Any) -> Any:
    style = {"description_width": "70px"}
    classes = [("all classes", None)] + [
        (_class_name(c, explorer.classes or None), c) for c in sorted(set(explorer.labels.tolist()))
    ]
    class_filter = widgets.Dropdown(options=classes, value=None, description="class", style=style)
    index = widgets.IntSlider(value=0, min=0, max=len(explorer.labels) - 1, description="image",
                              style=style, continuous_update=False)
    view = widgets.Dropdown(options=[(t, i) for i, (t, _) in enumerate(explorer.views)],
                            value=0, description="map", style=style)
    alpha = widgets.FloatSlider(value=0.5, min=0.0, max=1.0, step=0.05, description="opacity",
                                style=style, continuous_update=False)
    image = widgets.Image(format="png")
    status = widgets.HTML()
    state: dict[str, list[int]] = {"pool": explorer.indices(None)}

    def redraw(_change: Any = None) -> None:
        pool = state["pool"]
        if not pool:
            status.value = "<i>no image of this class</i>"
            return
        chosen = pool[min(index.value, len(pool) - 1)]
        image.value = _png(explorer.figure(chosen, view.value, alpha.value))
        status.value = f"image {chosen} ({index.value + 1} of {len(pool)} shown by the filter)"

    def refilter(_change: Any = None) -> None:
        state["pool"] = explorer.indices(class_filter.value)
        index.value = 0
        index.max = max(len(state["pool"]) - 1, 0)
        redraw()

    class_filter.observe(refilter, names="value")
    for control in (index, view, alpha):
        control.observe(redraw, names="value")
    redraw()
    controls = widgets.HBox([widgets.VBox([class_filter, index]), widgets.VBox([view, alpha])])
    box = widgets.VBox([controls, status, image])
    box.explorer = explorer  # for tests and debugging: the drawing state behind the widget
    return box

