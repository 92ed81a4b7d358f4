"""The paper's ResNet rows: the CIFAR pre-activation ResNet-164 and its attention variants.

Built as the authors' Torch code builds them (``RESNET/`` of
saumya-jetley/cd_ICLR18_LearnToPayAttention; file:line below, differences in
``docs/DEVIATIONS.md``):

* the trunk is He et al.'s pre-activation bottleneck ResNet for CIFAR, depth ``9n + 2``
  (164: n = 18), stages of 64, 128 and 256 channels at 32x32, 16x16 and 8x8 after a 3x3 stem
  conv of 16 (``models/Resnet-att2/1.1_resnet_local.lua:38-98`` the unit, ``:113-120`` the
  stages; ``1.2_resnet_local.lua:119``; ``1.3_resnet_local.lua:119``);
* the local features are the outputs of stage 2 (128 ch, 16x16) and stage 3 (256 ch, 8x8)
  (``train_attenunit_2levels.lua:208-215``; the one-level model uses stage 3 alone);
* ``g`` comes from a global branch on stage 3: BN, ReLU, 2x2 max-pool, 3x3 conv + BN + ReLU +
  dropout 0.4, 4x4 max-pool, dropout 0.5, linear 256 -> 256 (``2.3_resnet_global.lua:19-32``);
* where widths differ (stage 2: 128 vs 256) ``g`` is projected *down* to the local width
  (``3.1_atten.lua:14-17``: a linear layer after BN/ReLU/dropout), i.e. ``match="project_g"``;
* compatibility ``pc``: a 1x1 conv of ``l + g`` to one channel, softmax over the positions, the
  attended sum (``3.2_atten.lua:22-34``);
* the classifier concatenates the descriptors (each batch-normalised, dropout 0.3) and applies
  one linear layer (``4_match_singleimagepred_indep.lua:10-19``, despite its name): ``concat``.

The baseline ``resnet164`` ends as He et al.'s network: BN, ReLU, global average pool, linear
(``1.3_resnet_local.lua:121-125``, left commented out there because the attention models
replace it).
"""

from __future__ import annotations

from torch import Tensor, nn

from .add_attention import AttentionNet, TappedFeatures
from .attn_vgg import ModelOutput
from .backbone import conv_bn_relu, init_convs, scaled

#: Channels of the stem conv and of the three stages (``1.1_resnet_local.lua:117``).
STAGES = (16, 64, 128, 256)


