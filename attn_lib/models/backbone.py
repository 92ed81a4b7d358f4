"""The CIFAR VGG of *Learn To Pay Attention* (Jetley et al., 2018), Sec. 4 and Fig. 2.

Thirteen 3x3 conv layers (conv + BN + ReLU) in five blocks of 64·64 | 128·128 | 256·256·256 |
512·512·512 | 512·512·512. Unlike the usual CIFAR VGG, the first blocks keep full resolution:
there is **no pooling before conv7**, so the first attention level sees a 32x32 grid on CIFAR and
can point at small objects. The local features come from the end of blocks 3, 4 and 5, before
the max-pool that follows each::

    l1 = conv7  (256 ch, H   x W  )
    l2 = conv10 (512 ch, H/2 x W/2)
    l3 = conv13 (512 ch, H/4 x W/4)

The global feature ``g`` (512-d) comes from two more conv + pool stages and a fully connected
512 -> 512 layer, as in the authors' code. A 32x32 image reaches 1x1 there; larger inputs (any
multiple of 32) are averaged down to 1x1 before the FC layer so the same weights serve them.

Dropout follows the authors' ``vgg_bn_drop``: 0.3 after the first conv, 0.4 after every conv
that is not the last of its block, 0.5 before the FC layer. ``width`` scales every channel count
(1.0 is the paper) so tests and CI can run narrow copies fast on a CPU.
"""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor, nn

#: Output channels of each conv layer, block by block (conv1 .. conv13).
VGG_BLOCKS: tuple[tuple[int, ...], ...] = (
    (64, 64),
    (128, 128),
    (256, 256, 256),
    (512, 512, 512),
    (512, 512, 512),
)
GLOBAL_CHANNELS = 512
#: The conv layer that gives each level's local features (``l1``, ``l2``, ``l3`` above): the
#: attention level numbering of the models, Grad-CAM's layers and the figures' labels.
LEVEL_LAYERS = {1: "conv7", 2: "conv10", 3: "conv13"}
#: The spatial size of the input must be a multiple of this (five halvings down to g).
INPUT_MULTIPLE = 32


class BackboneFeatures(NamedTuple):
    """Features one forward pass of :class:`VGGBackbone` exposes."""

    local: tuple[Tensor, Tensor, Tensor]  #: l1, l2, l3 before their max-pool
    pooled: tuple[Tensor, Tensor, Tensor]  #: l1, l2, l3 after their max-pool
    global_: Tensor  #: g, shape (N, 512 * width)


def scaled(channels: int, width: float) -> int:
    """Channel count after the ``width`` multiplier (at least 4, so tiny models still work)."""
    return max(4, int(round(channels * width)))


def conv_bn_relu(in_channels: int, out_channels: int, dropout: float) -> list[nn.Module]:
    """One VGG layer: 3x3 conv (padding 1), batch norm, ReLU, optional dropout."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    return layers


def init_convs(module: nn.Module) -> None:
    """He ("MSR") initialisation of every conv, as in the authors' code: N(0, 2 / (k*k*out))."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


def vgg_block(
    in_channels: int, widths: tuple[int, ...], first: bool, dropout: bool
) -> nn.Sequential:
    """A block of conv layers; dropout after each but the last (0.3 on the very first conv)."""
    layers: list[nn.Module] = []
    for i, out_channels in enumerate(widths):
        is_last = i == len(widths) - 1
        p = 0.0 if (is_last or not dropout) else (0.3 if first and i == 0 else 0.4)
        layers += conv_bn_relu(in_channels, out_channels, p)
        in_channels = out_channels
    return nn.Sequential(*layers)


def vgg_blocks(width: float, in_channels: int, dropout: bool) -> tuple[nn.ModuleList, int]:
    """The five blocks of the thirteen convs (:data:`VGG_BLOCKS`, pools not included) and the
    number of channels the last one outputs; shared by the attention backbone and the baseline."""
    blocks = []
    c = in_channels
    for index, widths in enumerate(VGG_BLOCKS):
        scaled_widths = tuple(scaled(w, width) for w in widths)
        blocks.append(vgg_block(c, scaled_widths, first=index == 0, dropout=dropout))
        c = scaled_widths[-1]
    return nn.ModuleList(blocks), c


class VGGBackbone(nn.Module):
    """The paper's CIFAR VGG, returning local features l1..l3 and the global feature g.

    Args:
        width: channel multiplier (1.0 = the paper).
        in_channels: channels of the input images.
        dropout: use the authors' dropout pattern (see module docstring).
    """

    def __init__(self, width: float = 1.0, in_channels: int = 3, dropout: bool = True) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.blocks, c = vgg_blocks(width, in_channels, dropout)
        self.pool = nn.MaxPool2d(2, 2)
        self.local_channels = tuple(scaled(VGG_BLOCKS[b][-1], width) for b in (2, 3, 4))
        g = scaled(GLOBAL_CHANNELS, width)
        self.global_channels = g
        # Two more conv + pool stages take l3's pooled map from H/8 to H/32 (1x1 on CIFAR).
        self.global_convs = nn.Sequential(
            *conv_bn_relu(c, g, 0.4 if dropout else 0.0),
            nn.MaxPool2d(2, 2),
            *conv_bn_relu(g, g, 0.4 if dropout else 0.0),
            nn.MaxPool2d(2, 2),
        )
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.global_fc = nn.Sequential(nn.Dropout(0.5 if dropout else 0.0), nn.Linear(g, g))
        init_convs(self)

    def forward(self, x: Tensor) -> BackboneFeatures:
        """Run the VGG on images (N, C, H, W) with H, W multiples of 32."""
        x = self.blocks[0](x)
        x = self.blocks[1](x)  # no pooling yet: conv1..conv7 stay at full resolution
        l1 = self.blocks[2](x)
        p1 = self.pool(l1)
        l2 = self.blocks[3](p1)
        p2 = self.pool(l2)
        l3 = self.blocks[4](p2)
        p3 = self.pool(l3)
        g = self.global_fc(self.global_pool(self.global_convs(p3)).flatten(1))
        return BackboneFeatures((l1, l2, l3), (p1, p2, p3), g)
