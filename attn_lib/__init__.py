"""attn-lib: *Learn To Pay Attention* (Jetley, Lord, Lee, Torr, ICLR 2018) in PyTorch.

    >>> import attn_lib
    >>> model = attn_lib.build_model("vgg-att3-concat-pc", num_classes=10)
    >>> logits, attention = model(images)  # attention: one (N, 1, h, w) map per level
"""

from .attention import AttentionEstimator, dp_compatibility, pc_compatibility
from .backbone import VGGBackbone
from .config import smoke_mode
from .model import AttnVGG, ModelOutput
from .registry import DEFAULT_OPTIONS, build_model, list_models

__version__ = "0.1.0"

__all__ = [
    "AttentionEstimator",
    "AttnVGG",
    "DEFAULT_OPTIONS",
    "ModelOutput",
    "VGGBackbone",
    "build_model",
    "dp_compatibility",
    "list_models",
    "pc_compatibility",
    "smoke_mode",
]
