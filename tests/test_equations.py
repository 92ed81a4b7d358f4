"""Every equation of the model checked by value, on examples where each wrong formula differs.

The hand examples use a batch of two images with different local features *and* different
global features, and a ``u`` with ``<u, g> != 0``, so that

* ``<u, l + g>``, ``<u, l - g>``, ``<u, l>`` and ``<u, l + g_other>`` are all different numbers;
* pairing an image's local features with the other image's ``g`` changes every ``dp`` score;
* a softmax over the batch instead of over positions, or a sum instead of a mean, changes the
  result.

Whole-model checks (aggregation, attention position, the backbone's wiring) rebuild the output
from the model's own parts step by step, as Sec. 3.3 of the paper describes it, and compare.
"""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F

import attn_lib
from attn_lib.models.attention import (
    AttentionEstimator,
    attend,
    dp_compatibility,
    normalize_scores,
    pc_compatibility,
)

NARROW = 0.125


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# --- the hand example -------------------------------------------------------------------------
#
# Two channels on a 1x3 grid, two images:
#   image 0: l = (1, 0), (0, 1), (2, -1)    g_0 = (2, 1)
#   image 1: l = (0, 2), (1, 1), (-1, 0)    g_1 = (1, -2)
#   u = (1, 2)
LOCAL = [[(1, 0), (0, 1), (2, -1)], [(0, 2), (1, 1), (-1, 0)]]
GLOBAL = [(2, 1), (1, -2)]
U = (1, 2)

# pc, c_i = <u, l_i + g> = <u, l_i> + <u, g>:
#   <u, l>: image 0: 1, 2, 0; image 1: 4, 3, -1.    <u, g_0> = 4, <u, g_1> = -3
PC_SCORES = [[5, 6, 4], [1, 0, -4]]
# wrong formulas give other numbers: <u, l - g> = [[-3, -2, -4], [7, 6, 2]], <u, l> = [[1, 2, 0],
# [4, 3, -1]], <u, l + g_other> = [[-2, -1, -3], [8, 7, 3]].
# dp, c_i = <l_i, g>:  image 0 with g_0 = (2, 1): 2, 1, 3;  image 1 with g_1 = (1, -2): -4, -1, -1
# (with the other image's g: [[1, -2, 4], [2, 3, -2]]).
DP_SCORES = [[2, 1, 3], [-4, -1, -1]]


def tensors() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The example as (N=2, C=2, h=1, w=3) local features, (2, 2) global ones and u (2,)."""
    local = torch.tensor(LOCAL, dtype=torch.float32).permute(0, 2, 1)[:, :, None, :]
    return local, torch.tensor(GLOBAL, dtype=torch.float32), torch.tensor(U, dtype=torch.float32)


def softmax(scores: list[float]) -> list[float]:
    exps = [math.exp(s) for s in scores]
    return [e / sum(exps) for e in exps]


def sigmoid(scores: list[float]) -> list[float]:
    return [1 / (1 + math.exp(-s)) for s in scores]


def weighted(weights: list[float], vectors: list[tuple[int, int]], mean: bool) -> list[float]:
    """sum_i a_i l_i (Eq. 2), or its mean over the positions."""
    total = [sum(a * v[c] for a, v in zip(weights, vectors)) for c in range(2)]
    return [t / len(vectors) for t in total] if mean else total


def grid(values: list[list[float]]) -> torch.Tensor:
    """Per-position numbers of both images as an (N, 1, 1, 3) map."""
    return torch.tensor(values, dtype=torch.float32)[:, None, None, :]


def column(values: list[list[float]]) -> torch.Tensor:
    """The same numbers laid out as a 3x1 grid, (N, 1, 3, 1): the map keeps the grid's shape."""
    return grid(values).transpose(2, 3)


def test_pc_scores_add_u_dot_g_of_each_images_own_g():
    local, global_, u = tensors()
    assert pc_compatibility(local, global_, u).tolist() == grid(PC_SCORES).tolist()
    scores = pc_compatibility(local.transpose(2, 3), global_, u)
    assert scores.shape == (2, 1, 3, 1) and scores.tolist() == column(PC_SCORES).tolist()


def test_dp_scores_pair_each_image_with_its_own_g():
    local, global_, _ = tensors()
    assert dp_compatibility(local, global_).tolist() == grid(DP_SCORES).tolist()
    scores = dp_compatibility(local.transpose(2, 3), global_)
    assert scores.shape == (2, 1, 3, 1) and scores.tolist() == column(DP_SCORES).tolist()


