"""Build models by the paper's names: ``vgg``, ``vgg-att3-concat-pc``, ...

A name fixes the architecture the paper compares (attention levels, aggregation, compatibility);
keyword options set the knobs the public ports expose. Every name maps to one configuration of
:class:`attn_lib.model.AttnVGG`; there are no per-variant classes.
"""

from __future__ import annotations

import inspect
from itertools import product
from typing import Any

from .model import AttnVGG

#: Options :func:`build_model` accepts besides the name, with their defaults.
DEFAULT_OPTIONS: dict[str, Any] = {
    "attention_position": "before",  # "before" | "after" the max-pool following each level
    "normalize": "softmax",  # "softmax" (paper, Eq. 1) | "sigmoid" (a popular port)
    "match": "project_l",  # widths: project l up (default) | "project_g": g down (authors' code)
    "dropout": True,  # the authors' VGG dropout pattern (0.3 / 0.4 / 0.5)
    "width": 1.0,  # channel multiplier; 1.0 = the paper
    "in_channels": 3,
}


def _model_table() -> dict[str, dict[str, Any]]:
    table: dict[str, dict[str, Any]] = {"vgg": {"attention_levels": 0}}
    for levels, aggregation, compatibility in product((2, 3), ("concat", "indep"), ("pc", "dp")):
        name = f"vgg-att{levels}-{aggregation}-{compatibility}"
        table[name] = {
            "attention_levels": levels,
            "aggregation": aggregation,
            "compatibility": compatibility,
        }
    return table


MODELS = _model_table()


def list_models() -> list[str]:
    """Names accepted by :func:`build_model`.

    ``vgg`` (the baseline) and ``vgg-att{2,3}-{concat,indep}-{pc,dp}``.
    """
    return list(MODELS)


def build_model(name: str, num_classes: int = 10, **options: Any) -> AttnVGG:
    """Build a model of the paper's family by name.

    Args:
        name: one of :func:`list_models`, e.g. ``"vgg-att3-concat-pc"``.
        num_classes: number of classes of the classifier.
        **options: any of :data:`DEFAULT_OPTIONS` (``attention_position``, ``normalize``,
            ``match``, ``dropout``, ``width``, ``in_channels``).

    Raises:
        ValueError: unknown name or option, or an option value outside its choices.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(MODELS)}")
    unknown = sorted(set(options) - set(DEFAULT_OPTIONS))
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(map(repr, unknown))} for build_model; "
            f"accepted: {', '.join(DEFAULT_OPTIONS)}"
        )
    config = {**DEFAULT_OPTIONS, **options, **MODELS[name]}
    model = AttnVGG(num_classes=num_classes, **config)
    model.name = name  # type: ignore[assignment]
    model.options = {"num_classes": num_classes, **{k: config[k] for k in DEFAULT_OPTIONS}}  # type: ignore[assignment]
    return model


assert set(DEFAULT_OPTIONS) < set(inspect.signature(AttnVGG).parameters)
