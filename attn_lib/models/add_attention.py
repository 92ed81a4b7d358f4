"""The paper's attention on any CNN: ``add_attention(backbone, local_layers, global_layer)``.

The estimator of Sec. 3 needs three things from a network: local feature maps ``L^s`` (the
outputs of some conv layers), a global feature ``g`` (the output of a late layer) and a
classifier that reads the attended descriptors ``g_a^s`` instead of ``g`` (Sec. 3.3). Nothing of
this is specific to the VGG of the paper, so :func:`add_attention` taps the named layers of any
``nn.Module`` with torchvision's ``create_feature_extractor`` (the layer names are torchvision's
graph node names, ``get_graph_node_names(backbone)``), puts one
:class:`~attn_lib.models.attention.AttentionEstimator` on each local layer and classifies with
the family's heads (:func:`~attn_lib.models.attn_vgg.attention_heads`). The result returns the
family's ``ModelOutput(logits, attention)``, so training, evaluation, FGSM, the g-shuffle probe,
the attention maps and Grad-CAM treat it as one of the family (Grad-CAM at local level s:
``layer=model.backbone.taps[s - 1]``).

A spatial ``g`` (N, C, h, w) is averaged over its positions (global average pooling, as
torchvision's classifiers do before their last linear layer); an (N, C) ``g`` is used as it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

from .._validation import check_choice
from .attention import AttentionEstimator
from .attn_vgg import AGGREGATIONS, ModelOutput, attention_heads, check_classes_and_width, classify


class TappedFeatures(NamedTuple):
    """What an attention backbone gives the estimators: local maps and the global feature."""

    local: tuple[Tensor, ...]  #: one (N, C_s, h_s, w_s) map per attention level
    global_: Tensor  #: g, shape (N, C_g)


class AttentionNet(nn.Module):
    """Attention estimators on a backbone that returns :class:`TappedFeatures`.

    The classifier sees only the attended descriptors (Sec. 3.3), as in
    :class:`~attn_lib.models.AttnVGG`; ``levels`` numbers the attention levels 1..S.

    Args:
        backbone: a module mapping images to :class:`TappedFeatures`.
        local_channels: width of each local map, in the order the backbone returns them.
        global_channels: width of ``g``.
        num_classes: number of classes.
        compatibility, normalize, match: as :class:`~attn_lib.models.attention.AttentionEstimator`.
        head: ``"concat"`` (one classifier on the concatenated descriptors) or ``"indep"``.
        dropout: dropout probability before the classifier.
        layer_names: a name per level for plot titles (default ``level 1``, ...).
    """

    def __init__(self, backbone: nn.Module, local_channels: Sequence[int], global_channels: int,
                 num_classes: int, compatibility: str = "pc", normalize: str = "softmax",
                 match: str = "project_l", head: str = "concat", dropout: float = 0.5,
                 layer_names: Sequence[str] | None = None) -> None:
        super().__init__()
        check_classes_and_width(num_classes, 1.0)
        check_choice("head", head, AGGREGATIONS)
        self.backbone = backbone
        self.levels = tuple(range(1, len(local_channels) + 1))
        #: what each level is, for titles of plots (the VGG's are conv7/conv10/conv13)
        self.layer_names = tuple(layer_names or (f"level {s}" for s in self.levels))
        self.aggregation = head
        self.estimators = nn.ModuleList(
            AttentionEstimator(c, global_channels, compatibility, normalize, match)
            for c in local_channels
        )
        widths = [e.out_channels for e in self.estimators]
        self.heads = attention_heads(widths, head, num_classes, dropout)

    def forward(self, x: Tensor) -> ModelOutput:
        """Classify images (N, C, H, W)."""
        features = self.backbone(x)
        results = [estimator(local, features.global_)
                   for local, estimator in zip(features.local, self.estimators)]
        logits = classify(self.heads, self.aggregation, [r.descriptor for r in results])
        return ModelOutput(logits, tuple(r.attention for r in results))

    @property
    def gradcam_layer(self) -> nn.Module | None:
        """Grad-CAM's default layer: the last local layer, where the backbone marks it."""
        taps = getattr(self.backbone, "taps", None)
        return taps[-1] if taps is not None else None


class FeatureTap(nn.Module):
    """A backbone's named layers as :class:`TappedFeatures`, through torchvision's FX-based
    ``create_feature_extractor`` (only the layers up to the tapped ones are kept)."""

    def __init__(self, backbone: nn.Module, local_layers: Sequence[str], global_layer: str) -> None:
        super().__init__()
        _check_layer_names(backbone, [*local_layers, global_layer])
        self.local_layers = tuple(local_layers)
        self.global_layer = global_layer
        names = list(dict.fromkeys([*local_layers, global_layer]))
        self.body = create_feature_extractor(backbone, return_nodes={n: n for n in names})
        # One identity per local layer: the traced graph calls only leaf modules, so a hook
        # (Grad-CAM's, say) on a block such as "layer3" would never fire; on taps[s] it does.
        self.taps = nn.ModuleList(nn.Identity() for _ in self.local_layers)

    def forward(self, x: Tensor) -> TappedFeatures:
        out = self.body(x)
        g = out[self.global_layer]
        if g.dim() == 4:  # a spatial g: global average pooling, as torchvision's classifiers
            g = g.mean(dim=(2, 3))
        local = tuple(tap(out[name]) for tap, name in zip(self.taps, self.local_layers))
        return TappedFeatures(local, g)