@pytest.mark.filterwarnings("error")  # softmax's dimension is named, not left to torch to guess
def test_softmax_normalises_over_the_positions_of_each_image():
    expected = grid([softmax(s) for s in DP_SCORES])
    torch.testing.assert_close(normalize_scores(grid(DP_SCORES), "softmax"), expected)


def test_sigmoid_squashes_each_score_on_its_own():
    expected = grid([sigmoid(s) for s in DP_SCORES])
    torch.testing.assert_close(normalize_scores(grid(DP_SCORES), "sigmoid"), expected)


@pytest.mark.parametrize("method", ["softmax", "sigmoid"])
def test_attended_descriptor_is_the_sum_for_softmax_and_the_mean_for_sigmoid(method):
    local, _, _ = tensors()
    weights = [[0.2, 0.3, 0.5], [0.9, 0.6, 0.1]]
    expected = [weighted(w, v, mean=method == "sigmoid") for w, v in zip(weights, LOCAL)]
    torch.testing.assert_close(attend(local, grid(weights), method), torch.tensor(expected))


@pytest.mark.parametrize("compatibility, scores", [("pc", PC_SCORES), ("dp", DP_SCORES)])
@pytest.mark.parametrize("normalize", ["softmax", "sigmoid"])
def test_estimator_equals_the_hand_computation(compatibility, scores, normalize):
    local, global_, u = tensors()
    estimator = AttentionEstimator(2, 2, compatibility=compatibility, normalize=normalize)
    if estimator.u is not None:
        with torch.no_grad():
            estimator.u.copy_(u)
    result = estimator(local, global_)
    squash = softmax if normalize == "softmax" else sigmoid
    attention = [squash(s) for s in scores]
    descriptor = [weighted(a, v, mean=normalize == "sigmoid") for a, v in zip(attention, LOCAL)]
    assert result.scores.tolist() == grid(scores).tolist()
    torch.testing.assert_close(result.attention, grid(attention))
    torch.testing.assert_close(result.descriptor, torch.tensor(descriptor))


def test_estimator_scores_stay_in_fp32_under_autocast():
    local, global_, u = tensors()
    estimator = AttentionEstimator(2, 2, compatibility="pc")
    with torch.no_grad():
        estimator.u.copy_(u)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        result = estimator(local.bfloat16(), global_.bfloat16())
    assert {result.scores.dtype, result.attention.dtype, result.descriptor.dtype} == {torch.float32}
    assert result.scores.tolist() == grid(PC_SCORES).tolist()


def test_estimator_computes_a_float64_model_in_float64():
    # "At least fp32", not "exactly fp32": a .double() model keeps float64 through the
    # estimator, so its softmax matches the exact one to float64 rounding (fp32 would be off
    # by ~1e-8 relative).
    local, global_, u = (t.double() for t in tensors())
    estimator = AttentionEstimator(2, 2, compatibility="pc").double()
    with torch.no_grad():
        estimator.u.copy_(u)
    result = estimator(local, global_)
    assert {result.scores.dtype, result.attention.dtype, result.descriptor.dtype} == {
        torch.float64}
    exact = torch.tensor([softmax(s) for s in PC_SCORES], dtype=torch.float64)[:, None, None]
    torch.testing.assert_close(result.attention, exact, rtol=1e-15, atol=1e-15)


def test_defaults_are_the_papers_softmax_sum_and_pc():
    local, _, _ = tensors()
    weights = [[0.2, 0.3, 0.5], [0.9, 0.6, 0.1]]
    torch.testing.assert_close(normalize_scores(grid(DP_SCORES)),
                               grid([softmax(s) for s in DP_SCORES]))
    sums = [weighted(w, v, mean=False) for w, v in zip(weights, LOCAL)]
    torch.testing.assert_close(attend(local, grid(weights)), torch.tensor(sums))
    estimator = AttentionEstimator(2, 3)
    assert (estimator.compatibility, estimator.normalize) == ("pc", "softmax")
    assert estimator.project_local is not None and estimator.project_global is None
    assert estimator.u.shape == (3,)
    assert AttentionEstimator(2, 2, compatibility="dp").compatibility == "dp"


