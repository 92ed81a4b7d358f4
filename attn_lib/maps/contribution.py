"""Contribution maps: what each position added to a class score, exactly.

An attention map says where a model *looked*; it does not say what the model *concluded* there.
At test time the head of every attention model is affine (batch norm with its running
statistics is an affine map, dropout is the identity, then a linear layer), and the attended
descriptor is a weighted sum over positions (Eq. 2). So each logit splits exactly into a bias
and one term per position and level.

**concat** (Sec. 3.3: the descriptors ``g_a^1 .. g_a^S`` concatenated, one linear classifier).
With batch norm folded into the linear layer, ``W~ = W diag(gamma / sigma)`` and
``b~ = b + W (beta - gamma mu / sigma)``, and ``W~_k^s`` the block of row ``k`` that reads level
``s``::

    z_k = sum_s W~_k^s . g_a^s + b~_k = sum_s sum_i  a_i^s (W~_k^s . l_i^s)  +  b~_k

**indep** (Sec. 3.3: one linear classifier per level, class scores averaged over the ``S``
levels)::

    z_k = (1/S) sum_s (W~_k^s . g_a^s + b~_k^s)
        = sum_s sum_i  (1/S) a_i^s (W~_k^s . l_i^s)  +  (1/S) sum_s b~_k^s

The term of position ``i`` at level ``s`` is its *contribution*. ``l_i`` is the local feature
the estimator attends (after its 1x1 projection, where it has one). Its sign matters: a
position can carry much attention and still argue *against* class ``k``, and a long ``l_i``
weighs more than its ``a_i`` says: the weight says how much of ``l_i`` enters ``g_a``, the
classifier says what that amount of ``l_i`` is worth. With sigmoid normalisation the
descriptor is the mean over the ``n`` positions, so each term carries a further ``1/n``.

The decomposition is exact only in eval mode; :func:`contribution_maps` refuses a model in
training mode (batch statistics and dropout make the head depend on the whole batch).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn


class Contributions(NamedTuple):
    """Position i's share of logit ``target`` at each level, and what is left: the bias.

    ``sum(m.sum((1, 2, 3)) for m in maps) + bias == logits[n, target[n]]`` (float rounding).
    """

    maps: tuple[Tensor, ...]  #: one (N, 1, h_s, w_s) map per attention level
    bias: Tensor  #: (N,) the folded head's bias of the target class
    target: Tensor  #: (N,) long: the class each image's maps explain
    logits: Tensor  #: (N, K) the model's logits


@torch.no_grad()
def contribution_maps(model: nn.Module, images: Tensor,
                      target: int | Tensor | None = None) -> Contributions:
    """Each position's additive share of a class's logit (see the module docstring).

    Args:
        model: an attention model (:class:`attn_lib.AttnVGG` with attention levels) in eval
            mode.
        images: normalised images (N, C, H, W), in the model's dtype.
        target: the class to explain: ``None`` = each image's predicted class, an int for
            every image, or a (N,) tensor of classes.

    Returns:
        :class:`Contributions` ``(maps, bias, target, logits)``.
    """
    levels = getattr(model, "levels", ())
    if not levels:
        raise ValueError(f"{getattr(model, 'name', type(model).__name__)} has no attention "
                         "levels: its head is not a sum over attended positions (use "
                         "attn_lib.gradcam for a map of a model without attention)")
    if model.training:
        raise ValueError("contribution maps need the model in eval mode (call model.eval()): "
                         "in training mode batch norm uses batch statistics and dropout is on, "
                         "so the logits do not split into per-position terms")
    seen = _record_estimators(model, images)
    logits = seen["output"].logits
    target = _targets(target, logits)
    heads = [_fold_head(head) for head in model.heads]
    maps = []
    for index, (local, attention, estimator) in enumerate(
            zip(seen["local"], seen["attention"], model.estimators)):
        if model.aggregation == "concat":
            weight, bias = heads[0]
            start = sum(e.out_channels for e in model.estimators[:index])
            w = weight[:, start:start + estimator.out_channels][target]
        else:
            w = heads[index][0][target] / len(levels)
        per_position = torch.einsum("nchw,nc->nhw", local, w).unsqueeze(1)
        if estimator.normalize == "sigmoid":  # g_a is the mean over positions, not the sum
            per_position = per_position / local[0, 0].numel()
        maps.append(attention * per_position)
    if model.aggregation == "concat":
        bias = heads[0][1][target]
    else:
        bias = torch.stack([b[target] for _, b in heads]).mean(dim=0)
    return Contributions(tuple(maps), bias, target, logits)


def _record_estimators(model: nn.Module, images: Tensor) -> dict:
    """Run the model once; keep what each estimator attended (its projected local features)
    and its attention weights."""
    seen: dict = {"local": [], "attention": []}

    def hook(estimator: nn.Module, inputs: tuple, result: tuple) -> None:
        local = inputs[0]
        if estimator.project_local is not None:
            local = estimator.project_local(local)
        seen["local"].append(local.to(result.attention.dtype))
        seen["attention"].append(result.attention)

    handles = [e.register_forward_hook(hook) for e in model.estimators]
    try:
        seen["output"] = model(images)
    finally:
        for handle in handles:
            handle.remove()
    return seen


def _targets(target: int | Tensor | None, logits: Tensor) -> Tensor:
    n, classes = logits.shape
    if target is None:
        return logits.argmax(dim=1)
    if isinstance(target, bool) or not isinstance(target, (int, Tensor)):
        raise ValueError(f"target must be None, a class index or a (N,) tensor of classes, got "
                         f"{type(target).__name__}")
    target = torch.as_tensor(target, device=logits.device)
    if target.is_floating_point():
        raise ValueError(f"target must hold class indices (integers), got {target.dtype}")
    target = target.long().expand(n) if target.dim() == 0 else target.long()
    if target.shape != (n,):
        raise ValueError(f"target must be one class or one per image ({n}), got shape "
                         f"{tuple(target.shape)}")
    if n and (int(target.min()) < 0 or int(target.max()) >= classes):
        raise ValueError(f"target classes must be in [0, {classes - 1}], got "
                         f"{target.min().item()}..{target.max().item()}")
    return target


def _fold_head(head: nn.Module) -> tuple[Tensor, Tensor]:
    """``(W~, b~)`` of a head BatchNorm1d -> Dropout -> Linear in eval mode: the one affine map
    ``W~ x + b~`` the three compute."""
    layers = list(head) if isinstance(head, nn.Sequential) else [head]
    kinds = [type(layer) for layer in layers]
    if kinds != [nn.BatchNorm1d, nn.Dropout, nn.Linear]:
        raise ValueError(f"expected a head BatchNorm1d -> Dropout -> Linear, got "
                         f"{' -> '.join(k.__name__ for k in kinds)}")
    norm, _, linear = layers
    if norm.running_mean is None or norm.running_var is None:
        raise ValueError("the head's batch norm keeps no running statistics: it is not an "
                         "affine map at test time")
    scale = torch.rsqrt(norm.running_var + norm.eps)
    shift = -norm.running_mean * scale
    if norm.affine:
        scale, shift = scale * norm.weight, shift * norm.weight + norm.bias
    bias = linear.weight @ shift
    if linear.bias is not None:
        bias = bias + linear.bias
    return linear.weight * scale, bias
