"""The model family: shapes, the attention maths against hand computations, gradients, errors."""

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

NARROW = 0.125  # channel multiplier that keeps every variant fast on a CPU
NO_ATTENTION = ("vgg", "vgg-noatt", "resnet164", "resnet20")
ATTENTION_VARIANTS = [n for n in attn_lib.list_models() if n not in NO_ATTENTION]
PAPER_NAMES = [
    "vgg",
    "vgg-att2-concat-pc",
    "vgg-att3-concat-pc",
    "vgg-att3-indep-pc",
    "vgg-att2-concat-dp",
    "vgg-att3-concat-dp",
]


def expected_levels(name: str) -> int:
    return 0 if name in NO_ATTENTION else int(name.split("-att")[1][0])


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def test_list_models_has_the_paper_names() -> None:
    names = attn_lib.list_models()
    assert set(PAPER_NAMES) <= set(names)
    assert len(names) == len(set(names))


@pytest.mark.parametrize("name", attn_lib.list_models())
@pytest.mark.parametrize("size", [32, 64])
def test_output_shapes_and_attention_maps(name: str, size: int) -> None:
    model = attn_lib.build_model(name, num_classes=7, width=NARROW).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, size, size))
    logits, attention = out  # a NamedTuple unpacks like the docs say
    assert logits.shape == (2, 7)
    assert out.logits is logits and out.attention is attention
    assert len(attention) == expected_levels(name)
    # att3 sees conv7 (full size), conv10 (/2), conv13 (/4); att2 only the last two
    sides = [size, size // 2, size // 4][-len(attention):] if attention else []
    for a, side in zip(attention, sides):
        assert a.shape == (2, 1, side, side)
        assert torch.all(a >= 0) and torch.all(a <= 1)
        # softmax over all positions (Eq. 1): every map sums to one
        torch.testing.assert_close(a.sum(dim=(1, 2, 3)), torch.ones(2))


@pytest.mark.parametrize("name", ["vgg-att3-concat-pc", "vgg-att2-indep-dp"])
def test_attention_after_pooling_halves_the_maps(name: str) -> None:
    model = attn_lib.build_model(name, width=NARROW, attention_position="after").eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    sides = [16, 8, 4][-len(out.attention):]
    assert [a.shape[-1] for a in out.attention] == sides


def test_sigmoid_normalisation_gives_maps_in_unit_interval_not_summing_to_one() -> None:
    model = attn_lib.build_model("vgg-att3-concat-pc", width=NARROW, normalize="sigmoid").eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    for a in out.attention:
        assert torch.all((a > 0) & (a < 1))
    # a 32x32 sigmoid map sums to hundreds, not to one
    assert out.attention[0].sum(dim=(1, 2, 3)).min() > 10


@pytest.mark.parametrize("match, level1_width", [("project_l", 64), ("project_g", 32)])
def test_width_matching_options(match: str, level1_width: int) -> None:
    # at width 0.125: l1 has 256/8 = 32 channels, g has 512/8 = 64
    model = attn_lib.build_model("vgg-att3-concat-dp", width=NARROW, match=match)
    estimator = model.estimators[0]
    assert estimator.out_channels == level1_width
    assert (estimator.project_local is not None) == (match == "project_l")
    assert (estimator.project_global is not None) == (match == "project_g")
    assert model.heads[0][-1].in_features == level1_width + 64 + 64
    with torch.no_grad():
        assert model.eval()(torch.randn(2, 3, 32, 32)).logits.shape == (2, 10)


# --- the attention maths, checked by hand --------------------------------------------------


def hand_example() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two channels on a 1x2 grid: l_1 = (1, 0), l_2 = (0, 2); g = (1, 1); u = (1, -1)."""
    local = torch.tensor([[[[1.0, 0.0]], [[0.0, 2.0]]]])  # (N=1, C=2, h=1, w=2)
    global_ = torch.tensor([[1.0, 1.0]])
    u = torch.tensor([1.0, -1.0])
    return local, global_, u


def test_pc_and_dp_scores_match_hand_computation() -> None:
    local, global_, u = hand_example()
    # pc: <u, l_i + g>: l_1 + g = (2, 1) -> 2 - 1 = 1 ; l_2 + g = (1, 3) -> 1 - 3 = -2
    assert pc_compatibility(local, global_, u).flatten().tolist() == [1.0, -2.0]
    # dp: <l_i, g>: (1, 0).(1, 1) = 1 ; (0, 2).(1, 1) = 2
    assert dp_compatibility(local, global_).flatten().tolist() == [1.0, 2.0]


def test_softmax_and_attended_descriptor_match_hand_computation() -> None:
    local, global_, _ = hand_example()
    scores = dp_compatibility(local, global_)  # [1, 2]
    a = normalize_scores(scores, "softmax").flatten()
    e = math.e
    expected = torch.tensor([e / (e + e**2), e**2 / (e + e**2)])
    torch.testing.assert_close(a, expected)
    # g_a = a_1 l_1 + a_2 l_2 = (a_1, 2 a_2)   (Eq. 2)
    g_a = attend(local, a.view(1, 1, 1, 2), "softmax")
    torch.testing.assert_close(g_a, torch.stack([expected[0], 2 * expected[1]]).view(1, 2))


def test_estimator_module_equals_the_hand_computation() -> None:
    local, global_, u = hand_example()
    pc = AttentionEstimator(2, 2, compatibility="pc")
    with torch.no_grad():
        pc.u.copy_(u)
    result = pc(local, global_)
    a = torch.softmax(torch.tensor([1.0, -2.0]), 0)
    torch.testing.assert_close(result.scores.flatten(), torch.tensor([1.0, -2.0]))
    torch.testing.assert_close(result.attention.flatten(), a)
    torch.testing.assert_close(result.descriptor, torch.tensor([[a[0], 2 * a[1]]]))
    dp = AttentionEstimator(2, 2, compatibility="dp")
    torch.testing.assert_close(dp(local, global_).scores.flatten(), torch.tensor([1.0, 2.0]))


def test_pc_softmax_attention_does_not_depend_on_g() -> None:
    # <u, l_i + g> = <u, l_i> + <u, g>; the softmax cancels the constant <u, g>.
    estimator = AttentionEstimator(8, 8, compatibility="pc")
    local = torch.randn(3, 8, 4, 4)
    a1 = estimator(local, torch.randn(3, 8)).attention
    a2 = estimator(local, 100 * torch.randn(3, 8)).attention
    torch.testing.assert_close(a1, a2)
    # ...while dp and sigmoid-normalised pc do depend on g
    dp = AttentionEstimator(8, 8, compatibility="dp")
    assert not torch.allclose(dp(local, torch.randn(3, 8)).attention,
                              dp(local, torch.randn(3, 8)).attention)
    sig = AttentionEstimator(8, 8, compatibility="pc", normalize="sigmoid")
    assert not torch.allclose(sig(local, torch.randn(3, 8)).attention,
                              sig(local, torch.randn(3, 8)).attention)


# --- gradients and parameters -----------------------------------------------------------------


def parameter_grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    model.train()
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    F.cross_entropy(model(x).logits, y).backward()
    return {n: p.grad for n, p in model.named_parameters()}


def is_global_branch(param_name: str) -> bool:
    return param_name.startswith(("backbone.global_", )) or "project_global" in param_name


@pytest.mark.parametrize("name", attn_lib.list_models())
def test_gradients_reach_parameters(name: str) -> None:
    grads = parameter_grads(attn_lib.build_model(name, width=NARROW, dropout=False))
    for param_name, grad in grads.items():
        assert grad is not None and torch.isfinite(grad).all(), param_name
        is_dead = name.endswith("-pc") and is_global_branch(param_name)
        if is_dead:
            # pc + softmax: g enters every score through the same <u, g> and cancels, so the
            # global branch gets no gradient from the loss (see attn_lib/attention.py).
            assert grad.abs().max() < 1e-5, param_name
        else:
            assert grad.abs().sum() > 0, param_name


def test_global_branch_learns_with_dp_and_with_sigmoid_pc() -> None:
    cases = [("vgg-att3-concat-dp", {}), ("vgg-att3-concat-pc", {"normalize": "sigmoid"})]
    for name, options in cases:
        grads = parameter_grads(attn_lib.build_model(name, width=NARROW, dropout=False, **options))
        assert grads["backbone.global_fc.1.weight"].abs().sum() > 0


@pytest.mark.parametrize("levels", [2, 3])
@pytest.mark.parametrize("aggregation", ["concat", "indep"])
def test_pc_and_dp_differ_exactly_by_u(levels: int, aggregation: str) -> None:
    pc = attn_lib.build_model(f"vgg-att{levels}-{aggregation}-pc", width=NARROW)
    dp = attn_lib.build_model(f"vgg-att{levels}-{aggregation}-dp", width=NARROW)
    pc_params = dict(pc.named_parameters())
    dp_params = dict(dp.named_parameters())
    extra = set(pc_params) - set(dp_params)
    assert set(dp_params) <= set(pc_params)
    assert extra == {f"estimators.{i}.u" for i in range(levels)}
    assert all(pc_params[n].shape == dp_params[n].shape for n in dp_params)
    u_count = sum(pc_params[n].numel() for n in extra)
    difference = sum(p.numel() for p in pc.parameters()) - sum(p.numel() for p in dp.parameters())
    assert difference == u_count


def test_paper_baseline_layout_and_parameter_count() -> None:
    """``vgg`` is the authors' vgg_bn_drop: 13 convs, a pool after every block, FC 512."""
    model = attn_lib.build_model("vgg", num_classes=10).eval()
    count = sum(p.numel() for p in model.parameters())
    # 13 convs without bias 14,710,464 + their BN 8,448 + FC 262,656 + BN 1,024 + FC 5,130
    assert count == 14_987_722
    assert round(count / 1e6, 1) == 15.0
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 64, 128, 128, 256, 256, 256] + [512] * 6
    sides = []
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        for block in model.backbone.blocks:
            x = block(x)
            sides.append(x.shape[-1])
            x = model.backbone.pool(x)
    assert sides == [32, 16, 8, 4, 2] and x.shape == (2, 512, 1, 1)  # five pools: 32 -> 1
    linears = [m for m in model.classifier if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(512, 512), (512, 10)]
    kinds = [type(m).__name__ for m in model.classifier]
    assert kinds == ["Dropout", "Linear", "BatchNorm1d", "ReLU", "Dropout", "Linear"]
    assert [m.p for m in model.classifier if isinstance(m, torch.nn.Dropout)] == [0.5, 0.5]
    out = model(torch.randn(2, 3, 64, 64))
    assert out.logits.shape == (2, 10) and out.attention == ()


