"""The figures of a run folder: ``curves.png`` (loss and accuracy per epoch) and
``attention.png`` (the attention maps of one test image per class).

They sit above training and the maps: training writes numbers only, and :func:`attn_lib.train`
draws these once it has succeeded. matplotlib is imported when a figure is drawn, not before,
so that ``import attn_lib`` stays light.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._device import model_device
from .data import ArrayDataset, normalize, one_per_class
from .training.history import read_metrics

ATTENTION_PNG = "attention.png"
CURVES_PNG = "curves.png"
#: Test images in ``attention.png`` (of a run and of a study): the first of each of the first
#: classes.
ATTENTION_IMAGES = 8


class FigureWarning(UserWarning):
    """A figure of the run folder (``curves.png``, ``attention.png``) could not be written."""


def save_run_figures(model: nn.Module, test_ds: ArrayDataset, run_dir: Path,
                     history: list[dict[str, Any]]) -> None:
    """``curves.png`` and ``attention.png`` (one test image per class) in ``run_dir``. Training
    has succeeded when they are drawn, so a failure is a :class:`FigureWarning` naming its
    cause -- a missing optional dependency or an error while plotting -- not an exception."""
    if history:
        _draw_or_warn(CURVES_PNG, lambda: plot_history(history).savefig(run_dir / CURVES_PNG,
                                                                        dpi=100))
    if getattr(model, "levels", ()):  # the plain VGG baseline has no attention maps
        _draw_or_warn(ATTENTION_PNG,
                      lambda: _plot_attention(model, test_ds, run_dir / ATTENTION_PNG))


def _draw_or_warn(name: str, draw: Callable[[], object]) -> None:
    try:
        draw()
    except ImportError as exc:
        warnings.warn(f"{name} not written: an optional dependency is missing ({exc})",
                      FigureWarning, stacklevel=4)
    except Exception as exc:
        warnings.warn(f"{name} not written: plotting failed ({type(exc).__name__}: {exc})",
                      FigureWarning, stacklevel=4)


def _plot_attention(model: nn.Module, test_ds: ArrayDataset, path: Path) -> None:
    from .maps.viz import plot_attention_grid  # matplotlib: only when drawn

    # A test split stored class by class would otherwise show one class only.
    index = torch.tensor(one_per_class(test_ds.labels, ATTENTION_IMAGES))
    images = normalize(test_ds.images[index], test_ds.mean, test_ds.std)
    plot_attention_grid(model, images.to(model_device(model)), labels=test_ds.labels[index],
                        classes=test_ds.classes, mean=test_ds.mean, std=test_ds.std,
                        save_path=path)


def plot_history(history: Any, title: str = ""):
    """Plot loss and accuracy curves of a run; returns the matplotlib ``Figure``.

    The figure is made without pyplot (like :func:`attn_lib.plot_attention_grid`): it is not
    kept alive by pyplot nor drawn twice in a notebook; show it as a cell's value or with
    ``display(fig)``, or ``fig.savefig(path)``.

    Args:
        history: a list of per-epoch dicts, a ``TrainResult``, a run folder or a
            ``metrics.jsonl`` path.
        title: optional figure title.
    """
    from matplotlib.figure import Figure  # only when drawn

    if hasattr(history, "history"):  # a TrainResult
        history = history.history
    if isinstance(history, (str, Path)):
        history = read_metrics(history)
    if not history:
        raise ValueError("history is empty: nothing to plot")
    epochs = [row["epoch"] for row in history]
    fig = Figure(figsize=(10, 3.6), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    for key, label in (("train_loss", "train"), ("val_loss", "validation"),
                       ("test_loss", "test")):
        if all(key in row for row in history):
            ax_loss.plot(epochs, [row[key] for row in history], marker=".", label=label)
    for key, label in (("train_acc", "train"), ("val_acc", "validation"), ("test_acc", "test"),
                       ("test_acc_tta", "test (flip TTA)")):
        if all(key in row for row in history):
            ax_acc.plot(epochs, [100 * row[key] for row in history], marker=".", label=label)
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    return fig
