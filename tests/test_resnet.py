"""The paper's ResNet rows: the CIFAR pre-activation ResNet-164, its attention variants, their
training preset, and a narrow, shallow variant trained end to end."""

from __future__ import annotations

import pytest
import torch

import attn_lib
from attn_lib.cli import build_parser
from attn_lib.models import build_model, list_models
from attn_lib.models.resnet import PreActBottleneck, check_depth
from attn_lib.study.robustness import shuffled_global
from attn_lib.training.optim import LRSchedule
from attn_lib.training.recipe import Recipe, get_preset

RESNET_NAMES = ["resnet164", "resnet164-att1-concat-pc", "resnet164-att2-concat-pc",
                "resnet20", "resnet20-att1-concat-pc", "resnet20-att2-concat-pc"]


def test_the_resnet_rows_are_registered_and_accepted_by_reproduce():
    assert set(RESNET_NAMES) <= set(list_models())
    args = build_parser().parse_args(["reproduce", "--models", *RESNET_NAMES[:3]])
    assert args.models == RESNET_NAMES[:3]


def test_resnet164_is_he_et_al_s_1_7m_parameter_network():
    model = build_model("resnet164")
    assert [len(stage) for stage in model.trunk.stages] == [18, 18, 18]  # (164 - 2) / 9
    count = sum(p.numel() for p in model.parameters())
    assert round(count / 1e6, 1) == 1.7  # He et al. 2016 (identity mappings), Table 2
    shallow = build_model("resnet20", width=0.25)
    assert [len(stage) for stage in shallow.trunk.stages] == [2, 2, 2]
    features = shallow.trunk(torch.randn(1, 3, 32, 32))
    assert [f.shape[1:] for f in features] == [(16, 32, 32), (32, 16, 16), (64, 8, 8)]


@pytest.mark.parametrize("levels, sides", [(1, [8]), (2, [16, 8])])
def test_attention_at_the_authors_stages_with_g_projected_down(levels, sides):
    model = build_model(f"resnet20-att{levels}-concat-pc").eval()
    with torch.no_grad():
        logits, maps = model(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 10)
    assert [m.shape[-1] for m in maps] == sides
    # g (256) is projected down to each local width (3.2_atten.lua: Linear(256, 128)).
    widths = [e.out_channels for e in model.estimators]
    assert widths == ([256] if levels == 1 else [128, 256])
    if levels == 2:
        assert model.estimators[0].project_global.weight.shape == (128, 256)
        assert model.estimators[1].project_global is None
    assert model.options["match"] == "project_g"
    assert model.heads[0][-1].in_features == sum(widths)  # concatenated descriptors


def test_pre_activation_units():
    torch.manual_seed(0)
    unit = PreActBottleneck(16, 16, 1).eval()
    torch.nn.init.zeros_(unit.convs[-1].weight)  # the residual branch adds nothing
    x = torch.randn(2, 16, 8, 8)
    torch.testing.assert_close(unit(x), x)  # identity shortcut: the *input*, not its BN-ReLU
    down = PreActBottleneck(16, 32, 2).eval()
    torch.nn.init.zeros_(down.convs[-1].weight)
    torch.testing.assert_close(down(x), down.shortcut(down.preact(x)))
    with pytest.raises(ValueError, match="9n \\+ 2"):
        check_depth(100)


def test_pc_cancels_g_on_the_resnet_rows():
    model = build_model("resnet20-att2-concat-pc", width=0.25).eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        own = model(x)
        with shuffled_global(model, torch.tensor([1, 2, 3, 0])):
            shuffled = model(x)
    for a, b in zip(own.attention, shuffled.attention):
        assert (a - b).abs().max() < 1e-6
    torch.testing.assert_close(own.logits, shuffled.logits)


def test_resnet_preset_is_the_authors_schedule():
    recipe = get_preset("resnet")
    assert (recipe.lr, recipe.epochs, recipe.batch_size, recipe.weight_decay) == (0.1, 200, 64,
                                                                                  5e-4)
    assert recipe.nesterov and recipe.momentum == 0.9 and recipe.augment == "crop-flip"
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    schedule = LRSchedule(opt, recipe, steps_per_epoch=10)
    lrs = {epoch: schedule.lr_at(epoch * 10) for epoch in (0, 59, 60, 119, 120, 160, 199)}
    expected = {0: 0.1, 59: 0.1, 60: 0.02, 119: 0.02, 120: 0.004, 160: 0.0008, 199: 0.0008}
    for epoch, lr in expected.items():
        assert lrs[epoch] == pytest.approx(lr), epoch
    assert Recipe.from_dict(recipe.to_dict() | {"milestones": [60, 120, 160]}) == recipe
    with pytest.raises(ValueError, match="milestones must increase"):
        Recipe(name="t", epochs=5, batch_size=2, lr=0.1, milestones=(3, 2))


def test_a_narrow_shallow_resnet_trains_end_to_end(tmp_path):
    torch.manual_seed(0)
    before = build_model("resnet20-att2-concat-pc", width=0.0625).state_dict()
    result = attn_lib.train("resnet20-att2-concat-pc", "synthetic", out_dir=tmp_path / "run",
                            preset="smoke", epochs=1, limit_train=64, limit_test=32,
                            device="cpu", progress=False)
    assert len(result.history) == 1 and result.model.name == "resnet20-att2-concat-pc"
    assert result.model.options["width"] == 0.0625
    after = result.model.state_dict()
    assert not torch.equal(before["estimators.0.u"], after["estimators.0.u"])
    assert (tmp_path / "run" / "last.pt").exists()
    cams = attn_lib.gradcam(result.model, torch.randn(2, 3, 32, 32))  # default layer: stage 3
    assert cams.shape == (2, 1, 32, 32)