def test_noatt_is_the_attention_backbone_without_estimators() -> None:
    noatt = attn_lib.build_model("vgg-noatt", num_classes=10)
    att3 = attn_lib.build_model("vgg-att3-concat-pc", num_classes=10)
    backbone = {k: v.shape for k, v in noatt.backbone.state_dict().items()}
    assert backbone == {k: v.shape for k, v in att3.backbone.state_dict().items()}
    assert len(noatt.estimators) == 0
    assert 19_600_000 < sum(p.numel() for p in noatt.parameters()) < 19_800_000


@pytest.mark.parametrize("name", ["vgg", "vgg-noatt"])
def test_attention_options_are_refused_for_models_without_attention(name: str) -> None:
    with pytest.raises(ValueError, match="has no attention.*normalize"):
        attn_lib.build_model(name, normalize="sigmoid")
    attn_lib.build_model(name, normalize="softmax", width=NARROW)  # the default is accepted


def test_every_name_has_a_description() -> None:
    from attn_lib.models import describe_model

    for name in attn_lib.list_models():
        assert len(describe_model(name)) > 20
    assert "baseline" in describe_model("vgg") and "without attention" in describe_model(
        "vgg-noatt")


def test_full_width_att3_parameter_count_and_feature_shapes(capsys: pytest.CaptureFixture) -> None:
    model = attn_lib.build_model("vgg-att3-concat-pc", num_classes=10).eval()
    count = sum(p.numel() for p in model.parameters())
    with capsys.disabled():
        print(f"\nvgg-att3-concat-pc (width 1.0, 10 classes): {count:,} parameters")
    # 13 VGG convs (~14.7 M) + two global convs (~4.7 M) + FC 512x512 + attention/classifier
    assert 19_000_000 < count < 21_000_000
    convs = [m for m in model.backbone.blocks.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 64, 128, 128, 256, 256, 256] + [512] * 6
    with torch.no_grad():
        features = model.backbone(torch.randn(1, 3, 32, 32))
    l1, l2, l3 = features.local
    assert l1.shape == (1, 256, 32, 32)  # conv7: no pooling in the first three blocks
    assert l2.shape == (1, 512, 16, 16)  # conv10
    assert l3.shape == (1, 512, 8, 8)  # conv13
    assert features.global_.shape == (1, 512)


