"""Grad-CAM (Selvaraju et al., ICCV 2017): where a conv layer's evidence for a class lies.

For a class score ``y^c`` (the logit, before softmax) and the activations ``A^k`` of a conv
layer (channels k), Grad-CAM weighs each channel by its average gradient and keeps the
positive part::

    alpha_k^c = mean_{i,j} d y^c / d A^k_{ij}          (Eq. 1 of the paper)
    L^c       = ReLU( sum_k alpha_k^c A^k )            (Eq. 2)

Here it serves as the baseline's answer to "where does the network look?", next to the learned
attention. It is a small hook-based implementation rather than a dependency: the PyPI
``grad-cam`` package pulls in OpenCV, scikit-learn, SciPy and ttach (and ships as an sdist),
``captum`` raises the torch floor to 2.3; both for some thirty lines.

Layers: for models of :func:`attn_lib.build_model` a layer can be named by the attention level
numbering, 1 = conv7 (H x W), 2 = conv10 (H/2), 3 = conv13 (H/4, the default). conv13 is the
last conv layer of the VGG body; the two conv stages that follow it (on the way to ``g``) are at
H/16 and H/32, i.e. 2x2 and 1x1 on CIFAR, too coarse to localise anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._device import model_device
from ..models import LEVEL_LAYERS, split_output

Layer = Union[int, nn.Module]
Target = Union[int, Sequence[int], Tensor, None]


def upsample_maps(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinearly upsample maps (N, 1, h, w) to (N, 1, H, W), as float32.

    ``align_corners=False`` treats each map cell as covering an equal patch of the image, which
    is what a cell of a pooled feature map does.
    """
    maps = maps.float()
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps, size=size, mode="bilinear", align_corners=False)


def resolve_layer(model: nn.Module, layer: Layer | None) -> nn.Module:
    """The module to hook: ``None`` = conv13, an int = backbone level 1..3, or a module."""
    if isinstance(layer, nn.Module):
        return layer
    if layer is None and isinstance(getattr(model, "gradcam_layer", None), nn.Module):
        return model.gradcam_layer  # a model beyond the VGG names its default layer itself
    level = 3 if layer is None else layer
    backbone = getattr(model, "backbone", None)
    blocks = getattr(backbone, "blocks", None)
    if blocks is None:
        raise ValueError(
            f"{type(model).__name__} has no VGG backbone: pass the conv layer to use as layer="
        )
    if level not in LEVEL_LAYERS:
        named = ", ".join(f"{k} = {v}" for k, v in LEVEL_LAYERS.items())
        raise ValueError(f"layer must be a level ({named}), got {layer!r}")
    # Blocks 3, 4, 5 end in conv7, conv10, conv13 (+ BN + ReLU): their outputs are l1, l2, l3.
    return blocks[level + 1]


def _targets(target: Target, logits: Tensor) -> Tensor:
    n = logits.shape[0]
    if target is None:
        return logits.argmax(dim=1)
    t = torch.as_tensor(target, device=logits.device).long().reshape(-1)
    if t.numel() == 1:
        t = t.expand(n)
    if t.numel() != n:
        raise ValueError(f"target must be one class or one per image ({n}), got {t.numel()}")
    if int(t.min()) < 0 or int(t.max()) >= logits.shape[1]:
        raise ValueError(f"target classes must be in [0, {logits.shape[1] - 1}], got {t.tolist()}")
    return t


def gradcam_layers(
    model: nn.Module,
    images: Tensor,
    target: Target = None,
    layers: Sequence[Layer | None] = (None,),
    upsample: bool = True,
) -> list[Tensor]:
    """Grad-CAM at several layers with one forward and one backward pass.

    Returns one map per layer, each (N, 1, H, W) (or the layer's own h x w with
    ``upsample=False``), scaled per image so its maximum is 1; an image with no positive
    evidence at a layer gets an all-zero map. Maps are on the images' device, detached.
    """
    if not isinstance(images, Tensor) or images.dim() != 4:
        raise ValueError("images must be a float batch (N, C, H, W)")
    modules = [resolve_layer(model, layer) for layer in layers]
    activations: dict[int, Tensor] = {}

    def keep(index: int) -> Any:
        def hook(_module: nn.Module, _inputs: Any, output: Tensor) -> None:
            activations[index] = output

        return hook

    handles = [m.register_forward_hook(keep(i)) for i, m in enumerate(modules)]
    was_training = model.training
    model.eval()  # dropout off, batch-norm running statistics: the model as it predicts
    try:
        with torch.enable_grad():
            # Gradients flow from the input so frozen parameters (requires_grad=False) still work;
            # autograd.grad below leaves the parameters' .grad untouched.
            x = images.detach().to(model_device(model)).float().requires_grad_(True)
            logits, _ = split_output(model(x))
            t = _targets(target, logits)
            score = logits.gather(1, t[:, None]).sum()
            acts = [activations[i] for i in range(len(modules))]
            grads = torch.autograd.grad(score, acts, allow_unused=True)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    maps = []
    for act, grad in zip(acts, grads):
        if grad is None:  # the layer does not reach the logits
            grad = torch.zeros_like(act)
        weights = grad.mean(dim=(2, 3), keepdim=True)  # Eq. 1
        cam = torch.relu((weights * act).sum(dim=1, keepdim=True)).detach()  # Eq. 2
        if upsample:
            cam = upsample_maps(cam, tuple(images.shape[-2:]))
        peak = cam.flatten(1).max(dim=1).values.clamp_min(1e-12)
        maps.append((cam / peak[:, None, None, None]).to(images.device))
    return maps


def gradcam(
    model: nn.Module,
    images: Tensor,
    target: Target = None,
    layer: Layer | None = None,
) -> Tensor:
    """Grad-CAM maps (N, 1, H, W) in [0, 1] at the images' size.

    Args:
        model: any classifier returning logits (or ``ModelOutput``); it is run in eval mode and
            its mode restored afterwards.
        images: normalised float batch (N, C, H, W).
        target: class(es) to explain: None = the predicted class, an int for all images, or one
            class per image.
        layer: ``None`` = conv13, 1/2/3 = conv7/conv10/conv13 of an attn-lib model, or any
            conv module of ``model`` whose output is (N, C, h, w).
    """
    return gradcam_layers(model, images, target, (layer,))[0]