@pytest.mark.parametrize("option, value, message", [
    ("compatibility", "cos", "compatibility must be one of pc, dp; got 'cos'"),
    ("normalize", "tanh", "normalize must be one of softmax, sigmoid; got 'tanh'"),
    ("match", "pad", "match must be one of project_l, project_g; got 'pad'"),
])
def test_bad_estimator_options_are_named(option, value, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        AttentionEstimator(2, 3, **{option: value})


def test_unknown_normalisation_is_named():
    message = "unknown attention normalisation 'tanh'; expected one of softmax, sigmoid"
    with pytest.raises(ValueError, match=re.escape(message)):
        normalize_scores(grid(DP_SCORES), "tanh")


def test_u_starts_at_the_scale_one_over_sqrt_width():
    # <u, l> then has the scale of one feature, whatever the width (width 4096: std 1/64).
    estimator = AttentionEstimator(4096, 4096)
    assert float(estimator.u.detach().std()) == pytest.approx(1 / 64, rel=0.05)


# --- width matching: project_l (1x1 conv on l) and project_g (linear map of g) ---------------


def test_project_l_maps_each_local_vector_up_before_scoring_and_attending():
    # l (2 channels) -> W l (3 channels) with W = [[1, 0], [0, 1], [1, 1]]; g has 3 channels.
    local, _, _ = tensors()
    global_ = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, -1.0]])
    estimator = AttentionEstimator(2, 3, compatibility="dp", match="project_l")
    assert estimator.project_global is None and estimator.out_channels == 3
    with torch.no_grad():
        estimator.project_local.weight.copy_(
            torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])[:, :, None, None])
    projected = [[(a, b, a + b) for a, b in image] for image in LOCAL]
    # W l: image 0: (1, 0, 1), (0, 1, 1), (2, -1, 1); image 1: (0, 2, 2), (1, 1, 2), (-1, 0, -1)
    # <W l_i, g>: image 0 with g_0 = (1, 0, 1): 2, 1, 3; image 1 with g_1 = (0, 1, -1): 0, -1, 1
    scores = [[2, 1, 3], [0, -1, 1]]
    result = estimator(local, global_)
    assert result.scores.tolist() == grid(scores).tolist()
    attention = [softmax(s) for s in scores]
    descriptor = [[sum(a * v[c] for a, v in zip(w, vectors)) for c in range(3)]
                  for w, vectors in zip(attention, projected)]
    torch.testing.assert_close(result.descriptor, torch.tensor(descriptor))


@pytest.mark.parametrize("compatibility", ["dp", "pc"])
def test_project_g_maps_g_down_and_attends_over_the_unprojected_l(compatibility):
    # g (3 channels) -> V g (2 channels) with V = [[1, 0, 1], [0, 1, 1]].
    local, _, _ = tensors()
    global_ = torch.tensor([[1.0, 0.0, 1.0], [1.0, -1.0, 0.0]])  # V g: (2, 1) and (1, -1)
    estimator = AttentionEstimator(2, 3, compatibility=compatibility, match="project_g")
    assert estimator.project_local is None and estimator.out_channels == 2
    with torch.no_grad():
        estimator.project_global.weight.copy_(torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]]))
        if estimator.u is not None:
            assert estimator.u.shape == (2,)
            estimator.u.copy_(torch.tensor(U, dtype=torch.float32))
    if compatibility == "dp":
        # <l_i, V g>: image 0 with (2, 1): 2, 1, 3; image 1 with (1, -1): -2, 0, -1
        scores = [[2, 1, 3], [-2, 0, -1]]
    else:
        # <u, l_i> + <u, V g>: <u, (2, 1)> = 4, <u, (1, -1)> = -1
        scores = [[5, 6, 4], [3, 2, -2]]
    result = estimator(local, global_)
    assert result.scores.tolist() == grid(scores).tolist()
    descriptor = [weighted(softmax(s), v, mean=False) for s, v in zip(scores, LOCAL)]
    torch.testing.assert_close(result.descriptor, torch.tensor(descriptor))


# --- the whole model, rebuilt from its parts --------------------------------------------------


def _model(name: str, **options) -> torch.nn.Module:
    model = attn_lib.build_model(name, num_classes=5, width=NARROW, **options).eval()
    # Batch-norm statistics that are not the identity, so a skipped or swapped head shows.
    with torch.no_grad():
        for head in model.heads:
            head[0].running_mean.uniform_(-1, 1)
            head[0].running_var.uniform_(0.5, 2)
    return model


def _by_hand(model: torch.nn.Module, x: torch.Tensor, pooled_by_hand: bool = False):
    """Descriptors and maps of each level, computed from the backbone's features."""
    features = model.backbone(x)
    results = []
    for level, estimator in zip(model.levels, model.estimators):
        local = features.local[level - 1]
        if model.attention_position == "after":
            local = F.max_pool2d(local, 2) if pooled_by_hand else features.pooled[level - 1]
        results.append(estimator(local, features.global_))
    return results