def test_narrow_model_overfits_one_batch() -> None:
    model = attn_lib.build_model("vgg-att3-concat-pc", num_classes=4, width=NARROW, dropout=False)
    x, y = torch.randn(16, 3, 32, 32), torch.arange(16) % 4
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x).logits, y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 10, losses
    model.eval()
    with torch.no_grad():
        assert (model(x).logits.argmax(1) == y).float().mean() == 1.0


# --- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "x, message",
    [
        (torch.randn(2, 1, 32, 32), "3 input channels"),
        (torch.randn(2, 3, 30, 30), "multiples of 32"),
        (torch.randn(2, 3, 16, 16), "at least 32"),
        (torch.randn(2, 3, 32, 48), "32x48"),
        (torch.randint(0, 255, (2, 3, 32, 32), dtype=torch.uint8), "floating-point"),
        (torch.randn(3, 32, 32), "batch dimension"),
        (torch.randn(2, 32, 32, 3), "channels-first"),
    ],
)
def test_bad_inputs_raise_clear_value_errors(x: torch.Tensor, message: str) -> None:
    model = attn_lib.build_model("vgg-att2-concat-pc", width=NARROW)
    with pytest.raises(ValueError, match=message):
        model(x)


@pytest.mark.parametrize(
    "name, options, message",
    [
        ("vgg-att4-concat-pc", {}, "available: vgg, vgg-noatt, vgg-att2"),
        ("resnet", {}, "unknown model 'resnet'"),
        ("vgg-att3-concat-pc", {"colour": 1}, "unknown option.*'colour'.*accepted"),
        ("vgg-att3-concat-pc", {"normalize": "tanh"},
         "normalize must be one of softmax, sigmoid; got 'tanh'"),
        ("vgg-att3-concat-pc", {"attention_position": "middle"}, "before, after"),
        ("vgg-att3-concat-pc", {"match": "pad"}, "project_l, project_g"),
        ("vgg-att3-concat-pc", {"width": 0}, "width must be"),
        ("vgg", {"num_classes": 0}, "num_classes"),
    ],
)
def test_bad_names_and_options_raise_clear_value_errors(name: str, options: dict,
                                                        message: str) -> None:
    with pytest.raises(ValueError, match=message):
        attn_lib.build_model(name, **options)


