"""``add_attention``: the paper's estimators on any CNN (torchvision's, or the family's VGG)."""

from __future__ import annotations

import pytest
import torch
import torchvision

import attn_lib
from attn_lib.data.base import normalize
from attn_lib.data.datasets import load_dataset
from attn_lib.models import VGGBackbone, build_model
from attn_lib.models.add_attention import add_attention, valid_layer_names
from attn_lib.models.resnet import cifar_stem
from attn_lib.study.robustness import global_shuffle_effect, shuffled_global

#: conv7, conv10, conv13 (the last ReLU of blocks 3, 4, 5) and g (the global FC) of the
#: family's VGG backbone, as torchvision's graph nodes name them.
VGG_LAYERS = ["blocks.2.10", "blocks.3.10", "blocks.4.10"]
VGG_GLOBAL = "global_fc.1"


def cifar_resnet18(num_classes: int = 10, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    net = cifar_stem(torchvision.models.resnet18(weights=None))
    return add_attention(net, ["layer2", "layer3"], "layer4", num_classes=num_classes,
                         input_size=(3, 32, 32), **kwargs)


def test_on_the_family_vgg_it_is_vgg_att3_concat_pc():
    torch.manual_seed(0)
    reference = build_model("vgg-att3-concat-pc", width=0.0625).eval()
    model = add_attention(VGGBackbone(width=0.0625), VGG_LAYERS, VGG_GLOBAL, num_classes=10,
                          input_size=(3, 32, 32))
    state = {k.replace("backbone.", "backbone.body.", 1): v
             for k, v in reference.state_dict().items()}
    model.load_state_dict(state)  # strict: the same parameters, nothing more or less
    model.eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        ours, theirs = model(x), reference(x)
    torch.testing.assert_close(ours.logits, theirs.logits, rtol=1e-5, atol=1e-6)
    assert len(ours.attention) == 3
    for a, b in zip(ours.attention, theirs.attention):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_torchvision_resnets_at_imagenet_and_cifar_size(arch):
    torch.manual_seed(0)
    net = getattr(torchvision.models, arch)(weights=None)
    for size in (224, 32):
        if size == 32:
            cifar_stem(net)  # the same network, its stem changed in place
        model = add_attention(net, ["layer2", "layer3"], "layer4", num_classes=5,
                              input_size=(3, size, size)).eval()
        with torch.no_grad():
            logits, maps = model(torch.randn(2, 3, size, size))
        assert logits.shape == (2, 5)
        # layer2/layer3 are strides 8/16 of the input with torchvision's stem, 2/4 with CIFAR's.
        side = size // (8 if size == 224 else 2)
        assert [m.shape for m in maps] == [(2, 1, side, side), (2, 1, side // 2, side // 2)]
        for m in maps:
            torch.testing.assert_close(m.flatten(1).sum(1), torch.ones(2))
        assert model.options == {"num_classes": 5, "width": 1.0}


def test_the_backbone_weights_are_shared_and_its_classifier_dropped():
    net = torchvision.models.resnet18(weights=None)
    model = add_attention(net, ["layer3"], "layer4", num_classes=3, input_size=(3, 64, 64))
    body = model.backbone.body
    assert body.get_submodule("layer3.0.conv1").weight is net.layer3[0].conv1.weight
    assert not hasattr(model.backbone.body, "fc")


def test_widths_are_matched_as_the_family_does():
    l_up = cifar_resnet18()
    assert [type(e.project_local).__name__ for e in l_up.estimators] == ["Conv2d", "Conv2d"]
    assert l_up.estimators[0].out_channels == 512
    g_down = cifar_resnet18(match="project_g")
    assert [e.out_channels for e in g_down.estimators] == [128, 256]
    assert g_down.estimators[0].project_global.weight.shape == (128, 512)


def test_unknown_layer_lists_the_valid_names():
    net = torchvision.models.resnet18(weights=None)
    with pytest.raises(ValueError, match="unknown layer name.*'layer9'") as error:
        add_attention(net, ["layer9"], "layer4", num_classes=10)
    for name in ("layer2", "layer3.1.conv2", "avgpool", "flatten"):
        assert name in str(error.value)
    assert set(valid_layer_names(net)) >= {"layer1", "layer4.1.relu_1", "fc"}


def test_a_layer_that_is_not_a_feature_map_is_refused():
    with pytest.raises(ValueError, match="local layer 'flatten' .* not a feature map"):
        add_attention(torchvision.models.resnet18(weights=None), ["layer3", "flatten"],
                      "layer4", num_classes=10, input_size=(3, 32, 32))


def test_incompatible_shapes_are_refused():
    net = torchvision.models.resnet18(weights=None)
    with pytest.raises(ValueError, match="cannot run on images of size \\(1, 32, 32\\)"):
        add_attention(net, ["layer3"], "layer4", num_classes=10, input_size=(1, 32, 32))
    with pytest.raises(ValueError, match="1x1 map: attention needs at least two positions"):
        add_attention(net, ["layer4"], "avgpool", num_classes=10, input_size=(3, 32, 32))
    with pytest.raises(ValueError, match="non-empty list"):
        add_attention(net, "layer3", "layer4", num_classes=10)


@pytest.mark.parametrize("compatibility", ["pc", "dp"])
def test_pc_cancels_g_on_a_resnet_too(compatibility):
    """Sec. 3.2: ``<u, l + g> = <u, l> + <u, g>``; the softmax drops the constant ``<u, g>``."""
    model = cifar_resnet18(compatibility=compatibility).eval()
    x = torch.randn(6, 3, 32, 32)
    with torch.no_grad():
        own = model(x)
        with shuffled_global(model, torch.roll(torch.arange(6), 1)):
            shuffled = model(x)
    change = max((a - b).abs().max().item() for a, b in zip(own.attention, shuffled.attention))
    if compatibility == "pc":
        assert change < 1e-6
        torch.testing.assert_close(own.logits, shuffled.logits)
    else:
        assert change > 1e-4


def small_cnn() -> torch.nn.Sequential:
    """A user's own network: three conv stages and a classifier, nothing torchvision-specific."""
    def stage(c_in: int, c_out: int) -> torch.nn.Sequential:
        return torch.nn.Sequential(torch.nn.Conv2d(c_in, c_out, 3, padding=1),
                                   torch.nn.BatchNorm2d(c_out), torch.nn.ReLU(),
                                   torch.nn.MaxPool2d(2))
    return torch.nn.Sequential(stage(3, 8), stage(8, 16), stage(16, 32),
                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                               torch.nn.Linear(32, 8))


def test_train_evaluate_gradcam_maps_and_g_shuffle_work_unchanged(tmp_path):
    torch.manual_seed(0)
    model = add_attention(small_cnn(), ["1", "2"], "2", num_classes=8,  # synthetic: 8 classes
                          input_size=(3, 32, 32), name="small-cnn-att2")
    result = attn_lib.train(model, "synthetic", out_dir=tmp_path / "run", preset="smoke",
                            epochs=1, limit_train=64, limit_test=32, batch_size=32,
                            device="cpu", progress=False)
    assert result.model is model and len(result.history) == 1
    test_set = load_dataset("synthetic", "test", limit=32)
    metrics = attn_lib.evaluate(model, test_set, batch_size=32)
    assert 0.0 <= metrics["acc"] <= 1.0
    images = normalize(test_set.images[:4].float() / 255, test_set.mean, test_set.std)
    cams = attn_lib.gradcam(model, images, layer=model.backbone.taps[1])
    assert cams.shape == (4, 1, 32, 32) and float(cams.max()) <= 1.0
    figure = attn_lib.plot_attention_grid(model, images, test_set.labels[:4],
                                          mean=test_set.mean, std=test_set.std,
                                          save_path=tmp_path / "grid.png")
    assert (tmp_path / "grid.png").stat().st_size > 0 and figure is not None
    shuffle = global_shuffle_effect(model, test_set, batch_size=16)
    assert shuffle["max_attention_change"] < 1e-6 and shuffle["delta_acc"] == 0.0


def test_plot_titles_name_the_tapped_layers_not_the_vgg_s():
    from attn_lib.maps.viz import _level_title

    model = add_attention(small_cnn(), ["1", "2"], "2", num_classes=8, input_size=(3, 32, 32))
    assert model.layer_names == ("1", "2")
    title = _level_title(model, 1, torch.zeros(1, 1, 4, 4))
    assert title == "attention 2\n2 4x4" and "conv" not in title