class PreActBottleneck(nn.Module):
    """He et al.'s pre-activation bottleneck unit (``1.1_resnet_local.lua:38-98``).

    BN-ReLU-conv1x1, BN-ReLU-conv3x3, BN-ReLU-conv1x1 (bottleneck width ``out / 4``) plus the
    identity; where the width or stride changes, the first BN-ReLU is shared by the convs and a
    1x1 projection shortcut (``:69-96``).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        mid = max(1, out_channels // 4)
        self.projects = in_channels != out_channels or stride != 1
        self.preact = nn.Sequential(nn.BatchNorm2d(in_channels), nn.ReLU(inplace=False))
        self.convs = nn.Sequential(
            nn.Conv2d(in_channels, mid, 1, stride, bias=False),
            nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, 3, 1, 1, bias=False),
            nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, out_channels, 1, bias=False),
        )
        self.shortcut = (nn.Conv2d(in_channels, out_channels, 1, stride, bias=False)
                         if self.projects else nn.Identity())

    def forward(self, x: Tensor) -> Tensor:
        pre = self.preact(x)
        # The identity unit adds its *input*; the projecting unit projects the pre-activation.
        return self.convs(pre) + (self.shortcut(pre) if self.projects else x)


def _stage(in_channels: int, out_channels: int, units: int, stride: int) -> nn.Sequential:
    layers = [PreActBottleneck(in_channels, out_channels, stride)]
    layers += [PreActBottleneck(out_channels, out_channels, 1) for _ in range(units - 1)]
    return nn.Sequential(*layers)


def check_depth(depth: int) -> int:
    """Units per stage for a pre-activation bottleneck ResNet of ``depth`` (9n + 2)."""
    if not isinstance(depth, int) or depth < 11 or (depth - 2) % 9:
        raise ValueError(f"depth must be 9n + 2 with n >= 1 (11, 20, ..., 164), got {depth!r}")
    return (depth - 2) // 9


class PreActResNetTrunk(nn.Module):
    """Stem and the three stages; returns the outputs of stages 1, 2 and 3."""

    def __init__(self, depth: int = 164, width: float = 1.0, in_channels: int = 3) -> None:
        super().__init__()
        n = check_depth(depth)
        c0, c1, c2, c3 = (scaled(c, width) for c in STAGES)
        self.in_channels = in_channels
        self.channels = (c1, c2, c3)
        self.stem = nn.Conv2d(in_channels, c0, 3, 1, 1, bias=False)
        self.stages = nn.ModuleList([_stage(c0, c1, n, 1), _stage(c1, c2, n, 2),
                                     _stage(c2, c3, n, 2)])

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        s1 = self.stages[0](self.stem(x))
        s2 = self.stages[1](s1)
        return s1, s2, self.stages[2](s2)


class ResNetAttentionBackbone(nn.Module):
    """The trunk plus the authors' global branch (``2.3_resnet_global.lua:19-32``): local
    features from the chosen stages and ``g``."""

    def __init__(self, depth: int, width: float, in_channels: int, stages: tuple[int, ...],
                 dropout: bool) -> None:
        super().__init__()
        self.trunk = PreActResNetTrunk(depth, width, in_channels)
        self.stage_ids = stages
        c = self.trunk.channels[2]
        self.local_channels = tuple(self.trunk.channels[s - 1] for s in stages)
        self.global_channels = c
        self.global_branch = nn.Sequential(
            nn.BatchNorm2d(c), nn.ReLU(inplace=True), nn.MaxPool2d(2, 2, ceil_mode=True),
            *conv_bn_relu(c, c, 0.4 if dropout else 0.0),
            # 4x4 max-pool on CIFAR's 4x4 map; adaptive so larger inputs reach 1x1 as well.
            nn.AdaptiveMaxPool2d(1), nn.Flatten(),
            nn.Dropout(0.5 if dropout else 0.0), nn.Linear(c, c),
        )

    def forward(self, x: Tensor) -> TappedFeatures:
        stages = self.trunk(x)
        g = self.global_branch(stages[2])
        return TappedFeatures(tuple(stages[s - 1] for s in self.stage_ids), g)


class AttnResNet(AttentionNet):
    """The authors' attention ResNet: estimators on stage 2 and 3 (``attention_levels=2``) or
    stage 3 alone (``1``), ``g`` from the global branch, ``g`` projected down where widths
    differ, descriptors concatenated (see the module docstring).

    Args:
        num_classes: number of classes.
        depth: 9n + 2 (164 = the paper's).
        attention_levels: 1 (stage 3) or 2 (stages 2 and 3).
        aggregation, compatibility, normalize, match: as :class:`AttentionNet`.
        attention_position: only ``"before"`` (the estimators read the stage outputs).
        dropout: the authors' dropout (global branch 0.4/0.5, classifier 0.3).
        width: channel multiplier (1.0 = the paper).
        in_channels: channels of the input images.
    """

    def __init__(self, num_classes: int = 10, depth: int = 164, attention_levels: int = 2,
                 aggregation: str = "concat", compatibility: str = "pc",
                 normalize: str = "softmax", match: str = "project_g",
                 attention_position: str = "before", dropout: bool = True, width: float = 1.0,
                 in_channels: int = 3) -> None:
        if attention_levels not in (1, 2):
            raise ValueError(f"attention_levels must be 1 or 2, got {attention_levels!r}")
        if attention_position != "before":
            raise ValueError("the ResNet models attend to the stage outputs: attention_position "
                             "must be 'before'")
        stages = (3,) if attention_levels == 1 else (2, 3)
        backbone = ResNetAttentionBackbone(depth, width, in_channels, stages, dropout)
        super().__init__(backbone, backbone.local_channels, backbone.global_channels,
                         num_classes, compatibility, normalize, match, aggregation,
                         0.3 if dropout else 0.0, [f"stage {s}" for s in stages])
        init_convs(self)

    @property
    def gradcam_layer(self) -> nn.Module:
        """Grad-CAM's default layer: the last stage (the deepest local features)."""
        return self.backbone.trunk.stages[2]


class PreActResNet(nn.Module):
    """The baseline: the pre-activation ResNet classifying its last stage (BN, ReLU, global
    average pool, linear; ``1.3_resnet_local.lua:121-125``). Returns the family's
    ``ModelOutput`` with no attention maps."""

    #: No attention levels: the baseline has no attention maps (Grad-CAM stands in for them).
    levels: tuple[int, ...] = ()

    def __init__(self, num_classes: int = 10, depth: int = 164, dropout: bool = True,
                 width: float = 1.0, in_channels: int = 3) -> None:
        super().__init__()
        del dropout  # He et al.'s ResNet has none; accepted so every model takes the option
        self.trunk = PreActResNetTrunk(depth, width, in_channels)
        c = self.trunk.channels[2]
        self.head = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(inplace=True),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes))
        init_convs(self)

    def forward(self, x: Tensor) -> ModelOutput:
        return ModelOutput(self.head(self.trunk(x)[2]), ())

    @property
    def gradcam_layer(self) -> nn.Module:
        """Grad-CAM's default layer: the last stage."""
        return self.trunk.stages[2]


def cifar_stem(model: nn.Module) -> nn.Module:
    """Adapt a torchvision ResNet to 32x32 images, in place: its 7x7 stride-2 stem conv becomes a
    3x3 stride-1 conv and its max-pool is removed, the usual CIFAR change (He et al. 2016, Sec.
    4.2), so ``layer1..layer4`` see 32, 16, 8 and 4 pixels instead of 8, 4, 2 and 1.

    The new stem conv is freshly initialised; pretrained weights of the rest still load.
    """
    conv = getattr(model, "conv1", None)
    if not isinstance(conv, nn.Conv2d) or not hasattr(model, "maxpool"):
        raise ValueError(f"cifar_stem expects a torchvision ResNet (conv1, maxpool), got "
                         f"{type(model).__name__}")
    model.conv1 = nn.Conv2d(conv.in_channels, conv.out_channels, 3, 1, 1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()
    return model