def test_build_model_records_what_rebuilds_it() -> None:
    model = attn_lib.build_model("vgg-att2-indep-dp", num_classes=5, width=0.25)
    assert model.name == "vgg-att2-indep-dp"
    assert model.options["num_classes"] == 5 and model.options["width"] == 0.25
    clone = attn_lib.build_model(model.name, **model.options)
    clone.load_state_dict(model.state_dict())  # same architecture, strict load succeeds


def test_attnvgg_defaults_are_the_papers_model():
    # attn_lib.AttnVGG() built directly is the same network as build_model's default variant.
    direct, built = attn_lib.AttnVGG(), attn_lib.build_model("vgg-att3-concat-pc")
    assert repr(direct) == repr(built)
    assert (direct.num_classes, len(direct.levels), direct.aggregation,
            direct.attention_position) == (10, 3, "concat", "before")
    assert [(e.compatibility, e.normalize) for e in direct.estimators] == [("pc", "softmax")] * 3
    assert direct.estimators[0].project_local is not None  # match="project_l"
    assert direct.heads[0][-1].out_features == 10


@pytest.mark.parametrize("name", ["vgg-att3-concat-pc", "vgg-noatt", "vgg"])
def test_dropout_option_reaches_the_backbone_and_the_head(name):
    def dropout_rates(model):
        return sorted({m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)})

    assert dropout_rates(attn_lib.build_model(name, width=0.0625)) == [0.3, 0.4, 0.5]
    assert set(dropout_rates(attn_lib.build_model(name, width=0.0625, dropout=False))) <= {0.0}


