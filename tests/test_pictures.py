"""Pictures checked by content: every panel shows its own image's own map, in the right place.

The model here is a stand-in whose maps can be recognised: level ``j``'s map is channel ``j - 1``
of the input, average-pooled to that level's grid (32x32, 16x16, 8x8 on 32x32 images). Random
images make every (image, level) map different, so a grid that repeats one image's maps, swaps
the level columns or pairs an image with another's map shows a panel that matches the wrong
candidate, and the tests below say which.
"""

from __future__ import annotations

import sys

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from torch import nn  # noqa: E402

import attn_lib  # noqa: E402
import attn_lib.maps.explorer as explorer_module  # noqa: E402
from attn_lib.data import normalize  # noqa: E402
from attn_lib.maps.explorer import ALL_CLASSES, GRADCAM, attention_explorer  # noqa: E402
from attn_lib.maps.gradcam import gradcam, gradcam_layers  # noqa: E402
from attn_lib.maps.viz import overlay_attention, plot_attention_grid, to_rgb_image  # noqa: E402
from attn_lib.models.attn_vgg import ModelOutput  # noqa: E402

MEAN, STD = (0.5, 0.4, 0.3), (0.25, 0.2, 0.3)
CLASSES = ["red", "green", "blue"]
#: Two renderings of the same map may differ by one step of the colormap's 256-colour table.
SAME = 0.02


class ChannelMaps(nn.Module):
    """Level j's map = channel j-1 average-pooled by 2**(j-1); logits = the channel means."""

    levels = (1, 2, 3)

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))  # a parameter, so the model has a device

    def forward(self, x: torch.Tensor) -> ModelOutput:
        maps = tuple(F.avg_pool2d(x[:, c:c + 1], 2**c) * self.scale for c in range(3))
        return ModelOutput(x.mean(dim=(2, 3)) * self.scale, maps)


def expected_map(image: torch.Tensor, level: int) -> torch.Tensor:
    """The stand-in's level map of one normalised image (3, H, W), computed here by hand."""
    return F.avg_pool2d(image[None, level - 1:level], 2 ** (level - 1))[0]


def uint8_images(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)


def panel(fig: Figure, ncols: int, row: int, col: int) -> np.ndarray:
    """The RGB array drawn in the panel at (row, col) of a grid figure."""
    return np.asarray(fig.axes[row * ncols + col].images[0].get_array())


def which(picture: np.ndarray, candidates: dict) -> list:
    """The keys of the candidate pictures that ``picture`` shows.

    The candidates must be told apart from each other first, or a wrong panel could pass.
    """
    for key, c in candidates.items():
        assert which_unchecked(c, candidates) == [key], f"candidate {key} is not recognisable"
    return which_unchecked(picture, candidates)


def which_unchecked(picture: np.ndarray, candidates: dict) -> list:
    return [key for key, c in candidates.items()
            if c.shape == picture.shape and np.abs(picture - c).max() <= SAME]


# --- plot_attention_grid --------------------------------------------------------------------


def test_each_grid_panel_shows_its_own_images_own_level_map():
    images = normalize(uint8_images(3), MEAN, STD)
    labels = [2, 0, 1]
    fig = plot_attention_grid(ChannelMaps(), images, labels, CLASSES, MEAN, STD, alpha=0.6)
    ncols = 4  # the input, then levels 1, 2, 3
    assert len(fig.axes) == 3 * ncols
    rgbs = {i: to_rgb_image(images[i], MEAN, STD) for i in range(3)}
    overlays = {(i, level): overlay_attention(rgbs[i], expected_map(images[i], level), alpha=0.6)
                for i in range(3) for level in (1, 2, 3)}
    for i in range(3):
        assert which(panel(fig, ncols, i, 0), rgbs) == [i]
        for column, level in enumerate((1, 2, 3), start=1):
            assert which(panel(fig, ncols, i, column), overlays) == [(i, level)], (i, level)
    headers = [fig.axes[c].get_title() for c in range(1, ncols)]
    assert headers == ["attention 1\nconv7 32x32", "attention 2\nconv10 16x16",
                       "attention 3\nconv13 8x8"]


