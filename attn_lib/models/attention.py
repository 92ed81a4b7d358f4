"""The attention estimator of *Learn To Pay Attention* (Jetley et al., ICLR 2018), Sec. 3.

A conv layer s of the network gives a grid of *local* feature vectors
``L^s = {l_1, ..., l_n}`` (one per spatial position, ``n = h * w``); the end of the network gives
one *global* feature vector ``g``. The estimator asks, for every position, how compatible the
local vector is with the global one, and returns a convex combination of the local vectors:

1. compatibility scores ``c_i = C(l_i, g)`` (Sec. 3.2):

   * parametrised, ``pc``:  ``c_i = <u, l_i + g>`` with a learned vector ``u``;
   * dot product, ``dp``:   ``c_i = <l_i, g>``;

2. normalisation over all positions, ``a = softmax(c)`` (Eq. 1). A popular port uses an
   element-wise ``sigmoid`` instead; it is offered as an option, not the default;
3. the attended descriptor ``g_a = sum_i a_i * l_i`` (Eq. 2). With sigmoid weights the
   weights do not sum to one, so the port averages instead: ``g_a = mean_i a_i * l_i``.

Where ``l_i`` and ``g`` differ in width (level 1 of the CIFAR VGG: 256 vs 512) a learned linear
map matches them: either the local features are projected *up* to the width of ``g`` (a 1x1
convolution, the default, as in the model files the authors' CIFAR run scripts train,
``3_level_atten_1global_upprojecting``) or ``g`` is projected *down* to the width of ``l`` (a
linear layer, as in their earlier ``3_level_atten_1global`` files).

A property of the paper's ``pc`` form worth knowing: ``<u, l_i + g> = <u, l_i> + <u, g>`` and the
second term is the same for every position, so the softmax cancels it. With softmax
normalisation the ``pc`` attention map therefore does not depend on ``g`` at all (the tests check
this); ``g`` only matters for ``dp`` or for sigmoid normalisation.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._validation import check_choice

COMPATIBILITIES = ("pc", "dp")
NORMALIZATIONS = ("softmax", "sigmoid")
WIDTH_MATCHES = ("project_l", "project_g")


class AttentionResult(NamedTuple):
    """What one attention estimator returns for a batch."""

    descriptor: Tensor  #: attended descriptor g_a, shape (N, C)
    attention: Tensor  #: normalised attention a, shape (N, 1, h, w)
    scores: Tensor  #: raw compatibility scores c, shape (N, 1, h, w)


def pc_compatibility(local: Tensor, global_: Tensor, u: Tensor) -> Tensor:
    """Parametrised compatibility (Sec. 3.2): ``c_i = <u, l_i + g>``.

    Computed as ``<u, l_i> + <u, g>``: the same number, but ``g`` is never added to the local
    features in low precision, where rounding ``l_i + g`` would spend the bits of the small
    per-position term on the large constant one.

    Args:
        local: local features ``l``, shape (N, C, h, w).
        global_: global feature ``g``, shape (N, C).
        u: learned vector, shape (C,).

    Returns:
        Scores of shape (N, 1, h, w).
    """
    per_position = torch.einsum("nchw,c->nhw", local, u)
    return (per_position + (global_ @ u)[:, None, None]).unsqueeze(1)


def dp_compatibility(local: Tensor, global_: Tensor) -> Tensor:
    """Dot-product compatibility (Sec. 3.2): ``c_i = <l_i, g>``.

    Shapes as in :func:`pc_compatibility`.
    """
    return torch.einsum("nchw,nc->nhw", local, global_).unsqueeze(1)


def normalize_scores(scores: Tensor, method: str = "softmax") -> Tensor:
    """Turn scores (N, 1, h, w) into attention weights of the same shape.

    ``softmax`` normalises over all h*w positions of each image (Eq. 1), so each map sums to 1;
    ``sigmoid`` squashes each score into (0, 1) independently.
    """
    if method == "softmax":
        flat = scores.flatten(1)
        return F.softmax(flat, dim=1).view_as(scores)
    if method == "sigmoid":
        return torch.sigmoid(scores)
    raise ValueError(
        f"unknown attention normalisation {method!r}; expected one of {', '.join(NORMALIZATIONS)}"
    )


def attend(local: Tensor, attention: Tensor, method: str = "softmax") -> Tensor:
    """Attended descriptor from local features (N, C, h, w) and weights (N, 1, h, w).

    ``softmax``: ``g_a = sum_i a_i l_i`` (Eq. 2). ``sigmoid``: the mean over positions,
    because sigmoid weights do not sum to one and a plain sum would grow with the map's area.
    """
    weighted = (attention * local).flatten(2)
    return weighted.sum(dim=2) if method == "softmax" else weighted.mean(dim=2)


class AttentionEstimator(nn.Module):
    """One attention level: compatibility, normalisation and weighted sum (Sec. 3).

    Args:
        local_channels: width of the local features ``l`` at this level.
        global_channels: width of the global feature ``g``.
        compatibility: ``"pc"`` (parametrised, learns ``u``) or ``"dp"`` (dot product).
        normalize: ``"softmax"`` (paper) or ``"sigmoid"``.
        match: when widths differ, ``"project_l"`` maps ``l`` up with a 1x1 convolution,
            ``"project_g"`` maps ``g`` down with a linear layer.
    """

    def __init__(
        self,
        local_channels: int,
        global_channels: int,
        compatibility: str = "pc",
        normalize: str = "softmax",
        match: str = "project_l",
    ) -> None:
        super().__init__()
        check_choice("compatibility", compatibility, COMPATIBILITIES)
        check_choice("normalize", normalize, NORMALIZATIONS)
        check_choice("match", match, WIDTH_MATCHES)
        self.compatibility = compatibility
        self.normalize = normalize
        self.project_local: nn.Module | None = None
        self.project_global: nn.Module | None = None
        width = global_channels
        if local_channels != global_channels:
            if match == "project_l":
                self.project_local = nn.Conv2d(local_channels, global_channels, 1, bias=False)
            else:
                self.project_global = nn.Linear(global_channels, local_channels, bias=False)
                width = local_channels
        self.out_channels = width
        # u is a plain vector: a bias would shift every score equally and cancel in the softmax.
        self.u = nn.Parameter(torch.randn(width) / width**0.5) if compatibility == "pc" else None

    def forward(self, local: Tensor, global_: Tensor) -> AttentionResult:
        """Attend over ``local`` (N, C_l, h, w) given ``global_`` (N, C_g)."""
        if self.project_local is not None:
            local = self.project_local(local)
        if self.project_global is not None:
            global_ = self.project_global(global_)
        # Scores, softmax and weighted sum in at least fp32, even under autocast: they are only
        # N*h*w numbers, and in fp16 a dot product over 512 channels can overflow (65,504) to
        # inf. Half precision is raised to fp32; a float64 model stays in float64.
        dtype = torch.promote_types(torch.promote_types(local.dtype, global_.dtype),
                                    torch.float32)
        with torch.autocast(local.device.type, enabled=False):
            local, global_ = local.to(dtype), global_.to(dtype)
            if self.u is not None:
                scores = pc_compatibility(local, global_, self.u.to(dtype))
            else:
                scores = dp_compatibility(local, global_)
            attention = normalize_scores(scores, self.normalize)
            descriptor = attend(local, attention, self.normalize)
        return AttentionResult(descriptor, attention, scores)
