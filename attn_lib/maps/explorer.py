"""An interactive attention explorer for notebooks (ipywidgets), static when there is no kernel.

Controls: image index, the map (an attention level, a level's contribution map, or the model's
own Grad-CAM), heatmap opacity, and a class filter that restricts the index slider to images of
one true class. A contribution map (:mod:`.contribution`) shows what each position added to the
predicted class's score: over the image its positive part (evidence *for* the class), alone
its signed values (red for, blue against). Each redraw renders a matplotlib figure
to PNG (without pyplot) into an ``ipywidgets.Image``, so it works with any matplotlib backend,
including ``Agg``, and leaves no figures behind.

Works with ipywidgets 7 (Colab's) and 8. Two things differ from a plain script there: an
exception raised inside a widget callback goes to the browser's console, not to the notebook,
so the explorer shows it in its status line; and a ``Dropdown`` given ``value=None`` shows no
selection at all, so "all classes" is a real option value (:data:`ALL_CLASSES`).
"""

from __future__ import annotations

import html
import io
from typing import Any

import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from ..models import level_layer_name
from .viz import (
    SIGNED_CMAP,
    _class_name,
    _show,
    overlay_attention,
    plot_attention_grid,
    predict,
    signed_limit,
    to_rgb_image,
)

GRADCAM = "Grad-CAM conv13, this model's own"
#: The class filter's value for "no filter" (a real value: ``None`` would show a blank box).
ALL_CLASSES = -1


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
        level_names = [(position, _level_name(model, position, level))
                       for position, level in enumerate(getattr(model, "levels", ()))]
        #: (title, kind, position): kind "attention", "contribution" or "gradcam"
        self.views: list[tuple[str, str, int | None]] = [
            (name, "attention", position) for position, name in level_names]
        if hasattr(model, "heads") and hasattr(model, "estimators"):  # an AttnVGG head
            self.views += [(f"contribution, {name}", "contribution", position)
                           for position, name in level_names]
        if gradcam or not self.views:
            self.views.append((GRADCAM, "gradcam", None))

    def indices(self, label: int) -> list[int]:
        """Dataset indices of the images of true class ``label`` (all for ``ALL_CLASSES``)."""
        if label == ALL_CLASSES:
            return list(range(len(self.labels)))
        return torch.nonzero(self.labels == label).flatten().tolist()

    def figure(self, index: int, view: int, alpha: float) -> Figure:
        """Image ``index``: the input, the map of view ``view`` over it, and the map alone."""
        from .gradcam import gradcam_layers

        x = _normalised(self.dataset, [index])
        probs, attention = predict(self.model, x)
        title, kind, position = self.views[view]
        label = int(self.labels[index])
        pred = int(probs[0].argmax())
        if kind == "gradcam":
            # The layer's own grid (conv13: H/4 on the attention models), not upsampled, so
            # that the "map alone" panel shows the resolution Grad-CAM really has.
            maps = gradcam_layers(self.model, x, label, upsample=False)[0].cpu()
        elif kind == "contribution":
            maps = self._contribution(x, position)
        else:
            maps = attention[position]
        mean, std = self.dataset.mean, self.dataset.std
        fig = Figure(figsize=(6.6, 2.6), layout="constrained")
        axes = fig.subplots(1, 3)
        image = x[0]
        names = self.classes  # [] without names: _class_name numbers the classes
        head = (f"#{index} true: {_class_name(label, names)}\n"
                f"pred: {_class_name(pred, names)} {float(probs[0, pred]):.0%}")
        _show(axes[0], to_rgb_image(image, mean, std), head,
              "tab:green" if pred == label else "tab:red")
        h, w = maps.shape[-2:]
        size = "x".join(str(s) for s in image.shape[-2:])
        shown = maps[0].clamp_min(0) if kind == "contribution" else maps[0]
        _show(axes[1], overlay_attention(image, shown, alpha, self.cmap, mean, std),
              f"{title}\n{h}x{w} map, upsampled to {size}", "black")
        raw = maps[0, 0].numpy()
        if kind == "contribution":
            top = signed_limit(maps[0, 0])
            axes[2].imshow(raw, cmap=SIGNED_CMAP, vmin=-top, vmax=top, interpolation="nearest")
            axes[2].set_title(f"share of {_class_name(pred, names)}'s logit\n"
                              f"(red for, blue against; sum {raw.sum():+.2f})", fontsize=9)
        else:
            axes[2].imshow(raw, cmap=self.cmap, interpolation="nearest")
            axes[2].set_title(f"map alone, {h}x{w}\n(its own grid)", fontsize=9)
        axes[2].set_xticks([])
        axes[2].set_yticks([])
        return fig


    def _contribution(self, x: Tensor, position: int) -> Tensor:
        """The contribution map of level ``position`` for the predicted class, (1, 1, h, w)."""
        from .._device import model_device
        from .contribution import contribution_maps

        x = x.to(model_device(self.model))
        was_training = self.model.training
        self.model.eval()
        try:
            return contribution_maps(self.model, x).maps[position].float().cpu()
        finally:
            self.model.train(was_training)