def test_grid_titles_name_each_images_own_label_and_prediction():
    images = normalize(uint8_images(3, seed=1), MEAN, STD)
    labels = [2, 0, 1]
    fig = plot_attention_grid(ChannelMaps(), images, labels, CLASSES, MEAN, STD)
    probs = images.mean(dim=(2, 3)).softmax(dim=1)  # the stand-in's logits are channel means
    for i in range(3):
        pred = int(probs[i].argmax())
        title = fig.axes[i * 4].get_title()
        assert title == f"true: {CLASSES[labels[i]]}\npred: {CLASSES[pred]} {probs[i, pred]:.0%}"
        colour = fig.axes[i * 4].title.get_color()
        assert colour == ("tab:green" if pred == labels[i] else "tab:red")


def test_grid_gradcam_and_baseline_columns_explain_each_image_and_its_label():
    torch.manual_seed(3)  # a seed where every Grad-CAM below has positive evidence (not all 0)
    model = attn_lib.build_model("vgg-att2-concat-pc", num_classes=3, width=0.0625).eval()
    baseline = attn_lib.build_model("vgg", num_classes=3, width=0.0625).eval()
    images = normalize(uint8_images(2, seed=2), MEAN, STD)
    labels = [1, 0]
    fig = plot_attention_grid(model, images, labels, CLASSES, MEAN, STD, gradcam=True,
                              baseline=baseline)
    ncols = 5  # input, level 2, level 3, Grad-CAM of the model, Grad-CAM of the baseline
    with torch.no_grad():
        base_probs = baseline(images).logits.softmax(1)
    notes = [f"pred: {CLASSES[int(p.argmax())]} {float(p.max()):.0%}" for p in base_probs]
    assert [fig.axes[c].get_title() for c in range(1, ncols)] == [
        "attention 2\nconv10 16x16", "attention 3\nconv13 8x8", "Grad-CAM\nconv13",
        f"Grad-CAM vgg\nconv13\n{notes[0]}"]
    assert fig.axes[ncols + 4].get_title() == notes[1]  # the baseline's own prediction, row 2
    candidates = {}
    for i in range(2):
        rgb = to_rgb_image(images[i], MEAN, STD)
        for who, net in (("model", model), ("baseline", baseline)):
            for target in (0, 1, 2):
                cam = gradcam(net, images[i:i + 1], target)[0]
                candidates[(who, i, target)] = overlay_attention(rgb, cam)
    for i in range(2):
        assert which(panel(fig, ncols, i, 3), candidates) == [("model", i, labels[i])]
        assert which(panel(fig, ncols, i, 4), candidates) == [("baseline", i, labels[i])]
    # Without labels each Grad-CAM explains its own model's prediction, image by image (in
    # both orders, so that each model's most confident score is once on the second row); a
    # baseline without a name is called "baseline".
    del baseline.name
    with torch.no_grad():
        predicted = {who: net(images).logits.argmax(1).tolist()
                     for who, net in (("model", model), ("baseline", baseline))}
    for order in ([0, 1], [1, 0]):
        fig = plot_attention_grid(model, images[order], None, CLASSES, MEAN, STD, gradcam=True,
                                  baseline=baseline)
        assert fig.axes[4].get_title() == f"Grad-CAM baseline\nconv13\n{notes[order[0]]}"
        for row, i in enumerate(order):
            for column, who in ((3, "model"), (4, "baseline")):
                shown = panel(fig, ncols, row, column)
                assert which(shown, candidates) == [(who, i, predicted[who][i])]


# --- attention_explorer ---------------------------------------------------------------------


class _Images:
    """The ArrayDataset fields the explorer reads; six random images, labels 0 1 2 0 1 2."""

    def __init__(self, n: int = 6) -> None:
        self.images = uint8_images(n, seed=3)
        self.labels = torch.arange(n) % 3
        self.classes = list(CLASSES)
        self.mean, self.std = MEAN, STD

    def __len__(self) -> int:
        return len(self.images)


def _controls(box):
    controls, status, image = box.children
    (class_filter, index), (view, alpha) = (c.children for c in controls.children)
    return class_filter, index, view, alpha, status, image


def _spy(box) -> list[tuple[tuple, Figure]]:
    """Record every figure the widget draws from now on (arguments and the figure)."""
    drawn: list[tuple[tuple, Figure]] = []
    real = box.explorer.figure

    def figure(*args):
        fig = real(*args)
        drawn.append((args, fig))
        return fig

    box.explorer.figure = figure
    return drawn