def test_in_channels_reaches_the_first_convolution():
    model = attn_lib.build_model("vgg-att3-concat-pc", width=0.0625, in_channels=1).eval()
    first = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert first.in_channels == 1
    assert model(torch.randn(2, 1, 32, 32)).logits.shape == (2, 10)


@pytest.mark.parametrize("options, message", [
    (dict(num_classes=0), "num_classes must be a positive integer, got 0"),
    (dict(num_classes=2.0), "num_classes must be a positive integer, got 2.0"),
    (dict(attention_levels=1), "attention_levels must be one of [0, 2, 3], got 1"),
    (dict(aggregation="sum"), "aggregation must be one of concat, indep; got 'sum'"),
    (dict(attention_position="inside"),
     "attention_position must be one of before, after; got 'inside'"),
    (dict(width=0), "width must be a number in (0, 4], got 0"),
    (dict(width=4.5), "width must be a number in (0, 4], got 4.5"),
    (dict(in_channels=0), "in_channels must be a positive integer, got 0"),
    (dict(in_channels=1.0), "in_channels must be a positive integer, got 1.0"),
])
def test_attnvgg_names_each_bad_option(options, message):
    # AttnVGG is public: built directly, it checks its arguments as build_model does.
    with pytest.raises(ValueError, match=re.escape(message)):
        attn_lib.AttnVGG(**options)


def test_attnvgg_accepts_the_boundaries_of_each_option():
    with torch.device("meta"):  # a width-4 model without allocating its 300 M parameters
        model = attn_lib.AttnVGG(num_classes=1, width=4, in_channels=1)
    assert model.heads[0][-1].out_features == 1


@pytest.mark.parametrize("x, message", [
    ([[0.0]], "expected a torch.Tensor of images, got list"),
    (torch.zeros(2, 3, 32, 32, dtype=torch.uint8), "convert uint8 images with x.float() / 255"),
    (torch.zeros(2, 32, 32, 3), "images must be channels-first (N, C, H, W)"),
    (torch.zeros(1, 3, 40, 64), "spatial size 40x64 is not supported"),
    (torch.zeros(1, 3, 64, 40), "spatial size 64x40 is not supported"),
    (torch.zeros(1, 3, 0, 64), "spatial size 0x64 is not supported"),
])
def test_bad_input_is_named(x, message):
    model = attn_lib.build_model("vgg-att3-concat-pc", width=0.0625).eval()
    with pytest.raises(ValueError, match=re.escape(message)):
        model(x)


