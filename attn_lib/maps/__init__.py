"""Attention maps: pictures, an explorer, Grad-CAM for comparison, and localisation scores.

* :mod:`.viz` -- overlays of a map on an image, grids of images x levels, columns of maps;
* :mod:`.explorer` -- an ipywidgets explorer for notebooks (a static figure elsewhere);
* :mod:`.gradcam` -- Grad-CAM, the baseline's answer to "where does it look?";
* :mod:`.contribution` -- each position's exact share of a class score (attention times what
  the classifier makes of the local feature there);
* :mod:`.localize` -- do the maps point at the object? (mass in mask, pointing game);
* :mod:`.diagrams` -- the architecture and one attention estimator, drawn from the model.

Plotting imports matplotlib, so the names are loaded on first use (PEP 562): importing
:mod:`attn_lib.maps.gradcam` alone never pulls in matplotlib.
"""

from importlib import import_module
from typing import Any

_WHERE = {
    "overlay_attention": "viz",
    "plot_attention_grid": "viz",
    "plot_map_columns": "viz",
    "attention_explorer": "explorer",
    "gradcam": "gradcam",
    "localization_scores": "localize",
    "contribution_maps": "contribution",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = list(_WHERE)
