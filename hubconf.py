"""``torch.hub`` entry points: one per model of the family, named as in ``list_models()`` with
``-`` written ``_``::

    model = torch.hub.load("<owner>/attn-lib", "vgg_att3_concat_pc", weights="cifar10")

Each takes ``build_model``'s arguments (``num_classes``, ``weights=``, ``width``, ...) and
passes them through; ``torch.hub.list`` shows the names.
"""

from __future__ import annotations

import typing as _typing

from torch import nn as _nn

# Imported under private names: torch.hub offers every public callable here as a model.
from attn_lib.models.registry import build_model as _build_model
from attn_lib.models.registry import describe_model as _describe_model
from attn_lib.models.registry import list_models as _list_models

dependencies = ["torch", "torchvision"]


def _entry_point(name: str) -> _typing.Callable[..., _nn.Module]:
    def entry(num_classes: int | None = None, *, weights: str | None = None,
              **options: _typing.Any) -> _nn.Module:
        return _build_model(name, num_classes, weights=weights, **options)

    entry.__name__ = name.replace("-", "_")
    entry.__doc__ = (f"``build_model({name!r}, ...)``: {_describe_model(name)}.\n\n"
                     "Arguments as :func:`attn_lib.build_model` (``weights=`` loads trained "
                     "weights, see ``attn_lib.list_weights``).")
    return entry


for _name in _list_models():
    globals()[_name.replace("-", "_")] = _entry_point(_name)
del _name
