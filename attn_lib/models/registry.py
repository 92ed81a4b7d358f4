"""Build models by the paper's names: ``vgg``, ``vgg-att3-concat-pc``, ...

A name fixes the architecture the paper compares (attention levels, aggregation, compatibility);
keyword options set the knobs the public ports expose. Every attention variant is one
configuration of :class:`attn_lib.models.AttnVGG` (no per-variant classes); the paper's
baseline ``vgg`` is :class:`attn_lib.models.VGGBaseline`, a network of its own.

``weights=`` loads trained weights the way torchvision's ``weights=`` does (see
:mod:`attn_lib.models.weights`): ``build_model("vgg-att3-concat-pc", weights="cifar10")``.
"""

from __future__ import annotations

import inspect
from itertools import product
from typing import Any

from torch import nn

from .._validation import first_line
from .attn_vgg import LEVELS_FOR_COUNT, AttnVGG
from .backbone import LEVEL_LAYERS
from .baseline import VGGBaseline
from .resnet import AttnResNet, PreActResNet
from .weights import WeightsError, get_weights, load_state_dict

#: Options :func:`build_model` accepts besides the name, with their defaults.
DEFAULT_OPTIONS: dict[str, Any] = {
    "attention_position": "before",  # "before" | "after" the max-pool following each level
    "normalize": "softmax",  # "softmax" (paper, Eq. 1) | "sigmoid" (a popular port)
    # where widths differ (conv7): project l up (the authors' run scripts) | "project_g": g down
    "match": "project_l",
    "dropout": True,  # the authors' VGG dropout pattern (0.3 / 0.4 / 0.5)
    "width": 1.0,  # channel multiplier; 1.0 = the paper
    "in_channels": 3,
}


#: Options that only mean something for a model with attention.
ATTENTION_OPTIONS = ("attention_position", "normalize", "match")


class ModelSpec:
    """What a name stands for: the class, its fixed settings, and a one-line description."""

    def __init__(self, cls: type[nn.Module], config: dict[str, Any], description: str) -> None:
        self.cls, self.config, self.description = cls, config, description

    @property
    def has_attention(self) -> bool:
        return bool(self.config.get("attention_levels"))


def _model_table() -> dict[str, ModelSpec]:
    table = {
        "vgg": ModelSpec(VGGBaseline, {}, "the paper's baseline: the standard CIFAR VGG "
                         "(vgg_bn_drop), a max-pool after every block, classifies its 1x1 "
                         "features (15.0 M parameters)"),
        "vgg-noatt": ModelSpec(AttnVGG, {"attention_levels": 0}, "the attention models' "
                               "backbone without attention (no pooling before conv7), "
                               "classifies g (19.7 M parameters): isolates what attention adds"),
    }
    layers = {count: ", ".join(LEVEL_LAYERS[level] for level in LEVELS_FOR_COUNT[count])
              for count in (2, 3)}
    heads = {"concat": "descriptors concatenated, one classifier",
             "indep": "one classifier per level, scores averaged"}
    scores = {"pc": "<u, l + g>", "dp": "<l, g>"}
    for levels, aggregation, compatibility in product((2, 3), ("concat", "indep"), ("pc", "dp")):
        name = f"vgg-att{levels}-{aggregation}-{compatibility}"
        config = {"attention_levels": levels, "aggregation": aggregation,
                  "compatibility": compatibility}
        table[name] = ModelSpec(AttnVGG, config, f"attention at {layers[levels]}; "
                                f"{heads[aggregation]}; compatibility {scores[compatibility]}")
    table.update(_resnet_table())
    return table


def _resnet_table() -> dict[str, ModelSpec]:
    """The paper's ResNet rows (:mod:`attn_lib.models.resnet`), at the paper's depth 164 and
    at depth 20, a shallow variant that trains on a CPU in minutes (narrow it with ``width``)."""
    table = {}
    for depth in (164, 20):
        table[f"resnet{depth}"] = ModelSpec(
            PreActResNet, {"depth": depth}, f"pre-activation bottleneck ResNet-{depth} for "
            "CIFAR (He et al.), classifies its pooled last stage: the ResNet rows' baseline")
        for levels, where in ((1, "stage 3 (8x8)"), (2, "stages 2 and 3 (16x16, 8x8)")):
            table[f"resnet{depth}-att{levels}-concat-pc"] = ModelSpec(
                AttnResNet, {"depth": depth, "attention_levels": levels, "match": "project_g"},
                f"pre-activation ResNet-{depth} with attention at {where} as the authors' "
                "RESNET code; g from its global branch, projected down; descriptors "
                "concatenated; compatibility <u, l + g>")
    return table


MODELS = _model_table()


