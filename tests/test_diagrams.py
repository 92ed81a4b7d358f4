"""The diagrams are drawn from the model: the stages, shapes and attachment points they show
are the ones a forward pass produces."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import attn_lib  # noqa: E402
from attn_lib.maps.diagrams import (  # noqa: E402
    draw_architecture,
    draw_estimator,
    estimator_shapes,
    trace,
)

WIDTH = 1 / 16


def texts(fig) -> str:
    return "\n".join(t.get_text() for ax in fig.axes for t in ax.texts + [ax.title])


def test_trace_finds_the_stages_each_estimator_reads():
    model = attn_lib.build_model("vgg-att3-concat-pc", width=WIDTH)
    calls, attached, out = trace(model, torch.zeros(2, 3, 32, 32))
    names = [name for name, _, _ in calls]
    assert names == ["conv1-2", "conv3-4", "conv5-7", "conv8-10", "conv11-13", "conv14-15", "FC"]
    assert [names[i] for i in attached] == ["conv5-7", "conv8-10", "conv11-13"]
    assert out.logits.shape == (2, 10)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules()), (
        "trace must remove its hooks"
    )


def test_trace_of_a_two_level_model_attaches_to_conv10_and_conv13():
    model = attn_lib.build_model("vgg-att2-concat-pc", width=WIDTH)
    calls, attached, _ = trace(model, torch.zeros(1, 3, 32, 32))
    assert [calls[i][0] for i in attached] == ["conv8-10", "conv11-13"]


@pytest.mark.parametrize("size", [32, 64])
def test_architecture_shows_the_shapes_of_the_forward_pass(size):
    model = attn_lib.build_model("vgg-att3-concat-pc", width=WIDTH)
    fig = draw_architecture(model, image_size=size)
    shown = texts(fig)
    channels = [16, 32, 32]  # conv7, conv10, conv13 at width 1/16
    for c, side in zip(channels, (size, size // 2, size // 4)):
        assert f"map {side}×{side}" in shown, shown
        assert f"{c}×{side}×{side}" in shown
    assert "its term cancels in pc" in shown and "10 logits" in shown
    plt.close(fig)


def test_architecture_of_dp_does_not_claim_that_g_cancels():
    fig = draw_architecture(attn_lib.build_model("vgg-att3-concat-dp", width=WIDTH))
    assert "cancels" not in texts(fig)
    plt.close(fig)


@pytest.mark.parametrize("match", ["project_l", "project_g"])
def test_estimator_shapes_are_what_the_estimator_computes(match):
    estimator = attn_lib.AttentionEstimator(16, 32, compatibility="pc", match=match)
    shapes = estimator_shapes(estimator, torch.zeros(1, 16, 8, 8), torch.zeros(1, 32))
    width = 32 if match == "project_l" else 16
    assert shapes["matched l"] == (width, 8, 8) and shapes["matched g"] == (width,)
    assert shapes["c"] == shapes["a"] == (1, 8, 8)
    assert shapes["g_a"] == (width,) and shapes["u"] == (width,)


def test_estimator_diagram_names_each_step_with_its_shape():
    estimator = attn_lib.AttentionEstimator(256, 512, compatibility="pc")
    shown = texts(draw_estimator(estimator, (256, 32, 32), 512))
    for piece in ("256×32×32", "1×1 conv\n→ 512×32×32", "learned u\n512", "1×32×32",
                  "softmax over", "g_a 512", "⟨u, l_i⟩ + ⟨u, g⟩"):
        assert piece in shown, (piece, shown)
    dp = attn_lib.AttentionEstimator(32, 32, compatibility="dp")
    shown = texts(draw_estimator(dp, (32, 4, 4)))
    assert "⟨l_i, g⟩" in shown and "learned u" not in shown and "1×1 conv" not in shown
    plt.close("all")