@pytest.mark.parametrize("name", ["vgg-att3-indep-dp", "vgg-att2-indep-pc"])
def test_indep_logits_are_the_mean_of_the_per_level_classifiers(name):
    model = _model(name)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = model(x)
        per_level = [head(r.descriptor) for head, r in zip(model.heads, _by_hand(model, x))]
    assert len(per_level) == len(model.levels) == len(model.heads)
    torch.testing.assert_close(out.logits, torch.stack(per_level).mean(dim=0))
    # the mean, not the sum nor any one level: those are far from it here
    assert not torch.allclose(out.logits, torch.stack(per_level).sum(dim=0), atol=1e-3)
    assert all(not torch.allclose(out.logits, p, atol=1e-3) for p in per_level)


@pytest.mark.parametrize("name", ["vgg-att3-concat-pc", "vgg-att2-concat-dp"])
def test_concat_logits_classify_the_descriptors_concatenated_in_level_order(name):
    model = _model(name)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = model(x)
        results = _by_hand(model, x)
        expected = model.heads[0](torch.cat([r.descriptor for r in results], dim=1))
        reversed_order = model.heads[0](torch.cat([r.descriptor for r in results[::-1]], dim=1))
    torch.testing.assert_close(out.logits, expected)
    assert not torch.allclose(out.logits, reversed_order, atol=1e-3)
    for a, r in zip(out.attention, results):
        torch.testing.assert_close(a, r.attention)


@pytest.mark.parametrize("position", ["before", "after"])
@pytest.mark.parametrize("name", ["vgg-att3-concat-dp", "vgg-att2-indep-pc"])
def test_attention_position_takes_the_maps_before_or_after_the_max_pool(name, position):
    model = _model(name, attention_position=position)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = model(x)
        results = _by_hand(model, x, pooled_by_hand=True)
        other = _model(name, attention_position="before" if position == "after" else "after")
        other.load_state_dict(model.state_dict())
        other_maps = other(x).attention
    for a, r, o in zip(out.attention, results, other_maps):
        torch.testing.assert_close(a, r.attention)
        assert a.shape[-1] == (o.shape[-1] // 2 if position == "after" else o.shape[-1] * 2)
    descriptors = [r.descriptor for r in results]
    with torch.no_grad():
        if model.aggregation == "indep":
            expected = torch.stack([h(d) for h, d in zip(model.heads, descriptors)]).mean(dim=0)
        else:
            expected = model.heads[0](torch.cat(descriptors, dim=1))
    torch.testing.assert_close(out.logits, expected)


def test_backbone_features_follow_the_papers_wiring():
    model = _model("vgg-att3-concat-pc")
    backbone = model.backbone
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        features = backbone(x)
        h = backbone.blocks[1](backbone.blocks[0](x))  # conv1..conv4 at full resolution
        l1 = backbone.blocks[2](h)  # conv5..conv7
        l2 = backbone.blocks[3](F.max_pool2d(l1, 2))
        l3 = backbone.blocks[4](F.max_pool2d(l2, 2))
        # g: two conv + pool stages, averaged to 1x1 (64x64 input: 2x2 -> 1x1), then the FC
        g_map = backbone.global_convs(F.max_pool2d(l3, 2))
        g = backbone.global_fc(g_map.mean(dim=(2, 3)))
    assert g_map.shape[-1] == 2
    for got, expected in zip(features.local, (l1, l2, l3)):
        torch.testing.assert_close(got, expected)
    for got, expected in zip(features.pooled, (l1, l2, l3)):
        torch.testing.assert_close(got, F.max_pool2d(expected, 2))
    torch.testing.assert_close(features.global_, g)


def test_dp_model_uses_each_images_own_g():
    model = _model("vgg-att2-concat-dp")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        features = model.backbone(x)
        out = model(x)
        swapped = [e(features.local[level - 1], features.global_.flip(0)).attention
                   for level, e in zip(model.levels, model.estimators)]
    for a, s in zip(out.attention, swapped):
        assert not torch.allclose(a, s, atol=1e-4)


@pytest.mark.parametrize("name", ["vgg-att3-concat-pc", "vgg-att2-indep-dp"])
def test_heads_are_batch_norm_dropout_linear_with_the_papers_dropout(name):
    # BN, dropout 0.5, then the classifier; dropout=False leaves p = 0. (The authors' concat
    # head also has a ReLU after its BN: docs/DEVIATIONS.md.)
    for dropout, p in ((True, 0.5), (False, 0.0)):
        model = attn_lib.build_model(name, width=0.0625, dropout=dropout)
        for head in model.heads:
            kinds = [type(m).__name__ for m in head]
            assert kinds == ["BatchNorm1d", "Dropout", "Linear"], kinds
            assert head[1].p == p