def list_models() -> list[str]:
    """Names accepted by :func:`build_model`.

    * ``vgg`` -- the paper's baseline (Table 1's "VGG"): the standard CIFAR VGG of the authors'
      code, pooled after every block; this is what every comparison is made against;
    * ``vgg-noatt`` -- the backbone of the attention models without attention (conv1..conv7 at
      full resolution, classifies the global feature g): same network as the attention models
      minus the estimators, to separate what attention adds from what the backbone adds;
    * ``vgg-att{2,3}-{concat,indep}-{pc,dp}`` -- the attention models of the paper.

    :func:`describe_model` gives a one-line description of each.
    """
    return list(MODELS)


def describe_model(name: str) -> str:
    """One line saying what the model ``name`` is (see :func:`list_models`)."""
    return _spec(name).description


def _spec(name: str) -> ModelSpec:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(MODELS)}")
    return MODELS[name]


def build_model(name: str, num_classes: int | None = None, *, weights: str | None = None,
                **options: Any) -> nn.Module:
    """Build a model of the paper's family by name, optionally with trained weights.

    Args:
        name: one of :func:`list_models`, e.g. ``"vgg-att3-concat-pc"``.
        num_classes: number of classes of the classifier (default 10, or the weights').
        weights: the name of trained weights for this model (see
            :func:`attn_lib.list_weights`), e.g. ``"cifar10-cpu"``, an alias such as
            ``"cifar10"`` (the model's best shipped CIFAR-10 weights) or ``"DEFAULT"`` (what an
            alias resolves to, else its first entry); the model is then built as they were
            trained (width, classes, options) and returned in eval mode. ``None``: random
            initialisation.
        **options: any of :data:`DEFAULT_OPTIONS` (``attention_position``, ``normalize``,
            ``match``, ``dropout``, ``width``, ``in_channels``).

    Raises:
        ValueError: unknown name, option or weights; an option value outside its choices; an
        attention option for a model without attention; options that contradict ``weights``.
    """
    spec = _spec(name)
    unknown = sorted(set(options) - set(DEFAULT_OPTIONS))
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(map(repr, unknown))} for build_model; "
            f"accepted: {', '.join(DEFAULT_OPTIONS)}"
        )
    if weights is not None:
        return _build_with_weights(name, weights, num_classes, options)
    num_classes = 10 if num_classes is None else num_classes
    # A spec may set defaults of its own (the ResNet rows: match="project_g"); options win.
    spec_defaults = {k: v for k, v in spec.config.items() if k in DEFAULT_OPTIONS}
    config = {**DEFAULT_OPTIONS, **spec_defaults, **options}
    if not spec.has_attention:
        changed = [k for k in ATTENTION_OPTIONS if config[k] != DEFAULT_OPTIONS[k]]
        if changed:
            raise ValueError(f"model {name!r} has no attention, so {', '.join(changed)} "
                             "cannot be set; choose a vgg-att* model")
    if spec.cls is VGGBaseline:
        model: nn.Module = VGGBaseline(num_classes, dropout=config["dropout"],
                                       width=config["width"], in_channels=config["in_channels"])
    elif spec.cls is PreActResNet:
        model = PreActResNet(num_classes, depth=spec.config["depth"], dropout=config["dropout"],
                             width=config["width"], in_channels=config["in_channels"])
    elif spec.cls is AttnResNet:
        model = AttnResNet(num_classes=num_classes, **{**spec.config, **config})
    else:
        model = AttnVGG(num_classes=num_classes, **config, **spec.config)
    model.name = name  # type: ignore[assignment]
    model.options = {"num_classes": num_classes, **{k: config[k] for k in DEFAULT_OPTIONS}}  # type: ignore[assignment]
    return model


def _build_with_weights(name: str, weights: str, num_classes: int | None,
                        options: dict[str, Any]) -> nn.Module:
    """``build_model(name, weights=...)``: the model as its weights were trained, in eval mode.

    Options given explicitly must agree with the weights' (a width or a class count the weights
    were not trained with cannot load them).
    """
    entry = get_weights(name, weights)
    trained = {**entry["options"], "width": entry["width"]}
    conflicts = [f"{k}={v!r} (the weights have {trained.get(k)!r})" for k, v in options.items()
                 if trained.get(k) != v]
    classes = len(entry["classes"])
    if num_classes is not None and num_classes != classes:
        conflicts.append(f"num_classes={num_classes} (the weights have {classes})")
    if conflicts:
        raise ValueError(f"weights {entry['weights']!r} of {name!r} were trained differently: "
                         f"{'; '.join(conflicts)}; drop these arguments to use them")
    model = build_model(name, classes, **trained)
    try:
        model.load_state_dict(load_state_dict(entry))
    except RuntimeError as exc:
        raise WeightsError(f"weights {entry['weights']!r} do not fit model {name!r}: "
                           f"{first_line(exc)}") from None
    # What a user needs to feed the model correctly, kept with it.
    model.weights_info = {k: entry[k] for k in ("weights", "dataset", "classes",  # type: ignore[assignment]
                                                "mean", "std", "image_size")}
    return model.eval()


assert set(DEFAULT_OPTIONS) < set(inspect.signature(AttnVGG).parameters)