def _shows(fig: Figure, ds: _Images, index: int, level: int) -> None:
    """Assert the explorer's figure shows image ``index`` and its level-``level`` map."""
    x = normalize(ds.images[index], MEAN, STD)
    rgbs = {i: to_rgb_image(normalize(ds.images[i], MEAN, STD), MEAN, STD) for i in range(len(ds))}
    assert which(np.asarray(fig.axes[0].images[0].get_array()), rgbs) == [index]
    raw = np.asarray(fig.axes[2].images[0].get_array())
    np.testing.assert_allclose(raw, expected_map(x, level)[0].numpy(), atol=1e-6)


def test_explorer_class_filter_opens_on_all_classes():
    pytest.importorskip("ipywidgets")
    box = attention_explorer(ChannelMaps(), _Images(), interactive=True)
    class_filter, index, *_ = _controls(box)
    assert class_filter.label == "all classes" and class_filter.index == 0
    assert class_filter.value == ALL_CLASSES
    assert [label for label, _ in class_filter.options] == ["all classes", *CLASSES]
    assert index.max == 5


def test_explorer_level_index_and_filter_change_what_is_drawn():
    pytest.importorskip("ipywidgets")
    ds = _Images()
    box = attention_explorer(ChannelMaps(), ds, interactive=True)
    class_filter, index, view, alpha, status, image = _controls(box)
    assert [label for label, _ in view.options] == [
        "level 1 (conv7)", "level 2 (conv10)", "level 3 (conv13)"]
    drawn = _spy(box)
    first = bytes(image.value)
    pictures = [first]
    for position, level in ((1, 2), (2, 3)):
        view.value = position
        _shows(drawn[-1][1], ds, 0, level)
        pictures.append(bytes(image.value))
    view.value = 0
    _shows(drawn[-1][1], ds, 0, 1)
    assert bytes(image.value) == first  # back to the first view: the same picture
    index.value = 4
    _shows(drawn[-1][1], ds, 4, 1)
    assert "image 4 (5 of 6" in status.value
    pictures.append(bytes(image.value))
    class_filter.value = 2  # images 2 and 5
    _shows(drawn[-1][1], ds, 2, 1)
    assert index.value == 0 and index.max == 1 and "image 2 (1 of 2" in status.value
    index.value = 1
    _shows(drawn[-1][1], ds, 5, 1)
    pictures.append(bytes(image.value))
    alpha.value = 0.9
    assert drawn[-1][0] == (5, 0, 0.9)
    pictures.append(bytes(image.value))
    assert len(set(pictures)) == len(pictures)  # every change drew a new picture
    class_filter.value = ALL_CLASSES
    assert index.max == 5 and "image 0 (1 of 6" in status.value


def test_explorer_names_the_levels_of_a_model_beyond_the_vgg():
    pytest.importorskip("ipywidgets")
    torch.manual_seed(0)
    model = attn_lib.build_model("resnet20-att2-concat-pc", num_classes=3, width=0.0625)
    view = _controls(attention_explorer(model, _Images(), interactive=True))[2]
    assert [label for label, _ in view.options][:2] == [
        "level 1 (stage 2)", "level 2 (stage 3)"]  # its stages, not the VGG's conv7, conv10


def test_explorer_class_filter_change_draws_once():
    pytest.importorskip("ipywidgets")
    box = attention_explorer(ChannelMaps(), _Images(), interactive=True)
    class_filter, index, *_ = _controls(box)
    index.value = 4  # the filter must move the slider back to 0, without drawing for that
    drawn = _spy(box)
    class_filter.value = 1
    assert [args[0] for args, _ in drawn] == [1]
    class_filter.value = 2  # the slider is at 0 already
    assert [args[0] for args, _ in drawn] == [1, 2]


def test_explorer_shows_errors_of_its_callbacks_in_the_widget():
    pytest.importorskip("ipywidgets")
    box = attention_explorer(ChannelMaps(), _Images(), interactive=True)
    class_filter, index, view, alpha, status, image = _controls(box)
    real = box.explorer.figure

    def broken(*args):
        raise RuntimeError("no map for <this> image")

    box.explorer.figure = broken
    for control, value in ((alpha, 0.8), (index, 3), (view, 2), (class_filter, 1)):
        control.value = value  # must not raise into the (invisible) callback machinery
        assert "RuntimeError: no map for &lt;this&gt; image" in status.value, control
    box.explorer.figure = real
    alpha.value = 0.3
    assert status.value.startswith("image ")


