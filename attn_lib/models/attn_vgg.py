"""The model family of *Learn To Pay Attention*: one class, configured by the paper's names.

``AttnVGG`` puts attention estimators (``attention.py``) on the local features of the CIFAR VGG
(``backbone.py``) and classifies from the attended descriptors only (Sec. 3.3):

* ``concat``: ``[g_a^1, ..., g_a^S]`` concatenated, then one linear classifier;
* ``indep``: one linear classifier per level, the class scores averaged.

Each descriptor is batch-normalised and (with ``dropout``) dropped out first. The authors' code
also puts a ReLU after that batch norm; it is left out here so that, as Sec. 3.3 describes, the
classifier is linear in ``g_a`` (at inference batch norm is an affine map). The differences from
the authors' code are listed in one place: ``docs/DEVIATIONS.md``.
With ``attention_levels=0`` it is the backbone without attention (``vgg-noatt``), classifying
``g``; the paper's baseline is a different network, :class:`attn_lib.models.VGGBaseline`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from .._validation import check_choice
from .attention import AttentionEstimator
from .backbone import INPUT_MULTIPLE, LEVEL_LAYERS, VGGBackbone

AGGREGATIONS = ("concat", "indep")
POSITIONS = ("before", "after")
#: Which backbone levels (:data:`~attn_lib.models.backbone.LEVEL_LAYERS`) each attention count
#: uses: the last two or all three.
LEVELS_FOR_COUNT = {0: (), 2: tuple(LEVEL_LAYERS)[1:], 3: tuple(LEVEL_LAYERS)}


class ModelOutput(NamedTuple):
    """``logits`` (N, classes) and one attention map (N, 1, h_s, w_s) per level (may be empty)."""

    logits: Tensor
    attention: tuple[Tensor, ...]


def split_output(output: Any) -> tuple[Tensor, tuple[Tensor, ...]]:
    """``(logits, attention maps)`` of any model's output: a :class:`ModelOutput` (or a tuple
    ordered like it), or the bare logits tensor of a model without attention maps."""
    if isinstance(output, Tensor):
        return output, ()
    return output[0], tuple(output[1]) if len(output) > 1 else ()


def level_number(model: nn.Module, position: int) -> int:
    """The level of the ``position``-th attention map of ``model``: its ``levels`` entry, or
    ``position + 1`` for a model that does not list its levels."""
    levels = getattr(model, "levels", None)
    return levels[position] if levels is not None else position + 1


def level_layer_name(model: nn.Module, position: int) -> str:
    """The layer the ``position``-th attention map of ``model`` comes from, for titles and
    tables: the model's own ``layer_names`` where it has them (models beyond the VGG), else the
    VGG layer of its level (:func:`level_number`, :data:`LEVEL_LAYERS`), "" for a level the VGG
    does not have."""
    names = getattr(model, "layer_names", None)
    if names:
        return str(names[position])
    return LEVEL_LAYERS.get(level_number(model, position), "")


class AttnVGG(nn.Module):
    """Attention-augmented CIFAR VGG (or its backbone alone with ``attention_levels=0``).

    Args:
        num_classes: number of output classes.
        attention_levels: 0 (no attention), 2 (conv10, conv13) or 3 (conv7, conv10, conv13).
        aggregation: ``"concat"`` or ``"indep"`` (see module docstring).
        compatibility: ``"pc"`` or ``"dp"`` (see :mod:`attn_lib.models.attention`).
        attention_position: ``"before"`` the max-pool that follows a level (paper) or ``"after"``.
        normalize: ``"softmax"`` (paper) or ``"sigmoid"``.
        match: ``"project_l"`` (default, as the authors' run scripts) or ``"project_g"`` where
            widths differ (see :mod:`attn_lib.models.attention`).
        dropout: the authors' dropout pattern in the VGG and before the classifier.
        width: channel multiplier, 1.0 = paper.
        in_channels: channels of the input images.
    """

    def __init__(
        self,
        num_classes: int = 10,
        attention_levels: int = 3,
        aggregation: str = "concat",
        compatibility: str = "pc",
        attention_position: str = "before",
        normalize: str = "softmax",
        match: str = "project_l",
        dropout: bool = True,
        width: float = 1.0,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        _validate_options(num_classes, attention_levels, aggregation, attention_position, width,
                          in_channels)
        self.num_classes = num_classes
        self.levels = LEVELS_FOR_COUNT[attention_levels]
        self.aggregation = aggregation
        self.attention_position = attention_position
        self.backbone = VGGBackbone(width=width, in_channels=in_channels, dropout=dropout)
        g = self.backbone.global_channels
        self.estimators = nn.ModuleList(
            AttentionEstimator(self.backbone.local_channels[level - 1], g, compatibility,
                               normalize, match)
            for level in self.levels
        )
        p = 0.5 if dropout else 0.0
        widths = [e.out_channels for e in self.estimators]
        if not self.levels:
            # vgg-noatt classifies g: BN, ReLU, dropout, linear (as the baseline's classifier).
            self.heads = nn.ModuleList([nn.Sequential(
                nn.BatchNorm1d(g), nn.ReLU(inplace=True), nn.Dropout(p), nn.Linear(g, num_classes)
            )])
        else:
            self.heads = attention_heads(widths, aggregation, num_classes, p)

    def forward(self, x: Tensor) -> ModelOutput:
        """Classify images (N, C, H, W); H and W must be multiples of 32."""
        check_input(x, self.backbone.in_channels)
        features = self.backbone(x)
        if not self.levels:
            return ModelOutput(self.heads[0](features.global_), ())
        source = features.local if self.attention_position == "before" else features.pooled
        results = [
            estimator(source[level - 1], features.global_)
            for level, estimator in zip(self.levels, self.estimators)
        ]
        logits = classify(self.heads, self.aggregation, [r.descriptor for r in results])
        return ModelOutput(logits, tuple(r.attention for r in results))


def _linear_head(in_features: int, num_classes: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.BatchNorm1d(in_features), nn.Dropout(dropout),
                         nn.Linear(in_features, num_classes))


def attention_heads(widths: list[int], aggregation: str, num_classes: int,
                    dropout: float) -> nn.ModuleList:
    """The classifier on the attended descriptors (Sec. 3.3), one level per entry of ``widths``:
    ``concat``, one batch-norm + linear head on their concatenation; ``indep``, one per level."""
    if aggregation == "concat":
        return nn.ModuleList([_linear_head(sum(widths), num_classes, dropout)])
    return nn.ModuleList(_linear_head(w, num_classes, dropout) for w in widths)


def classify(heads: nn.ModuleList, aggregation: str, descriptors: list[Tensor]) -> Tensor:
    """Class scores from the descriptors ``g_a^s`` with :func:`attention_heads`' heads."""
    if aggregation == "concat":
        return heads[0](torch.cat(descriptors, dim=1))
    return torch.stack([h(d) for h, d in zip(heads, descriptors)]).mean(dim=0)


def check_classes_and_width(num_classes: int, width: float) -> None:
    """Raise ``ValueError`` for a class count or width multiplier no model of the family takes."""
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    if not isinstance(width, (int, float)) or not 0 < width <= 4:
        raise ValueError(f"width must be a number in (0, 4], got {width!r} (1.0 = the paper)")


def _validate_options(num_classes: int, attention_levels: int, aggregation: str, position: str,
                      width: float, in_channels: int) -> None:
    check_classes_and_width(num_classes, width)
    if attention_levels not in LEVELS_FOR_COUNT:
        raise ValueError(
            f"attention_levels must be one of {sorted(LEVELS_FOR_COUNT)}, got {attention_levels!r}"
        )
    check_choice("aggregation", aggregation, AGGREGATIONS)
    check_choice("attention_position", position, POSITIONS)
    if not isinstance(in_channels, int) or in_channels < 1:
        raise ValueError(f"in_channels must be a positive integer, got {in_channels!r}")


def check_input(x: Tensor, in_channels: int) -> None:
    """Raise ``ValueError`` naming the problem if ``x`` is not a batch the model accepts."""
    if not isinstance(x, Tensor):
        raise ValueError(f"expected a torch.Tensor of images, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(
            f"expected images of shape (N, {in_channels}, H, W), got a {x.dim()}-d tensor of "
            f"shape {tuple(x.shape)}; add a batch dimension with x.unsqueeze(0) for one image"
        )
    if not x.is_floating_point():
        raise ValueError(
            f"expected a floating-point tensor, got dtype {x.dtype}; convert uint8 images with "
            "x.float() / 255 and normalise them"
        )
    n, c, h, w = x.shape
    if c != in_channels:
        raise ValueError(
            f"expected {in_channels} input channels, got {c} (shape {tuple(x.shape)}); images "
            "must be channels-first (N, C, H, W)"
        )
    if h < INPUT_MULTIPLE or w < INPUT_MULTIPLE or h % INPUT_MULTIPLE or w % INPUT_MULTIPLE:
        raise ValueError(
            f"spatial size {h}x{w} is not supported: height and width must be multiples of "
            f"{INPUT_MULTIPLE} and at least {INPUT_MULTIPLE} (e.g. 32x32 for CIFAR)"
        )
