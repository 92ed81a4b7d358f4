"""The model family of *Learn To Pay Attention*: backbone, attention estimator, models by name.

* :mod:`.backbone` -- the CIFAR VGG whose conv7, conv10 and conv13 give the local features;
* :mod:`.attention` -- the attention estimator (Sec. 3): compatibility, softmax, weighted sum;
* :mod:`.attn_vgg` -- :class:`AttnVGG`, attention on the backbone (every attention variant);
* :mod:`.baseline` -- :class:`VGGBaseline`, the paper's baseline (the standard CIFAR VGG);
* :mod:`.registry` -- :func:`build_model` by the paper's names, :func:`list_models`;
* :mod:`.add_attention` -- :func:`add_attention`, the estimators on any CNN;
* :mod:`.resnet` -- the paper's ResNet rows (pre-activation ResNet-164 and its attention models).
"""

from .add_attention import add_attention
from .attention import AttentionEstimator, dp_compatibility, pc_compatibility
from .attn_vgg import AttnVGG, ModelOutput, level_layer_name, level_number, split_output
from .backbone import LEVEL_LAYERS, VGGBackbone
from .baseline import VGGBaseline
from .registry import DEFAULT_OPTIONS, build_model, describe_model, list_models

__all__ = [
    "DEFAULT_OPTIONS",
    "LEVEL_LAYERS",
    "AttentionEstimator",
    "AttnVGG",
    "ModelOutput",
    "VGGBackbone",
    "VGGBaseline",
    "add_attention",
    "build_model",
    "describe_model",
    "dp_compatibility",
    "level_layer_name",
    "level_number",
    "list_models",
    "pc_compatibility",
    "split_output",
]