@pytest.mark.parametrize("name, side", [("vgg-att2-concat-pc", 8), ("vgg", 2)])
def test_explorer_gradcam_view_shows_the_map_at_its_own_resolution(name, side):
    pytest.importorskip("ipywidgets")
    torch.manual_seed(0)
    model = attn_lib.build_model(name, num_classes=3, width=0.0625).eval()
    ds = _Images()
    box = attention_explorer(model, ds, gradcam=True, interactive=True)
    _, index, view, *_ = _controls(box)
    drawn = _spy(box)
    view.value = [label for label, _ in view.options].index(GRADCAM)
    index.value = 4
    fig = drawn[-1][1]
    x = normalize(ds.images[4:5], MEAN, STD)
    native = gradcam_layers(model, x, int(ds.labels[4]), (3,), upsample=False)[0][0, 0]
    raw = np.asarray(fig.axes[2].images[0].get_array())
    assert raw.shape == (side, side)
    np.testing.assert_allclose(raw, native.numpy(), atol=1e-6)
    assert f"{side}x{side}" in fig.axes[2].get_title()
    assert f"{side}x{side} map, upsampled to 32x32" in fig.axes[1].get_title()
    assert "no upsampling" not in fig.axes[2].get_title()


def test_static_explorer_shows_the_first_images_with_their_maps():
    ds = _Images()
    fig = attention_explorer(ChannelMaps(), ds, interactive=False, static_images=2)
    images = normalize(ds.images[:2], MEAN, STD)
    overlays = {(i, level): overlay_attention(to_rgb_image(images[i], MEAN, STD),
                                              expected_map(images[i], level))
                for i in range(2) for level in (1, 2, 3)}
    for i in range(2):
        for column, level in enumerate((1, 2, 3), start=1):
            assert which(panel(fig, 4, i, column), overlays) == [(i, level)]


def test_explorer_offers_contribution_maps_and_labels_the_models_own_gradcam():
    pytest.importorskip("ipywidgets")
    from attn_lib.maps.contribution import contribution_maps

    torch.manual_seed(0)
    model = attn_lib.build_model("vgg-att2-concat-pc", num_classes=3, width=0.0625).eval()
    ds = _Images(3)
    box = attention_explorer(model, ds, gradcam=True, interactive=True)
    _, index, view, *_ = _controls(box)
    assert [label for label, _ in view.options] == [
        "level 2 (conv10)", "level 3 (conv13)", "contribution, level 2 (conv10)",
        "contribution, level 3 (conv13)", GRADCAM]
    assert "own" in GRADCAM
    drawn = _spy(box)
    index.value = 2
    view.value = 3  # level 3's contribution map, for the predicted class
    fig = drawn[-1][1]
    x = normalize(ds.images[2:3], MEAN, STD)
    expected = contribution_maps(model, x).maps[1][0, 0]
    raw = np.asarray(fig.axes[2].images[0].get_array())
    np.testing.assert_allclose(raw, expected.numpy(), rtol=1e-5, atol=1e-7)
    assert f"sum {float(expected.sum()):+.2f}" in fig.axes[2].get_title()


def _axes_text(ax) -> tuple[str, str, float]:
    """An axes' title, its colour and its font size."""
    return ax.get_title(), ax.title.get_color(), ax.title.get_fontsize()


def test_explorer_figure_titles_colours_and_the_map_over_the_image():
    pytest.importorskip("ipywidgets")
    ds = _Images()
    box = attention_explorer(ChannelMaps(), ds, interactive=True, cmap="plasma")  # not the default
    x = normalize(ds.images, MEAN, STD)
    probs = x.mean(dim=(2, 3)).softmax(dim=1)  # the stand-in's logits are its channel means
    assert probs.argmax(dim=1).tolist() == [2] * 6  # right on images 2 and 5 only
    for index, colour in ((4, "tab:red"), (5, "tab:green")):
        fig = box.explorer.figure(index, 1, 0.3)
        image, over, alone = fig.axes
        assert [ax.get_subplotspec().get_geometry() for ax in fig.axes] == [
            (1, 3, 0, 0), (1, 3, 1, 1), (1, 3, 2, 2)]  # side by side
        assert _axes_text(image) == (
            f"#{index} true: {CLASSES[index % 3]}\npred: blue {float(probs[index, 2]):.0%}",
            colour, 9)
        rgb = to_rgb_image(x[index], MEAN, STD)
        np.testing.assert_allclose(np.asarray(image.images[0].get_array()), rgb, atol=1e-6)
        expected = expected_map(x[index], 2)
        shown = np.asarray(over.images[0].get_array())
        assert which(shown, {
            "this": overlay_attention(rgb, expected, 0.3, "plasma"),
            "another opacity": overlay_attention(rgb, expected, 0.5, "plasma"),
            "another colormap": overlay_attention(rgb, expected, 0.3, "jet"),
            "another level": overlay_attention(rgb, expected_map(x[index], 3), 0.3, "plasma"),
        }) == ["this"]
        assert _axes_text(over) == (
            "level 2 (conv10)\n16x16 map, upsampled to 32x32", "black", 9)
        assert _axes_text(alone) == ("map alone, 16x16\n(its own grid)", "black", 9)
        drawn = alone.images[0]
        assert drawn.get_cmap().name == "plasma" and drawn.get_interpolation() == "nearest"
        for ax in fig.axes:
            assert list(ax.get_xticks()) == [] and list(ax.get_yticks()) == []
        assert [ax.spines["left"].get_visible() for ax in fig.axes] == [False, False, True]
        assert image.images[0].get_interpolation() == "nearest"