def valid_layer_names(backbone: nn.Module) -> list[str]:
    """The names ``add_attention`` accepts for ``backbone``: torchvision's graph nodes (the same
    in train and eval mode) and every module that holds some of them (``"layer2"`` = the output
    of its last node), the top-level names first."""
    train_nodes, eval_nodes = get_graph_node_names(backbone)
    nodes = [n for n in eval_nodes if n in set(train_nodes)]
    prefixes = [".".join(n.split(".")[:i]) for n in nodes for i in range(1, n.count(".") + 1)]
    names = list(dict.fromkeys([*nodes, *prefixes]))
    return sorted(names, key=lambda n: (n.count("."), names.index(n)))


def _check_layer_names(backbone: nn.Module, names: Sequence[str]) -> None:
    modules = dict(backbone.named_modules())
    if all(name in modules and name for name in names):
        return  # module names: no need to trace the graph (slow for a large network) to check
    valid = valid_layer_names(backbone)
    unknown = [n for n in names if n not in set(valid)]
    if unknown:
        raise ValueError(
            f"unknown layer name(s) {', '.join(map(repr, unknown))} in {type(backbone).__name__}; "
            f"the valid names are: {', '.join(valid)}"
        )


def _probe(tap: FeatureTap, input_size: Sequence[int]) -> tuple[list[int], int]:
    """Run one zero image of ``input_size`` through ``tap`` and check what each layer gives;
    return the local widths and the width of g."""
    was_training = tap.training
    tap.eval()
    try:
        with torch.no_grad():
            out = tap.body(torch.zeros(2, *input_size))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0][:300]
        raise ValueError(f"the backbone cannot run on images of size {tuple(input_size)} "
                         f"({first}); pass the input_size= it takes") from None
    finally:
        tap.train(was_training)
    for name in tap.local_layers:
        shape = tuple(getattr(out[name], "shape", ()))
        if len(shape) != 4:
            raise ValueError(f"local layer {name!r} gives shape {shape}, not a feature map "
                             "(N, C, h, w): choose a conv layer or block before pooling/flatten")
        if shape[2] * shape[3] < 2:
            raise ValueError(f"local layer {name!r} gives a {shape[2]}x{shape[3]} map: attention "
                             "needs at least two positions; choose an earlier layer or larger "
                             "images")
    g_shape = tuple(getattr(out[tap.global_layer], "shape", ()))
    if len(g_shape) not in (2, 4) or g_shape[0] != 2:
        raise ValueError(f"global layer {tap.global_layer!r} gives shape {g_shape}; g must be "
                         "(N, C) or a feature map (N, C, h, w) to average")
    return [out[n].shape[1] for n in tap.local_layers], g_shape[1]


def add_attention(backbone: nn.Module, local_layers: Sequence[str], global_layer: str, *,
                  num_classes: int, compatibility: str = "pc", normalize: str = "softmax",
                  head: str = "concat", match: str = "project_l", dropout: float = 0.5,
                  input_size: Sequence[int] = (3, 224, 224),
                  name: str = "custom-attention") -> AttentionNet:
    """Put the paper's attention estimators on ``backbone`` (any CNN, e.g. a torchvision one).

    Example::

        net = torchvision.models.resnet18(weights=None)
        model = add_attention(net, ["layer2", "layer3"], "layer4", num_classes=10)
        logits, maps = model(images)  # maps: one (N, 1, h_s, w_s) attention map per layer

    Args:
        backbone: the network; its own classifier is dropped (only the layers up to the tapped
            ones are kept, and its weights are shared, not copied).
        local_layers: graph node names whose outputs are the local features ``L^s``.
        global_layer: the node whose output is ``g`` ((N, C), or (N, C, h, w): averaged).
        num_classes: classes of the new classifier.
        compatibility: ``"pc"`` (``<u, l + g>``) or ``"dp"`` (``<l, g>``), Sec. 3.2.
        normalize: ``"softmax"`` (Eq. 1) or ``"sigmoid"``.
        head: ``"concat"`` or ``"indep"`` (Sec. 3.3).
        match: where widths differ, ``"project_l"`` (1x1 conv on l) or ``"project_g"``.
        dropout: dropout probability before the classifier.
        input_size: (C, H, W) of one image, used once to read the layers' widths.
        name: recorded as ``model.name`` (run folders and checkpoints are named by it).

    Raises:
        ValueError: an unknown layer name (the message lists the valid ones), a local layer
        that is not a feature map, or a backbone that cannot run on ``input_size``.
    """
    if isinstance(local_layers, str) or not local_layers:
        raise ValueError("local_layers must be a non-empty list of layer names, e.g. "
                         "['layer2', 'layer3']")
    tap = FeatureTap(backbone, local_layers, global_layer)
    local_channels, global_channels = _probe(tap, input_size)
    model = AttentionNet(tap, local_channels, global_channels, num_classes, compatibility,
                         normalize, match, head, dropout, layer_names=local_layers)
    model.name = name  # type: ignore[assignment]
    # What attn_lib.train needs of a model passed in: its classes and width multiplier.
    model.options = {"num_classes": num_classes, "width": 1.0}  # type: ignore[assignment]
    return model
