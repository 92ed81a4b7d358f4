"""Overlays, attention grids, the explorer and Grad-CAM (all headless, tiny models)."""

from __future__ import annotations

import math
import re
import sys

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from torch import nn  # noqa: E402

import attn_lib  # noqa: E402
import attn_lib.maps.explorer as explorer_module  # noqa: E402
from attn_lib.maps.explorer import attention_explorer  # noqa: E402
from attn_lib.maps.gradcam import gradcam, gradcam_layers, upsample_maps  # noqa: E402
from attn_lib.maps.viz import (  # noqa: E402
    RANGE_TOLERANCE,
    MapColumn,
    attention_heatmap,
    overlay_attention,
    plot_attention_grid,
    plot_map_columns,
    signed_limit,
    to_rgb_image,
)
from attn_lib.models import ModelOutput  # noqa: E402

MEAN, STD = (0.5, 0.4, 0.3), (0.25, 0.2, 0.3)
JET = matplotlib.colormaps["jet"]


def _image(seed: int = 0, size: int = 32) -> torch.Tensor:
    """A random RGB image (3, H, W) in [0, 1]."""
    return torch.rand(3, size, size, generator=torch.Generator().manual_seed(seed))


def _corner_map() -> torch.Tensor:
    m = torch.zeros(8, 8)
    m[0, 0] = 1.0  # peak in the top-left corner
    return m


# --- overlay_attention ----------------------------------------------------------------------


def test_overlay_shape_dtype_and_range():
    out = overlay_attention(_image(), torch.rand(4, 4), alpha=0.6)
    assert out.shape == (32, 32, 3)
    assert out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_peak_in_a_corner_colours_that_corner():
    grey = torch.full((3, 32, 32), 0.5)
    out = overlay_attention(grey, _corner_map(), alpha=1.0, cmap="jet")
    top_left, bottom_right = out[0, 0], out[-1, -1]
    # Full opacity shows the colormap alone: the peak gets jet's top (dark red), the rest its
    # bottom (dark blue); red must be in the top-left, i.e. no transposed or flipped axes.
    np.testing.assert_allclose(top_left, JET(1.0)[:3], atol=0.05)
    np.testing.assert_allclose(bottom_right, JET(0.0)[:3], atol=1e-6)
    assert top_left[0] > 0.4 and top_left[2] < 0.1
    assert out[0, -1, 2] > out[0, -1, 0] and out[-1, 0, 2] > out[-1, 0, 0]


def test_alpha_zero_is_the_image_and_channels_stay_rgb():
    image = torch.zeros(3, 8, 8)
    image[0] = 1.0  # pure red must stay red (no BGR swap anywhere)
    out = overlay_attention(image, torch.rand(2, 2), alpha=0.0)
    np.testing.assert_array_equal(out[..., 0], 1.0)
    np.testing.assert_array_equal(out[..., 1:], 0.0)


def test_chw_hwc_tensor_array_and_uint8_agree():
    chw = _image(1)
    att = torch.rand(1, 1, 8, 8)
    ref = overlay_attention(chw, att)
    hwc = chw.permute(1, 2, 0)
    for image in (hwc, chw.numpy(), hwc.numpy()):
        np.testing.assert_allclose(overlay_attention(image, att), ref, atol=1e-6)
    for a in (att[0], att[0, 0], att.numpy()):
        np.testing.assert_allclose(overlay_attention(chw, a), ref, atol=1e-6)
    as_uint8 = (chw * 255).round().to(torch.uint8)
    np.testing.assert_allclose(overlay_attention(as_uint8, att), ref, atol=3e-3)