def test_explorer_contribution_view_overlays_the_evidence_for_and_signs_the_map():
    pytest.importorskip("ipywidgets")
    from attn_lib.maps.contribution import contribution_maps
    from attn_lib.maps.viz import SIGNED_CMAP

    torch.manual_seed(0)
    model = attn_lib.build_model("vgg-att2-concat-pc", num_classes=3, width=0.0625)
    ds = _Images(3)
    box = attention_explorer(model.train(), ds, interactive=True)
    x = normalize(ds.images, MEAN, STD)
    # Image 0's map (level 2) peaks above its deepest negative value, image 1's below it: a
    # colour scale taken from the map's own minimum or maximum would not be symmetric.
    signs = []
    for index in (0, 1):
        assert model.train().training
        fig = box.explorer.figure(index, 2, 0.5)  # level 2's contribution map
        assert model.training  # drawing leaves a training model training
        signed = contribution_maps(model.eval(), x[index:index + 1]).maps[0][0]
        pred = int(model(x[index:index + 1]).logits.argmax())
        assert signed.min() < 0 < signed.max()  # "the positive part" is a real choice
        signs.append(signed.max() > -signed.min())
        rgb = to_rgb_image(x[index], MEAN, STD)
        shown = np.asarray(fig.axes[1].images[0].get_array())
        assert which(shown, {"for": overlay_attention(rgb, signed.clamp_min(0)),
                             "signed": overlay_attention(rgb, signed)}) == ["for"]
        assert fig.axes[1].get_title() == (
            "contribution, level 2 (conv10)\n16x16 map, upsampled to 32x32")
        alone = fig.axes[2].images[0]
        np.testing.assert_allclose(np.asarray(alone.get_array()), signed[0].numpy(),
                                   rtol=1e-5, atol=1e-7)
        top = float(signed.abs().max())
        assert alone.get_cmap().name == SIGNED_CMAP == "RdBu_r"
        assert (alone.norm.vmin, alone.norm.vmax) == (pytest.approx(-top), pytest.approx(top))
        assert alone.get_interpolation() == "nearest"
        assert _axes_text(fig.axes[2]) == (
            f"share of {CLASSES[pred]}'s logit\n(red for, blue against; "
            f"sum {float(signed.sum()):+.2f})", "black", 9)
    assert signs == [True, False]


def test_static_explorer_passes_its_options_to_the_grid(monkeypatch):
    ds = _Images(3)
    images = normalize(ds.images, MEAN, STD)
    fig = attention_explorer(ChannelMaps(), ds, interactive=False, static_images=10,
                             cmap="viridis")
    assert len(fig.axes) == 3 * 4  # every image of a set smaller than static_images
    assert len(attention_explorer(ChannelMaps(), _Images(), interactive=False).axes) == 4 * 4
    overlays = {(i, cmap): overlay_attention(to_rgb_image(images[i], MEAN, STD),
                                             expected_map(images[i], 2), cmap=cmap)
                for i in range(3) for cmap in ("viridis", "jet")}
    assert which(panel(fig, 4, 2, 2), overlays) == [(2, "viridis")]
    assert fig.axes[8].get_title().startswith("true: blue\npred: blue ")  # names, not numbers
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # ipywidgets not installed
    fig = attention_explorer(ChannelMaps(), ds, interactive=True, static_images=1)
    assert isinstance(fig, Figure) and len(fig.axes) == 4
    torch.manual_seed(0)
    model = attn_lib.build_model("vgg-att2-concat-pc", num_classes=3, width=0.0625)
    for with_gradcam, columns in ((False, 3), (True, 4)):  # input, levels 2 and 3, Grad-CAM
        fig = attention_explorer(model, ds, gradcam=with_gradcam, interactive=False,
                                 static_images=1)
        assert len(fig.axes) == columns
        assert ("Grad-CAM" in fig.axes[-1].get_title()) is with_gradcam
    plain = attn_lib.build_model("vgg", num_classes=3, width=0.0625)
    fig = attention_explorer(plain, ds, interactive=False, static_images=1)
    # A model without attention maps: the grid shows its Grad-CAM.
    assert len(fig.axes) == 2 and "Grad-CAM" in fig.axes[1].get_title()
    with pytest.raises(ValueError, match="^the dataset is empty$"):
        attention_explorer(ChannelMaps(), _Images(0))


