"""``attn_lib.train``: a training run (:func:`attn_lib.training.train`) and then its figures
(:func:`attn_lib.figures.save_run_figures`), the one layer that knows both."""

from __future__ import annotations

from typing import Any

from .figures import save_run_figures
from .training import TrainResult
from .training import train as train_without_figures


def train(*args: Any, save_attention: bool = True, **kwargs: Any) -> TrainResult:
    """Train as :func:`attn_lib.training.train` does (same arguments), then draw the run
    folder's ``curves.png`` and ``attention.png`` unless ``save_attention=False``. A figure that
    cannot be drawn is a :class:`~attn_lib.figures.FigureWarning`, not an error: the training
    has succeeded by then."""
    figures = save_run_figures if save_attention else None
    return train_without_figures(*args, figures=figures, **kwargs)