def _level_name(model: nn.Module, position: int, level: int) -> str:
    """A view's name, e.g. "level 2 (conv10)"; no layer for a level the VGG does not have."""
    layer = level_layer_name(model, position)
    return f"level {level} ({layer})" if layer else f"level {level}"


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
        gradcam: offer the model's own Grad-CAM (conv13, true class) as a view too; always
            on for a model without attention. In the widget, attention models also get one
            contribution map per level (predicted class).
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
            explorer.classes, dataset.mean, dataset.std,
            gradcam=any(kind == "gradcam" for _, kind, _ in explorer.views), cmap=cmap,
        )
    return _widget(explorer, widgets)


def _widget(explorer: _Explorer, widgets: Any) -> Any:
    style = {"description_width": "70px"}
    classes = [("all classes", ALL_CLASSES)] + [
        (_class_name(c, explorer.classes), c) for c in sorted(set(explorer.labels.tolist()))
    ]
    # No value=None for "all classes": ipywidgets 7 shows it as an empty box. A Dropdown given
    # no value selects its first option (ipywidgets 7.7.1 and 8 alike).
    class_filter = widgets.Dropdown(options=classes, description="class", style=style)
    index = widgets.IntSlider(max=len(explorer.labels) - 1, description="image", style=style,
                              continuous_update=False)  # value and min: 0 by default
    view = widgets.Dropdown(options=[(t, i) for i, (t, *_) in enumerate(explorer.views)],
                            description="map", style=style)
    alpha = widgets.FloatSlider(value=0.5, max=1.0, step=0.05, description="opacity",
                                style=style, continuous_update=False)  # min: 0.0 by default
    image = widgets.Image(format="png")
    status = widgets.HTML()
    state: dict[str, Any] = {"pool": explorer.indices(ALL_CLASSES), "refiltering": False}

    def draw() -> None:
        # The slider's range is the pool's (refilter sets it), and the pool is never empty: the
        # filter offers only the classes the dataset has, and the dataset has an image.
        pool = state["pool"]
        chosen = pool[index.value]
        image.value = _png(explorer.figure(chosen, view.value, alpha.value))
        status.value = f"image {chosen} ({index.value + 1} of {len(pool)} shown by the filter)"

    def shown(callback: Any) -> Any:
        # An exception in a widget callback goes to the browser's console (invisible on
        # Colab): show it in the status line instead, where the user is looking.
        def wrapped(_change: Any) -> None:
            try:
                callback()
            except Exception as exc:  # every error must reach the user
                text = html.escape(f"{type(exc).__name__}: {exc}")
                status.value = f'<b style="color:#b00">error: {text}</b>'

        return wrapped

    def redraw() -> None:
        if not state["refiltering"]:  # refilter draws once itself, after resetting the slider
            draw()

    def refilter() -> None:
        state["pool"] = explorer.indices(class_filter.value)
        state["refiltering"] = True
        try:
            index.value = 0
            index.max = len(state["pool"]) - 1
        finally:
            state["refiltering"] = False
        draw()

    class_filter.observe(shown(refilter), names="value")
    for control in (index, view, alpha):
        control.observe(shown(redraw), names="value")
    draw()  # the first drawing raises as usual: the cell that builds the widget shows it
    controls = widgets.HBox([widgets.VBox([class_filter, index]), widgets.VBox([view, alpha])])
    box = widgets.VBox([controls, status, image])
    box.explorer = explorer  # for tests and debugging: the drawing state behind the widget
    return box