def test_noatt_head_is_bn_relu_dropout_linear():
    head = attn_lib.build_model("vgg-noatt", width=0.0625).heads[0]
    assert [type(m).__name__ for m in head] == ["BatchNorm1d", "ReLU", "Dropout", "Linear"]


def test_backbone_and_baseline_defaults_are_the_papers():
    # Built directly, each is the full-width, 3-channel, dropout network build_model makes.
    from attn_lib.models.baseline import VGGBaseline

    assert repr(attn_lib.VGGBackbone()) == repr(attn_lib.build_model("vgg-noatt").backbone)
    assert repr(VGGBaseline()) == repr(attn_lib.build_model("vgg"))


#: The dropout after each of the 13 convs of the authors' vgg_bn_drop (None: no dropout): 0.3
#: after conv1, 0.4 after every other conv but the last of each block.
PAPER_CONV_DROPOUT = [0.3, None, 0.4, None, 0.4, 0.4, None, 0.4, 0.4, None, 0.4, 0.4, None]


def _dropout_after_each_conv(model: torch.nn.Module) -> list:
    rates: list = []
    waiting = False  # a conv whose dropout, if any, comes before the next pool or layer
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d) and module.kernel_size == (3, 3):
            rates.append(None)
            waiting = True
        elif isinstance(module, torch.nn.Dropout) and waiting:
            rates[-1], waiting = module.p, False
        elif isinstance(module, (torch.nn.MaxPool2d, torch.nn.Linear, torch.nn.Conv2d)):
            waiting = False
    return rates


@pytest.mark.parametrize("name, extra", [("vgg", []), ("vgg-noatt", [0.4, 0.4]),
                                         ("vgg-att3-concat-pc", [0.4, 0.4])])
def test_dropout_follows_the_authors_pattern_conv_by_conv(name, extra):
    # extra: conv14 and conv15 of the global branch in the attention network's backbone
    model = attn_lib.build_model(name, width=0.0625)
    assert _dropout_after_each_conv(model) == PAPER_CONV_DROPOUT + extra
    plain = attn_lib.build_model(name, width=0.0625, dropout=False)
    assert set(_dropout_after_each_conv(plain)) <= {None, 0.0}


@pytest.mark.parametrize("options, message", [
    (dict(num_classes=0), "num_classes must be a positive integer, got 0"),
    (dict(num_classes=2.0), "num_classes must be a positive integer, got 2.0"),
    (dict(width=0), "width must be a number in (0, 4], got 0"),
    (dict(width=4.5), "width must be a number in (0, 4], got 4.5"),
])
def test_baseline_names_each_bad_option_and_accepts_the_boundaries(options, message):
    from attn_lib.models.baseline import VGGBaseline

    with pytest.raises(ValueError, match=re.escape(message)):
        VGGBaseline(**options)
    with torch.device("meta"):
        assert VGGBaseline(num_classes=1, width=4).classifier[-1].out_features == 1


def test_convs_start_with_kaiming_fan_out():
    # He initialisation over the output fan (as torchvision's VGG): std = sqrt(2 / (out * 9)).
    # conv1 (3 -> 64 channels) tells fan_out (std 0.059) from fan_in (0.27).
    torch.manual_seed(0)
    conv1 = next(m for m in attn_lib.build_model("vgg").modules()
                 if isinstance(m, torch.nn.Conv2d))
    assert conv1.weight.std().item() == pytest.approx(math.sqrt(2 / (64 * 9)), rel=0.05)


@pytest.mark.parametrize("name", ["vgg", "vgg-noatt", "vgg-att2-indep-dp"])
def test_num_classes_is_kept_on_the_model(name):
    assert attn_lib.build_model(name, num_classes=7, width=0.0625).num_classes == 7