def test_normalised_input_round_trips_with_mean_and_std():
    image = _image(2)
    normalised = (image - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
    att = torch.rand(16, 16)
    np.testing.assert_allclose(
        overlay_attention(normalised, att, mean=MEAN, std=STD), overlay_attention(image, att),
        atol=1e-5,
    )
    np.testing.assert_allclose(to_rgb_image(normalised, MEAN, STD),
                               image.permute(1, 2, 0).numpy(), atol=1e-5)


def test_one_statistic_serves_every_channel_and_std_must_be_positive():
    image = _image(3)
    grey_normalised = (image - 0.5) / 0.25
    np.testing.assert_allclose(to_rgb_image(grey_normalised, 0.5, 0.25),
                               to_rgb_image(grey_normalised, [0.5] * 3, [[0.25], [0.25], [0.25]]))
    np.testing.assert_allclose(to_rgb_image(image, 0, 1), to_rgb_image(image), atol=1e-6)
    with pytest.raises(ValueError, match=r"^std must be positive, got \[0\.25, 0\.0, 0\.25\]$"):
        to_rgb_image(image, MEAN, (0.25, 0.0, 0.25))


def test_heatmap_is_the_map_min_max_scaled_and_flat_when_constant():
    scaled = torch.tensor([[0.0, 0.25], [0.5, 1.0]])
    for offset, scale in ((0.0, 1.0), (2.0, 4.0), (1e-3, 1e-3)):
        np.testing.assert_allclose(attention_heatmap(offset + scale * scaled, (2, 2)),
                                   scaled.numpy(), atol=1e-6)
    np.testing.assert_array_equal(attention_heatmap(torch.full((4, 4), 0.3), (8, 8)),
                                  np.zeros((8, 8)))


def test_rgb_images_are_float32_whatever_came_in():
    stats = {"mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}
    images = ((_image(), {}), (torch.randint(0, 256, (3, 4, 4), dtype=torch.uint8), {}),
              (np.random.rand(4, 4, 3), {}), (torch.zeros(3, 4, 4, dtype=torch.float64), stats))
    for image, kwargs in images:
        assert to_rgb_image(image, **kwargs).dtype == np.float32


def test_grey_image_becomes_rgb():
    assert to_rgb_image(torch.rand(1, 8, 8)).shape == (8, 8, 3)
    assert to_rgb_image(np.random.rand(8, 8)).shape == (8, 8, 3)


@pytest.mark.parametrize(
    ("image", "attention", "kwargs", "message"),
    [
        (torch.rand(2, 3, 8, 8), torch.rand(4, 4), {}, "one image"),
        (torch.rand(5, 8, 8), torch.rand(4, 4), {}, "channel axis"),
        (torch.rand(3, 8, 8) * 4 - 2, torch.rand(4, 4), {}, "mean= and std="),
        (torch.rand(3, 8, 8) * 255, torch.rand(4, 4), {}, "255"),
        (torch.full((3, 8, 8), float("nan")), torch.rand(4, 4), {}, "NaN"),
        (torch.rand(3, 8, 8), torch.rand(2, 1, 4, 4), {}, "one attention map"),
        (torch.rand(3, 8, 8), torch.rand(4, 4), {"alpha": 1.5}, "alpha"),
        (torch.rand(3, 8, 8), torch.rand(4, 4), {"cmap": "no-such-map"}, "colormap"),
        (torch.rand(3, 8, 8), torch.rand(4, 4), {"mean": MEAN}, "both mean and std"),
        (torch.rand(3, 8, 8), torch.rand(4, 4), {"mean": (0.5, 0.5), "std": STD}, "per channel"),
        ([[0.0]], torch.rand(4, 4), {}, "torch.Tensor or a numpy.ndarray"),
    ],
)
def test_bad_inputs_raise_clear_value_errors(image, attention, kwargs, message):
    with pytest.raises(ValueError, match=message):
        overlay_attention(image, attention, **kwargs)


_RGB = torch.rand(3, 8, 8)


@pytest.mark.parametrize(("image", "attention", "kwargs", "message"), [
    (torch.rand(2, 3, 8, 8), None, {}, "expected one image of shape (3, H, W) or (H, W, 3), got "
                                       "shape (2, 3, 8, 8); pick one image, e.g. images[0]"),
    (torch.rand(1, 2, 3, 8, 8), None, {}, "expected one image of shape (3, H, W) or (H, W, 3), "
                                          "got shape (1, 2, 3, 8, 8)"),
    (torch.rand(5, 8, 8), None, {}, "image of shape (5, 8, 8) has no channel axis of size 1 or 3 "
                                    "at either end; expected (3, H, W) or (H, W, 3) RGB"),
    (np.full((4, 4, 3), "a"), None, {}, "image must hold numbers, got dtype <U1"),
    (np.zeros((4, 4, 3), np.uint8), None, {"mean": MEAN},
     "a uint8 image is raw pixels, not normalised: drop mean/std"),
    (_RGB, None, {"std": STD}, "give both mean and std (the ones the image was normalised with)"),
    ([[0.0]], None, {}, "image must be a torch.Tensor or a numpy.ndarray, got list"),
    (_RGB, [[0.0]], {}, "attention must be a torch.Tensor or a numpy.ndarray, got list"),
    (_RGB, torch.rand(2, 1, 4, 4), {}, "expected one attention map of shape (h, w), (1, h, w) or "
     "(1, 1, h, w), got (2, 1, 4, 4); pick one image and level, e.g. "
     "out.attention[level_index][i]"),
    (_RGB, torch.full((4, 4), math.nan), {}, "attention map contains NaN or infinite values"),
    (torch.full((3, 8, 8), math.inf), None, {}, "image contains NaN or infinite values"),
    (_RGB, None, {"mean": (0.5, 0.5), "std": STD},
     "mean must have 1 or 3 values (one per channel), got 2"),
    (torch.tensor([-2.0, 2.0]).repeat(3, 4, 1), None, {},
     "image values span [-2, 2], outside [0, 1]; it looks normalised: pass the dataset's mean= "
     "and std= (e.g. dataset.mean, dataset.std) to un-normalise it"),
    (torch.tensor([0.0, 1.5]).repeat(3, 4, 1), None, {},  # 1.5 may be a normalised image
     "image values span [0, 1.5], outside [0, 1]; it looks normalised: pass the dataset's mean= "
     "and std= (e.g. dataset.mean, dataset.std) to un-normalise it"),
    (torch.tensor([0.0, 2.0]).repeat(3, 4, 1), None, {},
     "image values span [0, 2], outside [0, 1]; it looks like 0-255 pixels: pass a uint8 image "
     "or divide by 255"),
    (torch.tensor([0.0, 1.0]).repeat(3, 4, 1), None, {"mean": 0.5, "std": 2.0},
     "image values span [0.5, 2.5], outside [0, 1]; the mean/std given are probably not the ones "
     "the image was normalised with"),
])
def test_refusals_say_what_is_wrong_and_the_fix(image, attention, kwargs, message):
    attention = torch.rand(4, 4) if attention is None else attention
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        overlay_attention(image, attention, **kwargs)


def test_layouts_one_row_maps_and_full_scale_pixels():
    ambiguous = torch.rand(3, 4, 3)  # channels-first for a tensor, channels-last for an array
    assert to_rgb_image(ambiguous).shape == (4, 3, 3)
    assert to_rgb_image(ambiguous.numpy()).shape == (3, 4, 3)
    assert to_rgb_image(np.random.rand(8, 8, 1)).shape == (8, 8, 3)
    assert to_rgb_image(np.full((2, 2, 3), 255, np.uint8)).max() == 1.0
    overshoot = torch.tensor([-RANGE_TOLERANCE / 2, 1 + RANGE_TOLERANCE / 2]).repeat(3, 4, 1)
    clipped = to_rgb_image(overshoot)  # round-off within the tolerance: clipped, not refused
    assert clipped.min() == 0.0 and clipped.max() == 1.0
    assert attention_heatmap(torch.tensor([[0.0, 1.0, 2.0, 4.0]]), (1, 4)).tolist() == [
        [0.0, 0.25, 0.5, 1.0]]  # a (1, w) map is one row, not a batch of one


# --- plot_attention_grid --------------------------------------------------------------------


def _model(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return attn_lib.build_model(name, num_classes=4, width=0.0625).eval()


def _batch(n: int = 2) -> torch.Tensor:
    x = torch.stack([_image(i) for i in range(n)])
    return (x - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]


@pytest.mark.parametrize(
    ("name", "kwargs", "columns"),
    [
        ("vgg-att2-concat-pc", {}, 3),
        ("vgg-att3-concat-pc", {}, 4),
        ("vgg-att3-indep-dp", {"gradcam": True}, 5),
        ("vgg", {}, 1),
        ("vgg", {"gradcam": True}, 2),
    ],
)
def test_grid_has_a_column_per_level(name, kwargs, columns):
    fig = plot_attention_grid(_model(name), _batch(2), [0, 1], ["a", "b", "c", "d"], MEAN, STD,
                              **kwargs)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 2 * columns
    first = fig.axes[0]
    assert "true: a" in first.get_title() and "pred:" in first.get_title()
    assert not first.get_xticks().size and not first.get_yticks().size
    assert not any(spine.get_visible() for spine in first.spines.values()), "no frame"


class _UnnamedLevels(nn.Module):
    """Maps without ``levels``: the grid numbers them 1, 2, ... and names the VGG's layers."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> ModelOutput:
        maps = (x[:, :1] * self.scale, x[:, :1, ::2, ::2] * self.scale)
        return ModelOutput(x.mean(dim=(2, 3)) * self.scale, maps)


def test_grid_titles_the_maps_of_a_model_without_levels():
    model = _UnnamedLevels()
    fig = plot_attention_grid(model, _batch(1), mean=MEAN, std=STD, alpha=0.7, cmap="viridis")
    rgb = to_rgb_image(_batch(1)[0], MEAN, STD)
    assert np.allclose(fig.axes[1].images[0].get_array(), overlay_attention(
        rgb, model(_batch(1)).attention[0][0].detach(), alpha=0.7, cmap="viridis"))
    assert [a.get_title() for a in fig.axes[1:]] == [
        "attention 1\nconv7 32x32", "attention 2\nconv10 16x16"]
    fig = plot_attention_grid(model, _batch(1), [2], ["a"], MEAN, STD)
    assert fig.axes[0].get_title().startswith("true: 2\n"), "a class without a name: its index"
    model.levels = (4, 5)  # levels the VGG does not have: no layer name to give
    fig = plot_attention_grid(model, _batch(1), mean=MEAN, std=STD)
    assert [a.get_title() for a in fig.axes[1:]] == ["attention 4\n32x32", "attention 5\n16x16"]


def test_grid_with_baseline_saves_png(tmp_path):
    path = tmp_path / "grid.png"
    fig = plot_attention_grid(_model("vgg-att3-concat-pc"), _batch(3), torch.tensor([0, 1, 2]),
                              mean=MEAN, std=STD, save_path=path, baseline=_model("vgg"))
    assert len(fig.axes) == 3 * 5
    assert "Grad-CAM vgg" in fig.axes[4].get_title()
    _assert_panels_about_two_inches(fig, rows=3, cols=5)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- plot_map_columns -----------------------------------------------------------------------


def test_map_columns_draw_each_kind_of_map_as_it_should_be_read():
    images = torch.stack([_image(0), _image(1)])
    peak = _corner_map()[None].expand(2, 1, 8, 8)
    signed = torch.zeros(2, 1, 4, 4)
    signed[:, 0, 0, 0], signed[:, 0, 3, 3] = 2.0, -0.5  # for top left, against bottom right
    fig = plot_map_columns(images, [("attention", peak), MapColumn("share ±", signed, True),
                                    ("grad-cam", torch.zeros(2, 1, 8, 8))],
                           row_titles=["cat", "dog"])
    axes = np.asarray(fig.axes).reshape(2, 4)
    assert [a.get_title() for a in axes[:, 0]] == ["cat", "dog"]
    assert [a.get_title() for a in axes[0, 1:]] == ["attention", "share ±", "grad-cam"]
    assert all(a.get_title() == "" for a in axes[1, 1:]), "column titles on the first row only"
    overlay = axes[0, 1].images[0].get_array()
    expected = overlay_attention(images[0], peak[0], alpha=0.5)
    assert np.allclose(overlay, expected), "an unsigned map is the usual heatmap overlay"
    heat = axes[0, 2].images[-1]
    assert heat.get_cmap().name == "RdBu_r"
    low, high = heat.get_clim()
    assert high == pytest.approx(-low) and high == pytest.approx(float(heat.get_array().max()))
    values = np.asarray(heat.get_array())
    assert values[0, 0] > 0 > values[-1, -1], "red where it speaks for, blue where against"
    assert values.shape == (32, 32), "a signed map is upsampled to the image"
    zero = axes[0, 3]
    assert [t.get_text() for t in zero.texts] == ["all zero"]
    assert np.allclose(zero.images[0].get_array(), to_rgb_image(images[0])), "the bare image"


def test_map_columns_check_lengths_and_unnormalise():
    images = _batch(2)
    with pytest.raises(ValueError,
                       match="^column 'a' has 3 maps for 2 images; pass one map per image$"):
        plot_map_columns(images, [("a", torch.rand(3, 1, 4, 4))], mean=MEAN, std=STD)
    with pytest.raises(ValueError, match="^1 row titles for 2 images; pass one per image$"):
        plot_map_columns(images, [("a", torch.rand(2, 1, 4, 4))], ["x"], MEAN, STD)
    fig = plot_map_columns(images, [("a", torch.rand(2, 4, 4))], mean=MEAN, std=STD)
    shown = fig.axes[0].images[0].get_array()
    assert np.allclose(shown, to_rgb_image(images[0], MEAN, STD)), "true colours"
    assert [a.get_title() for a in fig.axes] == ["", "a", "", ""], "no row titles: none shown"
    _assert_panels_about_two_inches(fig, rows=2, cols=2)


def _assert_panels_about_two_inches(fig: Figure, rows: int, cols: int) -> None:
    """Every panel keeps a readable size, whatever the number of images and columns."""
    width, height = fig.get_size_inches()
    assert 1.7 <= width / cols <= 2.3 and 1.7 <= height / rows <= 2.7, (width, height)
    assert type(fig.get_layout_engine()).__name__ == "ConstrainedLayoutEngine", "no overlaps"


def test_map_columns_one_image_alpha_colormap_and_the_all_zero_label():
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    image, peak = _image(0)[None], _corner_map()[None, None]
    fig = plot_map_columns(image, [("a", peak)], alpha=0.8, cmap="viridis")
    _assert_panels_about_two_inches(fig, rows=1, cols=2)
    shown = fig.axes[1].images[0].get_array()
    assert np.allclose(shown, overlay_attention(image[0], peak[0], alpha=0.8, cmap="viridis"))
    fig = plot_map_columns(image, [("zero", torch.zeros(1, 1, 4, 4))])
    ax, canvas = fig.axes[1], FigureCanvasAgg(fig)
    canvas.draw()
    (label,) = ax.texts
    box = label.get_window_extent(canvas.get_renderer())
    panel = ax.get_window_extent(canvas.get_renderer())
    assert abs(box.x0 + box.x1 - panel.x0 - panel.x1) < 2, "centred across the panel"
    assert abs(box.y0 + box.y1 - panel.y0 - panel.y1) < 2, "centred down the panel"


def test_signed_maps_scale_on_their_largest_magnitude_over_a_grey_image():
    images = torch.stack([_image(0), _image(1) * 0.5, _image(2)])  # the second one is dark
    signed = torch.zeros(3, 1, 4, 4)  # all zero but the first: nothing to scale on
    signed[0, 0, 0, 0], signed[0, 0, 3, 3] = 0.005, -0.02  # against outweighs for; both small
    fig = plot_map_columns(images, [MapColumn("share", signed, True)])
    for row, limit in enumerate([0.02, 1e-12, 1e-12]):
        grey, heat = fig.axes[2 * row + 1].images
        assert heat.get_clim() == pytest.approx((-limit, limit), rel=1e-6)
        assert 0 < heat.get_alpha() < 1, "the image shows through the map"
        assert grey.get_cmap().name == "gray" and 0 < grey.get_alpha() < 1
        assert grey.get_clim() == (0.0, 1.0), "a dark image stays dark"
        assert np.allclose(grey.get_array(), to_rgb_image(images[row]).mean(-1))


def test_grid_restores_training_mode_and_checks_inputs():
    model = _model("vgg-att2-concat-pc").train()
    plot_attention_grid(model, _batch(1), mean=MEAN, std=STD)
    assert model.training
    fix = r"; use images\.unsqueeze\(0\) for one image$"
    with pytest.raises(ValueError, match=r"^images must be a normalised float batch "
                                         r"\(N, 3, H, W\), got \(3, 32, 32\)" + fix):
        plot_attention_grid(model, _batch(1)[0], mean=MEAN, std=STD)
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\), got list" + fix):
        plot_attention_grid(model, _batch(1).tolist(), mean=MEAN, std=STD)
    with pytest.raises(ValueError, match="labels"):
        plot_attention_grid(model, _batch(2), [0], mean=MEAN, std=STD)


def test_signed_colour_scale_is_symmetric_about_zero():
    assert signed_limit(torch.tensor([[-3.0, 2.0]])) == 3.0  # the largest magnitude, either sign
    assert signed_limit(torch.tensor([0.5, -0.25])) == 0.5
    assert signed_limit(torch.zeros(2, 2)) == 1e-12  # an all-zero map still gets a scale


# --- attention_explorer ---------------------------------------------------------------------


class _TinySet:
    """Stand-in with the ArrayDataset fields the explorer reads."""

    def __init__(self, n: int = 6) -> None:
        g = torch.Generator().manual_seed(0)
        self.images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
        self.labels = torch.arange(n) % 3
        self.classes = ["zero", "one", "two"]
        self.mean, self.std = MEAN, STD

    def __len__(self) -> int:
        return len(self.images)


@pytest.mark.parametrize(("shell", "expected"), [
    (None, False),  # plain Python
    (object(), False),  # an IPython terminal: no kernel, widgets cannot show
    (type("Shell", (), {"kernel": None})(), False),
    (type("Shell", (), {"kernel": object()})(), True),  # Jupyter, Colab
])
def test_explorer_knows_when_it_runs_in_a_kernel(monkeypatch, shell, expected):
    import IPython

    monkeypatch.setattr(IPython, "get_ipython", lambda: shell)
    assert explorer_module._in_kernel() is expected
    monkeypatch.setitem(sys.modules, "IPython", None)  # IPython not installed
    assert explorer_module._in_kernel() is False


def test_explorer_is_a_static_figure_without_a_kernel():
    fig = attention_explorer(_model("vgg-att3-concat-pc"), _TinySet(), static_images=2)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 2 * 4


def test_explorer_widget_builds_and_redraws_headless():
    widgets = pytest.importorskip("ipywidgets")
    box = attention_explorer(_model("vgg-att2-concat-pc"), _TinySet(), gradcam=True,
                             interactive=True)
    assert isinstance(box, widgets.VBox)
    controls, status, image = box.children
    filters, views = controls.children
    class_filter, index = filters.children
    view, alpha = views.children
    assert [label for label, _ in view.options] == [
        "level 2 (conv10)", "level 3 (conv13)", "contribution, level 2 (conv10)",
        "contribution, level 3 (conv13)", "Grad-CAM conv13, this model's own"]
    first = image.value
    assert first[:4] == b"\x89PNG"
    class_filter.value = 2  # images 2 and 5
    assert index.max == 1 and "image 2" in status.value
    index.value = 1
    assert "image 5" in status.value
    view.value = 2
    alpha.value = 0.9
    assert image.value[:4] == b"\x89PNG" and image.value != first


# --- Grad-CAM -------------------------------------------------------------------------------


class _TwoChannelNet(nn.Module):
    """Class c's logit is the mean of channel c: class 0 'sees' channel 0, class 1 channel 1."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 1, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.eye(2)[:, :, None, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x)).mean(dim=(2, 3))


def test_gradcam_responds_to_the_class():
    x = torch.zeros(1, 2, 8, 8)
    x[0, 0, :2, :2] = 1.0  # evidence for class 0, top-left
    x[0, 1, -2:, -2:] = 1.0  # evidence for class 1, bottom-right
    net = _TwoChannelNet()
    cam0 = gradcam(net, x, target=0, layer=net.conv)[0, 0]
    cam1 = gradcam(net, x, target=1, layer=net.conv)[0, 0]
    assert cam0.shape == (8, 8)
    assert cam0[0, 0] == 1.0 and cam0[-1, -1] == 0.0
    assert cam1[-1, -1] == 1.0 and cam1[0, 0] == 0.0
    # target=None explains the predicted class: make class 1 win with a larger patch.
    x[0, 1, -4:, -4:] = 1.0
    assert torch.equal(gradcam(net, x, layer=net.conv), gradcam(net, x, 1, layer=net.conv))


def test_gradcam_on_attn_models_shape_range_and_side_effects():
    model = _model("vgg-att3-concat-pc").train()
    x = _batch(3)
    maps = gradcam(model, x, target=[0, 1, 2])
    assert maps.shape == (3, 1, 32, 32)
    assert maps.min() >= 0 and maps.max() <= 1
    assert all(p.grad is None for p in model.parameters())
    assert model.training
    native = gradcam_layers(_model("vgg-noatt"), x, 0, (1, 2, 3), upsample=False)
    assert [tuple(m.shape[-2:]) for m in native] == [(32, 32), (16, 16), (8, 8)]
    # The paper's baseline pools after every block: conv7, conv10, conv13 at H/4, H/8, H/16.
    native = gradcam_layers(_model("vgg"), x, 0, (1, 2, 3), upsample=False)
    assert [tuple(m.shape[-2:]) for m in native] == [(8, 8), (4, 4), (2, 2)]


def test_gradcam_rejects_bad_targets_and_layers():
    model = _model("vgg")
    with pytest.raises(ValueError, match=r"^target classes must be in \[0, 3\], got \[7\]$"):
        gradcam(model, _batch(1), target=7)
    with pytest.raises(ValueError, match=r"^target classes must be in \[0, 3\], got \[4\]$"):
        gradcam(model, _batch(1), target=4)  # one past the last class
    with pytest.raises(ValueError, match="one class or one per image"):
        gradcam(model, _batch(2), target=[0, 1, 2])
    with pytest.raises(ValueError,
                       match=r"must be a level \(1 = conv7, 2 = conv10, 3 = conv13\), got 4"):
        gradcam(model, _batch(1), layer=4)
    with pytest.raises(ValueError, match="^_TwoChannelNet has no VGG backbone: pass the conv "
                                         "layer to use as layer=$"):
        gradcam(_TwoChannelNet(), torch.rand(1, 2, 4, 4))
    for images in (torch.rand(2, 4, 4), torch.rand(2, 4, 4).tolist()):
        with pytest.raises(ValueError, match=r"^images must be a float batch \(N, C, H, W\)$"):
            gradcam(model, images)


def test_gradcam_upsamples_cell_centred():
    """A cell of a pooled map covers an equal patch: align_corners=False, not True."""
    cells = torch.tensor([[[[0.0, 1.0], [0.0, 1.0]]]])
    row = upsample_maps(cells, (4, 4))[0, 0, 0]
    assert torch.allclose(row, torch.tensor([0.0, 0.25, 0.75, 1.0]))
    assert upsample_maps(cells, (2, 2)).equal(cells)


class _NamedLayerNet(_TwoChannelNet):
    """A model beyond the VGG that names its own default Grad-CAM layer, and has a backbone."""

    def __init__(self) -> None:
        super().__init__()
        self.gradcam_layer = self.conv
        self.unused = nn.Conv2d(2, 2, 1)  # runs, but does not reach the logits
        self.backbone = _model("vgg").backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.unused(x)
        return super().forward(x)


def test_gradcam_default_layer_frozen_parameters_and_layers_off_the_logits():
    x = torch.zeros(1, 2, 8, 8)
    x[0, 0, :2, :2] = 1.0
    net = _NamedLayerNet()
    assert torch.equal(gradcam(net, x, target=0), gradcam(net, x, target=0, layer=net.conv))
    with pytest.raises(ValueError, match="must be a level"):
        gradcam(net, x, layer=5)  # an int names a backbone level, not the model's own layer
    for p in net.parameters():
        p.requires_grad_(False)  # gradients flow from the input, so a frozen model works
    cam, off = gradcam_layers(net, x, 0, (net.conv, net.unused))
    assert cam[0, 0, 0, 0] == 1.0
    assert torch.equal(off, torch.zeros_like(off))  # no path to the logits: no evidence
