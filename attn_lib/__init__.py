"""attn-lib: *Learn To Pay Attention* (Jetley, Lord, Lee, Torr, ICLR 2018) in PyTorch.

    >>> import attn_lib
    >>> model = attn_lib.build_model("vgg-att3-concat-pc", num_classes=10)
    >>> logits, attention = model(images)  # attention: one (N, 1, h, w) map per level
"""

from ._version import __version__ as __version__
from .checkpoint import CheckpointError, load_model
from .config import smoke_mode
from .figures import plot_history
from .maps.gradcam import gradcam
from .models import (
    DEFAULT_OPTIONS,
    AttentionEstimator,
    AttnVGG,
    ModelOutput,
    VGGBackbone,
    add_attention,
    build_model,
    dp_compatibility,
    list_models,
    pc_compatibility,
)
from .models.weights import list_weights
from .runs import train
from .study import reproduce
from .training import NonFiniteLossError, TrainResult, evaluate

# Plotting and localisation import matplotlib (and ipywidgets) on first use only, so
# `import attn_lib` stays light and training never depends on them (PEP 562 lazy attributes).
_LAZY = {
    "overlay_attention": "viz",
    "plot_attention_grid": "viz",
    "localization_scores": "localize",
    "attention_explorer": "explorer",
    "contribution_maps": "contribution",
}


def __getattr__(name: str):
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f".maps.{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "plot_attention_grid",
    "overlay_attention",
    "localization_scores",
    "gradcam",
    "attention_explorer",
    "contribution_maps",
    "AttentionEstimator",
    "AttnVGG",
    "CheckpointError",
    "DEFAULT_OPTIONS",
    "ModelOutput",
    "NonFiniteLossError",
    "TrainResult",
    "VGGBackbone",
    "add_attention",
    "build_model",
    "dp_compatibility",
    "evaluate",
    "list_models",
    "list_weights",
    "load_model",
    "pc_compatibility",
    "reproduce",
    "plot_history",
    "smoke_mode",
    "train",
]
