"""``attn_lib.train``: a training run (:func:`attn_lib.training.train`) and then its figures
(:func:`attn_lib.figures.save_run_figures`), the one layer that knows both."""

from __future__ import annotations

import inspect
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


def _signature() -> inspect.Signature:
    """train()'s signature as help() shows it: training's, with save_attention for figures."""
    params = [p for p in inspect.signature(train_without_figures).parameters.values()
              if p.name != "figures"]
    figures = inspect.Parameter("save_attention", inspect.Parameter.KEYWORD_ONLY, default=True,
                                annotation="bool")
    return inspect.Signature([*params[:-1], figures, params[-1]],
                             return_annotation="TrainResult")


train.__signature__ = _signature()  # type: ignore[attr-defined]
