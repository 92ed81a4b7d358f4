"""The paper's baseline: the standard CIFAR VGG of the authors' code (``vgg_bn_drop.lua``).

Table 1 of the paper compares every attention model against "VGG": the CIFAR VGG of
szagoruyko/cifar.torch that the authors' code builds in ``models_CIFARS/vgg_bn_drop.lua``. It
has the same thirteen conv + BN + ReLU layers and dropout pattern as the attention network's
backbone (:mod:`attn_lib.models.backbone`), but the usual pooling: a 2x2 max-pool after
**every** block, five in all, so a 32x32 image reaches 1x1 after conv13. A small classifier
follows::

    dropout 0.5 -> FC 512 -> BN -> ReLU -> dropout 0.5 -> FC num_classes

About 15.0 M parameters for 10 classes (the attention backbone keeps conv1..conv7 at full
resolution and adds the global branch, so ``vgg-att3-concat-pc`` has 19.9 M).

Differences from the Lua file, none of which changes what the network computes: the convs have
no bias (batch norm right after cancels it; 4,224 parameters fewer) and batch norm uses
PyTorch's epsilon (1e-5, not 1e-3). Inputs larger than 32x32 (any multiple of 32) are averaged
down to 1x1 after the last pool so the same weights serve them.
"""

from __future__ import annotations

from torch import Tensor, nn

from .attn_vgg import ModelOutput, check_classes_and_width, check_input
from .backbone import init_convs, scaled, vgg_blocks

#: Width of the baseline's hidden fully connected layer (the paper's 512).
HIDDEN = 512


class PooledVGG(nn.Module):
    """The thirteen conv layers of the CIFAR VGG with a max-pool after every block.

    ``blocks[i]`` is block ``i + 1`` (conv1-2, conv3-4, conv5-7, conv8-10, conv11-13), without
    its pool, so Grad-CAM can hook conv7, conv10 and conv13 as it does in the attention models
    (here at H/4, H/8 and H/16). ``forward`` returns the pooled (N, C) feature vector.
    """

    def __init__(self, width: float, in_channels: int, dropout: bool) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.blocks, c = vgg_blocks(width, in_channels, dropout)
        self.pool = nn.MaxPool2d(2, 2)
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.out_channels = c
        init_convs(self)

    def forward(self, x: Tensor) -> Tensor:
        """Features (N, C) of images (N, C_in, H, W), H and W multiples of 32."""
        for block in self.blocks:
            x = self.pool(block(x))
        return self.global_pool(x).flatten(1)


class VGGBaseline(nn.Module):
    """The paper's baseline CIFAR VGG (``vgg_bn_drop``); returns ``ModelOutput(logits, ())``.

    Args:
        num_classes: number of output classes.
        dropout: the authors' dropout pattern (0.3 / 0.4 in the convs, 0.5 in the classifier).
        width: channel multiplier, 1.0 = the paper (the hidden FC layer scales with it).
        in_channels: channels of the input images.
    """

    #: No attention levels: the baseline has no attention maps (Grad-CAM stands in for them).
    levels: tuple[int, ...] = ()

    def __init__(self, num_classes: int = 10, dropout: bool = True, width: float = 1.0,
                 in_channels: int = 3) -> None:
        super().__init__()
        check_classes_and_width(num_classes, width)
        self.num_classes = num_classes
        self.backbone = PooledVGG(width, in_channels, dropout)
        hidden = scaled(HIDDEN, width)
        p = 0.5 if dropout else 0.0
        self.classifier = nn.Sequential(
            nn.Dropout(p), nn.Linear(self.backbone.out_channels, hidden),
            nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Dropout(p),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: Tensor) -> ModelOutput:
        """Classify images (N, C, H, W); H and W must be multiples of 32."""
        check_input(x, self.backbone.in_channels)
        return ModelOutput(self.classifier(self.backbone(x)), ())
