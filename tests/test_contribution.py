"""Contribution maps: the per-position terms and the bias add up to the logit, exactly."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import attn_lib
from attn_lib.maps.contribution import Contributions, contribution_maps


def _with_random_statistics(model: nn.Module, seed: int = 0) -> nn.Module:
    """Batch norms with running statistics and affine parameters far from the identity, so
    that folding them into the head matters."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
                c = module.num_features
                module.running_mean.copy_(torch.randn(c, generator=generator) * 0.5)
                module.running_var.copy_(torch.rand(c, generator=generator) + 0.5)
                module.weight.copy_(1 + 0.5 * torch.randn(c, generator=generator))
                module.bias.copy_(0.5 * torch.randn(c, generator=generator))
    return model.eval()


def _model(name: str, **options) -> nn.Module:
    torch.manual_seed(0)
    model = attn_lib.build_model(name, num_classes=5, width=0.0625, **options)
    return _with_random_statistics(model).double()


CASES = [
    ("vgg-att3-concat-pc", {}),
    ("vgg-att3-concat-dp", {}),
    ("vgg-att3-indep-pc", {}),
    ("vgg-att2-concat-pc", {"match": "project_g", "attention_position": "after"}),
    ("vgg-att3-indep-pc", {"normalize": "sigmoid"}),
    ("vgg-att3-concat-dp", {"normalize": "sigmoid", "match": "project_g"}),
]


@pytest.mark.parametrize(("name", "options"), CASES)
def test_terms_and_bias_add_up_to_the_logit_in_float64(name, options) -> None:
    model = _model(name, **options)
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1)).double()
    result = contribution_maps(model, images)
    assert isinstance(result, Contributions)
    assert result.logits.dtype == torch.float64
    assert [m.shape for m in result.maps] == [a.shape for a in model(images).attention]
    total = sum(m.sum(dim=(1, 2, 3)) for m in result.maps) + result.bias
    chosen = result.logits.gather(1, result.target[:, None]).squeeze(1)
    torch.testing.assert_close(total, chosen, rtol=0, atol=1e-11)
    torch.testing.assert_close(result.target, result.logits.argmax(1))
    # Every class decomposes, not only the predicted one.
    for k in range(5):
        other = contribution_maps(model, images, target=k)
        total = sum(m.sum(dim=(1, 2, 3)) for m in other.maps) + other.bias
        torch.testing.assert_close(total, other.logits[:, k], rtol=0, atol=1e-11)


def test_a_level_s_terms_are_its_attention_times_the_folded_weights_on_l() -> None:
    # One level by hand: a_i * (W~_k . l_i) with W~ the BN-folded concat block of that level.
    model = _model("vgg-att2-concat-pc")
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2)).double()
    result = contribution_maps(model, images, target=torch.tensor([3, 1]))
    features = model.backbone(images)
    estimator = model.estimators[1]
    local = features.local[model.levels[1] - 1]
    attention = estimator(local, features.global_).attention
    norm, _, linear = model.heads[0]
    scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
    start = model.estimators[0].out_channels
    w = (linear.weight * scale)[:, start:][[3, 1]]
    expected = attention * torch.einsum("nchw,nc->nhw", local, w)[:, None]
    torch.testing.assert_close(result.maps[1], expected, rtol=1e-12, atol=1e-12)
    assert (result.maps[1] < 0).any()  # a position can argue against the class


def test_refuses_training_mode_models_without_attention_and_bad_targets() -> None:
    images = torch.randn(2, 3, 32, 32).double()
    model = _model("vgg-att2-concat-dp")
    with pytest.raises(ValueError, match="eval mode"):
        contribution_maps(model.train(), images)
    model.eval()
    with pytest.raises(ValueError, match="no attention"):
        contribution_maps(_model("vgg-noatt"), images)
    with pytest.raises(ValueError, match=r"\[0, 4\]"):
        contribution_maps(model, images, target=5)
    with pytest.raises(ValueError, match="one per image"):
        contribution_maps(model, images, target=torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="integers"):
        contribution_maps(model, images, target=torch.tensor([0.0, 1.0]))
    for bad in (True, "cat", 1.0):
        with pytest.raises(ValueError, match=r"target must be None, a class index or a \(N,\) "
                                             rf"tensor of classes, got {type(bad).__name__}"):
            contribution_maps(model, images, target=bad)
    assert contribution_maps(model, images, 2).target.tolist() == [2, 2]


def test_refuses_a_head_that_is_not_an_affine_map_at_test_time() -> None:
    images = torch.randn(2, 3, 32, 32).double()
    model = _model("vgg-att2-concat-pc")
    bare = model.heads[0][-1]
    model.heads[0] = bare  # a bare Linear, not a Sequential
    with pytest.raises(ValueError, match="expected a head BatchNorm1d -> Dropout -> Linear, "
                                         "got Linear$"):
        contribution_maps(model, images)
    model = _model("vgg-att2-concat-pc")
    del model.heads[0][1]  # no dropout layer
    with pytest.raises(ValueError, match="got BatchNorm1d -> Linear$"):
        contribution_maps(model, images)
    model = _model("vgg-att2-concat-pc")
    width = model.heads[0][0].num_features
    model.heads[0][0] = nn.BatchNorm1d(width, track_running_stats=False).double()
    with pytest.raises(ValueError, match="^the head's batch norm keeps no running statistics: "
                                         "it is not an affine map at test time$"):
        contribution_maps(model, images)


def test_is_exported_lazily() -> None:
    assert attn_lib.contribution_maps is contribution_maps
    import attn_lib.maps as maps

    assert maps.contribution_maps is contribution_maps
