"""Training, evaluation and run history (``attn_lib.training.train``, ``attn_lib.evaluate``, ...).

Modules, from the bottom up: ``recipe`` (the settings of a run and the presets), ``precision``
(autocast, scaler, kernel flags), ``optim`` (SGD, lr schedule, EMA), ``distributed``
(torchrun / DistributedDataParallel), ``rng`` (per-epoch seeding, RNG state), ``history``
(metrics.jsonl), ``evaluation`` (accuracy, flip TTA), ``settings`` (a run's settings and the
resume rules), ``run`` (the built run: data with its validation split, model, loaders),
``run_folder`` (config.json, checkpoints, restore), ``epoch`` (the epoch loop and the step),
``loop`` (:func:`train`, which reads them top to bottom). Nothing here draws figures:
:func:`attn_lib.train` adds them (:mod:`attn_lib.figures`).
"""

from .._device import resolve_device
from .epoch import NonFiniteLossError
from .evaluation import evaluate
from .history import read_metrics
from .loop import TrainResult, train
from .precision import resolve_precision
from .recipe import PRESETS, Recipe, get_preset
from .settings import MAIN_DATASET, MAIN_MODEL

__all__ = [
    "MAIN_DATASET",
    "MAIN_MODEL",
    "NonFiniteLossError",
    "PRESETS",
    "Recipe",
    "TrainResult",
    "evaluate",
    "get_preset",
    "read_metrics",
    "resolve_device",
    "resolve_precision",
    "train",
]