def test_explorer_widget_opens_in_a_kernel_with_its_controls_set(monkeypatch):
    widgets = pytest.importorskip("ipywidgets")
    monkeypatch.setattr(explorer_module, "_in_kernel", lambda: True)
    box = attention_explorer(ChannelMaps(), _Images())
    assert isinstance(box, widgets.VBox)
    class_filter, index, view, alpha, status, image = _controls(box)
    assert [c.description for c in (class_filter, index, view, alpha)] == [
        "class", "image", "map", "opacity"]
    assert (index.value, index.min, index.max, index.continuous_update) == (0, 0, 5, False)
    assert (alpha.value, alpha.min, alpha.max, alpha.step) == (0.5, 0.0, 1.0, 0.05)
    assert alpha.continuous_update is False  # a drag draws once, when it ends
    assert view.index == 0 and image.format == "png"
    assert status.value == "image 0 (1 of 6 shown by the filter)"
    class_filter.value = 1
    index.value = 1
    assert status.value == "image 4 (2 of 2 shown by the filter)"


def test_explorer_draws_a_660_by_260_png_only_when_a_value_changes():
    pytest.importorskip("ipywidgets")
    import struct

    with matplotlib.rc_context({"figure.dpi": 72, "savefig.dpi": 50}):
        box = attention_explorer(ChannelMaps(), _Images(), interactive=True)
    class_filter, index, view, alpha, status, image = _controls(box)
    png = bytes(image.value)
    # The PNG header's width and height: 6.6 x 2.6 inches at 100 dpi, whatever matplotlib's
    # savefig settings (a notebook output column is about 700 px wide).
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", png[16:24]) == (660, 260)
    drawn = _spy(box)
    index.max = 4  # a control's other settings change: nothing to redraw
    alpha.step = 0.1
    view.description = "level"
    assert drawn == []


def test_explorer_numbers_the_classes_of_a_dataset_without_names():
    pytest.importorskip("ipywidgets")
    ds = _Images()
    del ds.classes
    box = attention_explorer(ChannelMaps(), ds, interactive=True)
    class_filter, *_ = _controls(box)
    assert [label for label, _ in class_filter.options] == ["all classes", "0", "1", "2"]
    fig = box.explorer.figure(4, 0, 0.5)
    assert fig.axes[0].get_title().startswith("#4 true: 1\npred: 2 ")
    fig = attention_explorer(ChannelMaps(), ds, interactive=False, static_images=2)
    assert fig.axes[4].get_title().startswith("true: 1\npred: 2 ")


class _PlainNet(nn.Module):
    """A classifier without attention levels or a VGG backbone; it names its Grad-CAM layer."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.gradcam_layer = self.conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x)).mean(dim=(2, 3))


class _DeepLevels(ChannelMaps):
    """Attention levels 1, 2 and 4; the VGG has no fourth level to name a layer for."""

    levels = (1, 2, 4)


def test_explorer_views_of_models_beyond_the_attention_vgg():
    pytest.importorskip("ipywidgets")
    torch.manual_seed(0)
    box = attention_explorer(_PlainNet(), _Images(), interactive=True)  # no `levels` at all
    view = _controls(box)[2]
    assert [label for label, _ in view.options] == [GRADCAM]
    assert bytes(_controls(box)[5].value)[:4] == b"\x89PNG"
    view = _controls(attention_explorer(_DeepLevels(), _Images(), interactive=True))[2]
    assert [label for label, _ in view.options] == [
        "level 1 (conv7)", "level 2 (conv10)", "level 4"]
